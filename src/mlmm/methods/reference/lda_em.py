"""Gaussian discriminant analysis fitted by EM on incomplete data, absent modalities marginalised.

Z. Ghahramani and M. I. Jordan, "Supervised learning from incomplete data via an EM
approach", Advances in Neural Information Processing Systems 6 (NIPS 1993), 1994, pp. 120-127:
model the joint density of inputs and target, fit it by EM treating the absent inputs as
hidden variables, and predict by conditioning on the observed inputs, never imputing them. The
E- and M-steps are those of the multivariate normal with missing values (R. J. A. Little and
D. B. Rubin, "Statistical Analysis with Missing Data", 3rd ed., Wiley, 2019,
doi:10.1002/9781119482260, chapter 11). Classification: one Gaussian per class with a shared
covariance (linear discriminant analysis), the prediction is the exact class posterior under
the Gaussian marginal of the present features. Regression: one Gaussian over the inputs and
the target together, the prediction is the conditional mean of the target. Every modality is
flattened (sequences and images included) and the features are concatenated. Fitted once, in
torch float64, not by gradient descent.

Deliberate differences: one Gaussian per class with a covariance shared by all classes
(linear discriminant analysis), and one Gaussian for regression, where the paper fits mixtures
of several full-covariance Gaussian components over inputs and target; the covariance is
shrunk towards ``(trace / D) * I`` after each M-step (a Ledoit-Wolf-style target with a fixed
weight), which keeps it invertible when the feature count ``D`` approaches the sample count
(for regression it shrinks the input-target covariance too, much as a ridge penalty would).
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
    ABSENT_CLASS_LOGIT,
    ClassicalReference,
    flat_features,
    frozen,
)
from mlmm.methods.registry import register_method
from mlmm.tune.space import Float, Int

_NOT_POSITIVE_DEFINITE = (
    "lda-em: the fitted covariance is not positive definite (constant or collinear "
    "features); raise shrinkage above 0"
)


def _cholesky(matrix: torch.Tensor) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(matrix)
    if info.item() != 0:
        raise MlmmError(_NOT_POSITIVE_DEFINITE)
    return factor


def _feature_blocks(
    x: torch.Tensor, columns: torch.Tensor, pattern: torch.Tensor, full: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The features observed together (by every pattern, or by none), each with an orthonormal
    basis of where its data lie: ``[(features [P_b], basis [P_b, r_b])]``.

    A block's observed rows span at most as many dimensions as there are rows, and EM never
    leaves that span (its means, its regressions of hidden on observed parts and its
    covariance updates are combinations of those rows; the identity start and the isotropic
    shrinkage act on the rest alike), so EM can run on ``r_b = min(rows, P_b)`` coordinates.
    ``full`` (or a block with as many rows as features): the basis is the identity.
    """
    signatures, block = torch.unique(columns.T, dim=0, return_inverse=True)  # [B, Q], [P]
    blocks = []
    for b in range(len(signatures)):
        features = (block == b).nonzero().squeeze(1)  # [P_b]
        rows = signatures[b][pattern].nonzero().squeeze(1)  # [n_b]
        if full or len(rows) >= len(features):
            basis = torch.eye(len(features), dtype=x.dtype, device=x.device)  # [P_b, P_b]
        else:  # Householder QR: orthonormal columns spanning the rows, even if they repeat
            basis = torch.linalg.qr(x[rows[:, None], features].T).Q  # [P_b, n_b]
        blocks.append((features, basis))
    return blocks


