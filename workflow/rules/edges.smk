# Edge maps, the boundary prior of HELPNet's structural refinement: one volume per scribbled case.


rule edges:
    input:
        unpack(edge_inputs),
    output:
        f"{RESULTS}/{{dataset}}/edges/{{case}}.nii.gz",
    params:
        method=edge_method_args,
        checkpoint=lambda wc, input: f"--checkpoint {input.weights}" if "weights" in input.keys() else "",
        device=config["edges_device"],
    log:
        f"{LOGS}/edges/{{dataset}}_{{case}}.log",
    benchmark:
        f"{BENCHMARKS}/edges/{{dataset}}_{{case}}.tsv"
    conda:
        "../../envs/edges.yaml"
    threads: res("edges", "cpus_per_task")
    resources:
        mem_mb=res("edges", "mem_mb"),
        runtime=res("edges", "runtime"),
        gpu=res("edges", "gpu"),
        **partition_kw("edges"),
    shell:
        "python -m helpnet.cli edges --image {input.image} --output {output} --threads {threads} "
        "{params.method} {params.checkpoint} --device {params.device} > {log} 2>&1"


rule edges_qc:
    input:
        edges=scribbled_edges,
    output:
        report(
            f"{RESULTS}/{{dataset}}/edges_qc.png",
            caption="../report/edges_qc.rst",
            category="Edge maps",
        ),
    params:
        cases_dir=lambda wc: f"{RESULTS}/{wc.dataset}/cases",
        edges_dir=lambda wc: f"{RESULTS}/{wc.dataset}/edges",
    log:
        f"{LOGS}/edges_qc/{{dataset}}.log",
    conda:
        "../../envs/edges.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli edges-qc --cases-dir {params.cases_dir} --edges-dir {params.edges_dir} "
        "--output {output} > {log} 2>&1"
