"""Histogram gradient-boosted trees on the concatenated inputs, absent modalities as missing values.

What a practitioner with tabular habits fits first: scikit-learn's
``HistGradientBoostingClassifier`` / ``HistGradientBoostingRegressor`` (F. Pedregosa et al.,
"Scikit-learn: Machine Learning in Python", JMLR 12:2825-2830, 2011), the histogram algorithm
of LightGBM (G. Ke, Q. Meng, T. Finley, T. Wang, W. Chen, W. Ma, Q. Ye, T.-Y. Liu, "LightGBM: A
Highly Efficient Gradient Boosting Decision Tree", NeurIPS 2017), with the missing-value
routing of XGBoost (T. Chen, C. Guestrin, "XGBoost: A Scalable Tree Boosting System", KDD 2016,
doi:10.1145/2939672.2939785): every split learns on which side missing values go. Every
modality is flattened and concatenated; the features of an absent modality are NaN. Fitted
once by scikit-learn; the fitted trees are copied into tensors and prediction runs in torch
(a vectorised traversal of every tree at once), so the artifact holds no pickle.

Deliberate differences: none in the model. Early stopping, when on, uses the trainer's
validation split rather than one carved from the training data (which it does only when no
validation data is given).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MethodOutput, check_range
from mlmm.methods.reference._classical import (
    ABSENT_CLASS_LOGIT,
    ClassicalReference,
    constant_linear,
    flat_features,
    frozen,
)
from mlmm.methods.registry import register_method
from mlmm.tune.space import Float, Int


class TreeEnsemble(nn.Module):
    """Regression trees as padded ``[T, N]`` tensors (tree, node), evaluated all at once.

    Node ``0`` of every tree is its root. An internal node sends a sample to
    ``branches[..., 0]`` (left) when its feature is ``<= threshold``, and a missing (NaN)
    feature left when ``missing_left``; otherwise to ``branches[..., 1]`` (right). A leaf is
    its own child on both sides, so a path that reached it stays there, and its ``value`` is
    the tree's output. Padding nodes are leaves that no path reaches. The learned numbers
    (``threshold``, ``value``, float64 so that comparisons match scikit-learn's exactly) are
    frozen parameters; the structure is buffers. Loading a state dict resizes every tensor to
    the stored one, so a new instance loads any fitted ensemble.

    Attributes
    ----------
    feature : Tensor of int64, shape [T, N]
    branches : Tensor of int64, shape [T, N, 2]
    missing_left : Tensor of bool, shape [T, N]
    threshold, value : nn.Parameter of float64, shape [T, N]
    output : Tensor of int64, shape [T]
        The output column each tree adds to (its class for multiclass boosting).
    """

    def __init__(self) -> None:
        super().__init__()
        self.set_trees([], [])

    @torch.no_grad()
    def set_trees(self, trees: list[np.ndarray], output: list[int]) -> None:
        """Replace the ensemble with ``trees`` (scikit-learn ``TreePredictor.nodes`` arrays)."""
        device = self.output.device if hasattr(self, "output") else torch.device("cpu")
        t, n = len(trees), max((len(nodes) for nodes in trees), default=1)
        feature = np.zeros((t, n), np.int64)
        branches = np.tile(np.arange(n, dtype=np.int64)[None, :, None], (t, 1, 2))  # self-loops
        missing_left = np.zeros((t, n), bool)
        threshold = np.zeros((t, n), np.float64)
        value = np.zeros((t, n), np.float64)
        for i, nodes in enumerate(trees):
            split = np.flatnonzero(nodes["is_leaf"] == 0)
            feature[i, split] = nodes["feature_idx"][split]
            branches[i, split, 0] = nodes["left"][split]
            branches[i, split, 1] = nodes["right"][split]
            missing_left[i, split] = nodes["missing_go_to_left"][split].astype(bool)
            threshold[i, split] = nodes["num_threshold"][split]
            value[i, : len(nodes)] = nodes["value"]
        for name, array in {
            "feature": feature,
            "branches": branches,
            "missing_left": missing_left,
        }.items():
            self.register_buffer(name, torch.from_numpy(array).to(device))
        self.threshold = frozen(torch.from_numpy(threshold).to(device))
        self.value = frozen(torch.from_numpy(value).to(device))
        self.register_buffer("output", torch.tensor(output, dtype=torch.int64, device=device))

    def __len__(self) -> int:
        return int(self.output.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Leaf values ``[B, T]`` of every tree for features ``x`` ``[B, D]`` (NaN = missing)."""
        x = x.to(self.threshold.dtype)
        t, n = self.feature.shape
        # NaN read as -inf goes left, as +inf right: a node whose missing values go right reads
        # its feature from the second copy. Data is finite; a "split on NaN" (threshold +inf:
        # every value left, NaN right) compares against the largest finite number instead.
        both = torch.cat([x.nan_to_num(-torch.inf), x.nan_to_num(torch.inf)], dim=1)  # [B, 2D]
        column = (self.feature + x.shape[1] * (~self.missing_left).long()).flatten()  # [T * N]
        threshold = self.threshold.clamp(max=torch.finfo(x.dtype).max).flatten()  # [T * N]
        start = torch.arange(t, device=x.device) * n  # [T] each tree's root, flattened
        branches = (self.branches + start[:, None, None]).flatten()  # [T * N * 2], flat indices
        node = start.expand(x.shape[0], t)  # [B, T] flat index of the current node
        for _ in range(n):  # one level per step; a path is never longer than the tree
            go_right = both.gather(1, column[node]) > threshold[node]  # [B, T]
            child = branches[2 * node + go_right.long()]  # [B, T]
            if torch.equal(child, node):  # every path is at a leaf
                break
            node = child
        return self.value.flatten()[node]  # [B, T]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ):
        # the number of trees and of nodes depend on the fit, not on the constructor
        for table in (self._parameters, self._buffers):
            for name, current in table.items():
                stored = state_dict.get(prefix + name)
                if (
                    isinstance(stored, torch.Tensor)
                    and current is not None
                    and stored.dim() == current.dim()
                    and stored.shape != current.shape
                ):
                    empty = torch.empty(stored.shape, dtype=current.dtype, device=current.device)
                    table[name] = frozen(empty) if table is self._parameters else empty
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )


