"""The ``mlmm`` command line: a thin layer over the Python API (imports are lazy)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="mlmm",
    help="Deep multimodal learning with missing modalities: simulate missingness, train, "
    "evaluate per modality subset, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _console():
    from rich.console import Console

    # Wide tables stay readable in logs and pipes, where Rich would otherwise assume 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=180)


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["hidden=128", "rule=mean_prob"]`` → dict, values parsed as YAML scalars."""
    import yaml

    from mlmm.errors import MlmmError

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise MlmmError(
                f"parameters are written key=value, got {item!r} (e.g. --param hidden=128)"
            )
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _table(df, title: str | None = None, max_rows: int = 200):
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "fi" else "left")
    for row in df.head(max_rows).itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    return table


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            help="Import this module first: it registers your methods, datasets or backbones "
            "(repeatable; benchmark workers import it too)."
        ),
    ] = None,
) -> None:
    _state["debug"] = debug
    _state["plugins"] = list(plugin or [])
    if plugin:
        from mlmm.registry import load_plugins

        if os.getcwd() not in sys.path:  # as `python -m` would: a module beside you imports
            sys.path.insert(0, os.getcwd())
        load_plugins(plugin)


@app.command()
def datasets() -> None:
    """List the built-in datasets."""
    import pandas as pd

    from mlmm.data.datasets import DATASETS

    rows = [
        {
            "name": e.name,
            "description": e.info["description"],
            "source": e.info["source"],
            "license": e.info.get("license", ""),
        }
        for e in DATASETS
    ]
    _console().print(_table(pd.DataFrame(rows), "datasets"))


@app.command()
def methods(family: Annotated[str | None, typer.Option(help="Only this family.")] = None) -> None:
    """List the registered methods with their family, subtype and paper (the taxonomy)."""
    import pandas as pd

    from mlmm.methods import METHODS, TAXONOMY

    if family is not None and family not in TAXONOMY:
        from mlmm.errors import unknown_name_error

        raise unknown_name_error("family", family, TAXONOMY)
    rows = [
        {
            "name": e.name,
            "family": e.info["family"],
            "subtype": e.info["subtype"],
            "paper": e.info["paper"],
        }
        for e in METHODS
        if family in (None, e.info["family"])
    ]
    _console().print(_table(pd.DataFrame(rows), "methods"))


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="A built-in dataset (see `mlmm datasets`).")],
    method: Annotated[str, typer.Option(help="A registered method (see `mlmm methods`).")],
    out: Annotated[Path, typer.Option(help="Directory for the trained model artifact.")],
    missing: Annotated[
        str, typer.Option(help="Training missingness, e.g. mcar:0.5, or TRAIN=>TEST.")
    ] = "none",
    seed: Annotated[int, typer.Option(help="Seeds the split, masks and training.")] = 0,
    param: Annotated[
        list[str] | None, typer.Option(help="Method hyperparameter key=value (repeatable).")
    ] = None,
    dataset_param: Annotated[
        list[str] | None, typer.Option(help="Dataset option key=value (repeatable).")
    ] = None,
    epochs: Annotated[
        int, typer.Option(help="Maximum epochs (early stopping on validation data).")
    ] = 200,
    batch_size: Annotated[int, typer.Option()] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace the model in --out if it holds one (your other files stay)."),
    ] = False,
) -> None:
    """Train a method on a dataset and save the model artifact."""
    from mlmm.experiment import run_experiment
    from mlmm.train.checkpoint import check_artifact_path

    check_artifact_path(out, overwrite)  # refuse a bad --out before any work, not after it

    res = run_experiment(
        dataset,
        method,
        method_params=_parse_params(param),
        dataset_params=_parse_params(dataset_param),
        missing=missing,
        seed=seed,
        trainer={
            "max_epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "device": device,
            "progress": not quiet,
        },
    )
    path = res.trained.save(out, overwrite=overwrite)
    console = _console()
    console.print(f"training missingness: {_mask_line(res.train_mask)}")
    _print_tables(console, res.table)
    console.print(
        f"saved model to [bold]{path}[/bold] ({res.trained.n_parameters():,} parameters, "
        f"{res.trained.train_seconds:.1f}s)"
    )


def _mask_line(result) -> str:
    from rich.markup import escape

    return escape(result.summary())


