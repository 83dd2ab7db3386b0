"""The ``mlmm`` command line: a thin layer over the Python API (imports are lazy)."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import warnings
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
#: ``on_interrupt``: what a command tells its user when Ctrl-C, SIGTERM or SIGHUP stops it
#: (:func:`main`); ``signal``: the signal that stopped it.
_state: dict[str, Any] = {"debug": False, "on_interrupt": None, "signal": None}


def _console():
    from rich.console import Console

    # Wide tables stay readable in logs and pipes, where Rich would otherwise assume 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=180)


def _parse_params(items: list[str] | None, option: str = "--param") -> dict[str, Any]:
    """``["hidden=128", "rule=mean_prob"]`` → dict, values read as plain YAML (``1e-3`` is a
    number); a malformed value or a key given twice is one clear error."""
    from mlmm.errors import MlmmError
    from mlmm.plain_yaml import load_yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise MlmmError(
                f"parameters are written key=value, got {item!r} (e.g. --param hidden=128)"
            )
        key, value = item.split("=", 1)
        key = key.strip()
        if key in out:
            raise MlmmError(f"{option} {key} is given twice; give each parameter once")
        out[key] = load_yaml(value, f"{option} {item!r}")
    return out


def _table(df, title: str | None = None, max_rows: int = 200):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False)
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "fi" else "left")
    for row in df.head(max_rows).itertuples(index=False):  # Text: "[...]" in a name is no markup
        table.add_row(*[Text(f"{v:.4f}" if isinstance(v, float) else str(v)) for v in row])
    return table


def _print_version(value: bool) -> None:
    if value:
        from mlmm import __version__

        typer.echo(f"mlmm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            help="Import this module first: it registers your methods, datasets or backbones "
            "(repeatable; looked for in the current folder, then on sys.path; benchmark "
            "workers import it too)."
        ),
    ] = None,
) -> None:
    _state["debug"] = debug
    _state["plugins"] = list(plugin or [])
    if plugin:
        from mlmm.registry import load_plugins

        # as `python -m` would, a module beside you imports; but only the modules named here:
        # the folder is not added to sys.path, where a spec's plugins would find it too
        load_plugins(plugin, folders=[os.getcwd()])


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
def methods(
    family: Annotated[str | None, typer.Option(help="Only this family.")] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="Only methods that train for this task (classification, regression, multilabel)."
        ),
    ] = None,
) -> None:
    """List the registered methods with their family, subtype and paper (the taxonomy)."""
    import pandas as pd

    from mlmm.data.specs import TASK_KINDS
    from mlmm.errors import unknown_name_error
    from mlmm.methods import METHODS, TAXONOMY

    if family is not None and family not in TAXONOMY:
        raise unknown_name_error("family", family, TAXONOMY)
    if task is not None and task not in TASK_KINDS:
        raise unknown_name_error("task", task, TASK_KINDS)
    rows = [
        {
            "name": e.name,
            "family": e.info["family"],
            "subtype": e.info["subtype"],
            "paper": e.info["paper"],
        }
        for e in METHODS
        if family in (None, e.info["family"]) and task in (None, *e.obj.supported_tasks)
    ]
    _console().print(_table(pd.DataFrame(rows), "methods"))


_DATA_HELP = (
    "Your own table instead of --dataset: a .csv or .parquet file, one row per sample, with "
    "--target and --modality (a modality whose columns are all empty in a row is missing there)."
)
_TARGET_HELP = "With --data: the column holding the label or value."
_MODALITY_HELP = (
    "With --data: NAME=COL1,COL2,... , the columns of one modality (repeat for each modality); "
    "a column may be a shell-style pattern, e.g. audio='a_*,extra' (quote it)."
)
_TASK_HELP = (
    "With --data: classification or regression; default: regression when the target holds "
    "numbers with a fractional part, else classification."
)
_PARTIAL_HELP = (
    "With --data: a row where only some of a modality's columns are empty: error, or missing "
    "(the modality counts as absent in that row)."
)
#: The options that describe a table (--data): refused without it.
_TABLE_OPTIONS = ("target", "modality", "task", "partial")


@app.command()
def train(
    ctx: typer.Context,
    method: Annotated[
        str,
        typer.Option(
            help="A registered method (see `mlmm methods`), or auto: a cross-validated "
            "ensemble (--param budget=fast|medium|best; its budget sets the epochs: "
            "--param max_epochs=N caps them, --epochs is ignored with a warning)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Directory for the trained model artifact.")],
    missing: Annotated[
        str,
        typer.Option(help="Training missingness, e.g. mcar:0.5, or 'TRAIN=>TEST' (quoted)."),
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
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    precision: Annotated[
        str,
        typer.Option(
            help="32, bf16-mixed (CPU or GPU: bfloat16 autocast, float32 weights) or "
            "16-mixed (GPU only)."
        ),
    ] = "32",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace the model in --out if it holds one (your other files stay)."),
    ] = False,
    all_subsets: Annotated[
        bool, typer.Option(help="Print every modality subset, not a summary of many.")
    ] = False,
    params: Annotated[
        Path | None,
        typer.Option(
            help="Hyperparameters from `mlmm tune --params-out` (--param, --lr and "
            "--batch-size given here win)."
        ),
    ] = None,
    devices: Annotated[
        int,
        typer.Option(
            help="Train data-parallel in this many processes on this machine (GPUs with "
            "NCCL, or CPU processes with Gloo); --batch-size is the global batch. Across "
            "machines, start `mlmm train` with torchrun instead."
        ),
    ] = 1,
    rendezvous_timeout: Annotated[
        float,
        typer.Option(help="Seconds the processes of --devices or torchrun wait for each other."),
    ] = 300.0,
    dataset: Annotated[
        str | None, typer.Option(help="A built-in dataset (see `mlmm datasets`).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help=_DATA_HELP)] = None,
    target: Annotated[str | None, typer.Option(help=_TARGET_HELP)] = None,
    modality: Annotated[list[str] | None, typer.Option(help=_MODALITY_HELP)] = None,
    task: Annotated[str | None, typer.Option(help=_TASK_HELP)] = None,
    partial: Annotated[str, typer.Option(help=_PARTIAL_HELP)] = "error",
) -> None:
    """Train a method on a dataset (or your table, --data) and save the model artifact."""
    from mlmm.experiment import run_experiment
    from mlmm.train import distributed
    from mlmm.train.checkpoint import check_artifact_path

    _check_data_options(ctx, ("devices", "rendezvous_timeout", "dataset_param", "all_subsets"))
    if data is not None and distributed.launched_by_torchrun() and os.environ["WORLD_SIZE"] != "1":
        from mlmm.errors import MlmmError  # each process would train the whole table alone

        raise MlmmError(
            f"--data trains in one process, but torchrun started {os.environ['WORLD_SIZE']} "
            "processes; run mlmm train --data without torchrun (data-parallel training takes a "
            "built-in --dataset)"
        )
    check_artifact_path(out, overwrite)  # refuse a bad --out before any work, not after it
    _state["on_interrupt"] = f"no model was saved to {out} (train again to get one)"
    if method == "auto" and "epochs" in _given_options(ctx):  # as the estimator warns
        typer.echo(
            f"warning: --epochs {epochs} is ignored with --method auto: its budget sets the "
            f"deep members' epochs; cap them with --param max_epochs={epochs}",
            err=True,
        )
    if data is not None:
        _train_table(ctx)
        return
    if devices > 1:  # a bad --precision is refused here, not once per started process
        import torch

        from mlmm.train.trainer import check_precision, check_precision_device

        if distributed.backend_for(device) == "gloo":  # CPU processes
            check_precision_device(check_precision(precision), torch.device("cpu"))
        check_precision(precision)
    try:
        process = distributed.start(
            method, devices, device, rendezvous_timeout, batch_size, argv=sys.argv[1:]
        )
    except distributed.LaunchStopped as stopped:  # the launcher caught the signal itself
        _state["signal"] = stopped.signum
        raise
    if process is None and devices > 1:
        return  # the processes --devices started have trained and saved
    if process is not None:
        device = process.device()

    trainer = {"max_epochs": epochs, "batch_size": batch_size, "lr": lr}
    method_params = _parse_params(param)
    dataset_params = _parse_params(dataset_param, "--dataset-param")
    if params is not None:
        from mlmm.tune.study import read_params

        # run_experiment's default split sizes: a file tuned on another split is refused
        split = {"seed": seed, "test_size": 0.2, "val_size": 0.1}
        tuned_on = {"dataset": dataset, "dataset_params": dataset_params, "split": split}
        tuned_params, tuned_trainer = read_params(params, method, tuned_on)
        method_params = {**tuned_params, **method_params}
        given = _given_options(ctx)
        trainer.update({k: v for k, v in tuned_trainer.items() if k not in given})
    own_cache = _own_auto_cache(out, method, method_params)
    checkpoint = _own_checkpoint(out, method, process)
    if checkpoint is not None:
        trainer["checkpoint_dir"] = checkpoint
    res = run_experiment(
        dataset,
        method,
        method_params=method_params,
        dataset_params=dataset_params,
        missing=missing,
        seed=seed,
        trainer={**trainer, "device": device, "precision": precision, "progress": not quiet},
    )
    if not distributed.is_main_process():
        distributed.leave()
        return  # only rank 0 writes the artifact and prints
    path = res.trained.save(out, overwrite=overwrite)
    _state["on_interrupt"] = f"the model was saved to {path}"
    if checkpoint is not None:
        from mlmm.train.resume import remove_checkpoint

        remove_checkpoint(checkpoint)  # the model is saved: the checkpoint has served
    console = _console()
    console.print(f"training missingness: {_mask_line(res.train_mask)}")
    console.print(f"device {device}, precision {res.trained.precision}")
    _print_training(console, res.trained)
    _print_tables(console, res.table, all_subsets)
    _print_auto(console, method, res.trained, own_cache)
    console.print(
        f"saved model to [bold]{path}[/bold] ({res.trained.n_parameters():,} parameters, "
        f"{res.trained.train_seconds:.1f}s)"
    )
    if process is not None and process.world_size > 1:
        console.print(
            f"trained data-parallel in {process.world_size} processes ({process.backend})"
        )
    distributed.leave()


def _own_checkpoint(out: Path, method: str, process: Any) -> str | None:
    """The training checkpoint folder kept beside ``out`` (``.NAME.checkpoint``), so that a
    rerun after ``kill -9`` or Ctrl-C resumes from the last written epoch (said in the
    interrupt line); removed once the model is saved. None for ``--method auto`` (its fold
    cache resumes it) and for data-parallel training (which restarts from epoch 1)."""
    from mlmm.train.resume import beside

    if method == "auto" or (process is not None and process.world_size > 1):
        return None
    _state["on_interrupt"] = (
        f"no model was saved to {out} (the same command resumes from its last training checkpoint)"
    )
    return str(beside(out, "checkpoint"))


def _own_auto_cache(out: Path, method: str, method_params: dict[str, Any]) -> str | None:
    """``--method auto`` without a ``cache_dir``: its folds cached beside ``out``, so that
    finished folds survive an interruption and a rerun resumes from them (said in the
    interrupt line). Returns that cache folder, train's own (removed once saved), or None."""
    from mlmm.train.resume import beside

    own_cache = None
    if method == "auto" and "cache_dir" not in method_params:
        own_cache = method_params["cache_dir"] = str(beside(out, "auto-cache"))
    kept = "finished folds are kept for a rerun" if own_cache else "train again to get one"
    _state["on_interrupt"] = f"no model was saved to {out} ({kept})"
    return own_cache


