"""The benchmark report: one self-contained HTML page built only from the runs and results tables.

Sections (stable ids): ``leaderboard``, ``robustness``, ``subsets``, ``bayes-gap``, ``efficiency``,
``taxonomy``, ``failures``, ``time-limited``. CSS is inline and plots are PNG data URIs drawn with matplotlib's Agg
canvas, so the file opens offline; a Content-Security-Policy forbids the page any other resource.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from mlmm.bench.tables import one_reference_copy
from mlmm.errors import MlmmError
from mlmm.utils import atomic_write

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
#: Metrics shown as percentages; the others are printed with three significant digits.
PERCENT = {"accuracy", "macro_f1", "auroc"}
LOWER_IS_BETTER = {"ece", "mae", "rmse"}

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
    include_time_limited: bool = False,
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
    include_time_limited : bool
        Also rank and plot the runs whose training the time limit cut short (column
        ``time_limited`` of ``runs``); by default they are only listed, in their own section.

    Returns
    -------
    pathlib.Path
    """
    _require(runs, RUN_COLUMNS, "runs")
    _require(results, RESULT_COLUMNS, "results")
    limited = _time_limited_keys(runs)
    if not include_time_limited:
        results = results[~results.run_key.isin(limited)]
    results = one_reference_copy(results)
    families = dict(zip(runs.method, runs.family, strict=True)) | {BAYES: "Bayes-optimal"}
    colors = _colors(sorted(set(results.method) | set(runs.method)))
    sections = [
        ("leaderboard", "Leaderboard", _leaderboard(results, families)),
        ("robustness", "Robustness to test missingness", _robustness(results, colors)),
        ("subsets", "Accuracy per modality subset", _subsets(results)),
        ("bayes-gap", "Gap to the Bayes-optimal accuracy", _bayes_gap(results, families)),
        ("efficiency", "Efficiency", _efficiency(runs)),
        ("taxonomy", "Taxonomy coverage", _taxonomy(runs)),
        ("failures", "Failures", _failures(runs)),
        ("time-limited", "Time-limited runs", _time_limited(runs, include_time_limited)),
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


def _fmt(values: pd.Series, metric: str) -> str:
    """Mean ± std (ddof 1) over seeds or runs: rates in percent, anything else to 3 digits."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "–"
    scale, spec = (100.0, ".1f") if metric in PERCENT else (1.0, ".3g")
    text = format(scale * values.mean(), spec)
    return text if len(values) == 1 else f"{text} ± {format(scale * values.std(ddof=1), spec)}"


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


def _primary(frame: pd.DataFrame) -> str:
    """The headline metric: accuracy for classification, else RMSE."""
    return "accuracy" if (frame.metric == "accuracy").any() else "rmse"


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


def _overall(results: pd.DataFrame) -> pd.DataFrame:
    return results[results.scope == "overall"]


def _leaderboard(results: pd.DataFrame, families: dict[str, str]) -> str:
    overall = _overall(results)
    overall = overall[overall.method != BAYES]
    if overall.empty:
        return _note("No finished run: nothing to rank.")
    parts = [
        _note(
            "Overall test score (accuracy for classification, RMSE for regression), mean ± std "
            "over seeds, for each training condition → test condition. #k: rank in that column; "
            "the best of each column in bold; methods sorted by their mean rank."
        )
    ]
    for dataset, d in overall.groupby("dataset", sort=True):
        metric = _primary(d)
        d = d[d.metric == metric].assign(
            setting=lambda x: "train " + x.train_condition.astype(str) + " → test " + x.condition
        )
        stats = d.groupby(["setting", "method"]).value.mean().unstack("setting")
        # columns: training conditions in the order they came, then by test missing rate
        trains = {t: i for i, t in enumerate(pd.unique(d.train_condition))}
        columns = d.groupby("setting").agg(
            train=("train_condition", "first"), rate=("slot_rate", "mean")
        )
        columns = columns.assign(train=columns.train.map(trains)).sort_values(["train", "rate"])
        stats = stats[columns.index]
        ranks = stats.rank(ascending=metric in LOWER_IS_BETTER, method="min")
        order = ranks.mean(axis=1).sort_values().index
        table = []
        for method in order:
            row: dict[str, object] = {"method": method, "family": families.get(method, "–")}
            for setting in stats.columns:
                if pd.isna(ranks.loc[method, setting]):
                    row[setting] = "–"
                    continue
                cell = d[(d.setting == setting) & (d.method == method)]
                rank = int(ranks.loc[method, setting])
                text = f'{_e(_fmt(cell.value, metric))} <span class="rank">#{rank}</span>'
                row[setting] = _Html(f'<span class="best">{text}</span>' if rank == 1 else text)
            row["mean rank"] = f"{ranks.loc[method].mean():.1f}"
            table.append(row)
        seeds = d.groupby(["setting", "method"]).seed.nunique()
        n_seeds = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
        name = "accuracy (%)" if metric == "accuracy" else metric
        parts.append(f"<h3>{_e(dataset)} — {_e(name)}, {n_seeds} seed(s)</h3>")
        parts.append(_table(table, numeric=(*stats.columns, "mean rank")))
    return "\n".join(parts)


def _robustness_panels(d: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Panels with at least two distinct test rates: one per training condition tested under
    several conditions, and per mechanism one of models trained under their test condition."""
    d = d.assign(trained_on=_trained_on(d.train_condition))
    candidates = {f"trained on {t}": g for t, g in d.groupby("trained_on", sort=False)}
    matched = d[(d.trained_on == d.condition) | (d.method == BAYES)]
    mechanism = matched.condition.str.split(":").str[0]
    for mech in sorted(set(mechanism) - {"none"}):
        candidates[f"trained as tested ({mech})"] = matched[mechanism.isin([mech, "none"])]
    return {
        name: g
        for name, g in candidates.items()
        if g.groupby("condition").slot_rate.mean().round(3).nunique() >= 2
    }


def _robustness(results: pd.DataFrame, colors: dict[str, tuple]) -> str:
    overall = _overall(results)
    if overall.empty:
        return _note("No finished run: no curve.")
    parts = [
        _note(
            "Overall test score against the measured fraction of missing (sample, modality) "
            "slots at test time, mean over seeds (bars: std). 'trained on X': the models trained "
            "under X, tested under several conditions; 'trained as tested': each point is a model "
            "trained and tested under the same condition."
        )
    ]
    for dataset, d in overall.groupby("dataset", sort=True):
        metric = _primary(d)
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
                    linestyle="--" if method == BAYES else "-",
                    marker="o",
                    markersize=4,
                    capsize=2,
                )
            ax.set(title=name, xlabel="test missing rate (slots)")
            ax.set_ylabel("accuracy (%)" if metric == "accuracy" else metric)
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
        parts.append(f"<h3>{_e(dataset)}</h3>")
        parts.append(_img(fig, f"robustness curves on {dataset}"))
    return "\n".join(parts)


