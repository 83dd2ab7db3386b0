"""Prediction requests: the JSON of ``POST /predict``, read and checked in one place.

The HTTP service (:mod:`mlmm.serve.app`) and ``mlmm predict --input x.json`` both take
:class:`PredictRequest` and turn its instances into arrays with :func:`request_arrays`, so a
request body saved to a file gets the answer, or the one-line refusal, that the server gives
it. Needs no FastAPI: pydantic is a core dependency.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from mlmm.errors import MlmmError

#: File types ``mlmm predict --input`` reads as requests: one ``POST /predict`` body
#: (``.json``), or one instance per line (``.jsonl``).
REQUEST_SUFFIXES = (".json", ".jsonl")
NO_LENGTHS_FIELD = (
    "a request has no lengths field: send each variable-length sequence as the list of its "
    "valid steps only, and its length is the list's"
)
EMPTY_BODY = 'body: empty; send a JSON object: {"instances": [{...}, ...]}'
UNPARSABLE_BODY = (
    "body: cannot be parsed as JSON (nested too deeply, not UTF-8, or an integer of over 4,300 "
    "digits)"
)


class RequestError(MlmmError):
    """A request refused: ``detail`` names the field in one line; ``status`` is the HTTP
    status the service answers it with (400 malformed, 422 an input the model cannot take)."""

    def __init__(self, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class PredictRequest(BaseModel):
    """``POST /predict``: one sample (a list of one) or a batch, modalities by name."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="Which served model answers; may be left out when one is served."
    )
    instances: list[dict[str, list[Any] | None]] = Field(
        min_length=1,
        description="The samples: modality name -> nested list of numbers of the modality's "
        'shape (GET /model); JSON numbers only (integers included): a string such as "1.5" '
        "or true/false is refused. A modality left out, or null, is absent in that sample. A "
        "variable-length sequence (variable_length in GET /model) is the list of its valid "
        "steps only, 1 to shape[0] of them: its length is the list's.",
        examples=[[{"m0": [0.1, 0.2], "m1": None}]],
    )
    on_empty: Literal["error", "prior"] | None = Field(
        None,
        description="A sample with no modality: 'error' refuses it (422), 'prior' answers it "
        "with the training prior. Default: the server's setting.",
    )
    #: The line of each instance, for a request read from a ``.jsonl`` file
    #: (:func:`read_request`; :func:`on_line` puts it first in an error naming an instance).
    _lines: list[int] | None = PrivateAttr(None)

    @property
    def lines(self) -> list[int] | None:
        """The line of each instance, for a request read from a ``.jsonl`` file; else None."""
        return self._lines


