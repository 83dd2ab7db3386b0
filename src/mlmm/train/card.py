"""The model card: a ``README.md`` in every artifact, written from its config.

It says what the model is (method and paper), what it was trained on (modalities, task,
data, the missingness it saw), how well it did for each combination of modalities on the
validation data, and what it is for. Everything comes from ``config.json``; nothing is typed
by hand, so the card cannot disagree with the model.
"""

from __future__ import annotations

import math
from typing import Any

_LIMITS = (
    "- Answers for samples drawn like the training data. Scores per modality subset are "
    "measured on validation data with that subset forced; a presence pattern that was rare "
    "in training may score lower in use.\n"
    "- A modality is absent only when the input says so (an omitted key, an all-NaN row, an "
    "omitted or null field in the service). A modality filled with zeros is read as data.\n"
    "- Not a medical, legal or safety device: check the validation table, and the task's own "
    "evaluation, before relying on an answer.\n"
    "- Probabilities are the model's, uncalibrated unless the method says otherwise (see the "
    "`ece` column)."
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _pct(value: Any) -> str:
    """A rate as a percentage; anything else (a plugin's own record) as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.1%}"
    return "?" if value is None else str(value)


def _method_info(method: str) -> dict[str, Any]:
    from mlmm.methods.registry import METHODS

    return dict(METHODS.get(method).info) if method in METHODS else {}


def validation_by_subset(validation: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Validation metrics keyed ``"SUBSET/METRIC"`` as ``{SUBSET: {METRIC: value}}`` (numbers only)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in validation.items():
        subset, _, metric = str(key).rpartition("/")
        if subset and isinstance(value, (int, float)) and not isinstance(value, bool):
            out.setdefault(subset, {})[metric] = float(value)
    return out


def _validation_table(validation: dict[str, Any]) -> str:
    scores = validation_by_subset(validation)
    if not scores:
        return (
            "No validation scores were stored with this model (trained without validation data).\n"
        )
    metrics = list(dict.fromkeys(m for row in scores.values() for m in row))
    lines = [
        "| modalities present | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for subset, row in sorted(scores.items(), key=lambda item: (-item[0].count("+"), item[0])):
        lines.append(
            f"| {subset} | " + " | ".join(_fmt(row.get(m, float("nan"))) for m in metrics) + " |"
        )
    return "\n".join(lines) + "\n"


def model_card(config: dict[str, Any]) -> str:
    """The Markdown model card of an artifact config (:meth:`mlmm.TrainedModel.config`).

    Parameters
    ----------
    config : dict
        The artifact config.

    Returns
    -------
    str
        Markdown: method and paper, data and modalities, training missingness, per-subset
        validation table, training settings, intended use and limits, how to use it.
    """
    method = config["method"]
    info = config.get("info") or {}
    task = config["task"]
    about = _method_info(method)
    lines = [f"# {method} model (mlmm {config.get('library_version', '?')})", ""]
    lines.append(
        f"A `{method}` model that answers from any non-empty subset of its modalities. "
        f"Written by mlmm on {config.get('created_utc') or 'an unknown date'}; "
        "this card is generated from `config.json` on every save."
    )
    lines += ["", "## Method", ""]
    if about:
        lines.append(f"- Family: {about.get('family', '?')} / {about.get('subtype', '?')}")
        lines.append(f"- Paper: {about.get('paper', 'not recorded')}")
    else:
        lines.append("- A method this mlmm does not have registered (a plugin).")
    hyper = config.get("hyperparameters") or {}
    shown = ", ".join(f"`{k}={v}`" for k, v in hyper.items()) or "defaults"
    lines.append(f"- Hyperparameters: {shown}")
    resolved = config.get("resolved_hyperparameters") or {}
    if resolved:  # what a rule (None: sized by the method) gave; the model is built from these
        lines.append(f"- Built with: {', '.join(f'`{k}={v}`' for k, v in resolved.items())}")
    lines += ["", "## Data", ""]
    if info.get("dataset"):
        params = info.get("dataset_params") or {}
        extra = f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""
        lines.append(f"- Dataset: `{info['dataset']}`{extra}")
    if info.get("split"):
        split = info["split"]
        shown = (
            ", ".join(f"{k}={v}" for k, v in split.items()) if isinstance(split, dict) else split
        )
        lines.append(f"- Split: {shown}")
    if task["kind"] == "classification":
        classes = config.get("classes") or task.get("class_names") or list(range(task["n_classes"]))
        lines.append(
            f"- Task: classification, {task['n_classes']} classes: {', '.join(map(str, classes))}"
        )
    elif task["kind"] == "multilabel":
        labels = task.get("label_names") or list(range(task["n_labels"]))
        lines.append(
            f"- Task: multilabel, {task['n_labels']} labels (any number per sample, sigmoid "
            f"outputs, on at probability >= 0.5): {', '.join(map(str, labels))}"
        )
    else:
        lines.append("- Task: regression")
    lines += ["", "| modality | kind | shape per sample | table columns |", "|---|---|---|---|"]
    columns = config.get("columns") or {}
    for spec in config["modalities"]:
        cols = columns.get(spec["name"])
        where = (
            ", ".join(cols[:4]) + (", ..." if cols and len(cols) > 4 else "")
            if cols
            else f"`{spec['name']}.0` ..."
        )
        lines.append(f"| {spec['name']} | {spec['kind']} | {list(spec['shape'])} | {where} |")
    lines += ["", "## Training missingness", ""]
    mask = info.get("train_mask") if isinstance(info.get("train_mask"), dict) else {}
    if info.get("missing") or mask:
        lines.append(
            f"- Simulated on training data: `{info.get('missing', mask.get('spec', '?'))}`"
        )
    if mask:
        lines.append(
            f"- Realised: {_pct(mask.get('slot_rate'))} of (sample, modality) slots "
            f"missing, {_pct(mask.get('sample_rate'))} of samples incomplete"
        )
        per = mask.get("per_modality")
        if isinstance(per, dict) and per:
            lines.append(
                "- Missing per modality: " + ", ".join(f"{m} {_pct(r)}" for m, r in per.items())
            )
    if not (info.get("missing") or mask):
        lines.append("- Not recorded (trained from Python on data given as is).")
    lines += ["", "## Validation, per modality subset", ""]
    lines.append(_validation_table(config.get("validation") or {}))
    trainer = config.get("trainer") or {}
    histories = config.get("histories") or []
    epochs = sum(len(h.get("epochs", [])) for h in histories)
    lines += ["## Training", ""]
    lines.append(
        f"- {epochs} epoch(s) in {config.get('train_seconds', 0.0):.1f}s; "
        + ", ".join(
            f"{k}={trainer[k]}" for k in ("max_epochs", "batch_size", "lr", "seed") if k in trainer
        )
    )
    lines += ["", "## Intended use and limits", "", _LIMITS, "", "## Use", ""]
    lines.append("```")
    lines.append("mlmm predict THIS_DIRECTORY --input samples.npz --output predictions.csv")
    lines.append("mlmm serve THIS_DIRECTORY")
    lines.append("```")
    lines.append("")
    lines.append(
        "Files: `config.json` and `model.safetensors` are the model, `mlmm-artifact.json` holds "
        "their hashes; this card is regenerated on every save and is not hashed."
    )
    return "\n".join(lines) + "\n"
