"""The command scripts (recipes/, experiments/, benchmarks/) as modules, so that tests call their `main`
in the test's process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_recipe(name: str, folder: str = "recipes") -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