_JSON_KINDS = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _field(loc: tuple[Any, ...]) -> str:
    """``("body", "instances", 0, "m0")`` -> ``instances[0].m0``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_error(errors: list[dict[str, Any]]) -> RequestError:
    """The one-line refusal of a body that is not a :class:`PredictRequest` (pydantic's or
    FastAPI's ``errors()``, of which the first is named): malformed JSON and an empty body
    are a 400, anything else a 422 naming the field."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "decode error")
        return RequestError(f"body: malformed JSON ({reason})", 400)
    where = _field(tuple(first.get("loc", ())))
    if where == "body" and first.get("type") == "missing":  # b"": no JSON at all
        return RequestError(EMPTY_BODY, 400)
    if where == "body" and first.get("type") in ("model_type", "model_attributes_type"):
        # pydantic words it by how the model was validated (FastAPI's and a file's differ)
        got = _JSON_KINDS.get(type(first.get("input")), "value")
        return RequestError(
            f'body: expected a JSON object {{"instances": [{{...}}, ...]}}, got a JSON {got}'
        )
    if where == "lengths" and first.get("type") == "extra_forbidden":
        return RequestError(f"lengths: {NO_LENGTHS_FIELD}")
    return RequestError(f"{where}: {first.get('msg', 'invalid')}")


def parse_request(body: Any) -> PredictRequest:
    """``body`` (the decoded JSON) as a :class:`PredictRequest`, or its one-line
    :class:`RequestError`."""
    try:
        return PredictRequest.model_validate(body)
    except ValidationError as err:
        raise validation_error(err.errors()) from None


def on_line(err: RequestError, lines: list[int] | None) -> RequestError:
    """``err`` with the ``.jsonl`` line of the instance it names put first (``line 7:
    instances[5].m0: ...``: blank lines are skipped, so the two differ); ``err`` itself when
    the request was not read from lines (``lines`` None) or names no instance."""
    named = re.match(r"instances\[(\d+)\]", err.detail)
    if lines is None or named is None:
        return err
    return RequestError(f"line {lines[int(named.group(1))]}: {err.detail}", err.status)


def pick_model(requested: str | None, names: list[str]) -> str:
    """The model a request names (``requested``; None: the only one of ``names``)."""
    if requested is None:
        if len(names) > 1:
            raise RequestError(f"model: several models are served {sorted(names)}; name one")
        return names[0]
    if requested not in names:
        raise RequestError(f"model: unknown model {requested!r}; served: {sorted(names)}")
    return requested


def _decode(text: bytes, where: str) -> Any:
    """One JSON document, as ``POST /predict`` decodes its body (:func:`json.loads`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        line = f", line {err.lineno} column {err.colno}" if where else ""
        raise RequestError(f"{where}body: malformed JSON ({err.msg}{line})", 400) from None
    except (RecursionError, UnicodeDecodeError, ValueError):
        raise RequestError(where + UNPARSABLE_BODY, 400) from None


def read_request(path: str | Path) -> PredictRequest:
    """Read a request file: a ``.json`` holding one ``POST /predict`` body
    (``{"instances": [...]}``, with ``model`` and ``on_empty`` if wanted), or a ``.jsonl``
    with one instance (``{"m0": [...], "m1": null}``) per non-blank line, ``instances[i]``
    being the ``i``-th of them.

    Raises
    ------
    RequestError
        The server's one line for the same body (``.jsonl``: after the number of the line it
        concerns, ``line 3: ...``).
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix.lower() == ".json":
        if not raw.strip():
            raise RequestError(EMPTY_BODY, 400)
        return parse_request(_decode(raw, ""))
    instances, lines = [], []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        instance = _decode(line, f"line {number}: ")
        held = instance.get("instances") if isinstance(instance, dict) else None
        if isinstance(held, list) and any(isinstance(item, dict) for item in held):
            raise RequestError(
                f'line {number}: holds a request ({{"instances": [...]}}); a .jsonl line is one '
                f'instance ({{"m0": [...], "m1": null}}): write the request as a .json file'
            )
        instances.append(instance)
        lines.append(number)
    if not instances:
        raise RequestError(
            'body: empty; write one instance per line: {"m0": [...], "m1": null}', 400
        )
    try:
        request = parse_request({"instances": instances})
    except RequestError as err:
        raise on_line(err, lines) from None
    request._lines = lines
    return request


