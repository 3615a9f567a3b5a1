# Evaluation stages: score each fold's held-out cases, then summarise across folds and experiments.


rule evaluate:
    input:
        predictions=f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/predictions",
        info=f"{RESULTS}/{{dataset}}/dataset.json",
        labels=lambda wc: [f"{RESULTS}/{wc.dataset}/cases/{c}/label.nii.gz" for c in test_cases(wc)],
    output:
        f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/metrics.csv",
    params:
        cases=lambda wc: " ".join(test_cases(wc)),
        cases_dir=lambda wc: f"{RESULTS}/{wc.dataset}/cases",
        hd95=config["evaluation"]["hd95_definition"],
        penalty=config["evaluation"]["empty_penalty"],
    log:
        f"{LOGS}/evaluate/{{dataset}}_{{experiment}}_fold{{fold}}.log",
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli evaluate --predictions-dir {input.predictions} --cases-dir {params.cases_dir} "
        "--cases {params.cases} --dataset-info {input.info} --fold {wildcards.fold} "
        "--hd95-definition {params.hd95} --empty-penalty {params.penalty} --output {output} > {log} 2>&1"


rule summarize:
    input:
        metrics=fold_metrics,
        info=f"{RESULTS}/{{dataset}}/dataset.json",
    output:
        csv=report(
            f"{RESULTS}/{{dataset}}/{{experiment}}/summary.csv",
            caption="../report/summary.rst",
            category="Results",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "experiment": "{experiment}", "table": "summary"},
        ),
        md=f"{RESULTS}/{{dataset}}/{{experiment}}/summary.md",
        json=f"{RESULTS}/{{dataset}}/{{experiment}}/summary.json",
    params:
        settings=lambda wc: json_arg(
            {"training": training_settings(wc), "experiment": experiment_config(wc.experiment),
             "dataset": dataset_config(wc.dataset), "evaluation": config["evaluation"]}
        ),
        output_dir=lambda wc: f"{RESULTS}/{wc.dataset}/{wc.experiment}",
    log:
        f"{LOGS}/summarize/{{dataset}}_{{experiment}}.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli summarize --metrics {input.metrics} --dataset-info {input.info} "
        "--experiment {wildcards.experiment} --settings-json {params.settings} "
        "--output-dir {params.output_dir} > {log} 2>&1"


rule compare:
    input:
        summaries=lambda wc: [f"{RESULTS}/{wc.dataset}/{e}/summary.json" for e in config["run_experiments"]],
    output:
        report(
            f"{RESULTS}/{{dataset}}/comparison.md",
            caption="../report/comparison.rst",
            category="Results",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "comparison"},
        ),
    log:
        f"{LOGS}/compare/{{dataset}}.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli compare --summaries {input.summaries} --output {output} > {log} 2>&1"
