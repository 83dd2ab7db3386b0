"""Name → factory registries (timm style) for methods, datasets and missingness models."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from mlmm.errors import MlmmError, unknown_name_error

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object and the data that describes it (family, paper, ...)."""

    name: str
    obj: T
    info: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A named collection; duplicate names raise, unknown names suggest the closest ones.

    Parameters
    ----------
    kind : str
        What is registered ("method", "dataset"), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with descriptive ``info``."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise MlmmError(f"{self.kind} {name!r} is already registered; pick another name")
            self._entries[name] = Entry(name, obj, dict(info))
            return obj

        return decorator

    def get(self, name: str) -> Entry[T]:
        """Return the entry for ``name`` or raise with the closest names."""
        if name not in self._entries:
            err = unknown_name_error(self.kind, name, self._entries)
            if "Did you mean" not in str(err):  # no typo in sight: maybe one of the user's own
                err = MlmmError(
                    f"{err} A {self.kind} of your own registers when its module is imported: "
                    "import it first, or name it with mlmm --plugin MODULE"
                )
            raise err
        return self._entries[name]

    def names(self, pattern: str = "*", **filters: Any) -> list[str]:
        """Sorted names matching a shell-style ``pattern`` and ``info`` equality filters."""
        out = []
        for entry in self._entries.values():
            if not fnmatch.fnmatch(entry.name, pattern):
                continue
            if any(entry.info.get(k) != v for k, v in filters.items() if v is not None):
                continue
            out.append(entry.name)
        return sorted(out)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)


#: Environment variable mapping plugin packages imported from a folder (not from sys.path) to
#: that folder, as JSON; benchmark workers, which inherit the environment, import them from
#: the same place.
PLUGIN_FOLDERS_ENV = "MLMM_PLUGIN_FOLDERS"

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def load_plugins(modules: Iterable[str], folders: Iterable[str | Path] = ()) -> None:
    """Import modules that register methods, datasets, missingness models or backbones.

    Registration happens when a module is imported (``@register_method`` and its kin), so a
    plugin is any importable module doing that at import time: ``mlmm --plugin my_lab.methods
    train --method my-method ...``, or ``plugins: [my_lab.methods]`` in a benchmark spec (then
    every benchmark worker imports it too). A module is imported once per process.

    Parameters
    ----------
    modules : iterable of str
        Module names (``my_lab.methods``), never paths.
    folders : iterable of str or Path
        Folders searched for these modules (their top-level package) before ``sys.path``,
        without adding the folders to ``sys.path``: only the modules named here are looked
        for there. The CLI passes the current folder for ``--plugin``, and a spec's folder for
        its ``plugins``. Workers of a benchmark import the same files (through the
        environment variable ``MLMM_PLUGIN_FOLDERS``).

    Examples
    --------
    >>> load_plugins(["json"])  # any importable module; this one registers nothing
    >>> load_plugins(["no_such_module"])
    Traceback (most recent call last):
    ...
    mlmm.errors.MlmmError: plugin 'no_such_module' could not be imported (ModuleNotFoundError: No module named 'no_such_module'); install it, or put its folder on PYTHONPATH
    """
    folders = [Path(f) for f in folders]
    for module in modules:
        if not isinstance(module, str) or not _MODULE_NAME.fullmatch(module):
            raise MlmmError(f"a plugin is a module name such as 'my_lab.methods', got {module!r}")
        try:
            _import_plugin(module, folders)
        except MlmmError:
            raise
        except Exception as err:  # a plugin's own bug surfaces as one line naming the plugin
            raise MlmmError(
                f"plugin {module!r} could not be imported ({type(err).__name__}: {err}); "
                f"{_plugin_fix(module, err)}"
            ) from None


def _plugin_fix(module: str, err: Exception) -> str:
    """The fix for a plugin that failed to import: not found, a dependency not found, or an
    error raised by the plugin's own code (which installing it again would not fix)."""
    if (
        isinstance(err, ModuleNotFoundError)
        and err.name
        and (module + ".").startswith(err.name + ".")
    ):
        if module.endswith(".py"):
            return f"give the module's name, {module[:-3]!r}, not its file name"
        return "install it, or put its folder on PYTHONPATH"
    if isinstance(err, ModuleNotFoundError) and err.name:
        return f"install {err.name!r}, which the plugin imports"
    return f"the plugin's own code raised it; fix it (python -c 'import {module}' shows where)"


def _import_plugin(module: str, folders: list[Path]) -> None:
    """Import ``module``, its top-level package first from ``folders`` or the recorded ones."""
    top = module.partition(".")[0]
    if top not in sys.modules:
        recorded = json.loads(os.environ.get(PLUGIN_FOLDERS_ENV) or "{}")
        candidates = [*folders, *([Path(recorded[top])] if top in recorded else [])]
        for folder in candidates:
            spec = importlib.machinery.PathFinder.find_spec(top, [str(folder)])
            if spec is None or (spec.loader is None and _regular_on_sys_path(top)):
                continue  # as Python does, a plain folder yields to a real package anywhere
            package = importlib.util.module_from_spec(spec)
            sys.modules[top] = package
            try:
                if spec.loader is not None:  # None: a namespace package (a folder, no code)
                    spec.loader.exec_module(package)
            except BaseException:
                sys.modules.pop(top, None)
                raise
            recorded[top] = str(folder.resolve())
            os.environ[PLUGIN_FOLDERS_ENV] = json.dumps(recorded)
            break
    importlib.import_module(module)


def _regular_on_sys_path(name: str) -> bool:
    """Whether ``sys.path`` holds a module or package ``name`` with code (not a bare folder)."""
    spec = importlib.machinery.PathFinder.find_spec(name)
    return spec is not None and spec.loader is not None
