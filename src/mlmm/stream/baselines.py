"""Online robustness baselines, so a stream score means something.

* :func:`hold_last_prediction` — the answers of a model trained on complete windows, except
  that while any sensor is out its last answer from a step with every sensor live is repeated.
* :class:`ZeroFilled` — a model trained on complete windows, told every sensor is present:
  an outage reaches it as zeros (in raw units), the naive way a fixed-input model is kept
  answering. A step with every sensor down is answered by the engine's ``on_empty`` policy,
  as for any model (the engine calls no model without a live sensor).
* The third baseline is no code of its own: any registered method trained under ``burst``
  training missingness on time-ordered windows (:func:`mlmm.stream.experiment.train_on_stream`
  with ``train_missing="burst:..."``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlmm.data.dataset import MultimodalDataset
from mlmm.stream.engine import StreamResult

__all__ = ["ZeroFilled", "hold_last_prediction"]


class ZeroFilled:
    """Wrap a trained model so that absent windows reach it as present zeros.

    Parameters
    ----------
    model : TrainedModel
        Usually trained on complete windows.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.specs, self.task, self.prior = model.specs, model.task, model.prior

    def predict_raw(self, dataset: MultimodalDataset, on_empty: str = "error") -> np.ndarray:
        # the engine zero-fills absent windows; only the presence flags change
        everything = MultimodalDataset(
            specs=dataset.specs,
            task=dataset.task,
            inputs=dataset.inputs,
            targets=dataset.targets,
            name=dataset.name,
        )
        return self.model.predict_raw(everything, on_empty)


def hold_last_prediction(result: StreamResult, names: tuple[str, ...]) -> StreamResult:
    """Repeat the last answer given with every sensor live through each outage.

    Parameters
    ----------
    result : StreamResult
        Answers of a model on the stream (with outages).
    names : tuple of str
        The sensors (columns ``present_<name>`` of ``result.answers``).

    Returns
    -------
    StreamResult
        The same steps; answers at steps with a sensor out are the held ones (the model's own
        answer until a complete step has been seen).
    """
    answers = result.answers.copy()
    complete = answers[[f"present_{n}" for n in names]].all(axis=1).to_numpy()
    source = np.arange(len(answers))
    last = -1
    for s in range(len(answers)):
        if complete[s]:
            last = s
        elif last >= 0:
            source[s] = last
    answers["prediction"] = answers["prediction"].to_numpy()[source]
    if "correct" in answers:
        answers["correct"] = answers["prediction"].to_numpy() == answers["truth"].to_numpy()
    if "error" in answers:
        answers["error"] = answers["prediction"].to_numpy() - answers["truth"].to_numpy()
    outputs = result.outputs[source] if len(result.outputs) else result.outputs
    return StreamResult(pd.DataFrame(answers), outputs, dict(result.stats))