def _print_auto(console: Any, method: str, trained: Any, own_cache: str | None) -> None:
    """After a saved ``--method auto`` model: remove train's own fold cache (``own_cache``)
    and print the inner cross-validation leaderboard."""
    if method != "auto":
        return
    import shutil

    from mlmm.tune.auto import leaderboard

    if own_cache is not None:
        shutil.rmtree(own_cache, ignore_errors=True)
    console.print(_table(leaderboard(trained), "auto: inner cross-validation leaderboard"))


def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_data_options(ctx: typer.Context, dataset_only: tuple[str, ...] = ()) -> None:
    """``--dataset`` or ``--data``, not both nor neither; the table's options only with
    ``--data``, and ``dataset_only`` options (of a built-in dataset) only without it."""
    from mlmm.errors import MlmmError

    params, given = ctx.params, _given_options(ctx)
    if params["dataset"] is not None and params["data"] is not None:
        raise MlmmError(
            "--dataset (a built-in dataset) and --data (your table) exclude each other; give one"
        )
    if params["dataset"] is None and params["data"] is None:
        raise MlmmError(
            "give --dataset NAME (a built-in dataset, see mlmm datasets) or --data FILE (your "
            ".csv or .parquet table, with --target and --modality)"
        )
    if params["data"] is None:
        stray = [_option_name(k) for k in _TABLE_OPTIONS if k in given]
        if stray:
            verb = "describe" if len(stray) > 1 else "describes"
            raise MlmmError(f"{', '.join(stray)} {verb} a table; give it with --data FILE")
        return
    stray = [_option_name(k) for k in dataset_only if k in given]
    if stray:
        several = len(stray) > 1
        raise MlmmError(
            f"{', '.join(stray)} {'apply' if several else 'applies'} to --dataset, not to a "
            f"table (--data); drop {'them' if several else 'it'}"
        )
    if params["target"] is None:
        raise MlmmError("--data needs --target COLUMN, the column holding the label or value")


def _read_table_options(ctx: typer.Context):
    """The table of ``--data`` and its ``--modality`` mapping (patterns matched), checked."""
    from mlmm.data.table import parse_modalities, read_table, resolve_modalities

    specs = parse_modalities(ctx.params["modality"])  # before reading a large file
    frame = read_table(ctx.params["data"])
    return frame, resolve_modalities(frame, specs, ctx.params["target"])


