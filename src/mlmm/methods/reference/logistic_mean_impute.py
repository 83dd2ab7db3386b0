"""Logistic regression on the concatenated inputs, absent modalities filled with the training mean.

The textbook baseline a practitioner fits before any deep model: unconditional mean
imputation (R. J. A. Little and D. B. Rubin, "Statistical Analysis with Missing Data", 3rd ed.,
Wiley, 2019, doi:10.1002/9781119482260, section 3.4) followed by multinomial logistic
regression with an L2 penalty (scikit-learn's ``LogisticRegression``, lbfgs; F. Pedregosa et
al., "Scikit-learn: Machine Learning in Python", JMLR 12:2825-2830, 2011). Regression tasks use
ridge regression with the same penalty weight. Every modality is flattened (sequences and
images included) and the features are concatenated. Fitted once by scikit-learn, not trained
by gradient descent; the coefficients are stored as tensors and prediction runs in torch.

Deliberate differences: none in the model. No missing-indicator inputs (``mean-impute`` is the
deep variant with them); the inputs are the trainer's standardised ones.
"""

from __future__ import annotations

import math

import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, check_range
from mlmm.methods.reference._classical import ClassicalReference, fit_linear, flat_features, frozen
from mlmm.methods.registry import register_method
from mlmm.tune.space import Float


@register_method(
    "logistic-mean-impute",
    family="reference",
    subtype="classical",
    paper="mean imputation + logistic regression (Little & Rubin, 2019; scikit-learn)",
)
class LogisticMeanImpute(ClassicalReference):
    """Mean-impute absent modalities, then one (multinomial) logistic regression on everything.

    :meth:`fit` stores the mean of every flattened input feature over the training samples
    where its modality is present (close to 0 after the trainer's standardisation, exactly 0
    only for vector features; computed anyway), fills absent modalities with it and fits
    scikit-learn's ``LogisticRegression`` (lbfgs, L2 penalty ``C``) or, for regression,
    ``Ridge(alpha=1 / (2 C))``. ``forward`` fills the same way and returns the logits
    ``x @ coef.T + intercept``.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    C : float, default 1.0
        Inverse L2 penalty strength, as in scikit-learn (larger: less regularisation).
    max_iter : int, default 1000
        Most lbfgs iterations (classification).

    Attributes
    ----------
    coef : nn.Parameter, shape [K, D]
        Coefficients over the ``D`` concatenated features (frozen: fitted by scikit-learn).
        A binary fit is stored as logits ``[0, w.x + b]``; classes absent from the training
        data get a logit of -30. ``K = 1`` for regression.
    intercept : nn.Parameter, shape [K]
    train_mean : Tensor, shape [D]
        Buffer: the training mean of every feature over the samples that have its modality.

    References
    ----------
    R. J. A. Little, D. B. Rubin. "Statistical Analysis with Missing Data." 3rd ed., Wiley,
    2019. doi:10.1002/9781119482260.

    F. Pedregosa et al. "Scikit-learn: Machine Learning in Python." Journal of Machine Learning
    Research 12, 2825-2830, 2011.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> model = mlmm.create_method("logistic-mean-impute", ds.specs, ds.task, C=0.5)
    >>> trained = mlmm.Trainer(progress=False).fit(model, split.train, split.val)
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
        width = sum(math.prod(s.shape) for s in self.specs)
        self.coef = frozen(torch.zeros(task.output_dim, width))
        self.intercept = frozen(torch.zeros(task.output_dim))
        self.register_buffer("train_mean", torch.zeros(width))

    @torch.no_grad()
    def fit_classical(
        self, train: MultimodalBatch, val: MultimodalBatch | None, random_state: int
    ) -> None:
        """Store the training means, fill, fit the linear model on the training batch."""
        x = flat_features(train, float("nan")).double()  # [N, D]
        mean = torch.nanmean(x, dim=0).nan_to_num(0.0)  # [D], 0 for a modality never present
        x = torch.where(x.isnan(), mean, x)  # [N, D]
        coef, intercept = fit_linear(
            x.cpu().numpy(),
            train.target.cpu().numpy(),
            self.task,
            self.C,
            self.max_iter,
            random_state,
        )
        self.train_mean.copy_(mean)
        self.coef.copy_(torch.from_numpy(coef))
        self.intercept.copy_(torch.from_numpy(intercept))

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        self.present_mask(batch)
        x = flat_features(batch, self.train_mean)  # [B, D]
        logits = x @ self.coef.T + self.intercept  # [B, K]
        return self.output(batch, logits, embedding=x)