def _print_tables(console, table) -> None:
    overall = (
        table[table.scope == "overall"]
        .pivot_table(
            index=["condition", "rate_unit", "slot_rate", "sample_rate"],
            columns="metric",
            values="value",
        )
        .reset_index()
    )
    console.print(
        _table(overall, "test conditions (rates realised; rate_unit = what the spec's rate counts)")
    )
    subsets = table[table.scope == "subset"]
    if not subsets.empty:
        per = subsets.pivot_table(
            index=["subset", "n"], columns="metric", values="value"
        ).reset_index()
        per = per.sort_values("accuracy" if "accuracy" in per else per.columns[-1])
        console.print(_table(per, "every modality subset (forced on all test samples)"))


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `mlmm train`.")],
    missing: Annotated[
        str, typer.Option(help="Comma-separated test specs, e.g. mcar:0,mcar:0.3,mcar:0.5.")
    ] = "none",
    seed: Annotated[
        int | None, typer.Option(help="Mask seed (default: the training seed).")
    ] = None,
    subsets: Annotated[bool, typer.Option(help="Score every modality subset.")] = True,
    out: Annotated[Path | None, typer.Option(help="Write the tidy table as CSV.")] = None,
) -> None:
    """Evaluate a saved model on its test split under test missingness specs."""
    from mlmm.data.datasets import load_dataset
    from mlmm.data.split import train_val_test_split
    from mlmm.errors import MlmmError
    from mlmm.eval import evaluate as _evaluate
    from mlmm.train import TrainedModel
    from mlmm.utils import atomic_write, check_output_file

    if out is not None:
        check_output_file(out)  # before the evaluation, so a bad --out costs nothing
    trained = TrainedModel.load(model_dir)
    info = trained.info
    if "dataset" not in info:
        raise MlmmError(
            f"{model_dir} does not record its dataset; evaluate it from Python with mlmm.evaluate"
        )
    data = load_dataset(info["dataset"], **info.get("dataset_params", {}))
    sp = info["split"]
    test = train_val_test_split(data, sp["test_size"], sp["val_size"], sp["seed"]).test
    mask_seed = sp["seed"] if seed is None else seed
    table = _evaluate(trained, test, missing, seed=mask_seed, subsets=subsets)
    console = _console()
    console.print(f"{trained.method} trained under {info.get('missing')} on {info['dataset']}")
    _print_tables(console, table)
    if getattr(type(trained.model), "imputes", False):
        import pandas as pd

        from mlmm.eval import imputation_scores

        scores = imputation_scores(trained, test, "mcar:0.5", seed=mask_seed)
        title = (
            "imputation: 50% of present slots hidden, NRMSE in training-std units (mean fill ~ 1)"
        )
        console.print(_table(scores, title))
        table = pd.concat([table, scores], ignore_index=True)
    if out is not None:
        try:
            with atomic_write(out) as fh:
                table.to_csv(fh, index=False)
        except OSError as err:  # disk full, or the location changed since the check
            raise MlmmError(
                f"cannot write {out} ({err.strerror or err}); free some disk space or choose "
                f"another --out, nothing was half-written"
            ) from None
        console.print(f"wrote {out}")


@app.command()
def bench(
    spec: Annotated[
        str,
        typer.Argument(help="A built-in suite (quick, standard) or a YAML spec file."),
    ] = "quick",
    store: Annotated[
        Path | None,
        typer.Option(help="Results store (SQLite); default mlmm-results/<spec name>.db."),
    ] = None,
    jobs: Annotated[int, typer.Option(help="Runs in parallel (worker processes).")] = 1,
    threads: Annotated[
        int | None, typer.Option(help="Threads per worker; default cores // jobs.")
    ] = None,
    executor: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray).")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="Only these datasets (repeatable).")
    ] = None,
    method: Annotated[
        list[str] | None, typer.Option(help="Only these methods (repeatable).")
    ] = None,
    missing: Annotated[
        str | None, typer.Option(help="Replace the missingness, e.g. mcar:0.5,none=>mcar:0.5.")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Replace the seeds, e.g. 0,1,2.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Replace the maximum epochs.")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Rerun runs that failed before.")] = True,
    rerun: Annotated[
        list[str] | None,
        typer.Option(help="Run this method's stored runs again (repeatable)."),
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the HTML report at the end.")] = True,
) -> None:
    """Run a benchmark (default: the quick suite); reruns skip finished runs."""
    from mlmm.bench.spec import load_suite, parse_spec

    suite = load_suite(spec)
    data = suite.model_dump()
    data["plugins"] += [p for p in _state.get("plugins", []) if p not in data["plugins"]]
    data = _bench_overrides(data, dataset, method, missing, seeds, epochs)
    suite = parse_spec(data, f"{spec} with the command-line options")
    path = store or Path("mlmm-results") / f"{suite.name}.db"
    _run_bench(suite, path, jobs, threads, executor, ray_address, retry_failed, report, rerun)


