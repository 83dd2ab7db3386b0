"""Fixtures of the ``auto`` tests: the benchmark scripts, imported as modules."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _script(filename: str, name: str) -> ModuleType:
    """``benchmarks/<filename>`` as the module ``name`` (it imports ``_common`` beside it)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="module")
def auto_script() -> ModuleType:
    """benchmarks/auto.py."""
    return _script("auto.py", "auto_benchmark")


@pytest.fixture(scope="module")
def tuning() -> ModuleType:
    """benchmarks/auto_tuning.py."""
    return _script("auto_tuning.py", "auto_tuning")