def _train_table(ctx: typer.Context) -> None:
    """``mlmm train --data``: fit on the whole table (a seeded validation part inside it, as
    the estimators do), save, and say how to score it on a held-out table."""
    from mlmm.data.missingness import parse_condition
    from mlmm.data.table import fit_table
    from mlmm.errors import MlmmError

    p = ctx.params
    out, method = p["out"], p["method"]
    if parse_condition(p["missing"]).is_mismatch:  # no test part here to take the TEST side
        raise MlmmError(
            f"--missing {p['missing']!r} sets test conditions, but --data trains on the whole "
            "table; give the training side here and the test ones to mlmm evaluate --data "
            "--missing"
        )
    frame, modalities = _read_table_options(ctx)
    trainer = {"batch_size": p["batch_size"], "lr": p["lr"]}
    if method != "auto":  # auto's budget sets the epochs (train has said so for --epochs)
        trainer["max_epochs"] = p["epochs"]
    method_params = _parse_params(p["param"])
    if p["params"] is not None:
        from mlmm.tune.study import read_params

        # the whole table is training data here: there is no test split to protect
        tuned_params, tuned_trainer = read_params(p["params"], method)
        method_params = {**tuned_params, **method_params}
        given = _given_options(ctx)
        trainer.update({k: v for k, v in tuned_trainer.items() if k not in given})
    own_cache = _own_auto_cache(out, method, method_params)
    checkpoint = _own_checkpoint(out, method, None)
    if checkpoint is not None:
        trainer["checkpoint_dir"] = checkpoint
    trainer.update(device=p["device"], precision=p["precision"], progress=not p["quiet"])
    trained = fit_table(
        frame,
        modalities,
        p["target"],
        method,
        task=p["task"],
        method_params=method_params,
        missing=p["missing"],
        seed=p["seed"],
        partial=p["partial"],
        trainer=trainer,
        source=p["data"].name,
    )
    path = trained.save(out, overwrite=p["overwrite"])
    _state["on_interrupt"] = f"the model was saved to {path}"
    if checkpoint is not None:
        from mlmm.estimator import remove_fit_checkpoints

        remove_fit_checkpoints(checkpoint)  # the model is saved: the checkpoint has served
    console = _console()
    info = trained.info["data"]
    counts = ", ".join(f"{m} {len(c)}" for m, c in modalities.items())
    # the class count shows a whole-number value (an age) taken for labels at a glance
    kinds = f" ({len(trained.classes_)} classes)" if trained.task.is_classification else ""
    console.print(
        f"{p['data']}: {len(frame)} rows, {info['task']} on {p['target']!r}{kinds}, modalities "
        f"(columns): {counts}",
        markup=False,
    )
    _print_training(console, trained)
    _print_auto(console, method, trained, own_cache)
    console.print(
        f"saved model to [bold]{path}[/bold] ({trained.n_parameters():,} parameters, "
        f"{trained.train_seconds:.1f}s); score it on a held-out table with: mlmm evaluate "
        f"{path} --data TEST.csv"
    )


def _tune_table(ctx: typer.Context, options: dict[str, Any]):
    """``mlmm tune --data``: a study on folds of the whole table, converted and masked as
    ``mlmm train --data`` trains on it."""
    from mlmm.data.missingness import parse_condition, simulate
    from mlmm.data.table import table_dataset
    from mlmm.tune.study import TuneSettings, tune_training_data
    from mlmm.utils import rng_for

    p = ctx.params
    frame, modalities = _read_table_options(ctx)
    name = p["data"].name
    data = table_dataset(frame, modalities, p["target"], p["task"], p["partial"], name)
    condition = parse_condition(p["missing"])
    # masked as the estimators mask the data of method="auto" (the whole table, this stream)
    train, _ = simulate(data, condition.train, rng_for(p["seed"], "train-mask"))
    context = {
        "dataset": f"table {name}",
        "missing": condition.train.to_string(),
        "split": {"seed": p["seed"], "table": name},
    }
    settings = TuneSettings(p["trials"], p["timeout"], p["folds"], p["seed"])
    return tune_training_data(train, p["method"], settings, context=context, **options)


def _given_options(ctx: typer.Context) -> set[str]:
    """Names of the command's options given on the command line (not left at defaults)."""
    return {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
    }


@app.command("tune")
def tune_command(
    ctx: typer.Context,
    method: Annotated[str, typer.Option(help="A registered method (see `mlmm methods`).")],
    missing: Annotated[
        str,
        typer.Option(help="Training missingness, e.g. mcar:0.5 (the train side of TRAIN=>TEST)."),
    ] = "none",
    trials: Annotated[
        int, typer.Option(help="Budget in trials (a stored study runs only those it lacks).")
    ] = 20,
    timeout: Annotated[
        float | None, typer.Option(help="Budget in seconds: no new trial starts after it.")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seeds the split (as `mlmm train --seed`), sampler and training.")
    ] = 0,
    folds: Annotated[
        int | None,
        typer.Option(
            help="Folds of the training split per trial; default 3 below 1000 samples, else 1."
        ),
    ] = None,
    store: Annotated[
        Path, typer.Option(help="Results store (SQLite) holding the study; a rerun resumes it.")
    ] = Path("mlmm-results/tune.db"),
    param: Annotated[
        list[str] | None,
        typer.Option(help="Hold a method hyperparameter fixed, key=value (repeatable)."),
    ] = None,
    dataset_param: Annotated[
        list[str] | None, typer.Option(help="Dataset option key=value (repeatable).")
    ] = None,
    epochs: Annotated[
        int, typer.Option(help="Maximum epochs per trial (early stopping on the fold).")
    ] = 200,
    space: Annotated[
        list[str] | None,
        typer.Option(
            help="Search this range instead of the method's space, name=[a, b] (choices) or "
            "name={low: 1e-4, high: 1e-2, log: true} (repeatable; trainer.lr... for the "
            "trainer's space; add when: {name: value} to search it only where an earlier "
            "one takes that value). The names given are the whole space."
        ),
    ] = None,
    params_out: Annotated[
        Path | None, typer.Option(help="Write the best point as YAML for `mlmm train --params`.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="A built-in dataset (see `mlmm datasets`).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help=_DATA_HELP + " The whole table is the training data: trials are scored on "
            "its folds, so keep your test table apart."
        ),
    ] = None,
    target: Annotated[str | None, typer.Option(help=_TARGET_HELP)] = None,
    modality: Annotated[list[str] | None, typer.Option(help=_MODALITY_HELP)] = None,
    task: Annotated[str | None, typer.Option(help=_TASK_HELP)] = None,
    partial: Annotated[str, typer.Option(help=_PARTIAL_HELP)] = "error",
) -> None:
    """Tune a method's hyperparameters on validation folds of the training split (or of your
    table, --data) only."""
    from mlmm.tune.space import TRAINER_PREFIX, dimension_from_plain
    from mlmm.tune.study import tune
    from mlmm.utils import check_output_file

    _check_data_options(ctx, ("dataset_param",))
    if params_out is not None:  # before the study: a user's file or the store is not replaced
        inputs = [store] + ([data] if data is not None else [])
        check_output_file(params_out, "parameters", inputs=inputs, what="--params-out")
    spaces: dict[str, dict[str, Any]] = {"method": {}, "trainer": {}}
    for name, value in _parse_params(space, "--space").items():
        part = "trainer" if name.startswith(TRAINER_PREFIX) else "method"
        spaces[part][name.removeprefix(TRAINER_PREFIX)] = dimension_from_plain(value, name)
    console = _console()

    def on_trial(record) -> None:
        _state["on_interrupt"] = (  # the study exists from its first trial on
            f"every finished trial is kept in {store}; run the same command again to resume"
        )
        value = "" if record["value"] is None else f" validation loss {record['value']:.4f}"
        error = f": {record['error']}" if record["error"] else ""
        console.print(
            f"trial {record['number']}: {record['state']}{value} ({record['seconds']:.1f}s){error}"
        )

    options = {
        "method_params": _parse_params(param),
        "trainer": {"max_epochs": epochs},
        # --space given: its names are the whole space (a part it leaves out is not searched)
        "space": spaces["method"] if space else None,
        "trainer_space": spaces["trainer"] if space else None,
        "store": store,
        "on_trial": on_trial,
    }
    if data is not None:
        result = _tune_table(ctx, options)
    else:
        result = tune(
            dataset,
            method,
            missing=missing,
            n_trials=trials,
            timeout=timeout,
            seed=seed,
            folds=folds,
            dataset_params=_parse_params(dataset_param, "--dataset-param"),
            **options,
        )
    done = result.trials.state.value_counts().to_dict()
    console.print(
        f"{method} on {dataset or data} ({result.n_train} training samples, "
        f"{result.settings.folds} fold(s)): {len(result.trials)} trials ("
        + ", ".join(f"{n} {state}" for state, n in done.items())
        + f"); best trial {result.best_trial}, validation {result.metric} {result.value:.4f}"
    )
    best = {**result.params, **{f"trainer.{k}": v for k, v in result.trainer.items()}}
    console.print(_table(_pd_row(best), "best hyperparameters"))
    console.print(f"study {result.study_key} in {store}")
    if params_out is not None:
        path = result.save(params_out)
        # the data as tuned (train refuses the file for other --dataset-param), to paste
        source = ["--dataset", dataset] if data is None else ["--data", str(data)]
        names = ["dataset_param"] if data is None else ["target", "modality", "task", "partial"]
        for name in [*names, "missing"]:
            if name in _given_options(ctx):
                value = ctx.params[name]
                for item in value if isinstance(value, list) else [value]:
                    source += [_option_name(name), str(item)]
        again = ["mlmm", "train", *source, "--method", method, "--seed", str(seed)]
        console.print(  # quoted to paste (a path with spaces), shown as typed (no markup)
            f"wrote {path}: {shlex.join([*again, '--params', str(path)])} ...",
            markup=False,
            highlight=False,
        )


