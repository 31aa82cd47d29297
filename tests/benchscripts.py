"""The benchmark scripts (benchmarks/NAME.py) loaded as modules, for the tests of their parts."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    """benchmarks/<name>.py, run as a module (its ``main`` not called) under the name benchmarks_<name>. A script
    imports the scripts beside it (quality_cuts imports quality_search), as it does when run from benchmarks/:
    that folder is on sys.path while it loads. The module is in sys.modules from before it runs, as an imported
    one is (a dataclass looks its module up there)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