def _subsets(results: pd.DataFrame) -> str:
    scoped = results[results.scope == "subset"]
    if scoped.empty:
        return _note("No per-subset scores in these results.")
    parts = [
        _note(
            "Every non-empty modality subset forced on every test sample (the others hidden), "
            "mean over seeds; one panel per training missingness, methods best first."
        )
    ]
    for dataset, d in scoped.groupby("dataset", sort=True):
        metric = _primary(d)
        d = d[d.metric == metric].assign(trained_on=_trained_on(d.train_condition))
        # the Bayes classifier is not trained: one copy of its scores goes in every panel
        bayes, d = d[d.method == BAYES], d[d.method != BAYES]
        means = pd.concat([d, bayes]).groupby("method").value.mean()
        best_first = means.sort_values(ascending=metric in LOWER_IS_BETTER).index
        grids = {}
        for trained_on, g in d.groupby("trained_on", sort=False):
            grid = pd.concat([g, bayes]).pivot_table(
                index="subset", columns="method", values="value"
            )  # [subsets, methods]
            columns = [m for m in best_first if m in grid.columns]
            grids[f"trained on {trained_on}"] = grid.loc[list(pd.unique(g.subset)), columns]
        parts.append(f"<h3>{_e(dataset)}</h3>")
        parts.append(_img(_heatmaps(grids, metric), f"{metric} per modality subset on {dataset}"))
    return "\n".join(parts)


