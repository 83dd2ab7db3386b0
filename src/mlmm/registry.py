"""Name → factory registries (timm style) for methods, datasets and missingness models."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
            raise unknown_name_error(self.kind, name, self._entries)
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
