"""Benchmark specs: YAML files validated with pydantic, expanded into runs.

A spec names datasets (with loader parameters), methods (with hyperparameters), missingness
(each entry trains under one condition and tests under a list), seeds, metrics and a budget::

    name: my-bench
    datasets:
      handwritten: {}
      synthetic: {n_samples: 3000}
    methods:
      hemis: {hidden: 128}
      late-fusion: {}
    missing:
      - mcar:0.5                      # train and test under MCAR 0.5
      - none=>mcar:0.5                # train on full data, test under MCAR 0.5
      - train: mcar:0.5               # one training condition, a robustness curve at test
        test: [none, mcar:0.3, mcar:0.5, mcar:0.7]
    seeds: [0, 1, 2]
    metrics: [accuracy, macro_f1]
    budget: {max_epochs: 50, patience: 10}   # epochs, not seconds: results do not depend on load
    resources: {num_gpus: 0, num_cpus: 2}    # what --executor ray reserves per run

Every name, hyperparameter and missingness string is checked before any run starts; an error
names the field and, for a file, its line. A run is one (dataset, method, training condition,
seed): entries sharing a training condition train one model, scored under all their test
conditions. It is keyed by a hash of its whole configuration (:func:`run_key`), so rerunning a
spec skips the runs a results store already holds.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlmm.errors import MlmmError, did_you_mean, unknown_name_error
from mlmm.eval.metrics import (
    CLASSIFICATION_EXTRA_METRICS,
    CLASSIFICATION_METRICS,
    MULTILABEL_METRICS,
    REGRESSION_EXTRA_METRICS,
    REGRESSION_METRICS,
)

_TASK_METRICS = {
    "classification": (*CLASSIFICATION_METRICS, *CLASSIFICATION_EXTRA_METRICS),
    "regression": (*REGRESSION_METRICS, *REGRESSION_EXTRA_METRICS),
    "multilabel": MULTILABEL_METRICS,
}
#: The tasks each metric scores (macro-F1 scores classification and multilabel tasks).
METRIC_TASKS: dict[str, tuple[str, ...]] = {
    metric: tuple(task for task, listed in _TASK_METRICS.items() if metric in listed)
    for metrics in _TASK_METRICS.values()
    for metric in metrics
}
#: Metrics the evaluation computes (classification, regression, then multilabel).
METRICS = tuple(METRIC_TASKS)
#: Seeds are stored as 64-bit integers.
MAX_SEED = 2**63 - 1


class Budget(BaseModel):
    """What one run may spend: epochs, seconds of training, and the trainer's batch settings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_epochs: int = Field(200, ge=1, description="Maximum epochs per training stage.")
    time_limit: float | None = Field(
        None, gt=0, description="Seconds of training per run (all stages); None: no limit."
    )
    patience: int = Field(20, ge=1, description="Early-stopping patience in epochs.")
    batch_size: int = Field(64, ge=2)  # the training loop skips one-row batches
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    device: str = Field(
        "cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto'; checked where the run trains."
    )
    precision: str = Field(
        "32", description="'32', 'bf16-mixed' (CPU or GPU) or '16-mixed' (GPU only)."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        # the name only: whether a GPU is there is checked by the worker that trains the run
        # (a Ray head without a GPU may send runs to nodes with one)
        if value != "auto":
            import torch

            try:
                torch.device(value)
            except (RuntimeError, TypeError):
                raise ValueError(
                    f"unknown device {value!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'"
                ) from None
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> str:
        from mlmm.train.trainer import check_precision

        try:
            return check_precision(value)
        except MlmmError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _precision_on_device(self) -> Budget:
        if self.precision == "16-mixed" and self.device == "cpu":
            raise ValueError(
                "precision '16-mixed' needs a CUDA GPU, got device 'cpu'; use precision "
                "'bf16-mixed' on the CPU, or device 'cuda'"
            )
        return self

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`mlmm.Trainer`. ``device`` and ``precision`` only
        when not the defaults, so the keys of runs written before they existed stay the same."""
        kwargs = self.model_dump()
        for name in ("device", "precision"):
            if kwargs[name] == type(self).model_fields[name].default:
                del kwargs[name]
        return kwargs


class Resources(BaseModel):
    """``resources:``: what ``--executor ray`` reserves on a node for each run. They decide
    where a run is placed, not its results, so they are not part of a run's key. The local
    executors run on this machine as it is (``--jobs``, ``--threads``) and do not read them.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_gpus: float = Field(
        0, ge=0, description="GPUs per run (a fraction shares one GPU between runs)."
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs per run; None: --threads (never fewer than it)."
    )


class TuneBlock(BaseModel):
    """``tune:``: every run first tunes its method's hyperparameters on its own training split
    (:func:`mlmm.tune.tune_training_data`, validation folds inside that split only), then
    trains with the best point. The runs' budget (epochs, patience) applies to every trial."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(20, ge=1, description="Trials per run (at least 1).")
    timeout: float | None = Field(
        None, gt=0, description="Seconds per run's study: no new trial starts after them."
    )
    folds: int | None = Field(
        None, ge=1, description="Folds of the training split; None: 3 below 1000 samples, else 1."
    )
    seed: int = Field(0, ge=0, description="The tuning seed (sampler, folds, trial training).")


class MissingEntry(BaseModel):
    """One training condition and the test conditions its model is scored under; ``datasets``
    limits it to some datasets (a fixed pattern names one dataset's modalities)."""

    model_config = ConfigDict(extra="forbid")

    train: str
    test: list[str] = Field(min_length=1)
    datasets: list[str] | None = None

    @field_validator("train")
    @classmethod
    def _train_spec(cls, value: str) -> str:
        from mlmm.data.missingness import parse_condition

        condition = parse_condition(value)
        if condition.train.to_string() != condition.test.to_string():
            raise ValueError(f"'train' takes one condition, not a TRAIN=>TEST pair: {value!r}")
        return condition.train.to_string()

    @field_validator("test")
    @classmethod
    def _test_specs(cls, values: list[str]) -> list[str]:
        from mlmm.data.missingness import parse_missingness

        return [parse_missingness(v).to_string() for v in values]


class BenchSpec(BaseModel):
    """A benchmark: datasets × methods × missingness × seeds, with metrics and a budget."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field("custom", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    # before datasets and methods: fields validate in this order, and a plugin registers names
    plugins: list[str] = Field(default_factory=list)
    datasets: dict[str, dict[str, Any] | None] | Literal["all"] = Field(min_length=1)
    methods: dict[str, dict[str, Any] | None] | Literal["all"] = Field(min_length=1)
    missing: list[str | MissingEntry] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    metrics: list[str] = Field(default_factory=lambda: ["accuracy", "macro_f1", "auroc", "ece"])
    budget: Budget = Field(default_factory=Budget)
    test_size: float = Field(0.2, gt=0, lt=1)
    val_size: float = Field(0.1, ge=0, lt=1)
    split: Literal["random", "official"] = Field(
        "random",
        description="random: seeded stratified parts of test_size / val_size; official: each "
        "dataset's own train / validation / test parts (file-format loaders, basicmotions).",
    )
    tune: TuneBlock | None = None
    resources: Resources = Field(default_factory=Resources)

    @field_validator("plugins")
    @classmethod
    def _plugins(cls, value: list[str], info: ValidationInfo) -> list[str]:
        from mlmm.registry import load_plugins

        context = info.context or {}
        allowed = context.get("allow_plugins", False)
        # a module this process has imported already runs nothing new when imported again
        refused = [
            m for m in value if not (allowed is True or m in (allowed or ()) or m in sys.modules)
        ]
        if refused:
            raise MlmmError(
                f"the spec lists plugins {refused}, which run code when imported, and a spec is "
                f"data; to run them, allow them on the command line: mlmm bench SPEC "
                f"--allow-spec-plugins, or mlmm --plugin {refused[0]} bench SPEC "
                f"(in Python: load_spec(path, allow_plugins=True))"
            )
        folder = context.get("plugin_folder")
        # their methods and datasets are then known to the checks below
        load_plugins(value, folders=[folder] if folder else [])
        return value

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, value: dict[str, Any] | str) -> dict[str, dict[str, Any]]:
        from mlmm.data.datasets import DATASETS
        from mlmm.data.datasets.registry import check_dataset_params

        if value == "all":  # every built-in dataset with its default parameters
            # (not the file-format loaders: they need the user's files at root=)
            return {e.name: {} for e in DATASETS if not e.info.get("needs_files")}
        for name, params in value.items():
            DATASETS.get(name)  # unknown name: MlmmError with the closest matches
            check_dataset_params(name, params or {})  # a misspelt parameter, on its line
            _check_finite(params, "parameter", f"dataset {name!r}")
        return {name: dict(params or {}) for name, params in value.items()}

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: dict[str, Any] | str) -> dict[str, dict[str, Any]]:
        from mlmm.methods import METHODS, registry

        if value == "all":  # every registered method with its defaults
            value = {name: {} for name in METHODS.names()}
        resolved: dict[str, dict[str, Any]] = {}
        for name, params in value.items():
            if name == "auto":  # method="auto": its parameters are fit_auto's settings
                accepted = auto_settings()
            else:
                METHODS.get(name)
                accepted = registry.method_hyperparameters(name)
            for key in params or {}:
                if key not in accepted:
                    raise MlmmError(
                        f"method {name!r} has no hyperparameter {key!r}.{did_you_mean(key, accepted)}"
                    )
            _check_finite(params, "hyperparameter", f"method {name!r}")
            # resolved against the defaults, so a run's key (and its stored configuration)
            # changes when a default does: a store never serves results of an older default
            resolved[name] = {**accepted, **(params or {})}
        return resolved

    @field_validator("missing")
    @classmethod
    def _missing(cls, value: list[str | MissingEntry]) -> list[str | MissingEntry]:
        from mlmm.data.missingness import parse_condition

        for entry in value:
            if isinstance(entry, str):
                parse_condition(entry)
        return value

    @model_validator(mode="after")
    def _entry_datasets(self) -> BenchSpec:
        for i, entry in enumerate(self.missing):
            for name in entry.datasets or [] if isinstance(entry, MissingEntry) else []:
                if name not in self.datasets:
                    raise ValueError(
                        f"missing[{i}] is limited to dataset {name!r}, which the spec does not "
                        f"run; add it to datasets or remove it from the entry"
                    )
        return self

    @model_validator(mode="after")
    def _gpus_need_a_gpu_device(self) -> BenchSpec:
        # a GPU asked for, a CPU run: refused
        if self.resources.num_gpus > 0 and self.budget.device == "cpu":
            raise ValueError(
                f"resources.num_gpus {self.resources.num_gpus:g} reserves a GPU per run, but "
                f"budget.device is 'cpu'; set budget.device: cuda (or auto), or num_gpus: 0"
            )
        return self

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_types(cls, value: Any) -> Any:
        for seed in value if isinstance(value, list) else []:
            if isinstance(seed, bool) or not isinstance(seed, int):  # pydantic reads True as 1
                raise ValueError(f"seeds are non-negative integers, got {seed!r}")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        for seed in value:
            if not 0 <= seed <= MAX_SEED:
                raise ValueError(
                    f"seeds must be non-negative integers below 2**63 (they are stored as "
                    f"64-bit integers), got {seed}"
                )
        if len(set(value)) != len(value):
            raise ValueError(f"seeds are listed twice: {value}")
        return value

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # runs only for metrics the spec lists: the default list is not validated
        from mlmm.data.datasets import DATASETS

        for metric in value:
            if metric not in METRICS:
                raise unknown_name_error("metric", metric, METRICS)
        tasks = {}  # datasets of plugins may not declare their task: those are not checked
        for name, params in (info.data.get("datasets") or {}).items():
            task = DATASETS.get(name).info.get("task")
            # a loader whose parameters choose the task declares a function of them
            tasks[name] = task(params or {}) if callable(task) else task
        known = {t for ts in METRIC_TASKS.values() for t in ts}
        tasks = {name: task for name, task in tasks.items() if task in known}
        for metric in value:
            if tasks and not set(METRIC_TASKS[metric]) & set(tasks.values()):
                fitting = [m for m, ts in METRIC_TASKS.items() if set(ts) & set(tasks.values())]
                raise ValueError(
                    f"metric {metric!r} scores {' and '.join(METRIC_TASKS[metric])} tasks, but "
                    f"the spec's datasets are {', '.join(f'{n} ({t})' for n, t in tasks.items())}; use "
                    f"{', '.join(fitting)}"
                )
        return value

    # ------------------------------------------------------------------ expansion
    def conditions(self, dataset: str) -> list[tuple[str, list[str]]]:
        """The missingness entries that apply to ``dataset``, each as ``(training condition,
        [test conditions])``.

        Entries that share a training condition are merged (their test conditions united, in
        order of first appearance): ``none=>mcar:0.5`` and ``{train: none, test: [...]}``
        train one model, scored under all their test conditions. Each test mask is seeded by
        the run's seed and its own spec, so a condition's scores do not depend on the others.
        """
        from mlmm.data.missingness import parse_condition

        merged: dict[str, list[str]] = {}
        for entry in self.missing:
            if isinstance(entry, MissingEntry):
                if entry.datasets is None or dataset in entry.datasets:
                    train, tests = entry.train, list(entry.test)
                else:
                    continue
            else:
                condition = parse_condition(entry)
                train, tests = condition.train.to_string(), [condition.test.to_string()]
            known = merged.setdefault(train, [])
            known += [t for t in tests if t not in known]
        return list(merged.items())

    def runs(self) -> list[RunConfig]:
        """Every run, in a stable order (dataset, missingness, method, seed)."""
        return [
            RunConfig(
                dataset=dataset,
                dataset_params=dataset_params,
                method=method,
                method_params=method_params,
                train_missing=train,
                test_missing=tuple(tests),
                seed=seed,
                budget=self.budget.trainer_kwargs(),
                test_size=self.test_size,
                val_size=self.val_size,
                plugins=tuple(self.plugins),
                tune=None if self.tune is None else self.tune.model_dump(),
                split=self.split,
            )
            for dataset, dataset_params in self.datasets.items()
            for train, tests in self.conditions(dataset)
            for method, method_params in self.methods.items()
            for seed in self.seeds
        ]


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's results (its hash is the run's key)."""

    dataset: str
    dataset_params: dict[str, Any]
    method: str
    method_params: dict[str, Any]
    train_missing: str
    test_missing: tuple[str, ...]
    seed: int
    budget: dict[str, Any]
    test_size: float
    val_size: float
    plugins: tuple[str, ...] = ()
    tune: dict[str, Any] | None = None
    split: str = "random"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the test conditions as a list (``plugins`` only when there are
        some, so the keys of runs without plugins stay what they were)."""
        out = {
            "dataset": self.dataset,
            "dataset_params": self.dataset_params,
            "method": self.method,
            "method_params": self.method_params,
            "train_missing": self.train_missing,
            "test_missing": list(self.test_missing),
            "seed": self.seed,
            "budget": self.budget,
            "test_size": self.test_size,
            "val_size": self.val_size,
        }
        if self.plugins:
            out["plugins"] = list(self.plugins)
        if self.tune is not None:  # only when tuned: the keys of untuned runs stay the same
            out["tune"] = self.tune
        if self.split != "random":  # likewise: runs on random splits keep their keys
            out["split"] = self.split
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return cls(
            **{
                **data,
                "test_missing": tuple(data["test_missing"]),
                "plugins": tuple(data.get("plugins", ())),
            }
        )

    @property
    def key(self) -> str:
        """A stable hash of the whole configuration (16 hex digits)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def label(self) -> str:
        """A short human-readable name: ``handwritten hemis mcar:0.5 seed=0``."""
        return f"{self.dataset} {self.method} {self.train_missing} seed={self.seed}"


def auto_settings() -> dict[str, Any]:
    """The settings a spec may give ``method: auto`` (:func:`mlmm.tune.auto.fit_auto`'s
    keyword arguments, with their defaults). The run's seed, and its budget's batch size,
    learning rate and device, come from the run; ``max_epochs`` caps the deep members."""
    from mlmm.tune.auto import fit_auto

    skip = {"train", "seed", "batch_size", "lr", "device", "progress", "callback", "info"}
    skip |= {"cache_dir"}  # a per-run cache would be shared by every run of the benchmark
    return {
        name: p.default
        for name, p in inspect.signature(fit_auto).parameters.items()
        if name not in skip
    }


def _check_finite(params: dict[str, Any] | None, label: str, owner: str) -> None:
    """Refuse NaN and infinities anywhere in the parameters of ``owner`` (a method, a
    dataset): they pass every range check, since NaN compares False with any bound."""

    def finite(value: Any) -> bool:
        if isinstance(value, float):
            return math.isfinite(value)
        if isinstance(value, (list, tuple)):
            return all(finite(v) for v in value)
        if isinstance(value, dict):
            return all(finite(v) for v in value.values())
        return True

    for key, value in (params or {}).items():
        if not finite(value):
            raise MlmmError(f"{label} {key!r} of {owner} must be finite, got {value!r}")


# ---------------------------------------------------------------------- loading
def parse_spec(
    data: Any,
    source: str = "spec",
    lines: dict[tuple, int] | None = None,
    *,
    allow_plugins: bool | Collection[str] = False,
    plugin_folder: str | Path | None = None,
) -> BenchSpec:
    """Validate a spec given as a mapping; errors name the field (and its line, when known).

    Parameters
    ----------
    data : mapping
        The spec as plain data.
    source : str
        What the errors call it (the file name).
    lines : dict, optional
        Line of each key path, for the errors (:func:`load_spec` fills it).
    allow_plugins : bool or collection of str
        Which of the spec's ``plugins`` may be imported: True for all, or these names. A spec
        is data, and a plugin is code, so by default (False) a spec listing a plugin is refused
        unless this process has imported that module already.
    plugin_folder : str or Path, optional
        A folder searched for the plugins before ``sys.path`` (:func:`load_spec` passes the
        spec file's folder).
    """
    if not isinstance(data, dict):
        raise MlmmError(
            f"{source}: a benchmark spec is a mapping with keys datasets, methods, missing, "
            f"seeds..., got {type(data).__name__}"
        )
    if not isinstance(allow_plugins, bool):  # names: a bare string is one name, not letters
        allow_plugins = {allow_plugins} if isinstance(allow_plugins, str) else set(allow_plugins)
    context = {"allow_plugins": allow_plugins, "plugin_folder": plugin_folder}
    try:
        return BenchSpec.model_validate(data, context=context)
    except ValidationError as err:  # the validators' MlmmErrors arrive wrapped in it
        errors = err.errors()
        # a misspelt key is the cause of the 'required field' error of the key it meant
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(first["loc"])
        # pydantic adds the union member's name to the location of a failed union entry
        loc = tuple(p for p in loc if p not in ("str", "MissingEntry"))
        field = ".".join(str(p) for p in loc) or "spec"
        line = _line_for(lines or {}, loc)
        where = f"{source}, line {line}" if line else source
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field; remove it or check its spelling"
            if len(loc) == 1:  # a top-level key: name the closest ones
                message = f"unknown field.{did_you_mean(str(loc[0]), BenchSpec.model_fields)}"
        elif first["type"] == "missing":
            message = "required field is missing"
        raise MlmmError(f"{where}: {field}: {message}") from None


def load_spec(path: str | Path, *, allow_plugins: bool | Collection[str] = False) -> BenchSpec:
    """Read and validate a YAML spec file (never executed: plain YAML only).

    The file is read as plain data (:mod:`mlmm.plain_yaml`: at most 1 MB of UTF-8, no anchors
    or aliases, no repeated keys). Its ``plugins`` are imported only when ``allow_plugins``
    allows them (see :func:`parse_spec`); they are looked for in the spec's folder first.
    """
    from mlmm.plain_yaml import compose_yaml, read_yaml_text

    path = Path(path)
    if not path.is_file():
        raise MlmmError(
            f"no benchmark spec at {str(path)!r}; give a YAML file or a built-in suite "
            f"({', '.join(builtin_suites())})"
        )
    data, node = compose_yaml(read_yaml_text(path, "benchmark spec"), str(path))
    return parse_spec(
        data,
        str(path),
        _key_lines(node),
        allow_plugins=allow_plugins,
        plugin_folder=path.resolve().parent,
    )


def builtin_suites() -> list[str]:
    """Names of the suites shipped in the package (``quick``, ``standard``...)."""
    folder = resources.files("mlmm.bench") / "suites"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_suite(
    name_or_path: str | Path, *, allow_plugins: bool | Collection[str] = False
) -> BenchSpec:
    """A built-in suite by name, or a spec file by path (``allow_plugins``: see
    :func:`parse_spec`)."""
    name = str(name_or_path)
    if name in builtin_suites():
        with resources.as_file(resources.files("mlmm.bench") / "suites" / f"{name}.yaml") as p:
            return load_spec(p, allow_plugins=allow_plugins)
    if not name.endswith((".yaml", ".yml")) and not Path(name).exists():
        raise unknown_name_error("benchmark suite", name, builtin_suites())
    return load_spec(name, allow_plugins=allow_plugins)


def _key_lines(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """1-based line of every key and list item in a composed YAML document, by path."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            lines[sub] = key.start_mark.line + 1
            lines.update(_key_lines(value, sub))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            lines[sub] = item.start_mark.line + 1
            lines.update(_key_lines(item, sub))
    return lines


def _line_for(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest known prefix of a pydantic error location."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
