"""Offline checks of the per-rule conda environments and the Apptainer definition.

Neither conda nor Apptainer runs on the CI machines, so these tests check what can be checked
without them: every rule names an environment file that exists and parses, every dependency is
a valid, pinned conda MatchSpec (py-rattler), the pins admit the versions the test suite runs
with, and each environment provides every third-party package that the code of its rules
imports. The imports are found with `ast`, starting from the module that handles the rule's
`helpnet` subcommand.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from rattler import Channel, MatchSpec, Version, VersionSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"
ENVS_DIR = REPO_ROOT / "envs"
CONTAINER_DEF = REPO_ROOT / "containers" / "helpnet.def"

# The `helpnet` subcommand (with its sub-subcommand, if any) that each rule's shell command runs.
RULE_COMMANDS: dict[str, tuple[str, ...]] = {
    "make_demo": ("demo",),
    "fetch_source": ("fetch",),
    "fetch_weights": ("fetch",),
    "align": ("align",),
    "split": ("split",),
    "edges": ("edges",),
    "edges_qc": ("edges-qc",),
    "preprocess": ("preprocess",),
    "train": ("train",),
    "predict": ("predict",),
    "evaluate": ("evaluate",),
    "summarize": ("summarize",),
    "compare": ("compare",),
    "plot_boxplots": ("plot", "boxplots"),
    "plot_curves": ("plot", "curves"),
    "plot_overlays": ("plot", "overlays"),
}

# Modules that load modules of a package by name at run time, which `ast` cannot follow:
# the module is assumed to import every module of that package.
DYNAMIC_IMPORTS = {
    "helpnet.data.readers": "helpnet.data.readers",
}

# Top-level import name -> conda-forge package that provides it.
CONDA_PACKAGE_OF_IMPORT = {
    "numpy": "numpy",
    "scipy": "scipy",
    "nibabel": "nibabel",
    "h5py": "h5py",
    "pydicom": "pydicom",
    "skimage": "scikit-image",
    "pandas": "pandas",
    "matplotlib": "matplotlib",
    "PIL": "pillow",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    "requests": "requests",
    "urllib3": "urllib3",
    "torch": "pytorch",
    "tensorboard": "tensorboard",
}

# Dotted imports that need one more package than their top-level name: torch.utils.tensorboard
# imports the tensorboard package.
EXTRA_PACKAGES_OF_IMPORT = {
    "torch.utils.tensorboard": "tensorboard",
}

# conda package -> distribution name in the test environment, where they differ. The CUDA
# build of `pytorch-gpu` installs the same `torch` as `pytorch`.
DISTRIBUTION_OF_CONDA_PACKAGE = {
    "pytorch": "torch",
    "pytorch-gpu": "torch",
    "pytorch-cpu": "torch",
    "matplotlib-base": "matplotlib",
}

# conda packages that provide another package's imports: the GPU and CPU metapackages of
# PyTorch depend on `pytorch`, and `matplotlib-base` is matplotlib without the Qt GUI.
PROVIDES = {
    "pytorch-gpu": {"pytorch"},
    "pytorch-cpu": {"pytorch"},
    "matplotlib-base": {"matplotlib"},
}

# Prints name, conda env, shell command and file of every rule, through Snakemake's API, in a
# separate process because loading a workflow changes the working directory and logging.
RULES_SCRIPT = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

repo = Path(sys.argv[1])
with SnakemakeApi(OutputSettings()) as api:
    workflow_api = api.workflow(
        resource_settings=ResourceSettings(),
        config_settings=ConfigSettings(),
        storage_settings=StorageSettings(),
        snakefile=repo / "Snakefile",
        workdir=repo,
    )
    rules = [
        {
            "name": rule.name,
            "conda": None if rule.conda_env is None else str(rule.conda_env),
            "shell": rule.shellcmd,
            "script": rule.script,
            "snakefile": str(rule.snakefile),
        }
        for rule in workflow_api._workflow.rules
    ]
print("RULES-JSON:" + json.dumps(rules))
"""


# ---------------------------------------------------------------- workflow rules


