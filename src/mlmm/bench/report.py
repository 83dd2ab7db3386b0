"""The benchmark report: one self-contained HTML page built only from the runs and results tables.

Sections (stable ids): ``leaderboard``, ``robustness``, ``subsets``, ``bayes-gap``, ``efficiency``,
``taxonomy``, ``failures``, ``time-limited``, ``tuning``, ``reproduce``. Headings name the metric shown and its direction; the
first metric of the spec's ``metrics:`` that the results hold is the primary one (else accuracy
for classification, micro-F1 for multilabel, RMSE for regression; a multilabel leaderboard ranks
by micro-F1 or macro AUROC only). CSS is inline and plots are PNG data URIs drawn with matplotlib's Agg
canvas, so the file opens offline; a Content-Security-Policy forbids the page any other resource.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlmm.bench.tables import (
    bayes_gap_metric,
    format_value,
    one_reference_copy,
    superseded_keys,
    table_metrics,
)
from mlmm.errors import MlmmError
from mlmm.eval.metrics import LOWER_IS_BETTER, PERCENT_METRICS
from mlmm.utils import atomic_write

if TYPE_CHECKING:
    from mlmm.bench.store import ResultsStore

RUN_COLUMNS = (
    "run_key", "dataset", "method", "family", "subtype", "seed", "train_condition", "status",
    "error", "n_parameters", "n_models", "train_seconds", "latency_ms_per_sample", "threads",
    "machine", "version",
)  # fmt: skip
RESULT_COLUMNS = (
    "run_key", "dataset", "method", "seed", "train_condition", "condition", "slot_rate",
    "scope", "subset", "metric", "value",
)  # fmt: skip
BAYES = "bayes-optimal"
#: Metrics shown as percentages (one decimal); the others are printed with three decimals.
PERCENT = PERCENT_METRICS
#: How headings name each metric.
METRIC_NAMES = {
    "accuracy": "accuracy (%)",
    "macro_f1": "macro-F1 (%)",
    "auroc": "AUROC (%)",
    "ece": "ECE",
    "balanced_accuracy": "balanced accuracy (%)",
    "log_loss": "log loss",
    "brier": "Brier score",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "ccc": "CCC",
    "micro_f1": "micro-F1 (%)",
    "samples_f1": "samples-F1 (%)",
    "macro_auroc": "macro AUROC (%)",
}
#: Above this many modality subsets, the heatmap shows means by subset size and the worst and
#: best subsets; the full table is in a collapsible block below it.
MAX_HEATMAP_SUBSETS = 12
#: Worst and best subsets shown when the heatmap is reduced.
EXTREME_SUBSETS = 3

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em;
       color: #222; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; color: #444; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
nav a { margin-right: 1em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; white-space: nowrap; }
td.empty { background: #fbeaea; color: #a33; text-align: center; }
.failed { color: #a33; font-weight: 600; } .tie { color: #a60; } .cut { color: #a60; }
details { margin: .3em 0 1em; } summary { cursor: pointer; color: #335; }
pre.spec { background: #f7f7f7; padding: .6em; overflow-x: auto; max-width: 60em; }
.best { font-weight: 700; } .rank { color: #888; font-size: 85%; } .muted { color: #999; }
pre.error { white-space: pre-wrap; margin: 0; max-width: 60em; font-size: 90%; }
figure { margin: .5em 0 1.5em; } figure img { max-width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 90%; }
"""

