"""Export a trained model to ONNX: inputs are the modality tensors plus the presence mask.

The graph does everything :meth:`mlmm.TrainedModel.predict_raw` does after the input
checks: standardise each present modality with the training statistics, zero the absent
rows, run the method, and turn its output into probabilities (classification) or target
units (regression); a sample with no modality present gets the training prior. Inputs are
named after the modalities (``float32 [N, *shape]``, raw values as given to ``predict``) and
``present`` (``bool [N, M]``, columns in the model's modality order); the output is
``probabilities [N, K]`` or ``prediction [N]``.

A model trained on variable-length sequences (``info["variable_length"]``) has one more
input per such modality, ``lengths.NAME`` (``int64 [N]``, each row's valid steps, 0 where
absent): the graph zeroes the padding after them, as the standardised dataset holds it
(NaN included), and the masked encoders read the valid steps only (a GRU encoder through
:func:`mlmm.nn.encoders.gru_last_valid`, since packed sequences do not trace). Such a
sequence's time axis is dynamic: the graph cuts or zero-pads it to the model's maximum, so
a batch may be padded to its own longest row.

Every export is checked before it is written: onnxruntime must give the same answer as
PyTorch (within ``tolerance``) on every presence pattern. A method whose prediction needs an
operation ONNX lacks may trace an equivalent module instead
(:meth:`~mlmm.methods.MissingModalityModel.onnx_module`: ``lda-em`` exports a table of every
presence pattern's linear map, computed with its Cholesky factors at export); the check
compares the graph with the method's own ``forward``. A method that cannot be traced
into a graph (a k-NN bank searched per sample, scikit-learn trees, a router that picks a
model per sample in Python) fails that check or the trace, and is refused in one line.

Needs the ``export`` extra (``pip install 'mlmm[export]'``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.train.trained import TrainedModel

#: ONNX opset written.
OPSET = 18
#: Largest difference from PyTorch an export may have on the check inputs.
TOLERANCE = 1e-5
#: Above this many modalities the check runs on singletons, leave-one-out and all present.
MAX_CHECKED_MODALITIES = 8
#: Samples per presence pattern of the second check batch, drawn apart from the traced one.
FRESH_PER_PATTERN = 8


class _Graph(nn.Module):
    """``TrainedModel`` prediction as one module: raw tensors + presence mask -> answer."""

    def __init__(self, trained: TrainedModel, for_onnx: bool = False) -> None:
        super().__init__()
        # for_onnx: the method's onnx_module(), made of operations ONNX has
        self.model = trained.model.onnx_module() if for_onnx else trained.model
        self.names = tuple(s.name for s in trained.specs)
        self.classification = trained.task.is_classification
        self.multilabel = trained.task.is_multilabel
        std = trained.standardizer
        for j, name in enumerate(self.names):
            self.register_buffer(f"mean_{j}", torch.as_tensor(std.mean_[name], dtype=torch.float32))
            self.register_buffer(f"std_{j}", torch.as_tensor(std.std_[name], dtype=torch.float32))
        self.register_buffer("prior", torch.as_tensor(trained.prior, dtype=torch.float32))
        self.variable = tuple(trained.info.get("variable_length") or ())
        self.steps = {name: trained.modality_shapes[name][0] for name in self.variable}
        self.target_mean = float(std.target_mean_)
        self.target_std = float(std.target_std_)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        # the modalities, present [N, M] bool, then lengths [N] int64 per variable sequence
        raw, present = args[: len(self.names)], args[len(self.names)]
        lengths = dict(zip(self.variable, args[len(self.names) + 1 :], strict=True))
        inputs = {}
        for j, (name, x) in enumerate(zip(self.names, raw, strict=True)):
            keep = present[:, j].reshape(-1, *([1] * (x.dim() - 1)))  # [N, 1, ...]
            if name in lengths:  # any padded length T' at run time: cut or pad to the maximum
                most = self.steps[name]
                x = x[:, :most]  # [N, min(T', T), C]
                x = nn.functional.pad(x, (0, 0, 0, most - x.shape[1]))  # [N, T, C]
            scaled = (x - getattr(self, f"mean_{j}")) / getattr(self, f"std_{j}")
            if name in lengths:  # padding zero after scaling, as the standardised dataset's
                steps = torch.arange(x.shape[1], device=x.device)  # [T]
                padded = steps[None, :] >= lengths[name][:, None]  # [N, T]
                scaled = torch.where(padded[..., None], torch.zeros_like(scaled), scaled)
            inputs[name] = torch.where(keep, scaled, torch.zeros_like(scaled))
        batch = MultimodalBatch(inputs, present, self.names, None, lengths or None)
        pred = self.model(batch).prediction
        empty = ~present.any(dim=1)  # [N]
        if self.classification:
            out = torch.softmax(pred.float(), dim=1)  # [N, K]
            return torch.where(empty[:, None], self.prior[None, :].expand_as(out), out)
        if self.multilabel:
            out = torch.sigmoid(pred.float())  # [N, L]
            return torch.where(empty[:, None], self.prior[None, :].expand_as(out), out)
        out = pred.float() * self.target_std + self.target_mean  # [N]
        return torch.where(empty, self.prior[0].expand_as(out), out)


def _patterns(m: int) -> list[tuple[bool, ...]]:
    if m <= MAX_CHECKED_MODALITIES:
        return [p for p in itertools.product((False, True), repeat=m) if any(p)]
    rows = {tuple(i == j for i in range(m)) for j in range(m)}
    rows |= {tuple(i != j for i in range(m)) for j in range(m)}
    return sorted(rows | {(True,) * m})


def check_inputs(
    trained: TrainedModel, per_pattern: int = 3, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Raw inputs on every presence pattern (plus one empty row), for checking an export.

    Values are drawn around the training statistics (mean + std * normal), so the check
    exercises the ranges the model was trained on. For a variable-length model the arrays
    also hold ``lengths.NAME`` per variable sequence (``int64 [N]``): 1 and the maximum among
    them, random between, 0 where absent; the padding after them holds drawn values too, which
    the answer must not read. The arrays and ``present`` are an ONNX feed as they are.
    """
    rng = np.random.default_rng(seed)
    patterns = _patterns(len(trained.specs))
    present = np.array(
        [p for p in patterns for _ in range(per_pattern)] + [(False,) * len(patterns[0])]
    )
    n = len(present)
    arrays = {}
    for spec in trained.specs:
        mean = trained.standardizer.mean_[spec.name]
        std = trained.standardizer.std_[spec.name]
        arrays[spec.name] = (mean + std * rng.normal(size=(n, *spec.shape))).astype(np.float32)
    names = [s.name for s in trained.specs]
    for name in trained.info.get("variable_length") or ():
        most = trained.modality_shapes[name][0]
        steps = rng.integers(1, most + 1, size=n)
        where = present[:, names.index(name)]  # [N]
        rows = np.flatnonzero(where)[:2]
        steps[rows] = [1, most][: len(rows)]  # the shortest and the longest
        arrays[f"lengths.{name}"] = np.where(where, steps, 0)
    return arrays, present


