"""What the reference baselines share: flat features, a seeded and thread-limited scikit-learn
fit stage, and linear models stored as tensors.

A reference method is fitted once by scikit-learn on the standardised training data (no
epochs, no gradient) and keeps everything it predicts with as frozen ``nn.Parameter`` tensors
(the learned numbers: coefficients, thresholds, leaf values) and buffers (tree structure,
training statistics), so its artifact is safetensors + JSON like any other method's and
prediction runs in torch on any device.
"""

from __future__ import annotations

import abc
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.methods.base import MissingModalityModel
from mlmm.utils import derive_seed

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.data.specs import TaskSpec
    from mlmm.train.trainer import Trainer, TrainHistory

#: Logit given to a class the training data never showed (scikit-learn gives it probability
#: 0; a finite floor keeps every output finite, e^-30 is 1e-13 relative to the others).
ABSENT_CLASS_LOGIT = -30.0


def frozen(tensor: torch.Tensor) -> nn.Parameter:
    """A learned tensor fitted outside autograd: registered (saved, counted) but not trained."""
    return nn.Parameter(tensor, requires_grad=False)


def flat_features(batch: MultimodalBatch, fill: torch.Tensor | float) -> torch.Tensor:
    """Every modality flattened and concatenated, ``[B, D]``; the columns of absent modalities
    hold ``fill`` (a scalar such as NaN, or a ``[D]`` vector), whatever the batch had there;
    padded steps of variable-length sequences read as zeros, as the fit saw them."""
    batch = batch.zero_padding()  # a hand-made batch may hold anything in its padding
    parts, columns = [], []
    for j, name in enumerate(batch.modalities):
        x = batch.inputs[name].flatten(1)  # [B, D_m]
        parts.append(x)
        columns.append(batch.present[:, j : j + 1].expand(-1, x.shape[1]))  # [B, D_m]
    x = torch.cat(parts, dim=1)  # [B, D]
    present = torch.cat(columns, dim=1)  # [B, D]
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(present, x, fill)


#: BLAS threads for :func:`fit_linear`'s scikit-learn solvers (None: the surrounding limit).
#: L-BFGS makes hundreds of small BLAS calls, which threads slow down: with 2 threads the
#: fits of ``per-modality-kernel``, ``per-modality-logistic`` and ``logistic-mean-impute``
#: took 3.3-7.7x as long as with 1 (``benchmarks/classical_threads.py``).
LINEAR_BLAS_THREADS: int | None = 1


def fit_linear(
    x: np.ndarray, y: np.ndarray, task: TaskSpec, C: float, max_iter: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a logistic regression (classification) or ridge regression (regression, ``alpha =
    1 / (2 C)``, the same penalty weight against a squared loss) on ``x [N, D]``.

    Returns ``coef [K, D]`` and ``intercept [K]`` such that ``x @ coef.T + intercept`` are
    softmax logits over all ``K`` classes of ``task`` (a binary fit becomes logits
    ``[0, w.x + b]``; classes absent from ``y`` get :data:`ABSENT_CLASS_LOGIT`), or ``K = 1``
    regression values.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from threadpoolctl import threadpool_limits

    if not task.is_classification:
        with threadpool_limits(LINEAR_BLAS_THREADS, user_api="blas"):
            ridge = Ridge(alpha=1.0 / (2.0 * C)).fit(x, y)
        return ridge.coef_.reshape(1, -1), np.atleast_1d(ridge.intercept_)
    classes = np.unique(y)
    if len(classes) == 1:  # scikit-learn refuses one class; the answer is that class
        return constant_linear(y, task, x.shape[1])
    coef = np.zeros((task.n_classes, x.shape[1]))
    intercept = np.full(task.n_classes, ABSENT_CLASS_LOGIT)
    with threadpool_limits(LINEAR_BLAS_THREADS, user_api="blas"):
        model = LogisticRegression(C=C, max_iter=max_iter, random_state=random_state)
        model.fit(x, y)
    if len(classes) == 2:  # one score w.x + b for the second class against the first
        coef[classes[1]], intercept[classes[1]] = model.coef_[0], model.intercept_[0]
        intercept[classes[0]] = 0.0
    else:
        coef[classes], intercept[classes] = model.coef_, model.intercept_
    return coef, intercept


def constant_linear(y: np.ndarray, task: TaskSpec, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The linear model that ignores its ``width`` inputs: zero coefficients ``[K, width]`` and
    the log class frequencies of ``y`` (classes it lacks: :data:`ABSENT_CLASS_LOGIT`) or its
    mean (regression) as intercept ``[K]``."""
    if not task.is_classification:
        return np.zeros((1, width)), np.array([float(np.mean(y))])
    return np.zeros((task.n_classes, width)), log_class_frequencies(y, task.n_classes)


def log_class_frequencies(y: np.ndarray, n_classes: int) -> np.ndarray:
    """``log`` of the class frequencies of ``y`` ``[K]``; a class it lacks gets
    :data:`ABSENT_CLASS_LOGIT`."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    out = np.full(n_classes, ABSENT_CLASS_LOGIT)
    out[counts > 0] = np.log(counts[counts > 0] / counts.sum())
    return out


class ClassicalReference(MissingModalityModel):
    """Base of the reference baselines: :meth:`fit` runs :meth:`fit_classical` once.

    The fit stage gets a ``random_state`` derived from the trainer's seed and the method name,
    and scikit-learn's thread pools (OpenMP, BLAS) are limited to ``torch.get_num_threads()``,
    the count the trainer or the benchmark worker pinned. It returns one
    :class:`~mlmm.train.TrainHistory` with no epochs, the fit's seconds and, with validation
    data, the validation task loss.
    """

    streams_data = False  # scikit-learn solvers fit on the whole training matrix
    #: multilabel is refused: their scikit-learn / closed-form fits are single-label
    supported_tasks = ("classification", "regression")
    supports_data_parallel = False
    data_parallel_reason = (
        "it is fitted by a classical solver (scikit-learn or EM), not in the shared training loop"
    )

    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> TrainHistory:
        from threadpoolctl import threadpool_limits

        from mlmm.train.trainer import TrainHistory, predict_batches  # trainer imports methods

        start = time.perf_counter()
        random_state = int(
            derive_seed(trainer.seed, "sklearn", self.method_name).generate_state(1)[0]
        )
        device = next(self.parameters()).device
        train_batch = MultimodalBatch.from_dataset(train).to(device)
        val_batch = None if val is None else MultimodalBatch.from_dataset(val).to(device)
        with threadpool_limits(limits=torch.get_num_threads()):
            self.fit_classical(train_batch, val_batch, random_state)
        self.eval()
        history = TrainHistory(stage="main")
        if val_batch is not None:
            prediction = predict_batches(self, val_batch, max(trainer.batch_size, 512))
            history.best_val_loss = self.task_loss(prediction, val_batch.target).item()
        history.seconds = time.perf_counter() - start
        return history

    @abc.abstractmethod
    def fit_classical(
        self, train: MultimodalBatch, val: MultimodalBatch | None, random_state: int
    ) -> None:
        """Fit on the standardised training batch (``val`` for early stopping, if used)."""
