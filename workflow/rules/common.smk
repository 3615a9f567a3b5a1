# Shared helpers of the workflow: paths, the helpnet command, resources, and the target list.

import csv
import difflib
import json
import shlex
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

CONFIG_SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
with open(CONFIG_SCHEMA, encoding="utf-8") as schema_file:
    CONFIG_SCHEMA_DOCUMENT = yaml.safe_load(schema_file)


def describe_config_error(error):
    """One line for a schema error; an unknown key also gets the closest allowed key, if any."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    if error.validator != "additionalProperties" or not allowed or not isinstance(error.instance, dict):
        return f"  {where}: {error.message}"
    hints = []
    for key in sorted(set(error.instance) - set(allowed)):
        close = difflib.get_close_matches(str(key), list(allowed), n=1)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return f"  {where}: unknown key {', '.join(hints)}; allowed here: {', '.join(sorted(allowed))}"


def check_config(config, schema, schema_path):
    """Stop with one line per config error (key, problem) instead of Snakemake's schema dump."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [describe_config_error(e) for e in errors[:10]]
        raise WorkflowError(
            "invalid config:\n" + "\n".join(lines) + f"\nThe allowed keys, types and defaults are in "
            f"{schema_path}; fix the config file or the --config value."
        )


check_config(config, CONFIG_SCHEMA_DOCUMENT, CONFIG_SCHEMA)
if config.get("evaluation", {}).get("precision") == "fp16" and config["evaluation"].get("device") == "cpu":
    raise WorkflowError(
        "evaluation.precision fp16 needs CUDA but evaluation.device is cpu; "
        "set evaluation.precision to checkpoint, bf16 or fp32, or evaluation.device to auto or cuda"
    )
# Fills in the schema's defaults.
validate(config, str(CONFIG_SCHEMA))

RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"


# Number of folds of each split preset (helpnet.data.splits defines their content).
PRESET_FOLDS = {
    "cyclemix_mscmr": 1,
    "helpnet_acdc_test": 1,
    "wsl4mis_acdc_5fold": 5,
    "pacingpseudo_chaos_5fold": 5,
}

RESERVED_NAMES = ("cases", "edges", "preprocessed", "plots", "logs", "benchmarks")


def dataset_config(dataset):
    try:
        return config["datasets"][dataset]
    except KeyError:
        raise WorkflowError(
            f"dataset {dataset!r} is listed in run_datasets but not defined under datasets:; "
            f"defined: {sorted(config['datasets'])}"
        )


def experiment_config(experiment):
    try:
        return config["experiments"][experiment]
    except KeyError:
        raise WorkflowError(
            f"experiment {experiment!r} is listed in run_experiments but not defined under experiments:; "
            f"defined: {sorted(config['experiments'])}"
        )


def check_dataset_training(dataset):
    """Validate a dataset's `training` overrides, merged with the top-level block, before any job."""
    schema = CONFIG_SCHEMA_DOCUMENT["properties"]["training"]
    merged = training_settings_of(dataset)
    try:
        jsonschema.validate(merged, schema)
    except jsonschema.ValidationError as error:
        location = ".".join(str(p) for p in error.absolute_path)
        raise WorkflowError(
            f"datasets.{dataset}.training: {error.message} (at training.{location}); "
            "see workflow/schemas/config.schema.yaml for the valid keys"
        )
    if merged.get("precision") == "fp16" and merged.get("device") == "cpu":
        raise WorkflowError(
            f"datasets.{dataset}.training: precision fp16 needs CUDA but device is cpu; "
            "set training.precision to bf16 or fp32, or training.device to auto or cuda"
        )


def training_settings_of(dataset):
    """The effective training settings: config `training`, then the dataset's `training` overrides."""
    settings = dict(config["training"])
    for key, value in dataset_config(dataset).get("training", {}).items():
        if key == "loss":
            settings["loss"] = {**settings.get("loss", {}), **value}
        else:
            settings[key] = value
    return settings


def res(family, key):
    """Return one resource value of a family of rules from config['resources']."""
    return config["resources"][family][key]