def _fresh_difference(
    trained: TrainedModel,
    graph: nn.Module,
    session: Any,
    output: str,
    names: list[str],
    extra: list[str],
) -> float:
    """Largest difference between ``session`` (the ONNX graph) and ``graph`` (PyTorch) on a
    check batch drawn apart from the traced one, :data:`FRESH_PER_PATTERN` samples per
    presence pattern (more than the trace had: a batch size frozen in the graph shows too);
    ``inf`` when the shapes differ."""
    fresh, present = check_inputs(trained, FRESH_PER_PATTERN, seed=1)
    tensors = tuple(torch.from_numpy(fresh[n]) for n in names) + (torch.from_numpy(present),)
    tensors += tuple(torch.from_numpy(fresh[k].astype(np.int64)) for k in extra)
    with torch.no_grad():
        want = graph(*tensors).numpy()
    got = session.run([output], {**{n: fresh[n] for n in [*names, *extra]}, "present": present})[0]
    if got.shape != want.shape:
        return np.inf
    return float(np.abs(got.astype(np.float64) - want).max())


def export_onnx(
    trained: TrainedModel, out: str | Path, tolerance: float = TOLERANCE
) -> dict[str, float]:
    """Write ``trained`` as an ONNX graph at ``out``, checked against PyTorch first.

    Parameters
    ----------
    trained : TrainedModel
    out : str or Path
        The ``.onnx`` file (written atomically, only when the check passes).
    tolerance : float, default 1e-5
        Largest absolute difference from PyTorch allowed on the check inputs.

    Returns
    -------
    dict
        ``max_abs_diff`` (onnxruntime vs PyTorch over every presence pattern), ``patterns``
        checked and ``bytes`` written.

    Raises
    ------
    MlmmError
        When the method cannot be traced, or its graph does not reproduce PyTorch.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise MlmmError(
            "ONNX export needs onnx and onnxruntime; pip install 'mlmm[export]'"
        ) from None
    variable = list(trained.info.get("variable_length") or ())
    out = Path(out)
    device = next(trained.model.parameters()).device
    trained.to("cpu")
    graph = _Graph(trained).eval()
    arrays, present = check_inputs(trained)
    names = [s.name for s in trained.specs]
    extra = [f"lengths.{v}" for v in variable]  # after present, in info's order
    tensors = tuple(torch.from_numpy(arrays[n]) for n in names) + (torch.from_numpy(present),)
    tensors += tuple(torch.from_numpy(arrays[k].astype(np.int64)) for k in extra)
    # the same samples cut to half the maximum (lengths too), to run padded shorter and longer
    short, short_tensors = _cut_sequences(trained, arrays, present, variable)
    output = "prediction" if trained.task.is_regression else "probabilities"
    method = trained.method
    refuse = (
        f"the {method!r} method cannot be exported to ONNX ({{why}}); serve it with mlmm serve, "
        f"which runs PyTorch"
    )
    try:
        with torch.no_grad():
            expected = graph(*tensors).numpy()
            cut = graph(*short_tensors).numpy() if variable else None
        buffer = io.BytesIO()
        traced = _Graph(trained, for_onnx=True).eval()
        with warnings.catch_warnings(), _quiet_output():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                traced,
                tensors,
                buffer,
                input_names=[*names, "present", *extra],
                output_names=[output],
                dynamic_axes={
                    **{k: {0: "n"} for k in [*names, "present", *extra, output]},
                    **{v: {0: "n", 1: f"steps.{v}"} for v in variable},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        data = buffer.getvalue()
        options = ort.SessionOptions()
        # fatal only: a failing check run raises with the reason below, as one line; at the
        # default level onnxruntime also logs it to stderr, in colour, before that line
        options.log_severity_level = 4
        session = ort.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )
        diff = 0.0
        # the whole check batch, then each presence pattern alone and one sample alone: a
        # branch taken in Python while tracing would be frozen into the graph, and show here
        groups = [np.arange(len(present))]
        for pattern in np.unique(present, axis=0):
            rows = np.flatnonzero((present == pattern).all(axis=1))
            groups += [rows, rows[:1]]
        for rows in groups:
            feed = {**{n: arrays[n][rows] for n in [*names, *extra]}, "present": present[rows]}
            got = session.run([output], feed)[0]
            want = expected[rows]
            if got.shape != want.shape:
                diff = np.inf
                break
            diff = max(diff, float(np.abs(got.astype(np.float64) - want).max()))
        # a batch drawn apart from the traced one: a choice made from the values while
        # tracing (which experts a router picked) is frozen into the graph, and answers other
        # values wrongly with every shape right (flex-moe's experts did, 0.016 off)
        if diff != np.inf:  # (a graph already wrong in shape is refused as that)
            diff = max(diff, _fresh_difference(trained, graph, session, output, names, extra))
        # the time axes: padded to the longest cut row only, and beyond the maximum
        for padded in _repadded(trained, short, variable) if variable else ():
            got = session.run([output], {**padded, "present": present})[0]
            if got.shape != cut.shape:
                diff = np.inf
                break
            diff = max(diff, float(np.abs(got.astype(np.float64) - cut).max()))
    except MlmmError:
        raise
    except Exception as err:  # noqa: BLE001 - any tracing or runtime failure: one line
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        reason = text.split(". ")[0][:160] or type(err).__name__
        raise MlmmError(refuse.format(why=f"{type(err).__name__}: {reason}")) from None
    finally:
        trained.model.to(device)
    if not diff <= tolerance:
        why = (
            "its traced graph gives answers of the wrong shape for other presence patterns"
            if diff == np.inf
            else f"its traced graph differs from PyTorch by {diff:.2g} > {tolerance:g}"
        )
        raise MlmmError(
            refuse.format(why=f"{why}: a step that depends on the data is not in the graph")
        )
    _write_atomic(out, data)
    return {
        "max_abs_diff": diff,
        "patterns": float(len(_patterns(len(names)))),
        "bytes": float(len(data)),
    }


def _cut_sequences(
    trained: TrainedModel, arrays: dict[str, np.ndarray], present: np.ndarray, variable: list[str]
) -> tuple[dict[str, np.ndarray], tuple[torch.Tensor, ...]]:
    """``arrays`` with every variable-length sequence's lengths cut to half its maximum (at
    least 1; 0 stays 0), still padded to the maximum; and the graph's inputs for them."""
    names = [s.name for s in trained.specs]
    short = dict(arrays)
    for name in variable:
        half = max(trained.modality_shapes[name][0] // 2, 1)
        short[f"lengths.{name}"] = np.minimum(arrays[f"lengths.{name}"], half)
    tensors = tuple(torch.from_numpy(short[n]) for n in names) + (torch.from_numpy(present),)
    tensors += tuple(torch.from_numpy(short[f"lengths.{v}"].astype(np.int64)) for v in variable)
    return short, tensors


def _repadded(
    trained: TrainedModel, short: dict[str, np.ndarray], variable: list[str]
) -> list[dict[str, np.ndarray]]:
    """ONNX feeds of ``short`` with each variable-length sequence padded to its longest row
    only, and to 3 steps over the maximum (drawn values in the padding): the same answers."""
    feeds = []
    rng = np.random.default_rng(1)
    for extend in (False, True):
        feed = dict(short)
        for name in variable:
            x, steps = short[name], short[f"lengths.{name}"]
            if extend:
                extra = rng.normal(size=(len(x), 3, *x.shape[2:])).astype(np.float32)
                feed[name] = np.concatenate([x, extra], axis=1)  # [N, T + 3, C]
            else:
                feed[name] = np.ascontiguousarray(x[:, : max(int(steps.max()), 1)])  # [N, T', C]
            feed[f"lengths.{name}"] = steps.astype(np.int64)
        feeds.append(feed)
    return feeds


@contextlib.contextmanager
def _quiet_output():
    """Silence what the exporter prints from C++ (a whole IR graph on some failures)."""
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; a full disk is atomic_write's one line."""
    from mlmm.utils import atomic_write

    with atomic_write(path, "wb") as fh:
        fh.write(data)


def onnx_session(path: str | Path):
    """An onnxruntime session for an exported model (CPU, one thread per the environment)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


__all__ = ["OPSET", "TOLERANCE", "check_inputs", "export_onnx", "onnx_session"]