def _pd_row(values: dict) -> Any:
    import pandas as pd

    return pd.DataFrame([{"parameter": k, "value": str(v)} for k, v in values.items()])


#: Above this many modality subsets, train and evaluate print a summary (by size, worst, best).
MAX_PRINTED_SUBSETS = 15
EXTREME_PRINTED_SUBSETS = 3


def _mask_line(result) -> str:
    from rich.markup import escape

    return escape(result.summary())


def _print_training(console, trained) -> None:
    """Print :func:`_training_lines` as plain text: a stage such as ``[lda-em: main]`` (an
    ``auto`` member's) would otherwise be read as Rich markup and vanish."""
    for line in _training_lines(trained):
        console.print(line, markup=False)


def _training_lines(trained) -> list[str]:
    """How each training stage went: epochs run, the best epoch and its validation loss, and
    why it stopped (early stopping, the maximum epochs or the time limit)."""
    import math

    config = trained.trainer_config
    lines = []
    for history in trained.histories:
        stage = "" if len(trained.histories) == 1 else f" [{history.stage}]"
        n = len(history.epochs)
        if n == 0:
            lines.append(f"training{stage}: fitted without epochs ({history.seconds:.1f}s)")
            continue
        why = {
            "time_limit": f"stopped by the time limit ({config.get('time_limit')}s)",
            "early_stopping": "stopped early (no better validation loss for "
            f"{config.get('patience')} epochs)",
            "max_epochs": f"reached the maximum epochs ({n})",
        }[history.stopped_by]
        if math.isfinite(history.best_val_loss):
            best = f"best epoch {history.best_epoch} (validation loss {history.best_val_loss:.4f})"
        else:
            best = f"no validation data: kept epoch {history.best_epoch}"
        lines.append(f"training{stage}: {n} epoch(s), {best}, {why} ({history.seconds:.1f}s)")
    return lines