def _bench_overrides(data, dataset, method, missing, seeds, epochs) -> dict:
    """Apply ``mlmm bench``'s narrowing options to a spec (as data, validated afterwards)."""
    from mlmm.data.datasets import DATASETS
    from mlmm.data.missingness import split_specs
    from mlmm.errors import MlmmError
    from mlmm.methods import METHODS

    for names, key, registry in ((dataset, "datasets", DATASETS), (method, "methods", METHODS)):
        for name in names or []:
            if name not in data[key]:
                registry.get(name)  # unknown anywhere: the registry's error with suggestions
                data[key][name] = {}  # known but not in the spec: run it with its defaults
        if names:
            data[key] = {n: p for n, p in data[key].items() if n in names}
    if missing:
        data["missing"] = split_specs(missing)
    if seeds:
        try:
            data["seeds"] = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise MlmmError(f"--seeds takes comma-separated integers, got {seeds!r}") from None
    if epochs is not None:
        data["budget"]["max_epochs"] = epochs
    return data


def _run_bench(
    suite, path, jobs, threads, executor, ray_address, retry_failed, report, rerun=None
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mlmm.bench.execute import plan_threads, run_benchmark
    from mlmm.bench.store import ResultsStore
    from mlmm.bench.tables import comparison_table

    console = _console()
    runs = suite.runs()
    threads = plan_threads(jobs, threads, cluster=executor == "ray" and bool(ray_address))
    console.print(
        f"benchmark {suite.name!r}: {len(runs)} runs, {jobs} job(s) × {threads} thread(s), "
        f"executor {executor} → {path}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs", total=len(runs), status="")

        def on_event(kind, run, progress) -> None:
            eta = progress.eta_seconds()
            status = (
                f"running {progress.running} · failed {progress.failed} · "
                + (
                    f"held elsewhere {progress.held_elsewhere} · "
                    if progress.held_elsewhere
                    else ""
                )
                + ("time left ?" if eta is None else f"time left ~{_duration(eta)}")
            )
            finished = progress.done + progress.failed + progress.skipped
            bar.update(task, completed=finished, status=status)
            if kind in ("done", "failed"):
                tag = "[red]failed[/red]" if kind == "failed" else "done"
                bar.console.print(f"{finished}/{progress.total} {run.label()}: {tag}")

        outcome = run_benchmark(
            suite,
            path,
            jobs=jobs,
            threads=threads,
            executor=executor,
            ray_address=ray_address,
            retry_failed=retry_failed,
            rerun=rerun or (),
            on_event=on_event,
        )
    keys = [r.key for r in runs]
    with ResultsStore(path) as db:
        table, run_rows = db.table(keys), db.runs(keys)
    console.print(
        f"{outcome.ran} run(s) ran, {outcome.skipped} already in the store, "
        f"{outcome.failed} failed, in {_duration(outcome.seconds)}"
    )
    if not table.empty:
        console.print(
            _table(
                comparison_table(table),
                "comparison (accuracy %, mean ± std over seeds; rates = fraction of missing "
                "(sample, modality) slots unless the spec says unit=samples)",
            )
        )
    for row in run_rows[run_rows.status == "failed"].itertuples():
        console.print(f"[red]failed[/red] {row.dataset} {row.method} seed={row.seed}: {row.error}")
    console.print(f"results: {path}")
    if report:
        from mlmm.bench.report import write_report

        html = write_report(run_rows, table, Path(path).with_suffix(".html"), title=suite.name)
        console.print(f"report: {html}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@app.command("report")
def report_command(
    store: Annotated[Path, typer.Argument(help="A results store written by mlmm bench.")],
    out: Annotated[Path | None, typer.Option(help="HTML file; default beside the store.")] = None,
) -> None:
    """Write the self-contained HTML report of a results store."""
    from mlmm.bench.report import write_report
    from mlmm.bench.store import ResultsStore
    from mlmm.errors import MlmmError

    if not store.exists():
        raise MlmmError(f"no results store at {str(store)!r}; run mlmm bench first")
    with ResultsStore(store) as db:
        runs, table = db.runs(), db.table()
    html = write_report(runs, table, out or store.with_suffix(".html"), title=store.stem)
    _console().print(f"report: {html}")


@app.command("export")
def export_command(
    store: Annotated[Path, typer.Argument(help="A results store written by mlmm bench.")],
    out: Annotated[Path, typer.Argument(help="A .csv or .parquet file.")],
) -> None:
    """Export a results store's tidy table (with each run's costs) to CSV or Parquet."""
    from mlmm.bench.store import ResultsStore
    from mlmm.errors import MlmmError

    if not store.exists():
        raise MlmmError(f"no results store at {str(store)!r}; run mlmm bench first")
    with ResultsStore(store) as db:
        path = db.export(out)
    _console().print(f"wrote {path}")


@app.command("predict")
def predict_command(
    run: Annotated[Path, typer.Argument(help="A model directory written by `mlmm train`.")],
    input: Annotated[
        Path, typer.Option("--input", help="Samples: .npz (array per modality), .parquet, .csv.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(help="Write .csv, .parquet or .npz here (default: CSV on stdout)."),
    ] = None,
    on_empty: Annotated[
        str, typer.Option(help="Samples with no modality: 'error' or 'prior' (training prior).")
    ] = "error",
) -> None:
    """Predict from a file: per row the answer, probabilities, modalities used, their score."""
    from mlmm.serve.predict import check_suffix, predict_table, read_input, write_table
    from mlmm.train import TrainedModel
    from mlmm.utils import check_output_file

    if output is not None:  # before the work, so a bad --output costs nothing
        check_suffix(output, "--output")
        check_output_file(output)
    trained = TrainedModel.load(run)
    table = predict_table(trained, read_input(input), on_empty=on_empty)
    if output is None:
        sys.stdout.write(table.to_csv(index=False))
        return
    write_table(table, output)
    _console().print(f"wrote {len(table)} prediction(s) to {output}", highlight=False)


@app.command("serve")
def serve_command(
    run: Annotated[
        Path | None, typer.Argument(help="A model directory; served under its directory name.")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Also serve NAME=RUN (repeatable)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    on_empty: Annotated[
        str, typer.Option(help="Samples with no modality: 'error' (422) or 'prior'.")
    ] = "error",
    max_body_bytes: Annotated[int, typer.Option(help="Larger request bodies get a 413.")] = 1 << 20,
    micro_batch: Annotated[
        bool, typer.Option(help="Merge concurrent requests into one forward pass.")
    ] = True,
    max_wait_ms: Annotated[
        float, typer.Option(help="Micro-batch: wait this long for more requests.")
    ] = 2.0,
) -> None:
    """Serve models over HTTP: POST /predict from any subset, /health, /model, /metrics.

    Needs the serve extra: pip install 'mlmm\\[serve]'.
    """
    from mlmm.errors import MlmmError
    from mlmm.serve.loading import load_models

    try:
        import uvicorn

        from mlmm.serve.app import create_app
    except ImportError as err:
        raise MlmmError(
            f"mlmm serve needs FastAPI and uvicorn ({err.name} is missing); "
            f"pip install 'mlmm[serve]'"
        ) from None
    models = load_models(run, model)  # every artifact checked before the port is opened
    service = create_app(
        models,
        on_empty=on_empty,
        max_body_bytes=max_body_bytes,
        micro_batch=micro_batch,
        max_wait_ms=max_wait_ms,
    )
    names = ", ".join(f"{n} ({m.method})" for n, m in models.items())
    _console().print(
        f"serving {names} on http://{host}:{port} (Ctrl+C stops after in-flight requests)",
        highlight=False,
    )
    uvicorn.run(service, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)


@app.command("export-model")
def export_model_command(
    run: Annotated[Path, typer.Argument(help="A model directory written by `mlmm train`.")],
    out: Annotated[Path, typer.Option(help="The file to write (e.g. model.onnx).")],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
) -> None:
    """Export a model to ONNX (modality tensors + presence mask), checked against PyTorch.

    Needs the export extra: pip install 'mlmm\\[export]'.
    """
    from mlmm.errors import MlmmError
    from mlmm.train import TrainedModel
    from mlmm.utils import check_output_file

    if format != "onnx":
        raise MlmmError(f"--format must be onnx, got {format!r}")
    check_output_file(out)  # before the work, so a bad --out costs nothing
    from mlmm.serve.export import export_onnx

    trained = TrainedModel.load(run)
    report = export_onnx(trained, out)
    _console().print(
        f"wrote {out} ({int(report['bytes']):,} bytes); onnxruntime matches PyTorch within "
        f"{report['max_abs_diff']:.1e} on {int(report['patterns'])} presence patterns",
        highlight=False,
    )


def main() -> None:
    """Entry point: one clear line for user errors, tracebacks only with --debug."""
    from mlmm.errors import MlmmError

    debug = "--debug" in sys.argv
    try:
        app()
    except MlmmError as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
