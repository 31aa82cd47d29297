"""The layer contract (pyproject's [tool.importlinter]) and the rules an import graph cannot show."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LIBRARY = REPO / "scaleout"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """lint-imports over the ``scaleout`` package found first under ``root``, with ``root``'s pyproject."""
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, cwd=root, env={"PYTHONPATH": str(root), "PATH": ""})


def modules():
    for path in sorted(LIBRARY.rglob("*.py")):
        yield path.relative_to(REPO), ast.parse(path.read_text(), str(path))


def stage(module: str) -> str:
    """The stage (or bottom module) a dotted module belongs to: scaleout.train.model -> scaleout.train."""
    return ".".join(module.split(".")[:2])


def test_the_library_keeps_its_layers_and_has_no_import_cycle():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_or_a_cycle_breaks_the_contract(tmp_path):
    shutil.copytree(LIBRARY, tmp_path / "scaleout", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "scaleout" / "data" / "dataset.py", "a") as f:  # a lazy import counts too
        f.write("\n\ndef _upward():\n    from scaleout.serve.seen import SeenItems  # noqa: F401\n")
    with open(tmp_path / "scaleout" / "train" / "ray_backend.py", "a") as f:
        f.write("\n\ndef _circle():\n    from scaleout.train.run import train_run  # noqa: F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "scaleout.data.dataset -> scaleout.serve.seen" in result.stdout
    assert "No cycles are allowed in scaleout.train" in result.stdout and ".run -> .ray_backend" in result.stdout


def test_only_the_command_line_parses_options_and_only_the_pipeline_connects_to_ray():
    for path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if "argparse" in names:
                    assert path.parts[:2] == ("scaleout", "cli"), f"{path}: imports argparse"
            if isinstance(node, ast.Attribute) and node.attr == "init" and getattr(node.value, "id", "") == "ray":
                assert path == Path("scaleout/pipeline.py"), f"{path}:{node.lineno}: calls ray.init"


def test_stages_use_each_other_only_through_public_names_and_tensorflow_only_through_tfenv():
    for path, tree in modules():
        here = stage(".".join(path.with_suffix("").parts))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scaleout."):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private or stage(node.module) == here, \
                    f"{path}:{node.lineno}: imports {private} from another stage's {node.module}"
            if isinstance(node, (ast.Import, ast.ImportFrom)) and path != Path("scaleout/tfenv.py"):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("tensorflow", "tensorflow_recommenders") for n in names), \
                    f"{path}:{node.lineno}: imports TensorFlow directly; use scaleout.tfenv"