# Marks <body data-render="ok"> once every figure decoded and nothing was blocked or failed,
# so a headless browser (the tests) can tell a page that rendered from one that did not.
SCRIPT = """
(function () {
  var problems = [];
  document.addEventListener("securitypolicyviolation", function (e) {
    problems.push("blocked " + e.blockedURI);
  });
  window.addEventListener("error", function (e) {
    problems.push(e.message || "failed to load " + (e.target.src || e.target.href));
  }, true);
  window.addEventListener("load", function () {
    Array.prototype.forEach.call(document.images, function (img) {
      if (!img.complete || img.naturalWidth === 0) problems.push("image not decoded: " + img.alt);
    });
    document.body.dataset.render = problems.length ? problems.join("; ") : "ok";
  });
})();
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


class _Html(str):
    """Markup already escaped, put into a table cell as is (with an optional CSS class)."""

    css = ""


def _html(markup: str, css: str = "") -> _Html:
    cell = _Html(markup)
    cell.css = css
    return cell


def _e(value: object) -> str:
    return html.escape(str(value))


def write_report(
    runs: pd.DataFrame,
    results: pd.DataFrame,
    path: str | Path,
    *,
    title: str = "mlmm benchmark",
    metrics: Sequence[str] | None = None,
    specs: pd.DataFrame | None = None,
    include_time_limited: bool = False,
    studies: pd.DataFrame | None = None,
) -> Path:
    """Write the benchmark report as one self-contained HTML file and return its path.

    Parameters
    ----------
    runs : pandas.DataFrame
        One row per run (``run_key, dataset, method, family, subtype, seed, train_condition,
        status, error, n_parameters, n_models, train_seconds, latency_ms_per_sample, threads,
        machine, version``).
    results : pandas.DataFrame
        The tidy results (``run_key, dataset, method, seed, train_condition, condition,
        slot_rate, scope, subset, metric, value``); rows of method ``bayes-optimal`` are the
        Bayes-optimal reference of the run they came with.
    path : str or Path
        The HTML file to write (atomically: a killed process leaves the previous file).
    title : str
    metrics : list of str, optional
        The metrics to show (a spec's ``metrics:``), the first the primary one that ranks the
        methods and draws the curves and heatmaps; metrics the results do not hold are skipped.
        Default: those of the latest spec in ``specs``, else the task's own.
    specs : pandas.DataFrame, optional
        :meth:`mlmm.bench.ResultsStore.specs` (``name, spec, command``): the "reproduce"
        section shows each spec and the command that ran it.
    include_time_limited : bool
        Also rank and plot the runs whose training the time limit cut short (column
        ``time_limited`` of ``runs``); by default they are only listed, in their own section.
    studies : pandas.DataFrame, optional
        The tuning studies of the runs (:func:`studies_table`): the "tuning" section shows,
        per tuned run, its trials and the best point it trained with.

    A run that a later run of the same (dataset, method, training condition, seed) replaced
    (:func:`mlmm.bench.tables.superseded_keys`: the spec changed between runs) is left out,
    and the page says how many.

    Returns
    -------
    pathlib.Path
    """
    _require(runs, RUN_COLUMNS, "runs")
    _require(results, RESULT_COLUMNS, "results")
    specs = specs if specs is not None else pd.DataFrame(columns=["name", "spec", "command"])
    if metrics is None:
        metrics = _spec_metrics(specs)
    # an earlier configuration of a (dataset, method, training condition, seed) that a later
    # run replaced (the spec changed between runs) is not averaged with it
    # (by the runs' finish times where they have them: the results know only their order)
    superseded = superseded_keys(runs)
    n_superseded = len(superseded)
    runs = runs[~runs.run_key.isin(superseded)]
    results = results[~results.run_key.isin(superseded)]
    limited = _time_limited_keys(runs)
    if not include_time_limited:
        results = results[~results.run_key.isin(limited)]
    results = one_reference_copy(results)
    families = dict(zip(runs.method, runs.family, strict=True)) | {BAYES: "Bayes-optimal"}
    colors = _colors(sorted(set(results.method) | set(runs.method)))
    sections = [
        ("leaderboard", "Leaderboard", _leaderboard(results, families, runs, metrics, limited)),
        ("robustness", "Robustness to test missingness", _robustness(results, colors, metrics)),
        ("subsets", "Scores per modality subset", _subsets(results, metrics)),
        ("bayes-gap", "Gap to the Bayes-optimal reference", _bayes_gap(results, families)),
        ("efficiency", "Efficiency", _efficiency(runs)),
        ("taxonomy", "Taxonomy coverage", _taxonomy(runs)),
        ("failures", "Failures", _failures(runs)),
        ("time-limited", "Time-limited runs", _time_limited(runs, include_time_limited)),
        ("tuning", "Tuning", _tuning(runs, studies)),
        ("reproduce", "Reproduce", _reproduce(specs)),
    ]
    nav = " ".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(
        f'<section id="{sid}">\n<h2>{_e(name)}</h2>\n{content}\n</section>'
        for sid, name, content in sections
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
<script>{SCRIPT}</script>
</head>
<body>
<header>
<h1>{_e(title)}</h1>
{_header(runs)}
{_superseded_note(n_superseded)}
<nav>{nav}</nav>
</header>
{body}
</body>
</html>
"""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fh.write(page.encode("utf-8"))
    return path


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise MlmmError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MlmmError(f"the {name} table lacks the column(s) {', '.join(missing)}")


# ---------------------------------------------------------------- formatting helpers


def _fmt(values: pd.Series, metric: str, count_undefined: bool = False) -> str:
    """Mean ± std (ddof 1) over seeds or runs, in the one format of each kind of number:
    accuracy-type metrics in percent with one decimal, other metrics with three decimals,
    seconds with one, milliseconds with three. NaN values are left out; with
    ``count_undefined`` the text then says over how many: ``"70.0 ± 14.1 (2 of 3)"``."""
    everything = pd.to_numeric(values, errors="coerce")
    values = everything.dropna()
    if count_undefined and len(values) < len(everything):
        text = _fmt(values, metric) if len(values) else "undefined"
        return f"{text} ({len(values)} of {len(everything)})"
    if values.empty:
        return "–"

    def one(value: float) -> str:
        if metric == "seconds":
            return f"{value:,.1f}"
        if metric == "milliseconds":
            return f"{value:,.3f}"
        return format_value(value, metric)

    text = one(values.mean())
    return text if len(values) == 1 else f"{text} ± {one(values.std(ddof=1))}"


def _label(metric: str) -> str:
    """The metric's name in headings and axes: ``accuracy (%)``, ``RMSE``..."""
    return METRIC_NAMES.get(metric, metric)


def _direction(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def _spec_metrics(specs: pd.DataFrame) -> list[str] | None:
    """The ``metrics:`` of the latest stored spec (None without one)."""
    import yaml

    if specs.empty:
        return None
    try:
        data = yaml.safe_load(specs.iloc[0]["spec"])
    except yaml.YAMLError:
        return None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    return [str(m) for m in metrics] if isinstance(metrics, list) else None


def _interval(values: pd.Series, metric: str, n: float | None) -> tuple[float, float] | None:
    """A 95% confidence interval of the mean over seeds: Student's t with two or more seeds;
    with one seed, Wilson's binomial interval over the ``n`` test samples for accuracy (a
    proportion of samples); None when neither applies."""
    from scipy import stats

    values = pd.to_numeric(values, errors="coerce").dropna()
    if len(values) >= 2:
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        low, high = values.mean() - half, values.mean() + half
        # within the metric's range: proportions in [0, 1], errors non-negative (the Brier
        # score at most 2), R² at most 1, the CCC in [-1, 1]
        if metric in PERCENT or metric == "ece":
            return max(low, 0.0), min(high, 1.0)
        if metric == "brier":
            return max(low, 0.0), min(high, 2.0)
        if metric in LOWER_IS_BETTER:
            return max(low, 0.0), high
        if metric == "ccc":
            return max(low, -1.0), min(high, 1.0)
        return (low, min(high, 1.0)) if metric == "r2" else (low, high)
    if len(values) == 1 and metric == "accuracy" and n is not None and n > 0:
        z, p = 1.959964, float(values.iloc[0])
        center = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return center - half, center + half
    return None


def _number(value: float, spec: str = ",.0f") -> str:
    return "–" if pd.isna(value) else format(value, spec)


def _table(rows: list[dict[str, object]], numeric: tuple[str, ...] = ()) -> str:
    """An HTML table of rows (column → cell); cells are escaped unless they are :class:`_Html`."""
    columns = list(rows[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            text = value if isinstance(value, _Html) else _e("" if value is None else value)
            css = getattr(value, "css", "") or ("num" if column in numeric else "")
            css = f' class="{css}"' if css else ""
            cells.append(f"<td{css}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _sorted_rows(rows: list[dict], *order: str) -> list[dict]:
    """``rows`` sorted by the fields ``order``, without the helper fields (``_name``) that are
    kept for sorting only."""
    rows = sorted(rows, key=lambda r: tuple(r[k] for k in order))
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def _trained_on(train_condition: pd.Series) -> pd.Series:
    """The training side of ``"TRAIN=>TEST"`` conditions."""
    return train_condition.astype(str).str.split("=>").str[0]


def _colors(methods: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    others = [m for m in methods if m != BAYES]
    return {m: cmap(i % cmap.N) for i, m in enumerate(others)} | {BAYES: (0, 0, 0, 1)}


def _figure(width: float, height: float):
    # A bare Figure draws with the Agg canvas without touching pyplot's global backend.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _img(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}"></figure>'


# ---------------------------------------------------------------- sections


def _header(runs: pd.DataFrame) -> str:
    status = runs.status.value_counts()
    others = sorted(set(status.index) - {"done", "failed"})  # running, pending
    counts = ", ".join(f"{status.get(s, 0)} {s}" for s in ["done", "failed", *others])
    items = {
        "Machine": ", ".join(sorted(map(str, runs.machine.dropna().unique()))) or "–",
        "mlmm version": ", ".join(sorted(map(str, runs.version.dropna().unique()))) or "–",
        "Date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "Runs": f"{len(runs)} ({counts})",
        "Datasets": ", ".join(sorted(map(str, runs.dataset.unique()))) or "–",
        "Methods": ", ".join(sorted(map(str, runs.method.unique()))) or "–",
        "Threads per run": ", ".join(sorted({str(int(t)) for t in runs.threads.dropna()})) or "–",
    }
    pairs = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items.items())
    return f'<dl class="meta">{pairs}</dl>'


def _superseded_note(n: int) -> str:
    if not n:
        return ""
    return _note(
        f"{n} run(s) left out: a later run of the same dataset, method, training condition and "
        "seed replaced each (its configuration changed between runs, or another spec ran "
        "into this store: hyperparameters, budget, dataset parameters or test conditions). "
        "mlmm export writes every stored row."
    )


def _overall(results: pd.DataFrame) -> pd.DataFrame:
    return results[results.scope == "overall"]


def _leaderboard(
    results: pd.DataFrame,
    families: dict[str, str],
    runs: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    limited: set[str] | None = None,
) -> str:
    overall = _overall(results)
    overall = overall[overall.method != BAYES]
    failed = runs[runs.status == "failed"]
    if overall.empty and failed.empty:
        return _note("No finished run: nothing to rank.")
    parts = [
        _note(
            "Overall test score on the primary metric (the spec's first metric; accuracy for "
            "classification, micro-F1 for multilabel, RMSE for regression), mean over seeds "
            "with its 95% confidence interval in brackets: Student's t over seeds when there are two or more; with one "
            "seed, Wilson's binomial interval over the test samples for accuracy, and no "
            "interval for other metrics. #k: rank in that column; the best of each column in "
            "bold; ≈: the interval overlaps the best's, a difference within noise (not a "
            "significance test). Tied means share the best rank (#1, #1, #3). Methods sorted by "
            "their mean rank over the columns in which every method with a score has one (a "
            "method missing a column is marked with how many it has, and sorted after "
            "those with the same mean rank and more columns). A seed whose score is "
            "undefined (NaN, e.g. a diverged model) is left out of the mean and the cell says "
            "so. Failed runs are shown as failed cells; runs a time limit cut short, when included, "
            "are counted in their cells (1 of 2 time-limited)."
        )
    ]
    datasets = sorted(set(overall.dataset) | set(failed.dataset))
    for dataset in datasets:
        d = overall[overall.dataset == dataset]
        shown = table_metrics(d, metrics) if not d.empty else []
        metric = shown[0] if shown else "accuracy"
        d = d[d.metric == metric].assign(
            setting=lambda x: "train " + x.train_condition.astype(str) + " → test " + x.condition
        )
        dataset_failed = failed[failed.dataset == dataset]
        parts.append(_ranking(d, metric, dataset, families, dataset_failed, limited or set()))
    return "\n".join(parts)


def _ranking(
    d: pd.DataFrame,
    metric: str,
    dataset: str,
    families: dict[str, str],
    failed: pd.DataFrame,
    limited: set[str] = frozenset(),
) -> str:
    """One dataset's leaderboard on ``metric``: one column per (training, test) condition;
    a cell with runs of ``limited`` (time-limited, shown when asked) says how many."""
    lower = metric in LOWER_IS_BETTER
    stats = (
        d.groupby(["setting", "method"]).value.mean().unstack("setting")
        if not d.empty
        else pd.DataFrame(dtype=float)
    )  # [methods, settings]
    # columns: training conditions in the order they came, then by test missing rate
    trains = {t: i for i, t in enumerate(pd.unique(d.train_condition))}
    columns = d.groupby("setting").agg(
        train=("train_condition", "first"), rate=("slot_rate", "mean")
    )
    columns = columns.assign(train=columns.train.map(trains)).sort_values(["train", "rate"])
    stats = stats[columns.index] if not stats.empty else stats
    setting_train = d.groupby("setting").train_condition.first().to_dict()
    # training conditions whose every run failed have no column: one says so
    for train in pd.unique(failed.train_condition):
        if train not in set(d.train_condition):
            setting = f"train {train} → (every run failed)"
            stats[setting] = np.nan
            setting_train[setting] = train
    for method in pd.unique(failed.method):
        if method not in stats.index:
            stats.loc[method] = np.nan
    # equal means share a rank: rounded first, so float noise in a mean over seeds
    # (mean(0.1, 0.2, 0.3) = 0.20000000000000004) does not split a tie
    ranks = stats.round(12).rank(ascending=lower, method="min")
    mean_ranks, common, n_scored = _mean_ranks(ranks)
    n_columns = int(ranks.notna().any(axis=0).sum())  # the columns some method has a score in
    order = (
        pd.DataFrame({"mean": mean_ranks.fillna(np.inf), "missing": n_columns - n_scored})
        .sort_values(["mean", "missing"], kind="stable")
        .index
    )
    has_n = "n" in d.columns
    intervals: dict[tuple[str, str], tuple[float, float] | None] = {}
    for (setting, method), cell in d.groupby(["setting", "method"]):
        n = float(pd.to_numeric(cell.n, errors="coerce").mean()) if has_n else None
        intervals[setting, method] = _interval(cell.value, metric, n)
    one_seed_no_interval = False
    table = []
    for method in order:
        row: dict[str, object] = {"method": method, "family": families.get(method, "–")}
        for setting in stats.columns:
            train = setting_train[setting]
            n_failed = int(((failed.method == method) & (failed.train_condition == train)).sum())
            failed_mark = (
                f' <span class="failed">{n_failed} run(s) failed</span>' if n_failed else ""
            )
            cell = d[(d.setting == setting) & (d.method == method)]
            # a metric undefined on a seed (NaN: a diverged model, AUROC on one class) is left
            # out of the mean, and the cell says over how many seeds the mean is
            undefined = int(cell.value.isna().sum())
            if pd.isna(ranks.loc[method, setting]):
                row[setting] = (
                    _html('<span class="failed">failed</span>')
                    if n_failed
                    else f"undefined on {undefined} seed(s)"
                    if undefined
                    else "–"
                )
                continue
            rank = int(ranks.loc[method, setting])
            interval = intervals.get((setting, method))
            text = _e(format_value(cell.value.mean(), metric))
            if interval is None:
                one_seed_no_interval = True
            else:
                text += f" [{_e(format_value(interval[0], metric))}, {_e(format_value(interval[1], metric))}]"
            best = stats[setting].idxmin() if lower else stats[setting].idxmax()
            best_interval = intervals.get((setting, best))
            tie = (
                rank > 1
                and interval is not None
                and best_interval is not None
                and interval[0] <= best_interval[1]
                and best_interval[0] <= interval[1]
            )
            if undefined:
                text += f" ({len(cell) - undefined} of {len(cell)} seeds; {undefined} undefined)"
            mark = ' <span class="tie" title="within noise of the best">≈</span>' if tie else ""
            n_cut = int(cell.run_key[cell.run_key.isin(limited)].nunique()) if limited else 0
            if n_cut:  # included on request: their scores depend on the machine's load
                mark += (
                    f' <span class="cut">{n_cut} of {cell.run_key.nunique()} time-limited</span>'
                )
            text = f'{text} <span class="rank">#{rank}</span>{mark}{failed_mark}'
            row[setting] = _Html(f'<span class="best">{text}</span>' if rank == 1 else text)
        mean_rank = mean_ranks[method]
        row["mean rank"] = "–" if pd.isna(mean_rank) else f"{mean_rank:.1f}"
        if 0 < n_scored[method] < n_columns:  # its other columns are not in anyone's mean
            row["mean rank"] += f" (scored in {n_scored[method]} of {n_columns} columns)"
        table.append(row)
    seeds = d.groupby(["setting", "method"]).seed.nunique()
    if seeds.empty:
        n_seeds = "0"
    else:
        n_seeds = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    heading = f"{dataset} — {_label(metric)}, {_direction(metric)}; {n_seeds} seed(s)"
    parts = [f"<h3>{_e(heading)}</h3>"]
    if one_seed_no_interval:
        parts.append(_note(f"one seed: no interval for {_label(metric)}."))
    if not failed.empty:
        parts.append(
            _note(f"{len(failed)} run(s) on {dataset} failed: their cells say so (see Failures).")
        )
    if len(common) < n_columns:
        parts.append(
            _note(
                f"mean rank over the {len(common)} of {n_columns} columns in which every method "
                "with a score has one (a method without scores in the others would otherwise "
                "be ranked on fewer, easier columns)"
                if len(common)
                else "no column has a score for every method: no mean rank, methods sorted by "
                "the number of columns they have a score in"
            )
        )
    parts.append(_table(table, numeric=(*stats.columns, "mean rank")))
    return "\n".join(parts)


def _mean_ranks(ranks: pd.DataFrame) -> tuple[pd.Series, list[str], pd.Series]:
    """Each method's mean rank over the columns where every method with a score has one
    (``ranks``: [methods, columns], NaN where a method has no score), those columns, and how
    many columns each method has a score in.

    A mean over each method's own columns would favour a method that failed (or is
    undefined) on a hard condition: it skips the column where it would rank low. A method
    without any score has mean rank NaN and does not shrink the common columns; no common
    column leaves every mean rank NaN."""
    n_scored = ranks.notna().sum(axis=1)
    scored = ranks[n_scored > 0]
    common = [c for c in ranks.columns if scored[c].notna().all()] if len(scored) else []
    if not common:
        return pd.Series(np.nan, index=ranks.index), [], n_scored
    return ranks[common].mean(axis=1), common, n_scored


def _mechanism(condition: pd.Series) -> pd.Series:
    """The missingness mechanism of test conditions: ``mcar``, ``mar``, ``fixed``..."""
    return condition.astype(str).str.split(":").str[0]


def _robustness_panels(d: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Panels with at least two distinct test rates: one per (training condition, test
    mechanism), the full-data test (``none``, rate 0) joining each mechanism's curve, and per
    mechanism one of models trained under their test condition. A fixed pattern therefore
    never lands on an MCAR curve."""
    d = d.assign(trained_on=_trained_on(d.train_condition), mechanism=_mechanism(d.condition))
    candidates = {}
    for trained_on, g in d.groupby("trained_on", sort=False):
        for mech in sorted(set(g.mechanism) - {"none"}) or ["none"]:
            candidates[f"trained on {trained_on}, tested {mech}"] = g[
                g.mechanism.isin([mech, "none"])
            ]
    # the Bayes reference only where a model was trained as tested: a panel of it alone
    # (every test condition of the spec) has no model to compare with it
    trained_as_tested = (d.trained_on == d.condition) & (d.method != BAYES)
    tested = set(d.condition[trained_as_tested])
    matched = d[trained_as_tested | ((d.method == BAYES) & d.condition.isin(tested))]
    for mech in sorted(set(matched.mechanism) - {"none"}):
        candidates[f"trained as tested ({mech})"] = matched[matched.mechanism.isin([mech, "none"])]
    return {
        name: g
        for name, g in candidates.items()
        if (g.method != BAYES).any()
        and g.groupby("condition").slot_rate.mean().round(3).nunique() >= 2
    }


def _robustness(
    results: pd.DataFrame, colors: dict[str, tuple], metrics: Sequence[str] | None = None
) -> str:
    overall = _overall(results)
    if overall.empty:
        return _note("No finished run: no curve.")
    parts = [
        _note(
            "Overall test score (the primary metric) against the measured fraction of missing "
            "(sample, modality) slots at test time, mean over seeds (bars: std). One panel per "
            "training condition and test mechanism ('trained on X, tested mcar'); the full-data "
            "test joins every mechanism at rate 0, and fixed patterns are points, not a curve. "
            "'trained as tested': each point is a model trained and tested under the same "
            "condition."
        )
    ]
    for dataset, d in overall.groupby("dataset", sort=True):
        metric = table_metrics(d, metrics)[0]
        panels = _robustness_panels(d[d.metric == metric])
        if not panels:
            parts.append(
                _note(
                    f"{dataset}: a single test missing rate, so no curve; add test conditions "
                    "(e.g. mcar:0, mcar:0.3, mcar:0.5) to draw one."
                )
            )
            continue
        ncols = min(3, len(panels))
        nrows = -(-len(panels) // ncols)
        fig = _figure(4.3 * ncols, 3.3 * nrows + 0.6)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        scale = 100.0 if metric in PERCENT else 1.0
        for ax, (name, g) in zip(axes, panels.items(), strict=False):
            points_only = name.endswith("tested fixed") or name.endswith("(fixed)")
            for method, m in g.groupby("method", sort=True):
                per_condition = m.groupby("condition").agg(
                    rate=("slot_rate", "mean"), mean=("value", "mean"), std=("value", "std")
                )
                curve = per_condition.sort_values("rate")
                ax.errorbar(
                    curve.rate,
                    scale * curve["mean"],
                    yerr=scale * curve["std"].fillna(0),
                    label=method,
                    color=colors.get(method),
                    linestyle="none" if points_only else "--" if method == BAYES else "-",
                    marker="o",
                    markersize=4,
                    capsize=2,
                )
            ax.set(title=name, xlabel="test missing rate (slots)")
            ax.title.set_fontsize(9)
            ax.set_ylabel(f"{_label(metric)}, {_direction(metric)}")
            ax.grid(alpha=0.3)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes[1 : len(panels)]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(labels)))
        parts.append(f"<h3>{_e(f'{dataset} — {_label(metric)}, {_direction(metric)}')}</h3>")
        parts.append(_img(fig, f"robustness curves on {dataset}"))
        parts.append(_note(f"{len(panels)} panel(s): {', '.join(panels)}."))
    return "\n".join(parts)


def _subset_size(subset: str) -> int:
    return subset.count("+") + 1


def _heatmap_rows(grid: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[int]]:
    """The rows a heatmap shows, and where its row groups end.

    Up to :data:`MAX_HEATMAP_SUBSETS` subsets: all, by size, the best first within a size.
    More: the mean per subset size, then the worst and best :data:`EXTREME_SUBSETS` subsets
    (by their mean over methods); the full grid goes in a collapsible table.
    """
    lower = metric in LOWER_IS_BETTER
    goodness = grid.mean(axis=1) * (-1 if lower else 1)  # larger is better
    sizes = pd.Series([_subset_size(s) for s in grid.index], index=grid.index)
    if len(grid) <= MAX_HEATMAP_SUBSETS:
        order = sorted(grid.index, key=lambda s: (sizes[s], -goodness[s]))
        ends = [i for i in range(1, len(order)) if sizes[order[i - 1]] != sizes[order[i]]]
        return grid.loc[order], ends
    by_size = grid.groupby(sizes).mean()
    by_size.index = [
        f"mean, {k} modalit{'y' if k == 1 else 'ies'} ({(sizes == k).sum()})" for k in by_size.index
    ]
    ranked = goodness.sort_values().index  # worst first
    k = EXTREME_SUBSETS
    worst = grid.loc[ranked[:k]].rename(index=lambda s: f"worst: {s}")
    best = grid.loc[ranked[::-1][:k]].rename(index=lambda s: f"best: {s}")
    rows = pd.concat([by_size, worst, best])
    return rows, [len(by_size), len(by_size) + len(worst)]


def _subsets(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> str:
    scoped = results[results.scope == "subset"]
    if scoped.empty:
        return _note("No per-subset scores in these results.")
    parts = [
        _note(
            "Every non-empty modality subset forced on every test sample (the others hidden), "
            "the primary metric, mean over seeds; one panel per training missingness, methods "
            "best first, subsets grouped by size. With more than "
            f"{MAX_HEATMAP_SUBSETS} subsets the heatmap shows the mean per subset size and the "
            f"{EXTREME_SUBSETS} worst and best subsets; every subset is in the table below it. "
            "A seed whose score on a subset is undefined (NaN, e.g. a diverged model) is left "
            "out of that cell's mean; a cell undefined on every seed is blank."
        )
    ]
    for dataset, d in scoped.groupby("dataset", sort=True):
        metric = table_metrics(results[results.dataset == dataset], metrics)[0]
        d = d[d.metric == metric].assign(trained_on=_trained_on(d.train_condition))
        if d.empty:
            continue
        # the Bayes classifier is not trained: one copy of its scores goes in every panel
        bayes, d = d[d.method == BAYES], d[d.method != BAYES]
        means = pd.concat([d, bayes]).groupby("method").value.mean()
        best_first = means.sort_values(ascending=metric in LOWER_IS_BETTER).index
        grids, full = {}, []
        for trained_on, g in d.groupby("trained_on", sort=False):
            grid = pd.concat([g, bayes]).pivot_table(
                index="subset", columns="method", values="value"
            )  # [subsets, methods]
            columns = [m for m in best_first if m in grid.columns]
            grid = grid.loc[list(pd.unique(g.subset)), columns]
            grids[f"trained on {trained_on}"] = _heatmap_rows(grid, metric)
            full.append((trained_on, grid))
        heading = f"{dataset} — {_label(metric)}, {_direction(metric)}"
        parts.append(f"<h3>{_e(heading)}</h3>")
        parts.append(_img(_heatmaps(grids, metric), f"{metric} per modality subset on {dataset}"))
        if any(len(grid) > MAX_HEATMAP_SUBSETS for _, grid in full):
            parts.append(_subset_details(full, metric))
    return "\n".join(parts)


def _subset_details(full: list[tuple[str, pd.DataFrame]], metric: str) -> str:
    """Every subset × method, by subset size, in a collapsed ``<details>`` block."""
    blocks = []
    for trained_on, grid in full:
        order = sorted(grid.index, key=lambda s: (_subset_size(s), s))
        rows = [
            {
                "subset": subset,
                "modalities": _subset_size(subset),
                **{m: format_value(grid.loc[subset, m], metric) for m in grid.columns},
            }
            for subset in order
        ]
        blocks.append(f"<p>trained on {_e(trained_on)}</p>" + _table(rows, tuple(grid.columns)))
    n = max(len(grid) for _, grid in full)
    return (
        f"<details><summary>Every subset ({n}) × method: {_e(_label(metric))}</summary>"
        + "".join(blocks)
        + "</details>"
    )


def _heatmaps(grids: dict[str, tuple[pd.DataFrame, list[int]]], metric: str):
    """Side-by-side heatmaps (rows × methods) on one colour scale, annotated in the tables'
    number format, with lines between row groups."""
    scale = 100.0 if metric in PERCENT else 1.0
    values = {name: scale * g.to_numpy(dtype=float) for name, (g, _) in grids.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    first = next(iter(grids.values()))[0]
    label_width = 0.075 * max(map(len, first.index))
    method_height = 0.075 * max(len(m) for g, _ in grids.values() for m in g.columns)
    widths = [max(1.0, 0.6 * g.shape[1]) for g, _ in grids.values()]
    fig = _figure(label_width + sum(widths) + 1.6, 0.26 * len(first) + method_height + 1.0)
    axes = fig.subplots(1, len(grids), sharey=True, squeeze=False, width_ratios=widths)[0]
    cmap = "viridis_r" if metric in LOWER_IS_BETTER else "viridis"
    for ax, (name, (grid, ends)) in zip(axes, grids.items(), strict=True):
        image = ax.imshow(values[name], aspect="auto", cmap=cmap, vmin=low, vmax=high)
        ax.set_title(name, fontsize=9)
        ax.xaxis.tick_top()
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="left", fontsize=8)
        ax.set_yticks(range(len(grid)), grid.index, fontsize=8)
        for end in ends:
            ax.axhline(end - 0.5, color="white", linewidth=2)
        for (i, j), v in np.ndenumerate(values[name]):
            if np.isfinite(v):
                # viridis is dark at its low end
                dark = (v < (low + high) / 2) != (metric in LOWER_IS_BETTER)
                text = format_value(v / scale, metric)
                color = "white" if dark else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    label = f"{_label(metric)}, {_direction(metric)}"
    fig.colorbar(image, ax=list(axes), label=label, shrink=min(1.0, 10 / len(first)), aspect=15)
    return fig


def _bayes_gap(results: pd.DataFrame, families: dict[str, str]) -> str:
    overall = _overall(results)
    # per dataset, the metric the reference is optimal for: accuracy, or macro AUROC
    gap_metric = {
        dataset: bayes_gap_metric(set(g.metric), "accuracy" if "accuracy" in set(g.metric) else "")
        for dataset, g in overall.groupby("dataset", sort=False)
    }
    acc = overall[overall.metric == overall.dataset.map(gap_metric)]
    bayes = acc[acc.method == BAYES]
    if bayes.empty:
        return _note(
            "No Bayes-optimal reference in these results: it comes with the synthetic datasets "
            "(whose exact posterior is known; synthetic-multilabel up to 16 labels), none of "
            "which has a finished run with one in this benchmark."
        )
    ids = ["dataset", "train_condition", "condition", "seed"]
    reference = bayes.groupby(ids).value.mean().rename("bayes")
    scored = acc[acc.method != BAYES].join(reference, on=ids)
    paired = scored.dropna(subset=["bayes"])
    # cells of a dataset that has a reference elsewhere but none here (on no seed): say so
    cell = ["dataset", "condition", "train_condition"]
    unpaired = scored.groupby(cell, sort=True).bayes.count() == 0
    cells = unpaired[unpaired].reset_index()[cell]
    cells = cells[cells.dataset.isin(set(bayes.dataset))]
    missing = (
        _note(
            "No reference under "
            + ", ".join(f"{d} {c} (train {t})" for d, c, t in cells.itertuples(index=False))
            + ": under MNAR it is not computed for synthetic-interaction nor for "
            "synthetic-multilabel past 8 labels, and Bayes rows of an older mlmm without their "
            "Monte Carlo error are not used."
        )
        if len(cells)
        else ""
    )
    rows = [
        {
            "dataset": dataset,
            "train": train,
            "test": test,
            "metric": gap_metric[dataset],
            "method": method,
            "family": families.get(method, "–"),
            "score (%)": _fmt(g.value, gap_metric[dataset], count_undefined=True),
            "Bayes-optimal (%)": _fmt(g.bayes, gap_metric[dataset]),
            "gap (points)": _fmt(g.bayes - g.value, gap_metric[dataset], count_undefined=True),
            "_gap": (g.bayes - g.value).mean(),
        }
        for (dataset, train, test, method), g in paired.groupby(
            ["dataset", "train_condition", "condition", "method"], sort=True
        )
    ]
    if not rows:
        return _note("No method was scored alongside the Bayes-optimal reference.") + missing
    rows = _sorted_rows(rows, "dataset", "train", "test", "_gap")
    numeric = ("score (%)", "Bayes-optimal (%)", "gap (points)")
    return (
        _note(
            "Bayes-optimal score (the exact posterior of the generator, scored under the same "
            "test masks) minus the method's, paired by seed, mean ± std over seeds: accuracy "
            "for classification, macro AUROC for multi-label data (each label's exact "
            "posterior ranks optimally; its F1 at the 0.5 threshold is not optimal)."
        )
        + "\n"
        + _table(rows, numeric=numeric)
        + missing
    )


def _efficiency(runs: pd.DataFrame) -> str:
    done = runs[runs.status == "done"]
    if done.empty:
        return _note("No finished run.")
    rows = []
    for (dataset, method), g in done.groupby(["dataset", "method"], sort=True):
        models = g.n_models.astype(float).mean()  # a count: no decimals unless runs differ
        # per sample (flex-moe: at most, over presence patterns; per-subset: the model that
        # answers, averaged over patterns); a store from before the column: every parameter
        active = g.get("active_parameters", g.n_parameters).fillna(g.n_parameters)
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "family": g.family.iloc[0],
                "runs": len(g),
                "parameters": _number(g.n_parameters.astype(float).mean()),
                "active parameters / sample": _number(active.astype(float).mean()),
                "models": _number(models, ",.0f" if float(models).is_integer() else ",.1f"),
                "training time (s)": _fmt(g.train_seconds, "seconds"),
                "latency (ms / sample)": _fmt(g.latency_ms_per_sample, "milliseconds"),
                "device": _distinct(g, "device"),
                "precision": _distinct(g, "precision"),
                "_time": g.train_seconds.astype(float).mean(),
            }
        )
    rows = _sorted_rows(rows, "dataset", "_time")
    numeric = (
        "runs",
        "parameters",
        "active parameters / sample",
        "models",
        "training time (s)",
        "latency (ms / sample)",
    )
    return (
        _note(
            "Mean over finished runs (± std where there are several): trainable parameters, "
            "parameters one test sample passes through (fewer than all for a sparse mixture of "
            "experts: the most any sample's tokens can reach through their top-k experts; and "
            "for per-subset, where one model answers), models trained per run, training wall "
            "time, inference latency per test sample; the device and precision the runs "
            "trained in (— for runs stored before they were recorded)."
        )
        + "\n"
        + _table(rows, numeric=numeric)
    )


def _distinct(group: pd.DataFrame, column: str) -> str:
    """The distinct values of ``column`` in ``group``, joined (``—`` where none is known)."""
    values = group[column].dropna().astype(str).unique() if column in group else []
    return ", ".join(sorted(values)) or "—"


def _taxonomy(runs: pd.DataFrame) -> str:
    from mlmm.methods import METHODS, TAXONOMY

    def methods_by_cell(frame: pd.DataFrame) -> dict[tuple[str, str], set[str]]:
        return frame.groupby(["family", "subtype"]).method.agg(set).to_dict()

    ran = methods_by_cell(runs[runs.status == "done"])
    tried = methods_by_cell(runs)
    registered: dict[tuple[str, str], set[str]] = {}
    for entry in METHODS:
        registered.setdefault((entry.info["family"], entry.info["subtype"]), set()).add(entry.name)
    cells = [(f, s) for f, subtypes in TAXONOMY.items() for s in subtypes]
    cells += sorted(set(tried) - set(cells))  # a family/subtype a run declared that we lack
    rows = []
    for cell in cells:
        done = sorted(ran.get(cell, ()))
        failed = sorted(tried.get(cell, set()) - set(done))
        idle = sorted(registered.get(cell, set()) - tried.get(cell, set()))
        markup = ", ".join([_e(m) for m in done] + [f"{_e(m)} (failed)" for m in failed])
        rows.append(
            {
                "family": cell[0],
                "subtype": cell[1],
                # cells without a finished run are highlighted: the gaps of the benchmark
                "methods run": _html(markup or "—", "" if done else "empty"),
                "registered, not run": _html(f'<span class="muted">{_e(", ".join(idle))}</span>'),
            }
        )
    covered = sum(bool(ran.get(c)) for c in cells)
    families = sorted({f for f, _ in ran})
    return (
        _note(
            f"The finished runs cover {covered} of {len(cells)} family/subtype cells "
            f"(families: {', '.join(families) or 'none'})."
        )
        + "\n"
        + _table(rows)
    )


def _failures(runs: pd.DataFrame) -> str:
    failed = runs[runs.status == "failed"]
    unfinished = int((~runs.status.isin(["done", "failed"])).sum())
    parts = []
    if failed.empty:
        parts.append("<p>none</p>")
    else:
        rows = [
            {
                "dataset": r.dataset,
                "method": r.method,
                "seed": r.seed,
                "train condition": r.train_condition,
                "run": r.run_key,
                "error": _Html(
                    f'<pre class="error">{_e("" if pd.isna(r.error) else r.error)}</pre>'
                ),
            }
            for r in failed.itertuples(index=False)
        ]
        parts.append(_table(rows))
    if unfinished:
        parts.append(_note(f"{unfinished} run(s) had not finished when this report was written."))
    parts.append(_unscored_conditions(runs))
    return "\n".join(parts)


def _unscored_conditions(runs: pd.DataFrame) -> str:
    """The test conditions finished runs could not score (column ``condition_errors``, JSON
    ``{condition: error}``): their cells are empty in the tables above, and this says why."""
    if "condition_errors" not in runs.columns:
        return ""
    done = runs[(runs.status == "done") & runs.condition_errors.notna()]
    rows = []
    for r in done.itertuples(index=False):
        try:
            errors = json.loads(r.condition_errors)
        except (TypeError, ValueError):
            errors = {"?": str(r.condition_errors)}
        for condition, error in (errors if isinstance(errors, dict) else {}).items():
            rows.append(
                {
                    "dataset": r.dataset,
                    "method": r.method,
                    "seed": r.seed,
                    "train condition": r.train_condition,
                    "test condition": condition,
                    "run": r.run_key,
                    "error": _Html(f'<pre class="error">{_e(error)}</pre>'),
                }
            )
    if not rows:
        return ""
    return "\n".join(
        [
            _note(
                f"{len(rows)} test condition(s) of finished runs could not be scored (their "
                "other conditions were): their cells above are empty."
            ),
            _table(rows),
        ]
    )


def studies_table(db: ResultsStore) -> pd.DataFrame:
    """:meth:`~mlmm.bench.ResultsStore.studies` with the best trial's point (``best_params``,
    a dict; None for a study without a finished trial), for :func:`write_report`."""
    studies = db.studies()
    best = []
    for row in studies.itertuples(index=False):
        trials = {t["number"]: t for t in db.study_trials(row.study_key)}
        trial = None if pd.isna(row.best_trial) else trials.get(int(row.best_trial))
        best.append(None if trial is None else trial["params"])
    return studies.assign(best_params=best)


def _tuning(runs: pd.DataFrame, studies: pd.DataFrame | None) -> str:
    """The runs that tuned first (a spec's ``tune:`` block): trials, best validation loss and
    the point they trained with."""
    if studies is None or studies.empty or "run_key" not in studies.columns:
        return "<p>none: every run trained with the hyperparameters its spec gave</p>"
    tuned = runs.merge(studies, on="run_key", how="inner", suffixes=("", "_study"))
    if tuned.empty:
        return "<p>none: every run trained with the hyperparameters its spec gave</p>"

    def point(params: object) -> str:
        if not isinstance(params, dict):
            return "–"
        return ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
        )

    rows = [
        {
            "dataset": r.dataset,
            "method": r.method,
            "seed": r.seed,
            "train condition": r.train_condition,
            "trials": f"{int(r.n_trials)}" + (f" ({int(r.n_failed)} failed)" if r.n_failed else ""),
            "best trial": "–" if pd.isna(r.best_trial) else int(r.best_trial),
            "best validation loss": _number(r.best_value, ".4f"),
            "best point (trained with)": point(r.best_params),
        }
        for r in tuned.itertuples(index=False)
    ]
    return (
        _note(
            f"{len(rows)} run(s) tuned their hyperparameters first (the spec's tune: block), "
            "scored on validation data carved from their own training split, never on the "
            "test split, then trained with the best point."
        )
        + "\n"
        + _table(rows, numeric=("best validation loss",))
    )


def _reproduce(specs: pd.DataFrame) -> str:
    """Each stored spec (resolved YAML) with the command that ran it and the one that reruns it."""
    if specs.empty:
        return _note(
            "This store holds no spec (written from Python without one, or by an older mlmm): "
            "rerun it with mlmm bench SPEC --store STORE to record it."
        )
    parts = [
        _note(
            "The spec as the benchmark resolved it (every default filled in): save it as a "
            "file and run mlmm bench on it to get the same runs; finished runs in the same "
            "store are skipped."
        )
    ]
    for row in specs.itertuples(index=False):
        command = getattr(row, "command", None)
        parts.append(f"<h3>{_e(row.name)}</h3>")
        if isinstance(command, str) and command:
            parts.append(f"<p>Ran as: <code>{_e(command)}</code></p>")
        parts.append(f"<p>Rerun: <code>mlmm bench {_e(row.name)}.yaml</code> with</p>")
        parts.append(f'<pre class="spec">{_e(row.spec)}</pre>')
    return "\n".join(parts)


def _time_limited_keys(runs: pd.DataFrame) -> set[str]:
    """Keys of the finished runs that a time limit cut short."""
    if "time_limited" not in runs.columns:
        return set()
    cut = runs.time_limited.fillna(0).astype(int) == 1
    return set(runs.run_key[cut & (runs.status == "done")])


def _time_limited(runs: pd.DataFrame, included: bool) -> str:
    keys = _time_limited_keys(runs)
    if not keys:
        return "<p>none</p>"
    rows = [
        {
            "dataset": r.dataset,
            "method": r.method,
            "seed": r.seed,
            "train condition": r.train_condition,
            "run": r.run_key,
        }
        for r in runs[runs.run_key.isin(keys)].itertuples(index=False)
    ]
    where = (
        "They are included in the tables and figures above (include_time_limited)."
        if included
        else "They are left out of the tables and figures above; include them with "
        "mlmm report --include-time-limited."
    )
    return (
        _note(
            "The budget's time_limit ended the training of these runs before their epochs or "
            f"patience did, so their scores depend on the machine's load. {where}"
        )
        + "\n"
        + _table(rows)
    )
