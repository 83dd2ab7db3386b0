"""TEMPLATE for a new method: copy this file, rename, fill in. It is not registered.

Masked-mean fusion: one encoder per modality into a shared embedding space, the mean of the
embeddings of the modalities that are present, and a shared prediction head.

This file is a small, real, working method, kept as the starting point of
``docs/developer.md`` ("Adding a method in five steps"). Importing it registers nothing: the
``@register_method`` line below is commented out so that the registry (and ``mlmm
methods``, and the contract suite that runs over the registry) stays free of it. In your copy,
put the module at ``methods/<family>/<your_name>.py``, uncomment the decorator, and import
the module in ``methods/__init__.py``.

A method module opens, like this one, with one line of what it does, then the paper and any
deliberate difference from the paper:

Paper: the mean half of the HeMIS abstraction layer. M. Havaei, N. Guizard, N. Chapados,
Y. Bengio, "HeMIS: Hetero-Modal Image Segmentation", MICCAI 2016, LNCS 9901, pp. 469-477,
doi:10.1007/978-3-319-46723-8_54, arXiv:1607.05194.

Differences from the paper: no variance term (``hemis`` has it); a learned per-modality
embedding is added before averaging, so the fused vector also says which modalities
contributed; encoders are the defaults for each modality's kind and the head is an MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common

# In your copy, also import the decorator:
# from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, masked_mean, modality_dropout
from mlmm.tune.space import Float, Int


# Step 2 of "Adding a method": register the class. ``family`` and ``subtype`` must come from
# ``mlmm.methods.TAXONOMY``; ``paper`` is the short citation printed by ``mlmm methods``.
# Kept commented out here so that importing the template leaves the registry untouched.
#
# @register_method(
#     "masked-mean",
#     family="representation",
#     subtype="composition",
#     paper="Havaei et al., HeMIS, MICCAI 2016 (mean fusion only)",
# )
class MaskedMeanTemplate(MissingModalityModel):
    """Per-modality encoders, mean over the present modalities' embeddings, shared head.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        The modalities, in the fixed order of ``batch.present`` columns.
    task : TaskSpec
        Classification (the head outputs ``n_classes`` logits) or regression (one value).
    embed_dim : int, default 64
        Size of the shared embedding space.
    hidden : int, default 128
        Width of the encoders' and the head's hidden layers.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    dropout : float, default 0.1
        Dropout inside the encoders and the head.
    modality_dropout : float, default 0.3
        Probability of hiding each present modality in a training batch (at least one is
        kept), so the model learns to answer from any subset. 0 turns it off.

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality, chosen from its kind (MLP, 1-D conv, CNN).
    modality_embedding : nn.Parameter, shape (M, embed_dim)
        Learned offset added to each modality's embedding before the mean.
    head : MLPHead
        Prediction head on the fused embedding.

    References
    ----------
    M. Havaei, N. Guizard, N. Chapados, Y. Bengio. "HeMIS: Hetero-Modal Image Segmentation."
    MICCAI 2016. doi:10.1007/978-3-319-46723-8_54

    Examples
    --------
    >>> import mlmm
    >>> from mlmm.methods._template import MaskedMeanTemplate
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = MaskedMeanTemplate(ds.specs, ds.task, embed_dim=32)
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.prediction.shape, out.embedding.shape
    (torch.Size([200, 4]), torch.Size([200, 32]))
    """

    # The hyperparameters worth tuning and their ranges (``mlmm tune`` samples them; the
    # contract suite checks every name is a constructor argument and that points build).
    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
        "modality_dropout": Float(0.0, 0.6),
    }

    # Step 1: the constructor takes ``(specs, task, **hyperparameters)``. Every
    # hyperparameter has a default, is validated here with a clear error, and is stored
    # unchanged as an attribute of the same name: ``get_hyperparameters()`` reads them back
    # from the signature, and artifacts, ``create_method`` and the benchmark rely on it.
    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 64,
        hidden: int = 128,
        depth: int = 1,
        dropout: float = 0.1,
        modality_dropout: float = 0.3,
    ) -> None:
        super().__init__(specs, task)  # sets self.specs, self.task, self.modalities
        check_common(
            embed_dim=embed_dim,
            hidden=hidden,
            depth=depth,
            dropout=dropout,
            modality_dropout=modality_dropout,
        )
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.depth = depth
        self.dropout = dropout
        self.modality_dropout = modality_dropout

        # Every learnable tensor is registered (ModuleDict, Parameter), so state_dict() and
        # the artifact hold all of them. Reuse the blocks of mlmm.nn; they use LayerNorm or
        # GroupNorm, never BatchNorm, so absent rows of a batch cannot leak into present ones.
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.modality_embedding = nn.Parameter(torch.empty(len(self.specs), embed_dim))
        self.head = MLPHead(embed_dim, task.output_dim, hidden, depth, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the parameters this class owns directly.

        The trainer re-initialises a model from its seed before training: it calls
        ``reset_parameters`` on every submodule (``nn.Linear``, ``nn.LayerNorm``...) and then
        on the method itself. A method that owns raw ``nn.Parameter`` tensors must define
        this, or those tensors keep whatever the global random state gave them.
        """
        nn.init.normal_(self.modality_embedding, std=0.02)

    # Step 3: ``forward(batch)`` returns a MethodOutput built by ``self.output``, which adds
    # the task loss (and any auxiliary losses) when the batch carries a target.
    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M] bool; checks the modality order
        if self.training and self.modality_dropout > 0:
            # Random modality subsets while training; the torch random state is seeded by the
            # trainer, so the same seed gives the same subsets.
            present = modality_dropout(present, self.modality_dropout)  # [B, M]
        embeddings = torch.stack(
            [encode_modality(self.encoders[name], batch, name) for name in self.modalities], dim=1
        )  # [B, M, D]; rows of absent modalities are computed on zeros and never used
        embeddings = embeddings + self.modality_embedding  # [B, M, D] + [M, D]
        fused = masked_mean(embeddings, present)  # [B, D]; only present modalities count
        # Auxiliary losses (reconstruction, alignment...) would go in aux_losses={"name": t};
        # extras (imputations, per-modality outputs...) as keyword arguments.
        return self.output(batch, self.head(fused), embedding=fused)

    # Step 4 (staged methods only): a method that trains in stages (teacher then student,
    # one model per subset) overrides ``fit(self, trainer, train, val)`` and calls
    # ``trainer.fit_module(module, train, val, stage=...)`` once per stage, returning the
    # list of histories. This method trains in one stage, so it keeps the base class's fit.
