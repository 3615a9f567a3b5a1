# Training stages: resample slices once, train one model per (dataset, experiment, fold), predict.


rule preprocess:
    input:
        unpack(preprocess_inputs),
    output:
        f"{RESULTS}/{{dataset}}/preprocessed/{{case}}.npz",
    params:
        case_dir=lambda wc: f"{RESULTS}/{wc.dataset}/cases/{wc.case}",
        edge=lambda wc, input: f"--edge {input.edge}" if "edge" in input.keys() else "",
        target_spacing=lambda wc: dataset_config(wc.dataset)["target_spacing"],
    log:
        f"{LOGS}/preprocess/{{dataset}}_{{case}}.log",
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli preprocess --case-dir {params.case_dir} {params.edge} "
        "--target-spacing {params.target_spacing} --output {output} > {log} 2>&1"


rule train:
    input:
        splits=f"{RESULTS}/{{dataset}}/splits.json",
        info=f"{RESULTS}/{{dataset}}/dataset.json",
        preprocessed=train_preprocessed,
    output:
        final=f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/checkpoint_final.pt",
        best=f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/checkpoint_best.pt",
        log_csv=f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/training_log.csv",
        summary=f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/training_summary.json",
    params:
        settings=lambda wc: json_arg(training_settings(wc)),
        experiment=lambda wc: json_arg(experiment_config(wc.experiment)),
        preprocessed_dir=lambda wc: f"{RESULTS}/{wc.dataset}/preprocessed",
        output_dir=lambda wc: f"{RESULTS}/{wc.dataset}/{wc.experiment}/fold{wc.fold}",
    log:
        f"{LOGS}/train/{{dataset}}_{{experiment}}_fold{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{dataset}}_{{experiment}}_fold{{fold}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: res("train", "cpus_per_task")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=res("train", "gpu"),
        **partition_kw("train"),
    shell:
        "OMP_NUM_THREADS={threads} python -m helpnet.cli train --preprocessed-dir {params.preprocessed_dir} "
        "--splits {input.splits} --fold {wildcards.fold} --dataset-info {input.info} "
        "--settings {params.settings} --experiment {params.experiment} "
        "--output-dir {params.output_dir} >> {log} 2>&1"


rule predict:
    input:
        checkpoint=f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/checkpoint_{config['evaluation']['checkpoint']}.pt",
        images=lambda wc: [f"{RESULTS}/{wc.dataset}/cases/{c}/image.nii.gz" for c in test_cases(wc)],
    output:
        directory(f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/predictions"),
    params:
        cases=lambda wc: " ".join(test_cases(wc)),
        cases_dir=lambda wc: f"{RESULTS}/{wc.dataset}/cases",
        device=config["evaluation"]["device"],
        precision=config["evaluation"]["precision"],
    log:
        f"{LOGS}/predict/{{dataset}}_{{experiment}}_fold{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/predict/{{dataset}}_{{experiment}}_fold{{fold}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: res("evaluate", "cpus_per_task")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
        **partition_kw("evaluate"),
    shell:
        "OMP_NUM_THREADS={threads} python -m helpnet.cli predict --checkpoint {input.checkpoint} "
        "--cases-dir {params.cases_dir} --cases {params.cases} --output-dir {output} "
        "--device {params.device} --precision {params.precision} > {log} 2>&1"
