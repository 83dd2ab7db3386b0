"""The docs point at things that exist: every relative link and ``#anchor`` of README.md,
docs/*.md and benchmarks/README.md resolves, every documented ``mlmm COMMAND --option``
is an option of that command, the contract-suite table lists every check, and the snippets
the other docs tests leave out (README's estimator, distributed.md's torchrun script) run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks/README.md"]
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    out: set[str] = set()
    seen: dict[str, int] = {}
    for match in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", text, flags=re.MULTILINE):
        slug = _slug(match.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")  # a repeated heading gets -1, -2, ...
    return out | set(re.findall(r'<a (?:name|id)="([^"]+)"', text))


def _links(page: Path) -> list[str]:
    """The targets of ``[text](target)`` outside code blocks and inline code."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_the_anchor_rule_is_githubs():
    assert _slug("From the command line: a CSV or Parquet table (`--data`)") == (
        "from-the-command-line-a-csv-or-parquet-table---data"
    )
    assert _slug("Grouped data: several samples per patient or subject") == (
        "grouped-data-several-samples-per-patient-or-subject"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for url in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", url):  # https:, mailto: ...
            continue
        path, _, anchor = url.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{url} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{url} (no heading with that anchor in {target.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def _documented_commands() -> list[tuple[str, str]]:
    """``(page, command line)`` for every ``mlmm ...`` in a bash block or an inline code span."""
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        lines = []
        for block in re.findall(r"^```(?:bash|sh|console)\n(.*?)^```", text, re.DOTALL | re.M):
            lines += block.splitlines()
        lines += re.findall(r"`(mlmm [^`\n]+)`", FENCE.sub("", text))
        for line in lines:
            for part in re.split(r"[;|]|&&|\s#\s", line):
                found = re.search(r"(?:^|\s)(mlmm\s.*)", part)
                if found:
                    out.append((page.name, found.group(1).strip()))
    return out


def test_documented_commands_use_existing_options():
    import typer.main

    from mlmm import cli

    group = typer.main.get_command(cli.app)

    def options(command) -> set[str]:
        return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}

    commands = _documented_commands()
    assert len(commands) > 20, "the documented commands were not found"
    wrong = []
    for page, line in commands:
        try:
            words = shlex.split(line)[1:]
        except ValueError:  # an unbalanced quote in prose: split on spaces
            words = line.split()[1:]
        while words and words[0].startswith("-"):  # global options, e.g. --plugin MODULE
            option = words.pop(0)
            if option not in options(group):
                wrong.append(f"{page}: mlmm has no global option {option}: {line}")
            elif option == "--plugin" and words:
                words.pop(0)
        if not words or words[0] in ("...", "COMMAND"):
            continue
        command = group.commands.get(words[0])
        if command is None:
            wrong.append(f"{page}: no command {words[0]!r}: {line}")
            continue
        known = options(command)
        for word in words[1:]:
            option = word.split("=")[0]
            if re.fullmatch(r"--[a-z][a-z0-9-]*", option) and option not in known:
                wrong.append(f"{page}: mlmm {words[0]} has no option {option}: {line}")
    assert not wrong, "\n".join(wrong)


def test_contract_table_lists_every_check():
    from mlmm.testing import CHECKS

    text = (ROOT / "docs/developer.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `(check_\w+)` \|", text, flags=re.MULTILINE)
    assert sorted(listed) == sorted(check.__name__ for check in CHECKS)


def test_the_readme_estimator_snippet_runs(tmp_path):
    """The README's scikit-learn snippet runs as written after the tour's ``import mlmm`` (it
    once used ``X_img``, ``y``... that no line defined)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)
    [block] = [b for b in blocks if "MissingModalityClassifier" in b]
    script = tmp_path / "readme_estimator.py"
    script.write_text("import mlmm\n" + block, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"the README's estimator snippet failed:\n{done.stderr[-3000:]}"


def test_the_torchrun_snippet_trains_and_saves(tmp_path):
    """docs/distributed.md's script, started as it says (torchrun, 2 CPU processes), saves one
    artifact (it once used ``mlmm``, ``model`` and ``split`` that no line defined)."""
    text = (ROOT / "docs/distributed.md").read_text(encoding="utf-8")
    [block] = re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    script = tmp_path / "train_ddp.py"
    script.write_text(block, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_CPP_LOG_LEVEL": "ERROR"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [*command, "--nproc-per-node", "2", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"the torchrun snippet failed:\n{done.stderr[-3000:]}"
    assert (tmp_path / "runs/model/mlmm-artifact.json").is_file()


def test_the_codebase_map_names_every_module():
    """docs/developer.md's codebase map names every module but the one-file-per-method files
    (methods/<family>/), which methods.md covers."""
    text = (ROOT / "docs/developer.md").read_text(encoding="utf-8")
    codebase_map = re.findall(r"^```text\n(src/mlmm/.*?)^```", text, flags=re.DOTALL | re.M)[0]
    package = ROOT / "src/mlmm"
    families = {"imputation", "representation", "architecture", "combination", "reference"}
    unnamed = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        and not (path.parent.parent == package / "methods" and path.parent.name in families)
        and path.name not in codebase_map
    ]
    assert not unnamed, f"docs/developer.md's codebase map does not name {unnamed}"


def test_documented_benchmark_scripts_take_their_options():
    """``python benchmarks/NAME.py --option`` in README.md, docs/*.md and benchmarks/README.md:
    the script exists and declares the option (its argparse ``"--option"``)."""
    pages = PAGES
    pattern = re.compile(r"python (?:-m )?(benchmarks/\w+\.py)([^`#|;\n]*)")
    found = 0
    wrong = []
    for page in pages:
        for script, arguments in pattern.findall(page.read_text(encoding="utf-8")):
            found += 1
            path = ROOT / script
            if not path.is_file():
                wrong.append(f"{page.name}: no {script}")
                continue
            source = path.read_text(encoding="utf-8")
            for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", arguments):
                if f'"{option}"' not in source:
                    wrong.append(f"{page.name}: {script} has no option {option}")
    assert found > 5, "the documented benchmark commands were not found"
    assert not wrong, "\n".join(wrong)


def _resolves(name: str) -> bool:
    """Whether ``mlmm.a.b.c`` names a module or an attribute reachable from one."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def test_documented_mlmm_names_exist():
    """Every ``mlmm.dotted.name`` the docs quote in code is importable (a rename shows here)."""
    names = {
        (page.name, name)
        for page in PAGES
        for name in re.findall(r"`(mlmm(?:\.[A-Za-z_]\w*)+)", page.read_text(encoding="utf-8"))
    }
    assert len(names) > 50, "the documented names were not found"
    missing = sorted(f"{page}: {name}" for page, name in names if not _resolves(name))
    assert not missing, f"documented names that do not exist: {missing}"