def partition_kw(family):
    """Return {slurm_partition: ...} for a family with a configured partition, else {}.

    An explicit None would override the profile's default-resources, so nothing is returned then.
    """
    value = config["resources"][family].get("slurm_partition")
    return {"slurm_partition": value} if value else {}


def json_arg(value):
    """Quote a value as a JSON string for the shell."""
    return shlex.quote(json.dumps(value, sort_keys=True))


# ---------------------------------------------------------------- sources and weights


def source_path(dataset, name):
    """Return the path the align stage reads for one source of a dataset."""
    spec = dataset_config(dataset)["sources"][name]
    if "url" in spec:
        return f"{RESOURCES}/{dataset}/downloads/{name}"
    if "demo" in spec:
        return f"{RESOURCES}/{dataset}/generated/{name}"
    path = Path(spec["path"]).expanduser()
    if not path.exists():
        raise WorkflowError(
            f"source {name!r} of dataset {dataset!r}: {path} ({path.absolute()}) does not exist. "
            "This source is read from a local "
            f"path ({spec.get('obtain') or 'see the dataset documentation'}). Put the data there or set "
            f"datasets.{dataset}.sources.{name}.path in your config."
        )
    return str(path)


def fetch_target(wildcards, output):
    """Return what `helpnet fetch` writes: the folder itself for archives, else the file inside it."""
    spec = dataset_config(wildcards.dataset)["sources"][wildcards.source]
    if spec.get("extract", True):
        return output[0]
    name = spec.get("filename") or Path(spec["url"].split("?")[0]).name
    return f"{output[0]}/{name}"


def align_inputs(wildcards):
    return {name: source_path(wildcards.dataset, name) for name in dataset_config(wildcards.dataset)["sources"]}


def align_source_args(wildcards, input):
    return " ".join(f"--source {name}={path}" for name, path in input.items())


def weights_path(name):
    spec = config["weights"][name]
    if "url" in spec:
        return f"{RESOURCES}/weights/{name}.pth"
    path = Path(spec["path"]).expanduser()
    if not path.exists():
        raise WorkflowError(
            f"weights {name!r}: {path} ({path.absolute()}) does not exist. Download the official file "
            f"({spec.get('obtain') or 'see README'}) and put it there, or give weights.{name} a url and sha256."
        )
    return str(path)


# ---------------------------------------------------------------- cases and splits


def manifest(dataset):
    """Return the rows of cases.tsv once the align checkpoint has run."""
    path = checkpoints.align.get(dataset=dataset).output.manifest
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def case_ids(dataset, with_scribble=None):
    rows = manifest(dataset)
    if with_scribble is not None:
        rows = [r for r in rows if (r["has_scribble"] == "true") == with_scribble]
    return [r["case"] for r in rows]


def has_scribble(dataset, case):
    return any(r["case"] == case and r["has_scribble"] == "true" for r in manifest(dataset))


def fold_entry(dataset, fold):
    path = checkpoints.split.get(dataset=dataset).output.splits
    splits = json.loads(Path(path).read_text())
    for entry in splits["folds"]:
        if int(entry["fold"]) == int(fold):
            return entry
    raise WorkflowError(f"{path} has no fold {fold}; its folds: {[e['fold'] for e in splits['folds']]}")


def num_folds(dataset):
    split = dataset_config(dataset)["split"]
    scheme = split["scheme"]
    if scheme == "kfold":
        return int(split["folds"])
    if scheme == "preset":
        return PRESET_FOLDS[split["name"]]
    return len(json.loads(Path(split["path"]).read_text())["folds"])


def folds_to_run(dataset):
    available = list(range(num_folds(dataset)))
    if config["folds"] == "all":
        return available
    requested = config["folds"] if isinstance(config["folds"], list) else [config["folds"]]
    requested = [int(f) for f in requested]
    unknown = [f for f in requested if f not in available]
    if unknown:
        raise WorkflowError(f"folds {unknown} do not exist for dataset {dataset!r}; its folds: {available}")
    return requested


def edges_needed(dataset):
    return any(experiment_config(e).get("spr_edges", False) for e in config["run_experiments"])


# ---------------------------------------------------------------- inputs and arguments of the rules