@pytest.fixture(scope="module")
def workflow_rules() -> list[dict]:
    if not (REPO_ROOT / "Snakefile").is_file():
        pytest.skip("the workflow (Snakefile) is not in this checkout")
    result = subprocess.run(
        [sys.executable, "-c", RULES_SCRIPT, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    marker = [line for line in result.stdout.splitlines() if line.startswith("RULES-JSON:")]
    assert result.returncode == 0, f"loading the workflow failed:\n{result.stderr[-4000:]}"
    assert marker, f"the rule listing printed no RULES-JSON line:\n{result.stdout[-4000:]}"
    return json.loads(marker[0].removeprefix("RULES-JSON:"))


def rules_with_code(rules: list[dict]) -> list[dict]:
    """Rules that run something; target-only rules such as `all` need no environment."""
    return [rule for rule in rules if rule["shell"] or rule["script"]]


def env_path(rule: dict) -> Path:
    return (Path(rule["snakefile"]).parent / rule["conda"]).resolve()


def command_of(shell: str) -> tuple[str, ...]:
    """Return the subcommand words after `python -m helpnet.cli` in a shell command."""
    match = re.search(r"python -m helpnet\.cli((?:\s+[a-z][a-z0-9-]*)+)", shell)
    assert match, f"shell command does not run `python -m helpnet.cli`: {shell}"
    return tuple(match.group(1).split())


def test_every_rule_has_conda_env(workflow_rules: list[dict]) -> None:
    for rule in rules_with_code(workflow_rules):
        assert rule["conda"], f"rule {rule['name']} has no conda: directive"
        path = env_path(rule)
        assert path.is_file(), f"rule {rule['name']}: {path} does not exist"
        assert path.parent == ENVS_DIR, f"rule {rule['name']}: {path} is not in envs/"


def test_rule_commands_match_workflow(workflow_rules: list[dict]) -> None:
    rules = {rule["name"]: rule for rule in rules_with_code(workflow_rules)}
    assert sorted(rules) == sorted(RULE_COMMANDS)
    for name, rule in rules.items():
        words = command_of(rule["shell"])
        expected = RULE_COMMANDS[name]
        assert words[: len(expected)] == expected, (name, words)


# ---------------------------------------------------------------- environment files


def env_files() -> list[Path]:
    return sorted(ENVS_DIR.glob("*.yaml"))


def load_env(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a mapping")
    return document


def conda_specs(document: dict) -> list[MatchSpec]:
    return [MatchSpec(entry, strict=True) for entry in document["dependencies"] if isinstance(entry, str)]


def pip_requirements(document: dict) -> list[Requirement]:
    requirements: list[Requirement] = []
    for entry in document["dependencies"]:
        if isinstance(entry, dict):
            requirements += [Requirement(line) for line in entry.get("pip", [])]
    return requirements


def provided_packages(document: dict) -> set[str]:
    names = {spec.name.normalized for spec in conda_specs(document)}
    names |= {requirement.name.lower() for requirement in pip_requirements(document)}
    for name in list(names):
        names |= PROVIDES.get(name, set())
    return names


def test_env_files_exist() -> None:
    names = sorted(path.name for path in env_files())
    assert names == ["data.yaml", "edges.yaml", "report.yaml", "train.yaml"]


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_file_is_valid(path: Path) -> None:
    document = load_env(path)
    assert set(document) <= {"name", "channels", "dependencies"}, sorted(document)
    assert document["name"] == f"helpnet-{path.stem}"

    channels = document["channels"]
    assert channels[0] == "conda-forge"
    assert "defaults" not in channels
    for channel in channels:
        assert Channel(channel).name == channel

    entries = document["dependencies"]
    assert all(isinstance(entry, str) or set(entry) == {"pip"} for entry in entries), entries
    specs = conda_specs(document)
    names = [spec.name.normalized for spec in specs]
    assert len(names) == len(set(names)), f"{path.name}: duplicate packages {names}"
    assert "python" in names
    for spec in specs:
        # Every package is pinned to at least a minor version.
        assert spec.version is not None, f"{path.name}: {spec} has no version"
        assert re.search(r"\d+\.\d+", str(spec.version)), f"{path.name}: {spec} is not pinned to a minor version"
    for requirement in pip_requirements(document):
        assert str(requirement.specifier).startswith("=="), f"{path.name}: pip {requirement} is not pinned"


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_pins_admit_tested_versions(path: Path) -> None:
    """The versions the test suite runs with satisfy each pin, so the envs match what CI tests."""
    checked = 0
    for spec in conda_specs(load_env(path)):
        name = spec.name.normalized
        if name == "python":
            installed = ".".join(str(part) for part in sys.version_info[:3])
        else:
            distribution = DISTRIBUTION_OF_CONDA_PACKAGE.get(name, name)
            try:
                installed = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
        # A local version label such as torch's "+cpu" names the wheel's build, not the release.
        release = installed.split("+")[0]
        assert VersionSpec(spec.version).matches(Version(release)), f"{path.name}: {spec} does not admit installed {name} {release}"
        checked += 1
    assert checked > 0


# ---------------------------------------------------------------- imports of the code each rule runs


def module_file(module: str) -> Path | None:
    """Return the source file of a helpnet module or package, or None if it does not exist."""
    parts = module.split(".")
    package_init = SRC.joinpath(*parts, "__init__.py")
    if package_init.is_file():
        return package_init
    plain = SRC.joinpath(*parts[:-1], parts[-1] + ".py")
    return plain if plain.is_file() else None


def submodules(package: str) -> list[str]:
    directory = SRC.joinpath(*package.split("."))
    return sorted(f"{package}.{path.stem}" for path in directory.glob("*.py") if path.stem != "__init__")


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.Module, module_level_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """Collect import statements; with module_level_only, skip function bodies (run later, if ever)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                continue
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


@cache
def imported_names(module: str, module_level_only: bool) -> frozenset[str]:
    """Return the absolute dotted names a helpnet module imports (modules and `from` targets)."""
    path = module_file(module)
    assert path is not None, f"module {module} not found under src/"
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in _import_nodes(tree, module_level_only):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            package_parts = module.split(".") if is_package else module.split(".")[:-1]
            base_parts = package_parts[: len(package_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names.add(base)
        # `from package import name` may import the submodule package.name.
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def import_closure(start: list[str], module_level_only: bool) -> tuple[set[str], set[str]]:
    """Follow helpnet imports from START; return (helpnet modules reached, other dotted imports)."""
    seen: set[str] = set()
    external: set[str] = set()
    queue = list(start)
    while queue:
        module = queue.pop()
        if module in seen:
            continue
        seen.add(module)
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        parts = module.split(".")
        queue += [".".join(parts[:i]) for i in range(1, len(parts))]
        # Loading by name happens inside functions, so it counts only in the full closure.
        if module in DYNAMIC_IMPORTS and not module_level_only:
            queue += submodules(DYNAMIC_IMPORTS[module])
        for name in imported_names(module, module_level_only):
            if name.split(".")[0] == "helpnet":
                if module_file(name) is not None:
                    queue.append(name)
            else:
                external.add(name)
    return seen, external


def stage_modules() -> list[str]:
    """Read STAGE_MODULES from src/helpnet/cli.py without importing it."""
    tree = ast.parse((SRC / "helpnet" / "cli.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "STAGE_MODULES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("STAGE_MODULES not found in src/helpnet/cli.py")


def handler_modules(command: tuple[str, ...]) -> set[str]:
    """Return the modules of the handlers behind one subcommand, from the real argument parser."""
    from helpnet.cli import build_parser

    parser = build_parser()
    for word in command:
        subparsers = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        assert subparsers, f"helpnet {' '.join(command)}: {word!r} is not a subcommand"
        assert word in subparsers[0].choices, f"helpnet has no subcommand {' '.join(command)}"
        parser = subparsers[0].choices[word]
    handlers = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        function = current.get_default("func")
        if function is not None:
            handlers.add(function.__module__)
        for action in current._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                pending += list(action.choices.values())
    assert handlers, f"helpnet {' '.join(command)} sets no handler (func)"
    return handlers


def conda_packages_for(dotted_imports: set[str]) -> set[str]:
    packages: set[str] = set()
    for name in dotted_imports:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__" or top == "":
            continue
        assert top in CONDA_PACKAGE_OF_IMPORT, (
            f"import {name!r} has no conda package in CONDA_PACKAGE_OF_IMPORT of tests/test_envs.py; add it there "
            "and to the environment files of the rules that run it"
        )
        packages.add(CONDA_PACKAGE_OF_IMPORT[top])
        for prefix, extra in EXTRA_PACKAGES_OF_IMPORT.items():
            if name == prefix or name.startswith(prefix + "."):
                packages.add(extra)
    return packages


def required_packages(command: tuple[str, ...]) -> set[str]:
    """conda packages that `python -m helpnet.cli COMMAND` imports.

    helpnet.cli imports every stage module before it parses the arguments, so the module-level
    imports of all stages count for every rule; the handler's own modules count in full,
    including imports inside functions.
    """
    _, at_start = import_closure(["helpnet.cli", *stage_modules()], module_level_only=True)
    _, in_handler = import_closure(sorted(handler_modules(command)), module_level_only=False)
    return conda_packages_for(at_start | in_handler)


def test_dynamic_importers_are_listed() -> None:
    """A new importlib.import_module call must be added to DYNAMIC_IMPORTS (helpnet.cli is handled)."""
    for path in sorted((SRC / "helpnet").rglob("*.py")):
        relative = path.relative_to(SRC).with_suffix("")
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        if "import_module(" in path.read_text() and module != "helpnet.cli":
            assert module in DYNAMIC_IMPORTS, f"{path} imports modules by name; list it in DYNAMIC_IMPORTS"


def test_import_scan_finds_known_imports() -> None:
    """The scanner itself: module-level vs. function-level imports and relative imports."""
    _, module_level = import_closure(["helpnet.data.readers"], module_level_only=True)
    _, everything = import_closure(["helpnet.data.readers"], module_level_only=False)
    assert "numpy" in {name.split(".")[0] for name in everything}
    assert module_level <= everything
    # The reader registry loads its readers by name inside get_reader(); DYNAMIC_IMPORTS makes
    # them count when the whole handler counts, and only then.
    at_import, _ = import_closure(["helpnet.data.readers"], module_level_only=True)
    at_run, _ = import_closure(["helpnet.data.readers"], module_level_only=False)
    assert "helpnet.data.readers.chaos" not in at_import
    assert set(submodules("helpnet.data.readers")) <= at_run


def test_each_env_provides_rule_imports(workflow_rules: list[dict]) -> None:
    for rule in rules_with_code(workflow_rules):
        command = RULE_COMMANDS[rule["name"]]
        document = load_env(env_path(rule))
        missing = required_packages(command) - provided_packages(document)
        assert not missing, (
            f"rule {rule['name']} runs `helpnet {' '.join(command)}`, which imports {sorted(missing)}; "
            f"add them to {env_path(rule).relative_to(REPO_ROOT)}"
        )


# ---------------------------------------------------------------- container


def definition_section(text: str, name: str) -> str:
    """Return the body of one %section of an Apptainer definition file."""
    match = re.search(rf"^%{name}[ \t]*\n(.*?)(?=^%\w|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"{CONTAINER_DEF} has no %{name} section"
    return match.group(1)


def test_container_definition() -> None:
    text = CONTAINER_DEF.read_text()
    header: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("%"):
            break
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip()
    assert header["Bootstrap"] == "docker"
    # A CUDA runtime image from NVIDIA, with cuDNN, pinned to a release.
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+(\.\d+)?-cudnn\d*-runtime-ubuntu\d+\.\d+", header["From"]), header["From"]
    sections = set(re.findall(r"^%(\w+)", text, flags=re.MULTILINE))
    assert {"files", "post", "environment", "runscript", "test", "labels"} <= sections
    post = definition_section(text, "post")
    # A pinned torch (the CUDA build from PyPI) first, then the package from the copied sources.
    assert re.search(r"pip install [^\n]*torch==\d+\.\d+\.\d+", post), post
    assert re.search(r"pip install [^\n]*/opt/helpnet\s*$", post, flags=re.MULTILINE), post
    assert post.index("torch==") < post.index("/opt/helpnet\n")
    files = definition_section(text, "files")
    assert "src /opt/helpnet/src" in files
    assert "pyproject.toml /opt/helpnet/pyproject.toml" in files


def test_container_torch_matches_tested_version() -> None:
    pinned = re.search(r"torch==(\d+\.\d+\.\d+)", CONTAINER_DEF.read_text()).group(1)
    installed = importlib.metadata.version("torch").split("+")[0]
    assert pinned == installed
