# Figures for the Snakemake report: metric box plots, training curves and qualitative overlays.


rule plot_boxplots:
    input:
        metrics=all_fold_metrics,
    output:
        dice=report(
            f"{RESULTS}/{{dataset}}/plots/dice_boxplot.png",
            caption="../report/boxplots.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "Dice box plot"},
        ),
        hd95=report(
            f"{RESULTS}/{{dataset}}/plots/hd95_boxplot.png",
            caption="../report/boxplots.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "HD95 box plot"},
        ),
    log:
        f"{LOGS}/plots/{{dataset}}_boxplots.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli plot boxplots --metrics {input.metrics} --output-dice {output.dice} "
        "--output-hd95 {output.hd95} > {log} 2>&1"


rule plot_curves:
    input:
        logs=lambda wc: [
            f"{RESULTS}/{wc.dataset}/{wc.experiment}/fold{f}/training_log.csv" for f in range(num_folds(wc.dataset))
        ],
    output:
        report(
            f"{RESULTS}/{{dataset}}/plots/{{experiment}}_curves.png",
            caption="../report/curves.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "training curves {experiment}"},
        ),
    log:
        f"{LOGS}/plots/{{dataset}}_{{experiment}}_curves.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli plot curves --logs {input.logs} --output {output} > {log} 2>&1"


rule plot_overlays:
    input:
        metrics=f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/metrics.csv",
        predictions=f"{RESULTS}/{{dataset}}/{{experiment}}/fold{{fold}}/predictions",
    output:
        report(
            f"{RESULTS}/{{dataset}}/plots/{{experiment}}_fold{{fold}}_overlays.png",
            caption="../report/overlays.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "overlays {experiment} fold {fold}"},
        ),
    params:
        cases_dir=lambda wc: f"{RESULTS}/{wc.dataset}/cases",
    log:
        f"{LOGS}/plots/{{dataset}}_{{experiment}}_fold{{fold}}_overlays.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=res("light", "mem_mb"),
        runtime=res("light", "runtime"),
        **partition_kw("light"),
    shell:
        "python -m helpnet.cli plot overlays --metrics {input.metrics} --predictions-dir {input.predictions} "
        "--cases-dir {params.cases_dir} --output {output} > {log} 2>&1"
