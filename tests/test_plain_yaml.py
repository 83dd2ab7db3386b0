"""Plain YAML: no anchors or aliases, no repeated keys, bounded depth and size, YAML 1.2 numbers."""

from __future__ import annotations

import math
import os

import pytest

from mlmm.errors import MlmmError
from mlmm.plain_yaml import MAX_BYTES, compose_yaml, load_yaml, read_yaml_text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1e-3", 0.001),
        ("1E5", 100000.0),
        ("-2.5e+2", -250.0),
        ("1.0e-3", 0.001),
        ("12", 12),
        ("1_000", 1000),
        (".nan", "nan"),
        ("1e", "1e"),
        ("e5", "e5"),
        ("v1e5", "v1e5"),
        ("[1e-1, {a: 2e0}]", [0.1, {"a": 2.0}]),
        ("true", True),
    ],
)
def test_scalars_read_as_yaml_1_2_numbers(text, expected):
    value = load_yaml(text)
    if expected == "nan":
        assert math.isnan(value)
    else:
        assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("a: &x 1\nb: 2\n", "line 1: not valid YAML: anchors (&name) and aliases (*name)"),
        ("a: [1]\nb: *x\n", "line 2: not valid YAML: anchors"),
        ("a: 1\nb: 2\na: 3\n", "line 3: not valid YAML: key 'a' is given twice (lines 1 and 3)"),
        ("m: {k: 1, k: 2}\n", "key 'k' is given twice"),
        ("[" * 65 + "]" * 65, "nested more than 64 levels deep"),
        ("a: !!python/object:os.system {}\n", "not valid YAML"),
        ("a: [1,\n", "not valid YAML"),
    ],
)
def test_what_plain_data_refuses_is_one_line(text, phrase):
    with pytest.raises(MlmmError) as err:
        load_yaml(text, "spec.yaml")
    message = str(err.value)
    assert phrase in message and message.startswith("spec.yaml") and "\n" not in message


def test_nesting_up_to_the_limit_is_fine_and_the_node_tree_has_lines():
    assert load_yaml("[" * 64 + "]" * 64) is not None
    data, node = compose_yaml("a: 1\nb:\n  c: 2\n")
    assert data == {"a": 1, "b": {"c": 2}}
    assert [key.start_mark.line for key, _ in node.value] == [0, 1]
    assert compose_yaml("") == (None, None)


def test_files_are_bounded_utf8_regular_files(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * (MAX_BYTES - 5))
    assert read_yaml_text(path).startswith("a: 1")
    path.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(MlmmError, match="at most 1,000,000 bytes"):
        read_yaml_text(path)
    path.write_bytes(b"a: \xff\n")
    with pytest.raises(MlmmError, match=r"not UTF-8 text \(byte 0xff at offset 3\)"):
        read_yaml_text(path)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(MlmmError, match="no YAML file at"):
        read_yaml_text(fifo)  # never opened: reading a FIFO would block