# ---------------------------------------------------------------------- instances
def request_arrays(
    shapes: dict[str, tuple[int, ...]],
    variable: tuple[str, ...],
    instances: list[dict[str, list[Any] | None]],
    on_empty: str,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """The instances of a request as checked per-modality arrays.

    Parameters
    ----------
    shapes : dict of str to tuple of int
        The model's modalities and their shapes (:attr:`mlmm.TrainedModel.modality_shapes`).
    variable : tuple of str
        Its variable-length sequences (``info["variable_length"]``): each instance sends
        only its valid steps.
    instances : list of dict
        :attr:`PredictRequest.instances`.
    on_empty : {"error", "prior"}
        A sample with no modality: refused, or left for the training prior.

    Returns
    -------
    arrays : dict of str to ndarray
        ``[N, *shape]`` float32 per modality, NaN rows absent; a variable-length sequence's
        steps after its valid ones are zero padding.
    present : ndarray of bool, shape (N, M)
    lengths : dict of str to ndarray
        The valid steps ``[N]`` of each variable-length sequence (0 where absent).

    Raises
    ------
    RequestError
        Naming the first instance and modality that the model cannot take: an unknown
        modality, a wrong shape, a string or boolean, NaN or inf, a value beyond float32, a
        sample with no modality (``on_empty="error"``).
    """
    names = tuple(shapes)
    n = len(instances)
    arrays = {m: np.full((n, *shape), np.nan, dtype=np.float32) for m, shape in shapes.items()}
    present = np.zeros((n, len(names)), dtype=bool)
    lengths = {m: np.zeros(n, dtype=np.int64) for m in variable}
    index = {m: j for j, m in enumerate(names)}
    for i, instance in enumerate(instances):
        for key, value in instance.items():
            where = f"instances[{i}].{key}"
            if key not in index:
                hint = f"; {NO_LENGTHS_FIELD}" if key == "lengths" and variable else ""
                raise RequestError(
                    f"{where}: unknown modality {key!r}; this model takes {list(names)}{hint}"
                )
            if value is None:
                continue
            if key in lengths and not 1 <= len(value) <= shapes[key][0]:
                # counted before any conversion: a long list is refused unread
                raise RequestError(_steps_error(shapes, where, key, len(value)))
            _refuse_non_numbers(value, where, len(shapes[key]))
            try:
                array = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                dims = [str(d) for d in shapes[key]]
                if key in lengths:  # any number of steps up to the maximum
                    dims[0] = f"1..{dims[0]}"
                raise RequestError(
                    f"{where}: must be a nested list of numbers of shape [{', '.join(dims)}]"
                ) from None
            if key in lengths:
                if array.ndim != 2 or array.shape[1:] != shapes[key][1:]:
                    raise RequestError(_steps_error(shapes, where, key, None, list(array.shape)))
            elif array.shape != shapes[key]:
                raise RequestError(
                    f"{where}: expected shape {list(shapes[key])}, got {list(array.shape)}"
                )
            if not np.isfinite(array).all():
                raise RequestError(
                    f"{where}: holds NaN or inf; a present modality must be finite (leave "
                    f"the modality out, or send null, to mark it absent)"
                )
            if np.abs(array).max(initial=0.0) > np.finfo(np.float32).max:
                raise RequestError(f"{where}: holds values beyond float32's range (3.4e38)")
            if key in lengths:
                arrays[key][i] = 0.0  # the padding after the valid steps
                lengths[key][i] = len(array)
            arrays[key][i, : len(array)] = array
            present[i, index[key]] = True
    empty = np.flatnonzero(~present.any(axis=1))
    if len(empty) and on_empty == "error":
        raise RequestError(
            f"instances[{int(empty[0])}]: no modality present; send at least one of "
            f"{list(names)}, or on_empty='prior' for the training prior"
        )
    return arrays, present, lengths


def _steps_error(
    shapes: dict[str, tuple[int, ...]],
    where: str,
    name: str,
    steps: int | None,
    got: list[int] | None = None,
) -> str:
    """One line for a variable-length sequence that is empty, too long or mis-shaped."""
    most, channels = shapes[name]
    fix = f"send 1 to {most} steps of {channels} numbers each, only the valid ones"
    if steps == 0:
        return (
            f"{where}: 0 steps; a present sequence needs at least 1 ({fix}), or leave the "
            f"modality out, or send null, to mark it absent"
        )
    if steps is not None:
        return f"{where}: {steps} steps is over this model's maximum of {most}; {fix}"
    return f"{where}: expected shape [steps, {channels}] with 1 <= steps <= {most}, got {got}"


def _refuse_non_numbers(value: list[Any], where: str, depth: int) -> None:
    """Refuse the first string or boolean in the nested list ``value`` (``where`` names it),
    looking ``depth`` levels down (the modality's rank; deeper lists are a shape error).

    ``np.asarray(..., dtype=float)`` would read ``"1.5"`` as 1.5 and ``true`` as 1.0; a
    request that sends them has a bug on the caller's side, so it is told, not guessed at.
    Integers are numbers and stay accepted. The leaves are gathered level by level with
    ``chain`` and their types read with ``map(type)``, both in C; only a list holding a string
    or boolean is walked in Python, to name the entry. (A ragged list stops the gathering
    early; ``np.asarray`` refuses it after this.)
    """
    leaves = value
    for _ in range(depth - 1):
        if set(map(type, leaves)) != {list}:
            break
        leaves = list(itertools.chain.from_iterable(leaves))
    if not {str, bool} & set(map(type, leaves)):
        return
    _name_non_number(value, where, depth)


def _name_non_number(value: list[Any], where: str, depth: int) -> None:
    """The walk of :func:`_refuse_non_numbers` that finds and names the entry."""
    kinds = set(map(type, value))
    if list in kinds and depth > 1:
        for k, item in enumerate(value):
            if type(item) is list:
                _name_non_number(item, f"{where}[{k}]", depth - 1)
            elif type(item) in (str, bool):
                _refuse_non_number(item, f"{where}[{k}]")
    elif str in kinds or bool in kinds:
        k = next(k for k, item in enumerate(value) if type(item) in (str, bool))
        _refuse_non_number(value[k], f"{where}[{k}]")


def _refuse_non_number(item: str | bool, where: str) -> None:
    if type(item) is bool:
        got, fix = f"the boolean {str(item).lower()}", "send 1 or 0 for a flag"
    else:
        shown = json.dumps(item if len(item) <= 20 else item[:17] + "...")  # one line
        got, fix = f"the string {shown}", 'send numbers unquoted (1.5, not "1.5")'
    raise RequestError(f"{where}: expected a number, got {got}; {fix}")