def _heatmaps(grids: dict[str, pd.DataFrame], metric: str):
    """Side-by-side heatmaps (subsets × methods) on one colour scale, annotated."""
    scale = 100.0 if metric in PERCENT else 1.0
    values = {name: scale * g.to_numpy(dtype=float) for name, g in grids.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    first = next(iter(grids.values()))
    label_width = 0.075 * max(map(len, first.index))
    method_height = 0.075 * max(len(m) for g in grids.values() for m in g.columns)
    widths = [max(1.0, 0.55 * g.shape[1]) for g in grids.values()]
    fig = _figure(label_width + sum(widths) + 1.6, 0.26 * len(first) + method_height + 1.0)
    axes = fig.subplots(1, len(grids), sharey=True, squeeze=False, width_ratios=widths)[0]
    cmap = "viridis_r" if metric in LOWER_IS_BETTER else "viridis"
    for ax, (name, grid) in zip(axes, grids.items(), strict=True):
        image = ax.imshow(values[name], aspect="auto", cmap=cmap, vmin=low, vmax=high)
        ax.set_title(name, fontsize=9)
        ax.xaxis.tick_top()
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="left", fontsize=8)
        ax.set_yticks(range(len(grid)), grid.index, fontsize=8)
        for (i, j), v in np.ndenumerate(values[name]):
            if np.isfinite(v):
                # viridis is dark at its low end
                dark = (v < (low + high) / 2) != (metric in LOWER_IS_BETTER)
                text = f"{v:.0f}" if metric in PERCENT else f"{v:.2g}"
                color = "white" if dark else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    label = "accuracy (%)" if metric == "accuracy" else metric
    fig.colorbar(image, ax=list(axes), label=label, shrink=min(1.0, 10 / len(first)), aspect=15)
    return fig


def _bayes_gap(results: pd.DataFrame, families: dict[str, str]) -> str:
    overall = _overall(results)
    acc = overall[overall.metric == "accuracy"]
    bayes = acc[acc.method == BAYES]
    if bayes.empty:
        return _note(
            "No Bayes-optimal reference in these results: it comes with the synthetic dataset "
            "(whose exact posterior is known), which has no finished run in this benchmark."
        )
    ids = ["dataset", "train_condition", "condition", "seed"]
    reference = bayes.groupby(ids).value.mean().rename("bayes")
    paired = acc[acc.method != BAYES].join(reference, on=ids).dropna(subset=["bayes"])
    rows = [
        {
            "dataset": dataset,
            "train": train,
            "test": test,
            "method": method,
            "family": families.get(method, "–"),
            "accuracy (%)": _fmt(g.value, "accuracy"),
            "Bayes-optimal (%)": _fmt(g.bayes, "accuracy"),
            "gap (points)": _fmt(g.bayes - g.value, "accuracy"),
            "_gap": (g.bayes - g.value).mean(),
        }
        for (dataset, train, test, method), g in paired.groupby(
            ["dataset", "train_condition", "condition", "method"], sort=True
        )
    ]
    if not rows:
        return _note("No method was scored alongside the Bayes-optimal reference.")
    rows = _sorted_rows(rows, "dataset", "train", "test", "_gap")
    numeric = ("accuracy (%)", "Bayes-optimal (%)", "gap (points)")
    return (
        _note(
            "Bayes-optimal accuracy (the exact posterior of the generator, scored under the same "
            "test masks) minus the method's accuracy, paired by seed, mean ± std over seeds."
        )
        + "\n"
        + _table(rows, numeric=numeric)
    )


def _efficiency(runs: pd.DataFrame) -> str:
    done = runs[runs.status == "done"]
    if done.empty:
        return _note("No finished run.")
    rows = []
    for (dataset, method), g in done.groupby(["dataset", "method"], sort=True):
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "family": g.family.iloc[0],
                "runs": len(g),
                "parameters": _number(g.n_parameters.astype(float).mean()),
                "models": _number(g.n_models.astype(float).mean(), ",.3g"),
                "training time (s)": _fmt(g.train_seconds, "seconds"),
                "latency (ms / sample)": _fmt(g.latency_ms_per_sample, "latency"),
                "_time": g.train_seconds.astype(float).mean(),
            }
        )
    rows = _sorted_rows(rows, "dataset", "_time")
    numeric = ("runs", "parameters", "models", "training time (s)", "latency (ms / sample)")
    return (
        _note(
            "Mean over finished runs (± std where there are several): trainable parameters, "
            "models trained per run, training wall time, inference latency per test sample."
        )
        + "\n"
        + _table(rows, numeric=numeric)
    )


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