def _print_tables(console, table, all_subsets: bool = False) -> None:
    per_label = table.metric.str.contains("[", regex=False)  # multilabel: auroc[LABEL]
    labels, table = table[per_label & (table.scope == "overall")], table[~per_label]
    overall = (
        table[table.scope == "overall"]
        .pivot_table(
            index=["condition", "rate_unit", "slot_rate", "sample_rate"],
            columns="metric",
            values="value",
            sort=False,  # the conditions in the order the user gave them
        )
        .reset_index()
    )
    console.print(
        _table(overall, "test conditions (rates realised; rate_unit = what the spec's rate counts)")
    )
    if not labels.empty:
        from rich.markup import escape

        label = labels.metric.str.extract(r"^auroc\[(.*)\]$", expand=False).map(escape)
        per = labels.assign(label=label).pivot_table(
            index="label", columns="condition", values="value", sort=False
        )
        console.print(_table(per.reset_index(), "AUROC per label (whole test set, by condition)"))
    subsets = table[table.scope == "subset"]
    if subsets.empty:
        return
    import pandas as pd

    from mlmm.eval.metrics import LOWER_IS_BETTER, primary_metric

    per = subsets.pivot_table(index=["subset", "n"], columns="metric", values="value")
    per = per.reset_index()
    metric = primary_metric(set(subsets.metric))
    # worst first: the lowest score, or the highest error
    per = per.sort_values(metric, ascending=metric not in LOWER_IS_BETTER, kind="stable")
    if all_subsets or len(per) <= MAX_PRINTED_SUBSETS:
        console.print(
            _table(per, "every modality subset (forced on all test samples), worst first")
        )
        return
    size = per.subset.str.count(r"\+") + 1
    by_size = per.drop(columns=["subset", "n"]).groupby(size.rename("modalities")).mean()
    by_size.insert(0, "subsets", size.value_counts().sort_index())
    console.print(_table(by_size.reset_index(), "modality subsets by size (mean over subsets)"))
    k = EXTREME_PRINTED_SUBSETS
    extremes = pd.concat([per.head(k).assign(rank="worst"), per.tail(k).assign(rank="best")])
    extremes = extremes[["rank", *per.columns]]
    console.print(_table(extremes, f"the {k} worst and {k} best modality subsets by {metric}"))
    console.print(f"{len(per)} subsets summarised; --all-subsets prints every one")


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
    all_subsets: Annotated[
        bool, typer.Option(help="Print every modality subset, not a summary of many.")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            help="A labelled .csv or .parquet table to score on instead of the test split, laid "
            "out as the table of `mlmm train --data` (the model knows its columns and target)."
        ),
    ] = None,
) -> None:
    """Evaluate a saved model on its test split (or a labelled table, --data) under test
    missingness specs."""
    from mlmm.data.datasets import load_dataset
    from mlmm.data.split import train_val_test_split
    from mlmm.errors import MlmmError
    from mlmm.eval import evaluate as _evaluate
    from mlmm.train import TrainedModel
    from mlmm.train.checkpoint import OWN_FILES
    from mlmm.utils import atomic_write, check_output_file

    if all_subsets and not subsets:  # else --all-subsets printed nothing, without a word
        raise MlmmError(
            "--all-subsets prints the subset scores that --no-subsets skips; drop one of them"
        )
    if out is not None:  # before the evaluation, so a bad --out costs nothing
        own = [model_dir / name for name in OWN_FILES]  # config.json would pass as a CSV
        own += [data] if data is not None else []  # nor the user's table
        check_output_file(out, "CSV", inputs=own, what="--out")
    trained = TrainedModel.load(model_dir)
    info = trained.info
    if data is not None:
        from mlmm.data.table import read_table, table_test_dataset

        test = table_test_dataset(trained, read_table(data))
        mask_seed = info["data"]["seed"] if seed is None else seed
        where = f"{info['data']['source']} (scored on {data}, {test.n_samples} rows)"
    elif "dataset" not in info:
        hint = "give it a labelled table with --data" if "data" in info else "use mlmm.evaluate"
        raise MlmmError(f"{model_dir} does not record a built-in dataset; {hint}")
    else:
        dataset = load_dataset(info["dataset"], **info.get("dataset_params", {}))
        sp = info["split"]
        test = train_val_test_split(dataset, sp["test_size"], sp["val_size"], sp["seed"]).test
        mask_seed = sp["seed"] if seed is None else seed
        where = info["dataset"]
    table = _evaluate(trained, test, missing, seed=mask_seed, subsets=subsets)
    console = _console()
    console.print(f"{trained.method} trained under {info.get('missing')} on {where}", markup=False)
    _print_tables(console, table, all_subsets)
    hide = None
    if getattr(type(trained.model), "imputes", False):
        from mlmm.eval.imputation import imputation_hide

        hide = imputation_hide(test)  # as run_experiment: None on one modality
    if hide is not None:
        import pandas as pd

        from mlmm.eval import imputation_scores

        scores = imputation_scores(trained, test, hide, seed=mask_seed)
        rate = float(hide.split(":")[1])
        title = (
            f"imputation: {rate:.0%} of present slots hidden, NRMSE in training-std units "
            "(mean fill ~ 1)"
        )
        console.print(_table(scores, title))
        table = pd.concat([table, scores], ignore_index=True)
    if out is not None:
        with atomic_write(out) as fh:  # a failed write is atomic_write's one line
            table.to_csv(fh, index=False)
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
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Runs in parallel (worker processes); default: as many as the usable cores "
            "hold at --threads each, at most the runs left, within free memory (1 with "
            "--ray-address)."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Threads per run; default OMP_NUM_THREADS, else 1, whatever the cores (the "
            "thread count changes the rows), at most usable cores // jobs."
        ),
    ] = None,
    executor: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray).")
    ] = None,
    max_attempts: Annotated[
        int, typer.Option(help="Tries per run whose Ray worker or node dies (ray only).")
    ] = 3,
    dataset: Annotated[
        list[str] | None, typer.Option(help="Only these datasets (repeatable).")
    ] = None,
    method: Annotated[
        list[str] | None, typer.Option(help="Only these methods (repeatable).")
    ] = None,
    missing: Annotated[
        str | None,
        typer.Option(help="Replace the missingness, e.g. 'mcar:0.5,none=>mcar:0.5' (quoted)."),
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Replace the seeds, e.g. 0,1,2.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Replace the maximum epochs.")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Rerun runs that failed before.")] = True,
    rerun: Annotated[
        list[str] | None,
        typer.Option(help="Run this method's stored runs again (repeatable)."),
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the HTML report at the end.")] = True,
    allow_spec_plugins: Annotated[
        bool,
        typer.Option(
            help="Import the plugins the spec lists (code: a spec is data, so by default only "
            "plugins also named with mlmm --plugin run)."
        ),
    ] = False,
    include_time_limited: Annotated[
        bool, typer.Option(help="Also rank runs that the budget's time_limit cut short.")
    ] = False,
    run_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds of wall-clock time one run may take in a worker process before it is "
            "killed and recorded failed (hung runs); default 2 x budget.time_limit + 120, none "
            "without a time_limit. With --jobs 1 it makes the run go to a worker process."
        ),
    ] = None,
) -> None:
    """Run a benchmark (default: the quick suite); reruns skip finished runs."""
    from mlmm.bench.spec import load_suite, parse_spec

    allowed = True if allow_spec_plugins else _state.get("plugins", [])
    suite = load_suite(spec, allow_plugins=allowed)
    data = suite.model_dump()
    if "metrics" not in suite.model_fields_set:  # the defaults are not checked against tasks
        del data["metrics"]
    data["plugins"] += [p for p in _state.get("plugins", []) if p not in data["plugins"]]
    data = _bench_overrides(data, dataset, method, missing, seeds, epochs)
    suite = parse_spec(data, f"{spec} with the command-line options", allow_plugins=allowed)
    path = store or Path("mlmm-results") / f"{suite.name}.db"
    _run_bench(
        suite,
        path,
        jobs,
        threads,
        executor,
        ray_address,
        retry_failed,
        report,
        rerun,
        include_time_limited,
        max_attempts,
        run_timeout,
    )


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
    for option, value, example in (("--missing", missing, "'mcar:0.5'"), ("--seeds", seeds, "0,1")):
        if value is not None and not value.strip():  # was ignored: the spec's own ran
            raise MlmmError(f"{option} is empty; give a value such as {example}, or leave it out")
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
    suite,
    path,
    jobs,
    threads,
    executor,
    ray_address,
    retry_failed,
    report,
    rerun=None,
    include_time_limited=False,
    max_attempts=3,
    run_timeout=None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mlmm.bench.execute import run_benchmark
    from mlmm.bench.report import studies_table
    from mlmm.bench.store import ResultsStore
    from mlmm.bench.tables import comparison_table

    console = _console()
    if report:  # checked before any run: the report must not replace the store or a user file
        from mlmm.utils import check_output_file

        check_output_file(Path(path).with_suffix(".html"), "HTML", inputs=[path], what="report")
    runs = suite.runs()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs", total=len(runs), status="")
        waited = {"holders": None, "at": 0.0}

        def on_event(kind, run, progress) -> None:
            if kind == "plan":  # jobs chosen by default count only the runs left to do
                _state["on_interrupt"] = (  # the store exists from here on
                    f"every finished run is kept in {path}; run the same command again to resume"
                )
                bar.console.print(
                    f"benchmark {suite.name!r}: {len(runs)} runs, {progress.jobs} job(s) × "
                    f"{progress.threads} thread(s), executor {executor} → {path}"
                )
            if kind == "waiting":
                _report_wait(bar.console, path, progress, waited)
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
            if kind == "retry":
                bar.console.print(
                    f"{run.label()}: [yellow]lost[/yellow] ({progress.last_error}); tried again"
                )
            if kind in ("done", "failed"):
                tag = "[red]failed[/red]" if kind == "failed" else "done"
                if kind == "done" and progress.last_time_limited:
                    tag = "done ([yellow]time-limited[/yellow])"
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
            max_attempts=max_attempts,
            on_event=on_event,
            command=shlex.join(["mlmm", *sys.argv[1:]]),
            run_timeout=run_timeout,
        )
    keys = [r.key for r in runs]
    with ResultsStore(path) as db:
        table, run_rows, specs = db.table(keys), db.runs(keys), db.specs()
        studies = studies_table(db) if report else None
    console.print(
        f"{outcome.ran} run(s) ran, {outcome.skipped} already in the store, "
        f"{outcome.failed} failed, in {_duration(outcome.seconds)}"
    )
    if not table.empty:
        console.print(
            _table(
                comparison_table(table, suite.metrics, include_time_limited, runs=run_rows),
                "comparison (mean ± std over seeds, accuracy-type metrics in %; rates = fraction "
                "of missing (sample, modality) slots unless the spec says unit=samples)",
            )
        )
    for row in run_rows[run_rows.status == "failed"].itertuples():
        console.print(f"[red]failed[/red] {row.dataset} {row.method} seed={row.seed}: {row.error}")
    _print_time_limited(console, run_rows, include_time_limited)
    console.print(f"results: {path}")
    if report:
        from mlmm.bench.report import write_report

        html = write_report(
            run_rows,
            table,
            Path(path).with_suffix(".html"),
            title=suite.name,
            metrics=suite.metrics,
            specs=specs[specs.name == suite.name],
            include_time_limited=include_time_limited,
            studies=studies,
        )
        console.print(f"report: {html}")


