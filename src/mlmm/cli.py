"""The ``mlmm`` command line: a thin layer over the Python API (imports are lazy)."""

from __future__ import annotations

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
) -> None:
    _state["debug"] = debug


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
) -> None:
    """Train a method on a dataset and save the model artifact."""
    from mlmm.experiment import run_experiment

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
    path = res.trained.save(out)
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
    from mlmm.utils import atomic_write

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
        with atomic_write(out) as fh:
            table.to_csv(fh, index=False)
        console.print(f"wrote {out}")


@app.command()
def bench(
    dataset: Annotated[
        list[str] | None, typer.Option(help="Datasets (repeatable); default: the quick suite.")
    ] = None,
    method: Annotated[list[str] | None, typer.Option(help="Methods (repeatable).")] = None,
    missing: Annotated[
        str | None, typer.Option(help="Comma-separated conditions, e.g. mcar:0.5,none=>mcar:0.5.")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per run.")] = None,
    out: Annotated[Path, typer.Option(help="Results folder (reruns skip finished runs).")] = Path(
        "mlmm-results/quick"
    ),
) -> None:
    """Benchmark methods × missingness × seeds; with no options runs the quick suite."""
    from rich.progress import Progress

    from mlmm.bench.runner import QUICK, BenchConfig, comparison_table, run_bench
    from mlmm.data.missingness import split_specs
    from mlmm.errors import MlmmError

    try:
        seed_list = [int(s) for s in seeds.split(",")] if seeds else list(QUICK["seeds"])
    except ValueError:
        raise MlmmError(f"--seeds takes comma-separated integers, got {seeds!r}") from None
    config = BenchConfig(
        datasets={d: QUICK["datasets"].get(d, {}) for d in dataset}
        if dataset
        else dict(QUICK["datasets"]),
        methods={m: {} for m in method} if method else dict(QUICK["methods"]),
        missing=split_specs(missing) if missing else list(QUICK["missing"]),
        seeds=seed_list,
        trainer={} if epochs is None else {"max_epochs": epochs},
    )
    config.validate()
    console = _console()
    n = len(config.runs())
    console.print(f"benchmark: {n} runs → {out}")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("runs", total=n)

        def report(done, total, run, status):
            progress.update(task, completed=done)
            tag = "[red]" if status.startswith("failed") else ""
            progress.console.print(
                f"{tag}{done}/{total} {run['dataset']} {run['method']} {run['missing']} "
                f"seed={run['seed']}: {status}"
            )

        results = run_bench(config, out, report)
    summary = comparison_table(results)
    console.print(
        _table(
            summary,
            "comparison (accuracy %, mean ± std over seeds; rates = fraction of "
            "missing (sample, modality) slots unless the spec says unit=samples)",
        )
    )
    console.print(f"results: {Path(out) / 'results.csv'}")


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
