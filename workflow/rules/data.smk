# Data stages: obtain each source, align it into canonical cases, and split the cases into folds.


rule make_demo:
    output:
        directory(f"{RESOURCES}/{{dataset}}/generated/{{source}}"),
    params:
        spec=lambda wc: dataset_config(wc.dataset)["sources"][wc.source]["demo"],
    log:
        f"{LOGS}/make_demo/{{dataset}}_{{source}}.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli demo --output-dir {output} --subjects {params.spec[subjects]} "
        "--seed {params.spec[seed]} > {log} 2>&1"


rule fetch_source:
    output:
        directory(f"{RESOURCES}/{{dataset}}/downloads/{{source}}"),
    params:
        spec=lambda wc: json_arg(dataset_config(wc.dataset)["sources"][wc.source]),
        target=fetch_target,
    log:
        f"{LOGS}/fetch_source/{{dataset}}_{{source}}.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    retries: 2
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli fetch --spec {params.spec} --output {params.target} > {log} 2>&1"


rule fetch_weights:
    output:
        f"{RESOURCES}/weights/{{weights}}.pth",
    params:
        spec=lambda wc: json_arg({**config["weights"][wc.weights], "extract": False}),
    log:
        f"{LOGS}/fetch_weights/{{weights}}.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    retries: 2
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli fetch --spec {params.spec} --output {output} > {log} 2>&1"


checkpoint align:
    input:
        unpack(align_inputs),
    output:
        manifest=f"{RESULTS}/{{dataset}}/cases.tsv",
        info=f"{RESULTS}/{{dataset}}/dataset.json",
        report=f"{RESULTS}/{{dataset}}/alignment_report.json",
    params:
        sources=align_source_args,
        reader=lambda wc: dataset_config(wc.dataset)["reader"],
        classes=lambda wc: " ".join(f"'{c}'" for c in dataset_config(wc.dataset)["classes"]),
        options=lambda wc: json_arg(dataset_config(wc.dataset).get("reader_options", {})),
        output_dir=lambda wc: f"{RESULTS}/{wc.dataset}",
    log:
        f"{LOGS}/align/{{dataset}}.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli align --reader {params.reader} {params.sources} --classes {params.classes} "
        "--options {params.options} --output-dir {params.output_dir} > {log} 2>&1"


checkpoint split:
    input:
        manifest=f"{RESULTS}/{{dataset}}/cases.tsv",
    output:
        splits=f"{RESULTS}/{{dataset}}/splits.json",
    params:
        args=split_args,
    log:
        f"{LOGS}/split/{{dataset}}.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli split --manifest {input.manifest} --output {output.splits} {params.args} > {log} 2>&1"
