"""Scheduler: a router that picks, per presence pattern, which trained expert method answers.

The "discrete scheduler" of the survey's taxonomy (R. Wu, H. Wang, H.-T. Chen, G. Carneiro,
"Deep Multimodal Learning with Missing Modality: A Survey", arXiv:2409.07825, 2024): a
controller chooses, from what is present, which module answers; in the papers the
controller is an LLM agent planning over tools. Our offline form is the classical per-region
choice of the best classifier (dynamic classifier selection, K. Woods, W. P. Kegelmeyer,
K. Bowyer, "Combination of multiple classifiers using local accuracy estimates", IEEE TPAMI
19(4):405-410, 1997, doi:10.1109/34.588027) with the presence pattern as the region: every
expert (any registered method) is trained in its own fit stage; then each non-empty pattern
is forced on the validation samples that have it (the other modalities hidden, as
evaluation does) and the expert with the best accuracy (lowest validation loss on ties;
lowest mean squared error for regression) is chosen for it.

A pattern the validation data never showed borrows the choice of the nearest seen pattern
in Hamming distance over presence vectors, among the seen patterns inside it (every
modality of the seen pattern is present in the sample, so its chosen expert was validated
on inputs the sample has; the expert still reads every present modality). Ties go to the
pattern with more validation samples. A pattern with no seen pattern inside it has no
possible expert, and predicting it fails with a clear error. The choice table is kept in
buffers, so it is saved in the artifact; :meth:`Scheduler.choice_table` shows it.

Deliberate differences: no learned or LLM controller (the policy is the validation table);
experts are trained independently on the same training data, each with the shared loop or
its own stages.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MethodOutput, MissingModalityModel
from mlmm.methods.combination.per_subset import pattern_codes, rows_of, with_subset
from mlmm.methods.registry import create_method, member_resolved_from_state, register_method
from mlmm.tune.space import Categorical

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory

#: The experts of a scheduler built without ``experts``.
DEFAULT_EXPERTS = "late-fusion,hemis"


def _expert_names(experts: Any) -> tuple[str, ...]:
    """Validate ``experts`` (a comma-separated string or a list of method names)."""
    if isinstance(experts, str):
        names = tuple(n.strip() for n in experts.split(","))
    elif isinstance(experts, list) and all(isinstance(n, str) for n in experts):
        names = tuple(experts)
    else:
        raise MlmmError(
            f"experts must be a comma-separated string or a list of method names (both survive "
            f"the JSON artifact unchanged), got {experts!r}; e.g. experts='late-fusion,hemis'"
        )
    if not names or any(not n for n in names):
        raise MlmmError(f"experts must name at least one method, got {experts!r}")
    if len(set(names)) != len(names):
        raise MlmmError(f"experts names a method twice: {experts!r}; name each once")
    if "scheduler" in names:
        raise MlmmError("a scheduler cannot be its own expert; remove 'scheduler' from experts")
    return names


@register_method(
    "scheduler",
    family="combination",
    subtype="discrete scheduler",
    paper="per-pattern expert selection on validation data (Woods et al., IEEE TPAMI 1997)",
)
class Scheduler(MissingModalityModel):
    """Route each sample to the expert method chosen for its presence pattern on validation data.

    Until the selection has run (before ``fit``), the first expert answers every pattern.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    experts : str or list of str, default "late-fusion,hemis"
        The pool: registered method names, comma-separated or as a list.
    expert_params : dict or None, default None
        Hyperparameters per expert, ``{"hemis": {"hidden": 128}}``; experts not named use
        their defaults.

    Attributes
    ----------
    pool : nn.ModuleDict
        Method name -> the expert (a registered method), in the order of ``experts``.
    scores : Tensor, shape (2^M - 1, E)
        Buffer: validation accuracy (classification) or negative mean squared error
        (regression) of each expert on each pattern (index = pattern code - 1); NaN where the
        pattern was not seen.
    losses : Tensor, shape (2^M - 1, E)
        Buffer: the validation task loss behind each score.
    n_val : Tensor, shape (2^M - 1,)
        Buffer: validation samples per pattern.
    chosen : Tensor, shape (2^M - 1,)
        Buffer: the chosen expert per seen pattern, -1 for unseen patterns.
    borrowed_from : Tensor, shape (2^M - 1,)
        Buffer: the seen pattern (code - 1) whose choice answers each pattern (itself when
        seen), -1 when no expert can answer it.

    References
    ----------
    R. Wu, H. Wang, H.-T. Chen, G. Carneiro. "Deep Multimodal Learning with Missing Modality:
    A Survey." arXiv:2409.07825, 2024.

    K. Woods, W. P. Kegelmeyer, K. Bowyer. "Combination of multiple classifiers using local
    accuracy estimates." IEEE TPAMI 19(4):405-410, 1997. doi:10.1109/34.588027

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=300)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> model = mlmm.create_method("scheduler", ds.specs, ds.task, experts="late-fusion,moddrop")
    >>> trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, split.train, split.val)
    >>> table = trained.model.choice_table()  # one row per pattern
    >>> table.columns.tolist()[:3]
    ['pattern', 'n_val', 'chosen']
    """

    streams_data = False  # experts are scored on whole in-memory batches

    supports_data_parallel = False
    data_parallel_reason = (
        "it trains its experts separately through their own fits, then picks one per pattern"
    )
    search_space = {
        "experts": Categorical(
            ["late-fusion,hemis", "late-fusion,hemis,mean-impute", "late-fusion,masked-attention"]
        ),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        experts: str | list[str] = DEFAULT_EXPERTS,
        expert_params: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(specs, task)
        names = _expert_names(experts)
        if expert_params is not None:
            if not isinstance(expert_params, dict) or not all(
                isinstance(v, dict) for v in expert_params.values()
            ):
                raise MlmmError(
                    f"expert_params must map expert names to dicts of hyperparameters, got "
                    f"{expert_params!r}"
                )
            unknown = sorted(set(expert_params) - set(names))
            if unknown:
                raise MlmmError(
                    f"expert_params names {unknown}, which are not experts ({list(names)})"
                )
        self.experts, self.expert_params = experts, expert_params
        self.expert_names = names
        self.pool = nn.ModuleDict(
            {n: create_method(n, specs, task, **(expert_params or {}).get(n, {})) for n in names}
        )
        # every expert is a separately trained model, reported as a cost (an expert that holds
        # several models itself, such as per-subset, counts with all of them)
        self.n_models = sum(expert.n_models for expert in self.pool.values())
        n_patterns, n_experts = 2 ** len(self.modalities) - 1, len(names)
        self.register_buffer("scores", torch.full((n_patterns, n_experts), float("nan")))
        self.register_buffer("losses", torch.full((n_patterns, n_experts), float("nan")))
        self.register_buffer("n_val", torch.zeros(n_patterns, dtype=torch.long))
        self.register_buffer("chosen", torch.full((n_patterns,), -1, dtype=torch.long))
        self.register_buffer("borrowed_from", torch.full((n_patterns,), -1, dtype=torch.long))
        self.register_buffer("selected", torch.tensor(False))

    def resolved_hyperparameters(self) -> dict[str, Any]:
        """``expert_params`` as every expert was built (its defaults and the sizes it resolved
        included), so an artifact rebuilds the same experts whatever their defaults become."""
        return {"expert_params": {n: e.built_hyperparameters() for n, e in self.pool.items()}}

    @classmethod
    def resolved_from_state(
        cls, hyperparameters: dict[str, Any], state: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """For an artifact written before sizes were recorded: ``expert_params`` with each
        expert's sizes read off its weights (``pool.NAME.*``; the expert's own
        ``resolved_from_state``), so a later change of an expert's sizing rule does not stop
        it loading. Empty when no expert resolved anything."""
        try:
            names = _expert_names(hyperparameters.get("experts", DEFAULT_EXPERTS))
        except MlmmError:  # the load refuses the value in its own words
            return {}
        given = hyperparameters.get("expert_params") or {}
        if not isinstance(given, dict):
            return {}
        params = {}
        for name in names:
            own = given.get(name) or {}
            resolved = member_resolved_from_state(name, own, state, f"pool.{name}.")
            if resolved:
                params[name] = {**own, **resolved}
        return {"expert_params": {**given, **params}} if params else {}

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """Train every expert (its own fit, stages named ``"<expert>/<stage>"``), then choose
        per pattern on ``val`` (on ``train`` when there is no validation data: optimistic)."""
        histories = []
        for name, expert in self.pool.items():
            result = expert.fit(trainer, train, val)
            for history in result if isinstance(result, list) else [result]:
                history.stage = f"{name}/{history.stage}"
                histories.append(history)
        self.select(val if val is not None else train)
        return histories

    @torch.no_grad()
    def select(self, data: MultimodalDataset) -> None:
        """Fill the choice table from standardised data: score every expert on every pattern."""
        from mlmm.train.trainer import predict_batches  # the trainer imports the methods

        m = len(self.modalities)
        for code in range(1, 2**m):
            cols = [j for j in range(m) if code >> j & 1]
            part = with_subset(data, cols)
            if part is None:
                self.scores[code - 1] = float("nan")
                self.losses[code - 1] = float("nan")
                self.n_val[code - 1] = 0
                continue
            batch = MultimodalBatch.from_dataset(part).to(self.n_val.device)
            self.n_val[code - 1] = part.n_samples
            for e, expert in enumerate(self.pool.values()):
                pred = predict_batches(expert, batch)
                if not torch.isfinite(pred).all():  # diverged: its NaN rows would read as class 0
                    self.scores[code - 1, e], self.losses[code - 1, e] = -math.inf, math.inf
                    continue
                loss = expert.task_loss(pred, batch.target)
                if self.task.is_classification:
                    score = (pred.argmax(1) == batch.target).double().mean()
                else:
                    score = -loss
                self.scores[code - 1, e], self.losses[code - 1, e] = score, loss
        self._choose()

    def _choose(self) -> None:
        """The best expert per seen pattern, then the pattern each pattern borrows from."""
        seen = self.n_val > 0  # [P]
        for p in range(len(seen)):
            if seen[p]:
                # best score, then lowest loss, then pool order
                order = sorted(
                    range(len(self.expert_names)),
                    key=lambda e, p=p: (-float(self.scores[p, e]), float(self.losses[p, e]), e),
                )
                self.chosen[p] = order[0]
            else:
                self.chosen[p] = -1
        for p in range(len(seen)):
            code = p + 1
            inside = [q + 1 for q in range(len(seen)) if seen[q] and (q + 1) & code == q + 1]
            if not inside:
                self.borrowed_from[p] = -1
                continue
            best = min(
                inside,
                key=lambda q: (bin(code ^ q).count("1"), -int(self.n_val[q - 1]), q),
            )
            self.borrowed_from[p] = best - 1
        self.selected.fill_(True)

    # ------------------------------------------------------------------ prediction
    def routes(self, present: torch.Tensor) -> torch.Tensor:
        """The expert index answering each row ``[B]`` (-1 for rows with nothing present).

        Raises a clear error for a pattern no expert can answer.
        """
        codes = pattern_codes(present)  # [B]
        if not bool(self.selected):
            return torch.where(codes > 0, 0, -1)
        source = self.borrowed_from[(codes - 1).clamp_min(0)]  # [B]
        impossible = (codes > 0) & (source < 0)
        if impossible.any():
            row = int(torch.nonzero(impossible)[0])
            names = [n for j, n in enumerate(self.modalities) if present[row, j]]
            seen = [
                "+".join(self._names(q + 1)) for q in torch.nonzero(self.n_val > 0)[:, 0].tolist()
            ]
            raise MlmmError(
                f"scheduler: no expert can answer the pattern {'+'.join(names)}: the validation "
                f"data had no sample with it or with any pattern inside it (seen: {', '.join(seen)}); "
                f"train with validation data that has these modalities"
            )
        expert = self.chosen[source.clamp_min(0)]  # [B]
        return torch.where(codes > 0, expert, -1)

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        routes = self.routes(present)  # [B]
        prediction = None
        for e, expert in enumerate(self.pool.values()):
            rows = torch.nonzero(routes == e).squeeze(1)  # [R]
            if len(rows) == 0:
                continue
            out = expert(rows_of(batch, rows)).prediction  # [R, K] or [R]
            if prediction is None:
                prediction = out.new_zeros((len(batch), *out.shape[1:]))  # [B, K] or [B]
            prediction = prediction.index_put((rows,), out)
        if prediction is None:  # every row empty: zero logits (the trainer answers with the prior)
            prediction = torch.zeros(len(batch), self.task.output_dim)
        return self.output(batch, prediction, routes=routes)

    # ------------------------------------------------------------------ reporting
    def _names(self, code: int) -> list[str]:
        return [n for j, n in enumerate(self.modalities) if code >> j & 1]

    def choice_table(self) -> pd.DataFrame:
        """One row per non-empty pattern: validation samples, the expert chosen there, the
        pattern it borrows from and the expert that answers it, and every expert's score
        (accuracy, or negative mean squared error for regression)."""
        rows = []
        for p in range(len(self.n_val)):
            source = int(self.borrowed_from[p])
            chosen, answer = int(self.chosen[p]), None
            if source >= 0:
                answer = self.expert_names[int(self.chosen[source])]
            row = {
                "pattern": "+".join(self._names(p + 1)),
                "n_val": int(self.n_val[p]),
                "chosen": self.expert_names[chosen] if chosen >= 0 else None,
                "borrowed_from": "+".join(self._names(source + 1)) if source >= 0 else None,
                "answered_by": answer,
            }
            for e, name in enumerate(self.expert_names):
                row[f"score:{name}"] = float(self.scores[p, e])
            rows.append(row)
        return pd.DataFrame(rows)
