"""Per-subset models: one network per non-empty modality subset, each sample answered by its own.

The "dedicated training" extreme of model combination: for M modalities, 2^M - 1 models, the
model for subset S trained on every training sample that has all of S (the modalities
outside S hidden), and each sample routed to the model of its exact presence pattern. It is
the oracle baseline that methods sharing one model across patterns are measured against
(each pattern gets a model that never has to cope with any other) and the cost they avoid;
architectures of this kind are ACN (Wang et al., "ACN: Adversarial Co-training Network for
Brain Tumor Segmentation with Missing Modalities", MICCAI 2021, arXiv:2106.14591) and
SMU-Net (Azad et al., "SMU-Net: Style matching U-Net for brain tumor segmentation with
missing modalities", MIDL 2022, arXiv:2204.02961), which train a dedicated model per missing
situation (there with a full-modality teacher; here without distillation).

Deliberate differences: the per-subset networks are small late-concatenation models
(each present modality's kind encoder, concatenated, an MLP head), trained independently
with the shared loop, one fit stage per subset, early-stopped on the validation samples that
have the subset. A subset that no training sample has (with or without other modalities)
cannot be trained: its samples are answered by the trained model of its largest sub-subset
(most training samples on ties), and a warning says so.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality
from mlmm.tune.space import Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory


def pattern_codes(present: torch.Tensor) -> torch.Tensor:
    """Presence rows ``[B, M]`` -> integer codes ``[B]`` (bit ``j`` = modality ``j`` present)."""
    bits = 2 ** torch.arange(present.shape[1], device=present.device)  # [M]
    return (present.long() * bits).sum(dim=1)


def rows_of(batch: MultimodalBatch, rows: torch.Tensor) -> MultimodalBatch:
    """The batch restricted to ``rows`` (indices)."""
    return batch.rows(rows)


class _SubsetModel(MissingModalityModel):
    """One subset's network: its modalities' encoders, concatenated, an MLP head.

    Reads only the subset's modalities; it is fed only samples that have all of them.
    """

    def __init__(self, specs, task, subset, embed_dim, hidden, depth, dropout) -> None:
        super().__init__(specs, task)
        self.subset = subset
        self.encoders = nn.ModuleDict(
            {
                s.name: build_encoder(s, embed_dim, hidden, depth, dropout)
                for s in specs
                if s.name in subset
            }
        )
        self.head = MLPHead(len(subset) * embed_dim, task.output_dim, hidden, depth, dropout)

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        fused = torch.cat([encode_modality(self.encoders[m], batch, m) for m in self.subset], dim=1)
        return self.output(batch, self.head(fused), embedding=fused)  # [B, |S| * D]


@register_method(
    "per-subset",
    family="combination",
    subtype="dedicated training",
    paper="one model per modality subset (the oracle; ACN, MICCAI 2021; SMU-Net, MIDL 2022)",
)
class PerSubset(MissingModalityModel):
    """One model per non-empty modality subset; each sample goes to its pattern's model.

    Training runs one stage per subset (``stage="subset a+b"`` in the histories, so the
    training time of each model is recorded): the model of subset S learns from every
    training sample that has all of S, with the other modalities hidden. :meth:`cost_table`
    lists, per subset, the training samples, whether its model was trained, which model
    answers it and the parameters; :meth:`cost` sums them up.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 64
        Output size of each modality encoder inside every subset model.
    hidden : int, default 256
        Width of the encoders' and heads' hidden layers.
    depth : int, default 1
        Hidden layers of each encoder and head.
    dropout : float, default 0.3
    max_models : int, default 63
        Refuse (at construction) data with more than this many subsets, 2^M - 1 (63 is six
        modalities). Raise it knowingly: time and parameters grow with 2^M.

    Attributes
    ----------
    models : nn.ModuleDict
        ``"a+b"`` -> the network of that subset (2^M - 1 of them).
    n_train : Tensor, shape (2^M - 1,)
        Buffer: training samples of each subset (index = pattern code - 1).
    route : Tensor, shape (2^M - 1,)
        Buffer: the pattern code (minus 1) of the model answering each pattern; itself unless
        the subset had no training sample.

    References
    ----------
    Y. Wang, Y. Zhang, Y. Liu, Z. Lin, J. Tian, C. Zhong, Z. Shi, J. Fan, Z. He. "ACN:
    Adversarial Co-training Network for Brain Tumor Segmentation with Missing Modalities."
    MICCAI 2021. arXiv:2106.14591.

    R. Azad, N. Khosravi, D. Merhof. "SMU-Net: Style matching U-Net for brain tumor
    segmentation with missing modalities." MIDL 2022. arXiv:2204.02961.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("per-subset", ds.specs, ds.task)
    >>> model.cost()["n_models"]
    7
    """

    supports_data_parallel = False
    data_parallel_reason = (
        "it trains one model per modality subset as separate stages, many on few rows "
        "(too few to shard)"
    )
    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 64,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.3,
        max_models: int = 63,
    ) -> None:
        super().__init__(specs, task)
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        check_range("max_models", max_models, 1, integer=True)
        m = len(self.modalities)
        n_models = 2**m - 1
        if n_models > max_models:
            raise MlmmError(
                f"per-subset needs 2^M - 1 = {n_models} models for {m} modalities, more than "
                f"max_models={max_models}; pass max_models={n_models} to accept the cost, or use "
                f"a method that shares one model across subsets (moddrop, late-fusion)"
            )
        self.embed_dim, self.hidden, self.depth, self.dropout = embed_dim, hidden, depth, dropout
        self.max_models = max_models
        self.subsets = [
            tuple(self.modalities[j] for j in range(m) if code >> j & 1)
            for code in range(1, n_models + 1)
        ]  # index = pattern code - 1
        self.models = nn.ModuleDict(
            {
                "+".join(s): _SubsetModel(specs, task, s, embed_dim, hidden, depth, dropout)
                for s in self.subsets
            }
        )
        self.n_models = n_models  # reported as a cost by the benchmark
        self.register_buffer("n_train", torch.zeros(n_models, dtype=torch.long))
        self.register_buffer("route", torch.arange(n_models))

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """One stage per subset, on the samples that have it (the other modalities hidden)."""
        histories = []
        counts = []
        for subset in self.subsets:
            cols = [self.modalities.index(name) for name in subset]
            part = with_subset(train, cols)
            counts.append(0 if part is None else part.n_samples)
            if part is None:
                continue
            val_part = None if val is None else with_subset(val, cols)
            histories.append(
                trainer.fit_module(
                    self.models["+".join(subset)],
                    part,
                    val_part,
                    stage=f"subset {'+'.join(subset)}",
                )
            )
        self.n_train.copy_(torch.tensor(counts))
        self.route.copy_(torch.tensor(self._fallback_routes(counts)))
        untrained = [f"{'+'.join(s)}" for s, n in zip(self.subsets, counts, strict=True) if n == 0]
        if untrained:
            warnings.warn(
                f"per-subset: no training sample has all of {untrained}; those patterns are "
                f"answered by the model of their largest trained sub-subset",
                stacklevel=2,
            )
        return histories

    def _fallback_routes(self, counts: list[int]) -> list[int]:
        """Each pattern's own model, or for an untrained one the largest trained sub-subset."""
        routes = []
        for code in range(1, len(self.subsets) + 1):
            if counts[code - 1] > 0:
                routes.append(code - 1)
                continue
            subs = [c for c in range(1, code) if c & code == c and counts[c - 1] > 0]
            if not subs:  # only when no single modality of the pattern was ever trained
                routes.append(code - 1)
                continue
            best = max(subs, key=lambda c: (bin(c).count("1"), counts[c - 1], -c))
            routes.append(best - 1)
        return routes

    # ------------------------------------------------------------------ prediction
    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        codes = pattern_codes(present)  # [B]
        prediction = None
        for code in torch.unique(codes).tolist():
            if code == 0:
                continue  # nothing present: left at zero logits (the trainer answers with the prior)
            rows = torch.nonzero(codes == code).squeeze(1)  # [R]
            model = self.models["+".join(self.subsets[int(self.route[code - 1])])]
            out = model(rows_of(batch, rows)).prediction  # [R, K] (or [R])
            if prediction is None:
                prediction = out.new_zeros((len(batch), *out.shape[1:]))  # [B, K] or [B]
            prediction = prediction.index_put((rows,), out)
        if prediction is None:  # every row empty
            dtype = torch.get_default_dtype()
            prediction = torch.zeros(len(batch), self.task.output_dim, dtype=dtype)
        return self.output(batch, prediction)

    # ------------------------------------------------------------------ cost
    def cost_table(self) -> pd.DataFrame:
        """Per subset: training samples, trained or not, the model that answers it, parameters."""
        rows = []
        for i, subset in enumerate(self.subsets):
            model = self.models["+".join(subset)]
            rows.append(
                {
                    "subset": "+".join(subset),
                    "n_train": int(self.n_train[i]),
                    "trained": bool(self.n_train[i] > 0),
                    "answered_by": "+".join(self.subsets[int(self.route[i])]),
                    "parameters": sum(p.numel() for p in model.parameters()),
                }
            )
        return pd.DataFrame(rows)

    def active_parameters(self) -> int:
        """Parameters one sample passes through: one model answers it, the one its presence
        pattern is routed to; the mean over the 2^M - 1 patterns of that model's size."""
        table = self.cost_table()
        size = dict(zip(table.subset, table.parameters, strict=True))
        return int(round(float(np.mean([size[s] for s in table.answered_by]))))

    def cost(self) -> dict[str, int]:
        """``n_models`` (2^M - 1), ``n_trained`` and total ``n_parameters``."""
        table = self.cost_table()
        return {
            "n_models": len(table),
            "n_trained": int(table.trained.sum()),
            "n_parameters": int(table.parameters.sum()),
        }


def with_subset(data: MultimodalDataset, cols: list[int]) -> MultimodalDataset | None:
    """Samples having every modality of columns ``cols``, with the others hidden (the pattern
    ``cols`` forced on them, as evaluation forces a subset); None if no sample has them all."""
    rows = data.observed[:, cols].all(axis=1)
    if not rows.any():
        return None
    present = np.zeros((int(rows.sum()), data.n_modalities), dtype=bool)
    present[:, cols] = True
    return data.subset(rows).with_presence(present)