def gaussian_em(
    x: torch.Tensor,
    columns: torch.Tensor,
    pattern: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    shrinkage: float,
    n_iter: int,
    tol: float,
    shrinkage_target: str = "isotropic",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Maximum-likelihood group means and one shared covariance from incomplete rows, by EM.

    The covariance is kept as ``S = U C U^T + sum_b d_b (I_b - U_b U_b^T)``: ``U`` holds, per
    block of features observed together, an orthonormal basis of its observed rows
    (:func:`_feature_blocks`), ``C [r, r]`` is ``S`` in those coordinates and ``d_b`` its
    variance on the rest of the block, where every direction is alike (EM starts from the
    identity, and the isotropic target adds the same to every direction). Every step below is
    the textbook one in those coordinates, so the result is that of the dense EM up to float
    round-off, at a cost that grows with ``r`` (at most the rows per block) instead of ``P``.
    With ``shrinkage_target="diagonal"`` (whose target differs per feature) or more rows
    than features the basis is the identity: the dense EM.

    Parameters
    ----------
    x : Tensor, shape [N, P]
        The rows; entries their pattern does not observe are never read (NaN is fine).
    columns : Tensor of bool, shape [Q, P]
        Which columns each observation pattern observes.
    pattern : Tensor of int64, shape [N]
        Each row's pattern (index into ``columns``).
    group : Tensor of int64, shape [N]
        Each row's group (its class; all 0 for a single mean), in ``[0, n_groups)``.
    n_groups : int
    shrinkage, n_iter, tol : float, int, float
        As in :class:`LdaEm`.
    shrinkage_target : {"isotropic", "diagonal"}, default "isotropic"
        As in :class:`LdaEm`.

    Returns
    -------
    mean : Tensor, shape [n_groups, P]
        0 for a group without rows.
    covariance : Tensor, shape [P, P]
    iterations : int
        EM iterations run (fewer than ``n_iter`` when the covariance settled).
    """
    n, width = x.shape
    observed = columns[pattern]  # [N, P]
    filled = torch.where(observed, x, 0.0)  # [N, P]
    blocks = _feature_blocks(filled, columns, pattern, shrinkage_target == "diagonal")
    sizes = [basis.shape[1] for _, basis in blocks]
    # each block's coordinates, where its complement's dimension and variance d_b belong
    coordinates = torch.arange(sum(sizes), device=x.device).split(sizes)
    rest = x.new_tensor([len(f) - basis.shape[1] for f, basis in blocks])  # [B]
    y = torch.cat([filled[:, f] @ basis for f, basis in blocks], dim=1)  # [N, r]
    block_columns = torch.stack([columns[:, f[0]] for f, _ in blocks], dim=1)  # [Q, B]
    r = y.shape[1]
    eye = torch.eye(r, dtype=x.dtype, device=x.device)  # [r, r]

    zeros = x.new_zeros(n_groups, r)  # [G, r]
    counts = x.new_zeros(n_groups).index_add_(0, group, x.new_ones(n))  # [G]
    block_coordinates = torch.cat(  # [r]: the block of each coordinate
        [torch.full((size,), b, device=x.device) for b, size in enumerate(sizes)]
    )
    seen = block_columns[pattern][:, block_coordinates].to(x.dtype)  # [N, r]
    seen = zeros.index_add(0, group, seen)  # [G, r]
    mean = zeros.index_add(0, group, y) / seen.clamp(min=1)  # [G, r], 0 if never seen
    covariance, rest_variance = eye.clone(), x.new_ones(len(blocks))  # [r, r], [B]
    patterns = []
    for q in range(len(columns)):
        present = block_columns[q]  # [B]
        o = present[block_coordinates].nonzero().squeeze(1)  # [|o|]
        m = (~present)[block_coordinates].nonzero().squeeze(1)  # [|m|]
        patterns.append(((pattern == q).nonzero().squeeze(1), o, m, ~present))
    iterations = n_iter
    for iteration in range(1, n_iter + 1):
        # E-step, one pattern at a time: the missing part of each row's residual from its
        # group mean is its regression on the observed part; its conditional covariance is
        # the same for every row of the pattern
        residual = y - mean[group]  # [N, r]
        hidden = torch.zeros_like(covariance)  # [r, r]
        hidden_rest = torch.zeros_like(rest_variance)  # [B]
        for rows, o, m, absent in patterns:
            if not absent.any():
                continue
            hidden_rest += len(rows) * absent * rest_variance
            order = torch.cat([o, m])  # one gather of S in the order (o, m), then views
            block = covariance.index_select(0, order).index_select(1, order)  # [|o|+|m|, ..]
            observed_part, conditional = block[: len(o), : len(o)], block[len(o) :, len(o) :]
            if len(o) == 0:
                residual[rows[:, None], m] = 0.0
            else:
                if (rest_variance[~absent & (rest > 0)] <= 0).any():
                    raise MlmmError(_NOT_POSITIVE_DEFINITE)  # S_oo singular off the data's span
                factor = _cholesky(observed_part)  # [|o|, |o|]
                cross = block[: len(o), len(o) :]  # [|o|, |m|] = S_om
                # (S_oo^-1 r_o)^T S_om: as many right-hand sides as rows, not as |m|
                observed_rows = residual.index_select(0, rows).index_select(1, o)  # [n_q, |o|]
                solved = torch.cholesky_solve(observed_rows.T, factor)  # [|o|, n_q]
                residual[rows[:, None], m] = solved.T @ cross  # [n_q, |m|]
                half = torch.linalg.solve_triangular(factor, cross, upper=False)  # L^-1 S_om
                conditional = conditional - half.T @ half  # S_mm - S_mo S_oo^-1 S_om
            hidden[m[:, None], m] += len(rows) * conditional
        completed = mean[group] + residual  # [N, r]
        # M-step on the expected sufficient statistics, then shrinkage
        mean = zeros.index_add(0, group, completed) / counts.clamp(min=1)[:, None]  # [G, r]
        residual = completed - mean[group]  # [N, r]
        update = (residual.T @ residual + hidden) / n  # [r, r]
        update_rest = hidden_rest / n  # [B]
        if shrinkage_target == "diagonal":  # the basis is the identity: nothing rests
            update = (1 - shrinkage) * update + shrinkage * torch.diag(torch.diagonal(update))
        else:
            average = (update.trace() + (rest * update_rest).sum()) / width
            update = (1 - shrinkage) * update + shrinkage * average * eye
            update_rest = (1 - shrinkage) * update_rest + shrinkage * average
        change = torch.sqrt(
            (
                torch.linalg.norm(update - covariance) ** 2
                + (rest * (update_rest - rest_variance) ** 2).sum()
            )
            / (torch.linalg.norm(covariance) ** 2 + (rest * rest_variance**2).sum())
        )
        covariance, rest_variance = update, update_rest
        if change < tol:
            iterations = iteration
            break
    full_mean = x.new_zeros(n_groups, width)  # [G, P]
    full = x.new_zeros(width, width)  # [P, P]
    for a, (fa, ua) in enumerate(blocks):
        full_mean[:, fa] = mean[:, coordinates[a]] @ ua.T
        for b, (fb, ub) in enumerate(blocks):
            full[fa[:, None], fb] = ua @ covariance[coordinates[a][:, None], coordinates[b]] @ ub.T
        if rest[a] > 0:  # d_a (I - U_a U_a^T) on the rest of the block
            full[fa[:, None], fa] += rest_variance[a] * (
                torch.eye(len(fa), dtype=x.dtype, device=x.device) - ua @ ua.T
            )
    return full_mean, full, iterations


@register_method(
    "lda-em",
    family="reference",
    subtype="classical",
    paper="Gaussian discriminant analysis by EM on incomplete data (Ghahramani & Jordan, 1994)",
)
class LdaEm(ClassicalReference):
    """Linear discriminant analysis fitted by EM on the present entries; predicts by exact
    marginalisation over the absent modalities.

    :meth:`fit` flattens and concatenates the standardised modalities (``D`` features) and runs
    EM for a Gaussian model with the absent entries as hidden variables: class means and one
    shared covariance for classification; for regression one mean and one covariance of the
    vector ``[features, target]``. Rows are grouped by modality presence pattern, so an E-step
    solves one system per pattern. After each M-step the covariance ``S`` becomes
    ``(1 - shrinkage) S + shrinkage T``, with ``T = (trace(S) / D) I`` (``shrinkage_target=
    "isotropic"``) or ``T = diag(S)`` (``"diagonal"``: each feature keeps its own variance,
    only the correlations shrink). ``forward`` conditions on the present
    features ``o`` of each row: class logits ``x_o S_oo^-1 mu_k,o - mu_k,o S_oo^-1 mu_k,o / 2
    + log prior_k``, the exact log posterior of the model up to a per-row constant, or the
    regression value ``E[y | x_o] = mu_y + S_yo S_oo^-1 (x_o - mu_o)``.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    shrinkage : float, default 0.05
        Weight in [0, 1] of the target ``(trace(S) / D) I`` in every covariance update
        (0: the maximum-likelihood estimate, singular when features are collinear).
    shrinkage_target : {"isotropic", "diagonal"}, default "isotropic"
        What the covariance shrinks towards: ``(trace(S) / D) I``, or ``diag(S)``. After
        standardisation every feature has unit total variance, but its within-class variance
        is lower the more class signal it carries, so with strong shrinkage the diagonal
        target keeps what the isotropic one averages away.
    n_iter : int, default 20
        Most EM iterations.
    tol : float, default 1e-4
        EM stops once an iteration changes the covariance by less than this, relative
        (Frobenius norm).
    max_features : int, default 4096
        Most flattened features ``D``; the covariance holds ``D^2`` numbers, so wider inputs
        raise an error at construction.

    Attributes
    ----------
    mean : nn.Parameter, shape [K, D] or [1, D + 1]
        Class means (classification; 0 for a class absent from the training data), or the
        mean of ``[features, target]`` (regression). Frozen: fitted by EM.
    covariance : nn.Parameter, shape [D, D] or [D + 1, D + 1]
        The shared within-class covariance, or the joint covariance of ``[features, target]``.
    log_prior : nn.Parameter, shape [K]
        Classification only: log class frequencies of the training data; -30 for a class it
        lacks.

    References
    ----------
    Z. Ghahramani, M. I. Jordan. "Supervised learning from incomplete data via an EM
    approach." Advances in Neural Information Processing Systems 6 (NIPS 1993), 120-127, 1994.

    R. J. A. Little, D. B. Rubin. "Statistical Analysis with Missing Data." 3rd ed., Wiley,
    2019. doi:10.1002/9781119482260. Chapter 11.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> train, _ = mlmm.simulate(split.train, "mcar:0.5", seed=0)
    >>> model = mlmm.create_method("lda-em", ds.specs, ds.task, shrinkage=0.1)
    >>> trained = mlmm.Trainer(progress=False).fit(model, train, split.val)
    >>> trained.predict_proba(split.test).shape
    (40, 4)
    """

    search_space = {
        "shrinkage": Float(1e-3, 0.5, log=True),
        "n_iter": Int(5, 50, log=True),
    }

    uses_seed = False  # EM from a fixed start has no randomness: the seed changes nothing

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        shrinkage: float = 0.05,
        n_iter: int = 20,
        tol: float = 1e-4,
        max_features: int = 4096,
        shrinkage_target: str = "isotropic",
    ) -> None:
        super().__init__(specs, task)
        check_range("shrinkage", shrinkage, 0, 1)
        if shrinkage_target not in ("isotropic", "diagonal"):
            raise MlmmError(
                f"lda-em shrinkage_target must be 'isotropic' or 'diagonal', got "
                f"{shrinkage_target!r}; pass one of them"
            )
        self.shrinkage_target = shrinkage_target
        check_range("n_iter", n_iter, 1, integer=True)
        check_range("tol", tol, 0, low_inclusive=False)
        check_range("max_features", max_features, 1, integer=True)
        self.shrinkage, self.n_iter, self.tol = shrinkage, n_iter, tol
        self.max_features = max_features
        self.widths = [math.prod(s.shape) for s in self.specs]
        width = sum(self.widths)
        if width > max_features:
            raise MlmmError(
                f"lda-em fits a {width} x {width} covariance of the flattened inputs, above "
                f"max_features={max_features}; raise max_features, or choose a method with "
                "encoders such as late-fusion"
            )
        if task.is_classification:
            self.mean = frozen(torch.zeros(task.n_classes, width))
            self.covariance = frozen(torch.eye(width))
            self.log_prior = frozen(torch.zeros(task.n_classes))
        else:  # the target is the last coordinate of the joint Gaussian
            self.mean = frozen(torch.zeros(1, width + 1))
            self.covariance = frozen(torch.eye(width + 1))
        # forward's per-pattern linear maps, with the parameters' state they were computed from
        self._maps: tuple[tuple, dict[tuple[bool, ...], tuple[torch.Tensor, ...]]] = ((), {})

    def _patterns(self, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct presence patterns as feature columns ``[Q, D]`` and each row's pattern
        ``[B]``."""
        patterns, pattern = torch.unique(present, dim=0, return_inverse=True)  # [Q, M], [B]
        widths = torch.tensor(self.widths, device=present.device)
        return patterns.repeat_interleave(widths, dim=1), pattern

    @torch.no_grad()
    def fit_classical(
        self, train: MultimodalBatch, val: MultimodalBatch | None, random_state: int
    ) -> None:
        """Run EM on the training batch and store the means, covariance and log prior."""
        x = flat_features(train, float("nan")).double()  # [N, D]
        columns, pattern = self._patterns(train.present)  # [Q, D], [N]
        if self.task.is_classification:
            group, n_groups = train.target.long(), self.task.n_classes  # [N]
            counts = torch.bincount(group, minlength=n_groups).double()  # [K]
            log_prior = torch.where(counts > 0, counts / counts.sum(), 0.0).log()  # [K]
            self.log_prior.copy_(log_prior.clamp(min=ABSENT_CLASS_LOGIT))
        else:  # the target joins the features, always observed
            x = torch.cat([x, train.target.double()[:, None]], dim=1)  # [N, D + 1]
            columns = torch.cat([columns, columns.new_ones(len(columns), 1)], dim=1)
            group, n_groups = torch.zeros_like(pattern), 1  # [N]
        mean, covariance, _ = gaussian_em(
            x,
            columns,
            pattern,
            group,
            n_groups,
            self.shrinkage,
            self.n_iter,
            self.tol,
            self.shrinkage_target,
        )
        self.mean.copy_(mean)
        self.covariance.copy_(covariance)

    def _present_features(self, present: tuple[bool, ...]) -> torch.Tensor:
        """The flattened features ``o [|o|]`` of the modalities ``present`` marks."""
        device = self.covariance.device
        widths = torch.tensor(self.widths, device=device)  # [M]
        return torch.tensor(present, device=device).repeat_interleave(widths).nonzero().squeeze(1)

    def _linear_map(self, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The prediction of a row whose present features are ``o`` is ``x_o @ weight +
        offset``: ``weight [|o|, K]`` and ``offset [K]`` (float64; K = 1 for regression)."""
        mean, covariance = self.mean.double(), self.covariance.double()  # [K, P], [P, P]
        if self.task.is_classification:
            bias = self.log_prior.double()  # [K]
        else:  # E[y | x_o] = mu_y + S_yo S_oo^-1 (x_o - mu_o): the linear model on x_o
            bias, target = mean[:, -1], covariance[:, -1:]  # [1], [P, 1]
        if len(o) == 0:  # nothing present: the prior (the target mean)
            return mean.new_zeros(0, self.task.output_dim), bias
        factor = _cholesky(covariance[o][:, o])  # [|o|, |o|]
        if self.task.is_classification:
            weight = torch.cholesky_solve(mean[:, o].T, factor)  # [|o|, K]
            return weight, bias - 0.5 * (mean[:, o] * weight.T).sum(1)  # [K]
        weight = torch.cholesky_solve(target[o], factor)  # [|o|, 1]
        return weight, bias - mean[:, o] @ weight  # [1]

    def _pattern_map(self, present: tuple[bool, ...]) -> tuple[torch.Tensor, ...]:
        """``(o, weight, offset)`` of the presence pattern ``present``: :meth:`_linear_map`,
        computed once per pattern while the parameters stay as they are (its Cholesky takes about
        a second at 4,000 features), not once per batch."""
        state = tuple(  # any in-place change (fit, load_state_dict) or move computes anew
            (p.device, p.dtype, p.data_ptr(), 0 if p.is_inference() else p._version)
            for p in self.parameters()
        )
        kept, maps = self._maps  # never changed once kept: mlmm serve calls from threads
        found = maps.get(present) if kept == state else None
        if found is None:
            # normal tensors even under serve's inference_mode, so any later call may use them
            with torch.inference_mode(False), torch.no_grad():
                o = self._present_features(present)  # [|o|]
                found = (o, *self._linear_map(o))
            if kept != state or sum(w.numel() for _, w, _ in maps.values()) > MAX_CACHED_VALUES:
                maps = {}
            self._maps = (state, {**maps, present: found})
        return found

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        x = flat_features(batch, 0.0)  # [B, D]
        patterns, pattern = torch.unique(present, dim=0, return_inverse=True)  # [Q, M], [B]
        prediction = x.new_zeros(len(x), self.task.output_dim, dtype=torch.float64)  # [B, K]
        for q, modalities in enumerate(patterns.tolist()):
            rows = (pattern == q).nonzero().squeeze(1)  # [n_q]
            o, weight, offset = self._pattern_map(tuple(modalities))  # [|o|], [|o|, K], [K]
            prediction[rows] = x[rows][:, o].double() @ weight + offset  # [n_q, K]
        return self.output(batch, prediction.to(x.dtype))

    def onnx_module(self) -> nn.Module:
        """:meth:`forward` as a table of every presence pattern's linear map, computed here
        (ONNX has no Cholesky): a row's pattern picks its map, no solve at prediction.

        Raises
        ------
        MlmmError
            When the table (``2^M`` patterns x features x outputs, float64) would pass
            :data:`MAX_ONNX_TABLE_BYTES`.
        """
        count, width = 2 ** len(self.modalities), sum(self.widths)
        size = count * width * self.task.output_dim * 8
        if size > MAX_ONNX_TABLE_BYTES:
            raise MlmmError(
                f"lda-em exports one linear map per presence pattern, {count} patterns x "
                f"{width} features x {self.task.output_dim} outputs in float64 here: "
                f"{size / 2**30:.1f} GiB, above the "
                f"{MAX_ONNX_TABLE_BYTES / 2**30:.0f} GiB limit; serve it with mlmm serve, which "
                "runs PyTorch"
            )
        return _PatternMaps(self)


#: Largest table of per-pattern linear maps an ``lda-em`` ONNX export holds (protobuf files
#: stop at 2 GiB).
MAX_ONNX_TABLE_BYTES = 1 << 30
#: Most numbers of per-pattern linear maps an ``lda-em`` model keeps between forward calls
#: (float64: 128 MiB); past it the kept maps are dropped and computed again as needed.
MAX_CACHED_VALUES = 1 << 24


class _PatternMaps(nn.Module):
    """:class:`LdaEm`'s prediction from a table: pattern ``sum_j present_j 2^j`` maps the
    flattened features by ``weight[pattern]`` and adds ``offset[pattern]``."""

    def __init__(self, model: LdaEm) -> None:
        super().__init__()
        self.modalities, self.task = model.modalities, model.task
        count, width, k = 2 ** len(model.modalities), sum(model.widths), model.task.output_dim
        weight = torch.zeros(width, count, k, dtype=torch.float64)  # [D, 2^M, K]
        offset = torch.zeros(count, k, dtype=torch.float64)  # [2^M, K]
        m = len(model.modalities)
        for code in range(count):  # forward's own maps: the export's check computed them
            present = tuple(bool(code >> j & 1) for j in range(m))
            o, pattern_weight, pattern_offset = model._pattern_map(present)  # [|o|], [|o|, K]
            weight[o, code], offset[code] = pattern_weight, pattern_offset
        self.register_buffer("weight", weight.reshape(width, count * k))  # [D, 2^M K]
        self.register_buffer("offset", offset)
        self.register_buffer("powers", 2 ** torch.arange(m))  # [M]

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        x = flat_features(batch, 0.0).double()  # [B, D]
        code = (batch.present.long() * self.powers).sum(1)  # [B]
        count, k = self.offset.shape
        every = (x @ self.weight).reshape(-1, count, k)  # [B, 2^M, K] (no len(x): traced)
        index = code[:, None, None].expand(-1, 1, k)  # [B, 1, K]
        prediction = every.gather(1, index).squeeze(1) + self.offset[code]  # [B, K]
        prediction = prediction.to(batch.inputs[self.modalities[0]].dtype)
        if self.task.is_regression:
            prediction = prediction.reshape(-1)
        return MethodOutput(prediction)
