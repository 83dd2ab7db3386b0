"""The docs keep up with the code: every registered method and dataset has its section, the
documented defaults are the constructor's, the snippets run, and the method template works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.batch import MultimodalBatch
from mlmm.methods import METHODS, list_methods, method_hyperparameters
from mlmm.methods._template import MaskedMeanTemplate
from mlmm.testing import contract_dataset

DOCS = Path(__file__).resolve().parents[1] / "docs"
HEADING = re.compile(r"^### `([^`]+)`[ \t]*$", re.MULTILINE)


def _read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def _sections(page: str) -> dict[str, str]:
    """``### `name` `` heading -> its text, up to the next heading of level 1 to 3."""
    text = _read(page)
    out = {}
    for match in HEADING.finditer(text):
        rest = text[match.end() :]
        end = re.search(r"^#{1,3} ", rest, flags=re.MULTILINE)
        out[match.group(1)] = rest[: end.start()] if end else rest
    return out


# ---------------------------------------------------------------------- methods.md
def test_every_registered_method_has_a_section():
    missing = sorted(set(list_methods()) - set(_sections("methods.md")))
    assert not missing, f"docs/methods.md has no '### `name`' section for {missing}"


def test_every_method_section_is_a_registered_method():
    unknown = sorted(set(_sections("methods.md")) - set(list_methods()))
    assert not unknown, f"docs/methods.md documents methods that are not registered: {unknown}"


@pytest.mark.parametrize("name", list_methods())
def test_method_section_matches_the_registry(name):
    section = _sections("methods.md").get(name)
    if section is None:
        pytest.skip(
            f"no section for {name} (reported by test_every_registered_method_has_a_section)"
        )
    entry = METHODS.get(name)
    family_subtype = f"{entry.info['family']} / {entry.info['subtype']}"
    assert family_subtype in section, f"section {name!r} does not say {family_subtype!r}"
    for key, default in method_hyperparameters(name).items():
        written = f"`{key}={default!r}`"
        assert written in section, f"section {name!r} does not list {written} (the default)"


# ---------------------------------------------------------------------- datasets.md
def test_every_registered_dataset_has_a_section():
    missing = sorted(set(mlmm.list_datasets()) - set(_sections("datasets.md")))
    assert not missing, f"docs/datasets.md has no '### `name`' section for {missing}"


def test_every_dataset_section_is_a_registered_dataset():
    unknown = sorted(set(_sections("datasets.md")) - set(mlmm.list_datasets()))
    assert not unknown, f"docs/datasets.md documents datasets that are not registered: {unknown}"


# ---------------------------------------------------------------------- snippets
@pytest.mark.parametrize(
    "page",
    [
        "developer.md",
        "methods.md",
        "datasets.md",
        "benchmarks.md",
        "tuning.md",
        "deploy.md",
        "tasks.md",
        "missingness.md",
        "streams.md",
    ],
)
def test_python_snippets_run(page, tmp_path):
    """Every ```python block of the page, run in order as one script in a fresh process (so
    what a snippet registers does not leak into this test session)."""
    blocks = re.findall(r"^```python\n(.*?)^```", _read(page), flags=re.DOTALL | re.MULTILINE)
    assert blocks, f"docs/{page} has no python snippet"
    script = tmp_path / f"{Path(page).stem}_snippets.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"a snippet of docs/{page} failed:\n{done.stderr[-3000:]}"


def test_the_readme_validates_on_masked_data_as_run_experiment_does():
    """The README's step-by-step snippet once validated on an unmasked ``split.val`` while
    ``run_experiment`` masks it (docs/developer.md's snippet asserts both give one model)."""
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"^```python\n(.*?)^```", readme, flags=re.DOTALL | re.M))
    fits = re.findall(r"Trainer\(.*?\)\.fit\(model, (\w+), ([\w.]+)\)", code)
    assert fits, "the README has no step-by-step Trainer(...).fit(model, train, val)"
    for train, val in fits:
        assert not val.startswith("split."), f"validates on unmasked {val}"
        assert re.search(
            rf"{val}, _ = mlmm\.simulate\(split\.val, .*rng_for\(0, \"val-mask\"\)", code
        )
        assert re.search(rf"{train}, \w+ = mlmm\.simulate\(split\.train, .*\"train-mask\"", code)