def _report_wait(console, path, progress, waited: dict) -> None:
    """A plain line (in logs and pipes too) when runs held elsewhere are waited for: when
    their holders change, and every minute."""
    import time

    from mlmm.bench import store as store_module

    now = time.monotonic()
    if waited["holders"] == progress.held_by and now - waited["at"] < 60:
        return
    waited.update(holders=progress.held_by, at=now)
    holders = ", ".join(progress.held_by) or "another process"
    console.print(
        f"waiting for {progress.held_elsewhere} run(s) claimed by {holders}; a claim is taken "
        f"over {store_module.CLAIM_EXPIRY_SECONDS:g} s after its owner's last heartbeat "
        f"(to free it now: mlmm store {path} --release-claims)",
        highlight=False,
        soft_wrap=True,
    )


def _print_time_limited(console, run_rows, included: bool) -> None:
    """One line per run whose training the budget's time_limit cut short, and conditions
    that could not be simulated for a finished run."""
    done = run_rows[run_rows.status == "done"]
    for row in done[done.time_limited.fillna(0).astype(int) == 1].itertuples():
        where = "included" if included else "left out of the comparison (--include-time-limited)"
        console.print(
            f"[yellow]time-limited[/yellow] {row.dataset} {row.method} {row.train_condition} "
            f"seed={row.seed}: the time limit stopped its training; {where}"
        )
    for row in done[done.condition_errors.notna()].itertuples():
        console.print(
            f"[yellow]not scored[/yellow] {row.dataset} {row.method} seed={row.seed}: "
            f"{row.condition_errors}"
        )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@app.command("report")
def report_command(
    store: Annotated[Path, typer.Argument(help="A results store written by mlmm bench.")],
    out: Annotated[Path | None, typer.Option(help="HTML file; default beside the store.")] = None,
    include_time_limited: Annotated[
        bool, typer.Option(help="Also rank runs that the budget's time_limit cut short.")
    ] = False,
) -> None:
    """Write the self-contained HTML report of a results store."""
    from mlmm.bench.report import studies_table, write_report
    from mlmm.bench.store import ResultsStore
    from mlmm.errors import MlmmError
    from mlmm.utils import check_output_file

    if not store.exists():
        raise MlmmError(f"no results store at {str(store)!r}; run mlmm bench first")
    out = check_output_file(
        out or store.with_suffix(".html"), "HTML", inputs=[store], what="report"
    )
    with ResultsStore(store, readonly=True) as db:
        runs, table, specs = db.runs(), db.table(), db.specs()
        # a store of tuning studies or stream replays only: the report has no run to show
        studies = studies_table(db)
        held = {"tuning study(ies)": len(studies), "stream run(s)": len(db.stream_runs())}
    html = write_report(
        runs,
        table,
        out,
        title=store.stem,
        specs=specs,
        include_time_limited=include_time_limited,
        studies=studies,
    )
    if runs.empty:
        what = ", ".join(f"{n} {name}" for name, n in held.items() if n) or "nothing"
        _console().print(
            f"note: {store} holds no benchmark run ({what}), so the report is empty; it shows "
            f"the runs of mlmm bench SPEC --store {store}"
        )
    _console().print(f"report: {html}")


@app.command("export")
def export_command(
    store: Annotated[Path, typer.Argument(help="A results store written by mlmm bench.")],
    out: Annotated[Path, typer.Argument(help="A .csv or .parquet file.")],
) -> None:
    """Export a results store's tidy table (with each run's costs) to CSV or Parquet."""
    from mlmm.bench.store import ResultsStore
    from mlmm.errors import MlmmError
    from mlmm.utils import check_output_file

    if not store.exists():
        raise MlmmError(f"no results store at {str(store)!r}; run mlmm bench first")
    kind = {".csv": "CSV", ".parquet": "Parquet"}.get(out.suffix)
    check_output_file(out, kind, inputs=[store], what="export")
    with ResultsStore(store, readonly=True) as db:
        path = db.export(out)
        counts = db.counts()
    done = int(counts.loc[counts.status == "done", "runs"].sum())
    # a store of studies or stream runs only has no benchmark rows: say so, not just "wrote"
    empty = "" if done else " (header only: the store holds no finished benchmark run)"
    _console().print(f"wrote {path}{empty}")


