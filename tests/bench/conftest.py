"""A tiny benchmark spec shared by the bench tests (seconds per run)."""

import pytest

TINY_YAML = """\
name: tiny
datasets:
  synthetic: {n_samples: 240}
methods:
  late-fusion: {}
  zero-impute: {}
missing:
  - train: mcar:0.5
    test: [none, mcar:0.5]
seeds: [0, 1]
budget: {max_epochs: 2}
"""


@pytest.fixture
def tiny_spec_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path