def split_args(wildcards):
    split = dataset_config(wildcards.dataset)["split"]
    scheme = split["scheme"]
    if scheme == "kfold":
        return (
            f"--scheme kfold --folds {split['folds']} --seed {split.get('seed', 42)} "
            f"--validation-subjects {split.get('validation_subjects', 0)}"
        )
    if scheme == "preset":
        return f"--scheme preset --preset {split['name']}"
    return f"--scheme file --split-file {split['path']}"


def edge_method_args(wildcards):
    edges = dataset_config(wildcards.dataset)["edges"]
    if edges["method"] == "sobel":
        return "--method sobel"
    flags = [
        "--method pidinet",
        f"--variant {edges.get('variant', 'pidinet')}",
        "--attention" if edges.get("attention", True) else "--no-attention",
        "--dilation" if edges.get("dilation", True) else "--no-dilation",
    ]
    if edges.get("converted") is not None:
        flags.append("--converted" if edges["converted"] else "--no-converted")
    return " ".join(flags)


def edge_inputs(wildcards):
    inputs = {"image": f"{RESULTS}/{wildcards.dataset}/cases/{wildcards.case}/image.nii.gz"}
    edges = dataset_config(wildcards.dataset)["edges"]
    if edges["method"] == "pidinet":
        inputs["weights"] = weights_path(edges["weights"])
    return inputs


def scribbled_edges(wildcards):
    return [f"{RESULTS}/{wildcards.dataset}/edges/{c}.nii.gz" for c in case_ids(wildcards.dataset, with_scribble=True)]


def preprocess_inputs(wildcards):
    inputs = {"image": f"{RESULTS}/{wildcards.dataset}/cases/{wildcards.case}/image.nii.gz"}
    if edges_needed(wildcards.dataset) and has_scribble(wildcards.dataset, wildcards.case):
        inputs["edge"] = f"{RESULTS}/{wildcards.dataset}/edges/{wildcards.case}.nii.gz"
    return inputs


def train_preprocessed(wildcards):
    entry = fold_entry(wildcards.dataset, wildcards.fold)
    cases = list(entry["train"]) + list(entry.get("val", []))
    return [f"{RESULTS}/{wildcards.dataset}/preprocessed/{c}.npz" for c in cases]


def training_settings(wildcards):
    return training_settings_of(wildcards.dataset)


def test_cases(wildcards):
    return fold_entry(wildcards.dataset, wildcards.fold)["test"]


def fold_metrics(wildcards):
    return [
        f"{RESULTS}/{wildcards.dataset}/{wildcards.experiment}/fold{fold}/metrics.csv"
        for fold in range(num_folds(wildcards.dataset))
    ]


def all_fold_metrics(wildcards):
    return [
        f"{RESULTS}/{wildcards.dataset}/{e}/fold{f}/metrics.csv"
        for e in config["run_experiments"]
        for f in range(num_folds(wildcards.dataset))
    ]


# ---------------------------------------------------------------- targets


def all_targets(wildcards):
    """Targets of the default target: the summaries and report items, or one fold's metrics when `folds` is set."""
    targets = []
    for dataset in config["run_datasets"]:
        check_dataset_training(dataset)
        if edges_needed(dataset):
            targets.append(f"{RESULTS}/{dataset}/edges_qc.png")
        for experiment in config["run_experiments"]:
            experiment_config(experiment)
            for fold in folds_to_run(dataset):
                targets.append(f"{RESULTS}/{dataset}/{experiment}/fold{fold}/metrics.csv")
                targets.append(f"{RESULTS}/{dataset}/plots/{experiment}_fold{fold}_overlays.png")
            if config["folds"] == "all":
                targets += expand(
                    f"{RESULTS}/{dataset}/{experiment}/summary.{{ext}}", ext=("csv", "md", "json")
                )
                targets.append(f"{RESULTS}/{dataset}/plots/{experiment}_curves.png")
        if config["folds"] == "all":
            targets.append(f"{RESULTS}/{dataset}/comparison.md")
            targets += [f"{RESULTS}/{dataset}/plots/dice_boxplot.png", f"{RESULTS}/{dataset}/plots/hd95_boxplot.png"]
    return targets