@app.command("store")
def store_command(
    store: Annotated[Path, typer.Argument(help="A results store written by mlmm bench.")],
    release_claims: Annotated[
        bool,
        typer.Option(help="Make runs claimed by a dead or silent process pending again."),
    ] = False,
    force: Annotated[
        bool, typer.Option(help="With --release-claims: release live claims too.")
    ] = False,
    release_failed: Annotated[
        bool,
        typer.Option(help="Make failed runs pending again (rerun even with --no-retry-failed)."),
    ] = False,
) -> None:
    """Show a results store's runs by status and its claims (runs and tuning trials running
    now: owner, age, live or stale); release claims."""
    from mlmm.bench.store import ResultsStore
    from mlmm.errors import MlmmError

    if force and not release_claims:
        raise MlmmError("--force only applies to --release-claims; add --release-claims")
    console = _console()
    writing = release_claims or release_failed
    if writing and not store.exists():  # releasing never creates a store at a mistyped path
        raise MlmmError(f"no results store at {str(store)!r}; run mlmm bench first")
    with ResultsStore(store, readonly=not writing) as db:
        if release_claims:
            console.print(f"released {db.release_claims(force=force)} claim(s)")
        if release_failed:
            console.print(f"released {db.release_failed()} failed run(s)")
        counts, claims = db.counts(), db.running_claims()
        expiry = db.claim_expiry
    console.print(_table(counts, f"runs in {store}"))
    if claims.empty:
        console.print("no claims: no process is running a run or tuning trial of this store")
        return
    taker = {"run": "the next benchmark", "trial": "the next tune on its study"}
    seconds = {  # whole seconds; a claim of an older store may have no start time
        column: ["?" if v != v else f"{v:.0f}" for v in claims[column]]
        for column in ("age_seconds", "seconds_since_beat")
    }
    shown = claims.assign(
        **seconds,
        state=[
            "live" if live else f"stale (taken over by {taker[kind]})"
            for kind, live in zip(claims.kind, claims.live, strict=True)
        ],
    ).drop(columns="live")
    console.print(_table(shown, f"claims (stale after {expiry:g} s without a heartbeat)"))
    if claims.live[claims.kind == "run"].any():
        console.print(
            f"live claims are released only with --release-claims --force: mlmm store {store} "
            f"--release-claims --force (if their processes are gone)"
        )


@app.command("stream")
def stream_command(
    dataset: Annotated[
        str,
        typer.Argument(
            help="A built-in stream: basicmotions, synthetic or daphnet (your files: "
            "--stream-param path=)."
        ),
    ] = "basicmotions",
    method: Annotated[
        str | None,
        typer.Option(help="Registered method (default late-fusion; daphnet: knn-impute)."),
    ] = None,
    outage: Annotated[
        str,
        typer.Option(
            help="Test outages: burst:RATE:len=L (readings, or seconds with s), per sensor "
            "burst:acc=0.3,gyro=0.1:len=20, fail:SENSOR@SECONDS, gaps:FILE.csv; join with +."
        ),
    ] = "burst:0.3:len=2s",
    train_missing: Annotated[
        str,
        typer.Option(
            help="Training missingness on the time-ordered windows (len in steps), or none."
        ),
    ] = "burst:0.3:len=2",
    window: Annotated[float | None, typer.Option(help="Window in seconds.")] = None,
    step: Annotated[float | None, typer.Option(help="Seconds between answers.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the order, outages and training.")] = 0,
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = 30,
    param: Annotated[
        list[str] | None, typer.Option(help="Method hyperparameter key=value (repeatable).")
    ] = None,
    on_empty: Annotated[
        str,
        typer.Option(help="A step with every sensor down: hold (last answer), prior, flag, skip."),
    ] = "hold",
    stream_param: Annotated[
        list[str] | None,
        typer.Option(
            help="Stream option key=value, e.g. duration=120 (synthetic), path=S01R01.txt "
            "(daphnet: your UCI .txt or TimeEval .csv files; task=freeze); repeatable."
        ),
    ] = None,
    store: Annotated[
        Path, typer.Option(help="Results store (SQLite) that keeps the scores and steps.")
    ] = Path("mlmm-results/stream.db"),
    timeline: Annotated[
        Path | None,
        typer.Option(help="Write an HTML timeline (sensors up, answers, errors; classification)."),
    ] = None,
) -> None:
    """Replay a built-in stream with sensor outages; score over time, per live sensors, latency."""
    import platform
    import time

    from mlmm.bench.store import ResultsStore
    from mlmm.errors import MlmmError
    from mlmm.stream.experiment import run_stream
    from mlmm.utils import check_output_file

    # every output is checked before the replay, so a bad path costs no training
    stream_params = _parse_params(stream_param, "--stream-param")
    reconstruction = dataset == "daphnet" and stream_params.get("task") != "freeze"
    if timeline is not None:
        if reconstruction:
            raise MlmmError(
                "--timeline draws a classification stream's answers against its truth, and "
                "daphnet scores reconstruction (its NRMSE tables are printed); drop --timeline"
            )
        check_output_file(timeline, "HTML", inputs=[store], what="--timeline")
    with ResultsStore(store):  # created (or checked) now, not after the work
        pass
    method = method or ("knn-impute" if reconstruction else "late-fusion")
    started = time.perf_counter()
    run = run_stream(
        dataset,
        method,
        outage,
        train_missing,
        window,
        step,
        seed,
        epochs,
        _parse_params(param),
        stream_params,
        on_empty=on_empty,
    )
    console = _console()
    down = ", ".join(f"{k} {v:.0%}" for k, v in run.down.items())
    console.print(f"{dataset} stream, {method}, outages {outage} (down: {down})")
    console.print(_table(run.summary().reset_index(), "overall"))
    table = run.table
    for scope, title in (
        ("live", "score per set of live sensors"),
        ("sensor", "NRMSE per sensor while it is down"),
        ("outage_length", "score while a sensor is down, by the length of its outage"),
        ("time", "score over time (bin start, stream seconds)"),
    ):
        part = table[table.scope == scope]
        if len(part):
            wide = part.pivot_table(index="key", columns="model", values="value", sort=False)
            console.print(_table(wide.reset_index(), title))
    with ResultsStore(store) as db:
        key = db.start_stream_run(run.config)
        info = {"seconds": time.perf_counter() - started, "machine": platform.node()}
        db.finish_stream_run(key, run.table, run.steps, info)
        steps = db.stream_steps(key)
    console.print(f"stored as stream run {key} in {store}")
    if timeline is not None:
        from mlmm.stream.timeline import write_timeline

        title = f"{dataset} stream, {method}, outages {outage}"
        console.print(f"timeline: {write_timeline(steps, timeline, title)}")


@app.command("predict")
def predict_command(
    run: Annotated[Path, typer.Argument(help="A model directory written by `mlmm train`.")],
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            help="Samples: .npz (array per modality), .parquet, .csv, or a POST /predict body "
            "(.json; .jsonl: one instance per line).",
        ),
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
    from mlmm.serve.loading import served_name
    from mlmm.serve.predict import (
        OUTPUT_KINDS,
        check_suffix,
        predict_table,
        read_input,
        write_table,
    )
    from mlmm.serve.request import PredictRequest, pick_model
    from mlmm.train import TrainedModel
    from mlmm.utils import check_output_file

    if output is not None:  # before the work, so a bad --output costs nothing
        kind = OUTPUT_KINDS[check_suffix(output, "--output")]
        check_output_file(output, kind, inputs=[input], what="--output")
    trained = TrainedModel.load(run)
    samples = read_input(input)
    if isinstance(samples, PredictRequest):  # named as `mlmm serve RUN` would serve it
        pick_model(samples.model, [served_name(run)])
    table = predict_table(trained, samples, on_empty=on_empty)
    if output is None:
        sys.stdout.write(table.to_csv(index=False))
        return
    write_table(table, output)
    _console().print(f"wrote {len(table)} prediction(s) to {output}", highlight=False)


