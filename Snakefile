# helpnet: HELPNet scribble-supervised segmentation, from download to report.
# Stages live in workflow/rules/*.smk; the targets of `rule all` come from all_targets() in
# workflow/rules/common.smk. Site settings (cluster, partitions, account) belong in profiles/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# common.smk validates the config against workflow/schemas/config.schema.yaml first, so the
# rest of the workflow sees a valid config with the schema's defaults filled in.
include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


if config.get("container"):

    container: config["container"]


# Rules run `python -m helpnet.cli` from this checkout's src/, so a conda or container
# environment needs only the package's dependencies and never imports another installed copy.
shell.prefix("export PYTHONPATH={}/src:$PYTHONPATH; ".format(workflow.basedir))


# Keep every wildcard to one path component, and experiment names off the dataset folders,
# so that no two rules can produce the same file.
wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    experiment=r"(?!(cases|edges|preprocessed|plots|logs|benchmarks)$)[A-Za-z0-9][A-Za-z0-9_-]*",
    fold=r"\d+",
    case=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    source=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    weights=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


include: "workflow/rules/data.smk"
include: "workflow/rules/edges.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets,
    default_target: True
