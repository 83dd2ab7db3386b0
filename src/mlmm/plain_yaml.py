"""Reading YAML as plain data: no code, no aliases, no duplicate keys, bounded size.

Benchmark specs and ``--param key=value`` values are YAML. PyYAML's ``safe_load`` never runs
code, but it still expands aliases before anything is validated (a 700-byte "billion laughs"
document grows to gigabytes), lets a repeated key silently replace the first one, and reads
``1e-3`` as a string. :class:`PlainLoader` refuses anchors and aliases while composing (so
nothing is ever expanded), refuses repeated keys naming both lines, bounds the nesting depth,
and reads ``1e-3`` as a number, as YAML 1.2 does.

Examples
--------
>>> load_yaml("lr: 1e-3\\nseeds: [0, 1]")
{'lr': 0.001, 'seeds': [0, 1]}
>>> load_yaml("a: &x [1]\\nb: *x")
Traceback (most recent call last):
...
mlmm.errors.MlmmError: <yaml>, line 1: not valid YAML: anchors (&name) and aliases (*name) are not allowed; write each value out
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mlmm.errors import MlmmError

#: The largest YAML file read (bytes); a benchmark spec is a few kilobytes.
MAX_BYTES = 1_000_000
#: The deepest nesting of lists and mappings accepted.
MAX_DEPTH = 64

_NO_ALIASES = "anchors (&name) and aliases (*name) are not allowed; write each value out"


class PlainLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors, aliases, repeated keys and deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, _NO_ALIASES, event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {first} and {line}); keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 reads 1e-3 and 1E5 as numbers; YAML 1.1 (PyYAML) needs a dot and a signed exponent
PlainLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def compose_yaml(text: str, source: str = "<yaml>") -> tuple[Any, yaml.Node | None]:
    """Parse ``text`` into plain data and its composed node tree (for line numbers).

    Raises
    ------
    MlmmError
        One line naming ``source``, the line and the problem.
    """
    loader = PlainLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise MlmmError(f"{source}{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    return data, node


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse ``text`` into plain data (see :class:`PlainLoader`); errors are one line."""
    return compose_yaml(text, source)[0]


def read_yaml_text(path: str | Path, what: str = "YAML file") -> str:
    """The text of a UTF-8 file of at most :data:`MAX_BYTES` bytes (regular files only)."""
    path = Path(path)
    if not path.is_file():
        raise MlmmError(f"no {what} at {str(path)!r}; give the path of a YAML file")
    with open(path, "rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise MlmmError(
            f"{path}: a {what} is at most {MAX_BYTES:,} bytes, this one is larger; "
            "is it the right file?"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise MlmmError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save the file as UTF-8"
        ) from None
