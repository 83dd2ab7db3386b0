"""One logistic regression per modality; a sample's prediction averages those of its present modalities.

The classical late-fusion ensemble for missing views: each modality's classifier is trained on
the samples that have it, and at test time the class probabilities of the present modalities'
classifiers are averaged (the mean rule of J. Kittler, M. Hatef, R. P. W. Duin, J. Matas,
"On combining classifiers", IEEE TPAMI 20(3):226-239, 1998, doi:10.1109/34.667881), so no
input is ever imputed. The classifiers are scikit-learn's L2-penalised ``LogisticRegression``
(lbfgs; F. Pedregosa et al., "Scikit-learn: Machine Learning in Python", JMLR 12:2825-2830,
2011); regression tasks average per-modality ridge regressions. Sequences and images are
flattened. Fitted once by scikit-learn, not by gradient descent; prediction runs in torch.

Deliberate differences: none in the model (``late-fusion`` is the deep variant, with
per-modality neural networks trained jointly by gradient descent).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MethodOutput, check_range
from mlmm.methods.reference._classical import (
    ClassicalReference,
    fit_linear,
    frozen,
)
from mlmm.methods.registry import register_method
from mlmm.tune.space import Float


@register_method(
    "per-modality-logistic",
    family="reference",
    subtype="classical",
    paper="per-modality logistic regressions, mean of probabilities (Kittler et al., 1998)",
)
class PerModalityLogistic(ClassicalReference):
    """A logistic regression per modality, fitted where it is present; average the present ones.

    For every modality ``m``, :meth:`fit` fits scikit-learn's ``LogisticRegression`` (lbfgs,
    L2 penalty ``C``) on the flattened inputs of the training samples that have ``m`` (for
    regression, ``Ridge(alpha=1 / (2 C))``). ``forward`` returns the log of the mean class
    probabilities over the sample's present modalities (regression: the mean of their
    predictions).

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    C : float, default 1.0
        Inverse L2 penalty strength of every per-modality model, as in scikit-learn.
    max_iter : int, default 1000
        Most lbfgs iterations per model (classification).

    Attributes
    ----------
    coef : nn.ParameterDict
        ``coef[name]`` ``[K, D_m]``: the coefficients of modality ``name``'s model (frozen:
        fitted by scikit-learn). A binary fit is stored as logits ``[0, w.x + b]``; classes
        absent from the modality's training samples get a logit of -30. ``K = 1`` for
        regression.
    intercept : nn.ParameterDict
        ``intercept[name]`` ``[K]``.

    References
    ----------
    J. Kittler, M. Hatef, R. P. W. Duin, J. Matas. "On combining classifiers." IEEE
    Transactions on Pattern Analysis and Machine Intelligence 20(3), 226-239, 1998.
    doi:10.1109/34.667881.

    F. Pedregosa et al. "Scikit-learn: Machine Learning in Python." Journal of Machine Learning
    Research 12, 2825-2830, 2011.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> train, _ = mlmm.simulate(split.train, "mcar:0.5", seed=0)
    >>> model = mlmm.create_method("per-modality-logistic", ds.specs, ds.task)
    >>> trained = mlmm.Trainer(progress=False).fit(model, train, split.val)
    >>> trained.predict_proba(split.test).shape
    (40, 4)
    """

    search_space = {
        "C": Float(1e-3, 10.0, log=True),
    }

    uses_seed = False  # lbfgs and ridge are deterministic: the seed changes nothing

    def __init__(
        self, specs: list[ModalitySpec], task: TaskSpec, C: float = 1.0, max_iter: int = 1000
    ) -> None:
        super().__init__(specs, task)
        check_range("C", C, 0, low_inclusive=False)
        check_range("max_iter", max_iter, 1, integer=True)
        self.C, self.max_iter = C, max_iter
        self.n_models = len(self.specs)  # one classifier per modality, reported as a cost
        k = task.output_dim
        self.coef = nn.ParameterDict(
            {s.name: frozen(torch.zeros(k, math.prod(s.shape))) for s in self.specs}
        )
        self.intercept = nn.ParameterDict({s.name: frozen(torch.zeros(k)) for s in self.specs})

    @torch.no_grad()
    def fit_classical(
        self, train: MultimodalBatch, val: MultimodalBatch | None, random_state: int
    ) -> None:
        """Fit every modality's model on the training samples that have the modality."""
        target = train.target.cpu().numpy()
        for j, name in enumerate(self.modalities):
            rows = train.present[:, j].cpu().numpy()  # [N]
            x = train.inputs[name].flatten(1).double().cpu().numpy()  # [N, D_m]
            if not rows.any():  # the trainer refuses such data already
                raise MlmmError(f"modality {name!r} is absent from every training sample")
            coef, intercept = fit_linear(
                x[rows], target[rows], self.task, self.C, self.max_iter, random_state
            )
            self.coef[name].copy_(torch.from_numpy(coef))
            self.intercept[name].copy_(torch.from_numpy(intercept))

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        inputs = batch.zero_padding().inputs  # padded steps read as zeros, as the fit saw them
        outputs = []
        for j, name in enumerate(self.modalities):
            x = inputs[name].flatten(1)  # [B, D_m]
            x = torch.where(present[:, j : j + 1], x, 0.0)  # absent rows are never read
            outputs.append(x @ self.coef[name].T + self.intercept[name])  # [B, K]
        outputs = torch.stack(outputs, dim=1)  # [B, M, K]
        # a sample with nothing present (never one the trainer or TrainedModel passes) gets
        # the mean over every modality, on zero inputs
        use = present | ~present.any(1, keepdim=True)  # [B, M] (a where with True: no ONNX)
        weight = use.to(outputs.dtype) / use.sum(1, keepdim=True)  # [B, M]
        if not self.task.is_classification:
            prediction = (weight.unsqueeze(2) * outputs).sum(1)  # [B, 1]
        else:  # log of the mean probability, in log space so that it stays finite
            log_prob = outputs.log_softmax(dim=2) + weight.log().unsqueeze(2)  # [B, M, K]
            prediction = log_prob.logsumexp(dim=1)  # [B, K]
        return self.output(batch, prediction, per_modality=outputs)
