"""Finding the actor classes a user's module defines."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

from actors import Actor, SteleError


def load_module(name: str) -> ModuleType:
    """Import ``name``: a dotted module (from the working directory too) or a ``.py`` path."""
    if name.endswith(".py") or os.sep in name:
        path = os.path.abspath(name)
        if not os.path.exists(path):
            raise SteleError(f"no module file {path}")
        module_name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise SteleError(f"cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # annotations and msgspec need the module registered
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SteleError(f"cannot import module {name!r}: {exc}") from None


def actor_classes(module: ModuleType) -> list[type[Actor]]:
    """Every Actor subclass the module defines (not those it merely imports)."""
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Actor)
        and value is not Actor
        and value.__module__ == module.__name__
    ]
    if not found:
        raise SteleError(f"module {module.__name__} defines no Actor subclass")
    return found