@app.command("serve")
def serve_command(
    ctx: typer.Context,
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
    max_instances: Annotated[
        int, typer.Option(help="Most samples in one request; more get a 422.")
    ] = 1024,
    micro_batch: Annotated[
        bool, typer.Option(help="Merge concurrent requests into one forward pass.")
    ] = True,
    max_wait_ms: Annotated[
        float, typer.Option(help="Micro-batch: when requests are queued, wait this long for more.")
    ] = 2.0,
) -> None:
    """Serve models over HTTP: POST /predict from any subset, /health, /model, /metrics.

    Needs the serve extra: pip install 'mlmm\\[serve]'.
    """
    from mlmm.errors import MlmmError
    from mlmm.serve.loading import check_address, load_models

    if not micro_batch and "max_wait_ms" in _given_options(ctx):  # else silently unused
        raise MlmmError("--max-wait-ms is the micro-batch wait; drop it or --no-micro-batch")
    try:
        import uvicorn

        from mlmm.serve.app import create_app
    except ImportError as err:
        raise MlmmError(
            f"mlmm serve needs FastAPI and uvicorn ({err.name} is missing); "
            f"pip install 'mlmm[serve]'"
        ) from None
    check_address(host, port)  # a bad or busy address: one line, before any model loads
    models = load_models(run, model)  # every artifact checked before the port is opened
    service = create_app(
        models,
        on_empty=on_empty,
        max_body_bytes=max_body_bytes,
        max_instances=max_instances,
        micro_batch=micro_batch,
        max_wait_ms=max_wait_ms,
    )
    names = ", ".join(f"{n} ({m.method})" for n, m in models.items())
    where = f"[{host}]" if ":" in host else host  # an IPv6 address is bracketed in a URL
    _console().print(
        f"serving {names} on http://{where}:{port} (Ctrl+C stops after in-flight requests)",
        highlight=False,
    )
    _state["on_interrupt"] = "the server answered its in-flight requests and stopped"
    # a signal before the server starts leaves uvicorn's coroutine unstarted: not news
    warnings.filterwarnings("ignore", "coroutine 'Server.serve' was never awaited", RuntimeWarning)
    try:
        uvicorn.run(
            service, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30
        )
    except SystemExit:  # uvicorn's exit 3 when stopped before it started
        if _state["signal"] is None:
            raise
    if _state["signal"] is not None:  # uvicorn handled Ctrl-C or SIGTERM, then raised it again
        raise KeyboardInterrupt


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
    from mlmm.train.checkpoint import OWN_FILES
    from mlmm.utils import check_output_file

    if format != "onnx":
        raise MlmmError(f"--format must be onnx, got {format!r}")
    # before the work, so a bad --out costs nothing; never over one of the model's own files
    check_output_file(out, "ONNX", inputs=[run / name for name in OWN_FILES], what="--out")
    from mlmm.serve.export import export_onnx

    trained = TrainedModel.load(run)
    report = export_onnx(trained, out)
    _console().print(
        f"wrote {out} ({int(report['bytes']):,} bytes); onnxruntime matches PyTorch within "
        f"{report['max_abs_diff']:.1e} on {int(report['patterns'])} presence patterns",
        highlight=False,
    )


def _stop(signum: int, frame: Any) -> None:
    """Ctrl-C, SIGTERM and SIGHUP (its terminal closed) stop a command the same way: as a
    KeyboardInterrupt, so that what it holds (a benchmark's claims, its workers, a
    half-written temporary file) is given back on the way out. Without this, SIGTERM and
    SIGHUP killed the process where it stood."""
    _state["signal"] = signum
    raise KeyboardInterrupt


def _hang_up(signum: int, frame: Any) -> None:
    """SIGHUP does what SIGTERM would do now: stop the command (:func:`_stop`) or, while
    `mlmm serve` runs, let the server answer its in-flight requests and stop."""
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler) and handler is not _hang_up:
        handler(signum, frame)
    else:  # SIGTERM ignored or left to the default: SIGHUP still stops as Ctrl-C does
        _stop(signum, frame)


def _interrupted() -> None:
    """One line saying what stopped the command and what it kept; exit 128 + the signal."""
    signum = _state["signal"] or signal.SIGINT
    hint = _state["on_interrupt"]
    distributed = sys.modules.get("mlmm.train.distributed")  # not imported here for this
    launcher = None if distributed is None else os.environ.get(distributed.LAUNCHED_VARIABLE)
    if launcher in (None, str(os.getpid())):  # a process of --devices N leaves it to its launcher
        try:  # after SIGHUP the terminal may be gone: the exit code still says what happened
            typer.echo(
                f"interrupted by {signal.Signals(signum).name}" + (f"; {hint}" if hint else ""),
                err=True,
            )
        except OSError:
            pass
    sys.exit(128 + signum)


def main() -> None:
    """Entry point: one clear line for user errors and for each warning, tracebacks only with
    --debug; one line for Ctrl-C, SIGTERM or, where there is one, SIGHUP (exit code 130, 143 or 129)."""
    import threading

    from mlmm.errors import MlmmError

    debug = "--debug" in sys.argv
    _state.update(on_interrupt=None, signal=None)
    handlers = {signal.SIGINT: _stop, signal.SIGTERM: _stop}
    if hasattr(signal, "SIGHUP"):  # the terminal was closed (not on Windows)
        handlers[signal.SIGHUP] = _hang_up
    before = {  # a signal ignored by whoever started this process (nohup, `cmd &`) stays so
        signum: signal.signal(signum, handler)
        for signum, handler in handlers.items()
        if signal.getsignal(signum) is not signal.SIG_IGN
        # only the main thread may set handlers: main() run in another thread keeps Python's
        and threading.current_thread() is threading.main_thread()
    }
    shown = warnings.formatwarning  # a warning is one line, as the CLI's own: "warning: ..."
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        app()
    except MlmmError as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:  # raised outside the command (typer turns those into exit 130)
        _interrupted()
    except OSError:
        if _state["signal"] is not None:  # e.g. a progress bar drawn on a terminal SIGHUP closed
            _interrupted()
        raise
    except SystemExit as exit_:
        # typer's exit 130 for a KeyboardInterrupt, or click's exit 1 for a pipe the signal
        # closed (`mlmm bench | tee log` in a closed terminal): the signal stopped the command
        if exit_.code not in (0, None) and _state["signal"] is not None:
            _interrupted()
        raise
    finally:  # as they were (main() called in a test process, or twice)
        warnings.formatwarning = shown
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _one_line_warning(message: Warning | str, *args: Any, **kwargs: Any) -> str:
    """``warning: MESSAGE``: no file, line or source line (``--debug`` shows Python's form)."""
    return f"warning: {message}\n"


if __name__ == "__main__":
    main()