@register_method(
    "hist-gradient-boosting",
    family="reference",
    subtype="classical",
    paper="histogram gradient boosting, NaN for absent modalities (scikit-learn; Ke et al., 2017)",
)
class HistGradientBoosting(ClassicalReference):
    """Gradient-boosted trees on all modalities, flattened and concatenated, absent ones NaN.

    :meth:`fit` fits scikit-learn's ``HistGradientBoostingClassifier`` (log loss; one tree
    per iteration for two classes, one per class and iteration otherwise) or
    ``HistGradientBoostingRegressor`` (squared error) on the standardised features, with NaN
    wherever a modality is absent: each split sends missing values to the side that lowered
    the training loss most (to the larger child when the feature was never missing in
    training). The trees are then copied into a :class:`TreeEnsemble` and ``forward``
    returns the boosted raw scores: class logits (softmax gives scikit-learn's
    ``predict_proba``) or regression values.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    max_iter : int, default 200
        Boosting iterations (fewer when early stopping ends the fit).
    learning_rate : float, default 0.1
        Shrinkage of every tree's values.
    max_leaf_nodes : int, default 31
        Most leaves per tree.
    max_depth : int or None, default None
        Most edges from root to leaf (None: limited by ``max_leaf_nodes`` only).
    min_samples_leaf : int, default 20
        Fewest training samples in a leaf.
    l2_regularization : float, default 0.0
        L2 penalty on leaf values.
    early_stopping : {"auto", True, False}, default "auto"
        Stop when the validation loss has not improved by 1e-7 for ``n_iter_no_change``
        iterations; ``"auto"`` (scikit-learn's rule) turns it on above 10,000 training
        samples. It scores on the trainer's validation data, or on a seeded 10% of the
        training data when there is none.
    n_iter_no_change : int, default 10
        Patience of early stopping, in iterations.

    Attributes
    ----------
    trees : TreeEnsemble
        The fitted trees (empty before :meth:`fit`; sized by the fit, or by loading).
    baseline : nn.Parameter, shape [K]
        The raw score before any tree (the log-odds or mean of the training targets);
        classes absent from the training data get a logit of -30. ``K = 1`` for regression.

    References
    ----------
    G. Ke, Q. Meng, T. Finley, T. Wang, W. Chen, W. Ma, Q. Ye, T.-Y. Liu. "LightGBM: A Highly
    Efficient Gradient Boosting Decision Tree." NeurIPS 2017.

    T. Chen, C. Guestrin. "XGBoost: A Scalable Tree Boosting System." KDD 2016.
    doi:10.1145/2939672.2939785.

    F. Pedregosa et al. "Scikit-learn: Machine Learning in Python." Journal of Machine Learning
    Research 12, 2825-2830, 2011.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> train, _ = mlmm.simulate(split.train, "mcar:0.5", seed=0)
    >>> model = mlmm.create_method("hist-gradient-boosting", ds.specs, ds.task, max_iter=20)
    >>> trained = mlmm.Trainer(progress=False).fit(model, train, split.val)
    >>> len(trained.model.trees)  # one tree per class and iteration
    80
    """

    search_space = {
        "max_iter": Int(50, 500, log=True),
        "learning_rate": Float(0.01, 0.3, log=True),
        "max_leaf_nodes": Int(8, 64, log=True),
        "min_samples_leaf": Int(5, 50, log=True),
        "l2_regularization": Float(1e-4, 10.0, log=True),
    }

    #: deterministic given the data, unless early stopping carves its own validation split
    uses_seed = False

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        max_depth: int | None = None,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        early_stopping: str | bool = "auto",
        n_iter_no_change: int = 10,
    ) -> None:
        super().__init__(specs, task)
        check_range("max_iter", max_iter, 1, integer=True)
        check_range("learning_rate", learning_rate, 0, low_inclusive=False)
        check_range("max_leaf_nodes", max_leaf_nodes, 2, integer=True)
        if max_depth is not None:
            check_range("max_depth", max_depth, 1, integer=True)
        check_range("min_samples_leaf", min_samples_leaf, 1, integer=True)
        check_range("l2_regularization", l2_regularization, 0)
        if not (isinstance(early_stopping, bool) or early_stopping == "auto"):
            raise MlmmError(f"early_stopping must be 'auto', True or False, got {early_stopping!r}")
        check_range("n_iter_no_change", n_iter_no_change, 1, integer=True)
        self.max_iter, self.learning_rate = max_iter, learning_rate
        self.max_leaf_nodes, self.max_depth = max_leaf_nodes, max_depth
        self.min_samples_leaf, self.l2_regularization = min_samples_leaf, l2_regularization
        self.early_stopping, self.n_iter_no_change = early_stopping, n_iter_no_change
        self.trees = TreeEnsemble()
        self.baseline = frozen(torch.zeros(task.output_dim, dtype=torch.float64))

    def estimator(self, random_state: int, n_train: int) -> Any:
        """The unfitted scikit-learn estimator with this method's hyperparameters."""
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        cls = (
            HistGradientBoostingClassifier
            if self.task.is_classification
            else HistGradientBoostingRegressor
        )
        stop = n_train > 10_000 if self.early_stopping == "auto" else self.early_stopping
        return cls(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=stop,
            n_iter_no_change=self.n_iter_no_change,
            categorical_features=None,  # every feature is numeric
            random_state=random_state,
        )

    def fit_classical(
        self, train: MultimodalBatch, val: MultimodalBatch | None, random_state: int
    ) -> None:
        """Fit scikit-learn's boosting on the NaN-filled features and copy its trees."""
        x = flat_features(train, float("nan")).double().cpu().numpy()  # [N, D]
        y = train.target.cpu().numpy()
        if self.task.is_classification and len(np.unique(y)) < 2:
            _, intercept = constant_linear(y, self.task, 0)  # one class: nothing to split on
            self.trees.set_trees([], [])
            with torch.no_grad():
                self.baseline.copy_(torch.from_numpy(intercept))
            return
        estimator = self.estimator(random_state, len(x))
        if estimator.early_stopping and val is not None:
            x_val = flat_features(val, float("nan")).double().cpu().numpy()  # [N_val, D]
            estimator.fit(x, y, X_val=x_val, y_val=val.target.cpu().numpy())
        else:
            estimator.fit(x, y)
        self.load_estimator(estimator)

    @torch.no_grad()
    def load_estimator(self, estimator: Any) -> None:
        """Copy a fitted ``HistGradientBoostingClassifier`` / ``Regressor`` (numeric features
        only, on this method's concatenated features) into :attr:`trees` and :attr:`baseline`."""
        width = sum(math.prod(s.shape) for s in self.specs)
        if getattr(estimator, "n_features_in_", None) != width:
            raise MlmmError(
                f"the estimator was fitted on {getattr(estimator, 'n_features_in_', None)} "
                f"features; this model's modalities have {width}"
            )
        trees = [tree.nodes for iteration in estimator._predictors for tree in iteration]
        if any(nodes["is_categorical"].any() for nodes in trees):
            raise MlmmError(
                "the estimator has categorical splits, which this model does not evaluate; "
                "fit it with categorical_features=None"
            )
        scores = estimator._baseline_prediction.reshape(-1)  # [trees per iteration]
        baseline = np.zeros(self.task.output_dim)
        columns = [0]
        if self.task.is_classification:
            classes = np.asarray(estimator.classes_, dtype=np.int64)
            baseline[:] = ABSENT_CLASS_LOGIT
            if len(classes) == 2:  # one score for the second class; the first has logit 0
                baseline[classes[0]], columns = 0.0, [int(classes[1])]
            else:
                columns = classes.tolist()
        baseline[columns] = scores
        self.trees.set_trees(trees, columns * len(estimator._predictors))
        self.baseline.copy_(torch.from_numpy(baseline))

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        self.present_mask(batch)
        x = flat_features(batch, float("nan"))  # [B, D], NaN where absent
        leaves = self.trees(x)  # [B, T]
        scores = self.baseline.expand(len(x), -1).index_add(1, self.trees.output, leaves)
        return self.output(batch, scores.to(x.dtype))  # [B, K]