# ---------------------------------------------------------------------- shell commands
def _shell_lines() -> list[tuple[str, str]]:
    """``(page, line)`` for every line of the ```bash blocks of README.md and docs/*.md."""
    pages = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
    out = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"^```(?:bash|sh|console)\n(.*?)^```", text, re.DOTALL | re.M):
            out += [(page.name, line) for line in block.splitlines() if line.strip()]
    return out


def test_shell_commands_are_not_cut_by_a_redirect():
    """``--missing mcar:0.5,none=>mcar:0.5`` unquoted writes a file named ``mcar:0.5``: a
    documented command has no ``>`` outside quotes (the shell's own redirects aside)."""
    import shlex

    assert any("=>" in line for _, line in _shell_lines()), "no documented TRAIN=>TEST command"
    for page, line in _shell_lines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.commenters = "#"
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if ">" in token:
                assert not tokens[i - 1].endswith("="), f"{page}: {line!r} is cut at '>'"


def test_help_texts_quote_train_test_conditions(monkeypatch, capsys):
    from mlmm import cli

    monkeypatch.setenv("COLUMNS", "240")  # no help line cut short
    for command in ("train", "bench"):
        monkeypatch.setattr(sys, "argv", ["mlmm", command, "--help"])
        with pytest.raises(SystemExit):
            cli.main()
        words = [w.strip("(),.") for w in capsys.readouterr().out.split() if "=>" in w]
        assert words and all(w[0] == w[-1] == "'" for w in words), words


# ---------------------------------------------------------------------- the template
def test_template_is_not_registered():
    assert MaskedMeanTemplate not in [entry.obj for entry in METHODS]
    assert MaskedMeanTemplate.method_name == ""


def test_template_answers_every_presence_pattern():
    data = contract_dataset()
    model = MaskedMeanTemplate(data.specs, data.task, embed_dim=16, hidden=32).eval()
    assert model.get_hyperparameters() == {
        "embed_dim": 16,
        "hidden": 32,
        "depth": 1,
        "dropout": 0.1,
        "modality_dropout": 0.3,
    }
    m = data.n_modalities
    patterns = [[True] * m] + [[i == j for i in range(m)] for j in range(m)]
    for pattern in patterns:
        present = np.tile(np.array(pattern), (data.n_samples, 1))
        batch = MultimodalBatch.from_dataset(data.with_presence(present))
        with torch.no_grad():
            out = model(batch)
        assert out.prediction.shape == (data.n_samples, data.task.n_classes)
        assert out.embedding.shape == (data.n_samples, 16)
        assert torch.isfinite(out.prediction).all() and torch.isfinite(out.loss)


def test_template_ignores_absent_rows():
    data = contract_dataset()
    model = MaskedMeanTemplate(data.specs, data.task).eval()
    present = np.arange(data.n_samples)[:, None] % 3 != np.arange(3)[None, :]  # one missing per row
    clean = MultimodalBatch.from_dataset(data.with_presence(present))
    noisy = {}
    for j, name in enumerate(data.modality_names):
        x = clean.inputs[name].clone()
        absent = torch.from_numpy(~present[:, j])
        x[absent] = 100 * torch.randn_like(x[absent])
        noisy[name] = x
    with torch.no_grad():
        a = model(clean).prediction
        b = model(MultimodalBatch(noisy, clean.present, clean.modalities)).prediction
    torch.testing.assert_close(a, b)


def test_template_reset_parameters_redraws_its_own_parameter():
    data = contract_dataset()
    model = MaskedMeanTemplate(data.specs, data.task)
    torch.manual_seed(0)
    model.reset_parameters()
    first = model.modality_embedding.detach().clone()
    torch.manual_seed(1)
    model.reset_parameters()
    assert not torch.equal(first, model.modality_embedding)
    assert "modality_embedding" in model.state_dict()
