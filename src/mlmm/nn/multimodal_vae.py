"""Multimodal VAE blocks: Gaussian experts, product of experts, subset sampling, ELBO terms.

Shared by the generative imputation methods (``mvae``, ``mopoe``). Every modality has a
Gaussian encoder (its "expert", ``q(z | x_m) = N(mu_m, diag(exp(logvar_m)))``) and a decoder
from the latent back to its (flattened, standardised) input. A posterior over any set of
modalities is the product of the experts of that set and a ``N(0, I)`` prior expert:
with precisions ``T_i = 1 / var_i`` (the prior's is 1),

    mu = sum_i mu_i T_i / sum_i T_i,        var = 1 / sum_i T_i,

so the posterior of the empty set is the prior, and an absent modality is simply not a
factor. Masks are ``[B, M]`` (one set per row) or ``[B, K, M]`` (K sets per row, e.g. all
subsets for a mixture of products of experts); absent experts are removed with
``torch.where`` before any arithmetic, so whatever an absent row holds (even inf or NaN) never
reaches a value or a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mlmm.data.specs import ModalitySpec
from mlmm.nn.encoders import build_encoder, encode_padded
from mlmm.nn.heads import MLPHead

#: log-variances are softly bounded to (-LOGVAR_BOUND, LOGVAR_BOUND): an expert can be very
#: sure or very unsure, but exp(-logvar) never overflows.
LOGVAR_BOUND = 10.0


def product_of_experts(
    mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian product of the experts selected by ``mask`` and a ``N(0, I)`` prior expert.

    Parameters
    ----------
    mu, logvar : Tensor, shape [B, M, D]
        Each modality's Gaussian expert.
    mask : Tensor of bool, shape [B, M], or [B, K, M] for K sets per row (a leading 1
        broadcasts one list of sets, e.g. ``all_subsets(M)[None]``, to every row)
        Which experts enter each product. An expert left out (absent modality, or not in the
        subset) has no effect at all; a row (or subset) with no expert gets the prior,
        ``mu = 0``, ``logvar = 0``.

    Returns
    -------
    mu, logvar : Tensor, shape [B, D] for a ``[B, M]`` mask, else [B, K, D]
    """
    single = mask.dim() == 2
    if single:
        mask = mask.unsqueeze(1)  # [B, 1, M]
    mask = mask.unsqueeze(-1)  # [B or 1, K, M, 1]
    mu, logvar = mu.unsqueeze(1), logvar.unsqueeze(1)  # [B, 1, M, D]
    # where before arithmetic: an absent expert's (possibly garbage) values never enter
    # exp() or a product, so they cannot turn into NaN values or gradients
    precision = torch.where(mask, torch.exp(-torch.where(mask, logvar, 0.0)), 0.0)  # [B, K, M, D]
    weighted_mu = precision * torch.where(mask, mu, 0.0)  # [B, K, M, D]
    total_precision = 1.0 + precision.sum(dim=2)  # [B, K, D]; 1 = the N(0, I) prior expert
    joint_mu = weighted_mu.sum(dim=2) / total_precision  # the prior's mean is 0
    joint_logvar = -torch.log(total_precision)
    if single:
        return joint_mu.squeeze(1), joint_logvar.squeeze(1)  # [B, D]
    return joint_mu, joint_logvar  # [B, K, D]


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` summed over the last axis: ``[..., D] -> [...]``."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """A sample ``mu + std * eps`` (global torch RNG, seeded by the trainer)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def all_subsets(n_modalities: int, device: torch.device | None = None) -> torch.Tensor:
    """Every non-empty subset of ``n_modalities`` modalities: ``[2**M - 1, M]`` bool."""
    codes = torch.arange(1, 2**n_modalities, device=device)  # [K]
    bits = 2 ** torch.arange(n_modalities, device=device)  # [M]
    return (codes[:, None] & bits[None, :]) > 0  # [K, M]


def sample_subsets(present: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` subsets per row, each uniform over the non-empty subsets of the row's present set.

    Each present modality is kept with probability 1/2 and draws that kept nothing are
    redrawn (rejection), which is exactly uniform over the non-empty subsets. Rows with
    nothing present get empty subsets. Uses the global torch RNG.

    Parameters
    ----------
    present : Tensor of bool, shape [B, M]
    n : int

    Returns
    -------
    Tensor of bool, shape [B, n, M], each a subset of ``present``.
    """
    present = present.unsqueeze(1).expand(-1, n, -1)  # [B, n, M]
    subsets = present & (torch.rand(present.shape, device=present.device) < 0.5)
    has_any = present.any(dim=-1)  # [B, n]
    while True:
        redraw = has_any & ~subsets.any(dim=-1)  # [B, n]; a probability of 1/2 at most
        if not redraw.any():
            return subsets
        fresh = present & (torch.rand(present.shape, device=present.device) < 0.5)
        subsets = torch.where(redraw.unsqueeze(-1), fresh, subsets)


def reconstruction_error(
    reconstructions: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    mask: torch.Tensor,
    modalities: Sequence[str],
    lengths: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Gaussian negative log-likelihood (unit variance, constants dropped) of the masked modalities.

    ``0.5 * sum over modalities in mask of sum over features (reconstruction - input)**2``,
    i.e. a squared error on standardised inputs. Modalities outside ``mask`` (absent, or not
    in the term's subset) contribute exactly 0, whatever their rows hold; so do the padded
    steps of a variable-length sequence (``lengths``): padding is not data.

    Parameters
    ----------
    reconstructions : dict of str to Tensor, each [B, K, F_m] or [B, F_m] (flattened)
    inputs : dict of str to Tensor, each [B, *shape]
    mask : Tensor of bool, shape [B, K, M] or [B, M] (matching ``reconstructions``)
    modalities : sequence of str
        Column order of ``mask``.
    lengths : dict of str to Tensor, each [B], optional
        Valid steps of each variable-length sequence modality (``batch.lengths``).

    Returns
    -------
    Tensor, shape [B, K] or [B]
    """
    total = torch.zeros(mask.shape[:-1], device=mask.device)
    for j, name in enumerate(modalities):
        x = inputs[name]  # [B, *shape]
        single = reconstructions[name].dim() == 2
        recon = reconstructions[name].unsqueeze(1) if single else reconstructions[name]
        squared = (recon - x.flatten(1).unsqueeze(1)).pow(2)  # [B, K, F]
        steps = None if lengths is None else lengths.get(name)
        if steps is not None:  # [B]: x is [B, T, C] and its steps from ``steps`` on are padding
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < steps[:, None]  # [B, T]
            valid = valid.repeat_interleave(math.prod(x.shape[2:]), dim=1)  # [B, F]
            squared = torch.where(valid.unsqueeze(1), squared, 0.0)
        error = 0.5 * squared.sum(dim=-1)  # [B, K]
        if single:
            error = error.squeeze(1)  # [B]
        total = total + torch.where(mask[..., j], error, 0.0)
    return total


def _decoder(latent_dim: int, out_dim: int, hidden: int, depth: int) -> nn.Sequential:
    """``depth`` blocks of Linear → GELU, then Linear: no normalisation layer.

    A LayerNorm here would rescale each hidden vector by its own spread; trained on posterior
    samples (unit noise in the latent dimensions a modality does not use), it then distorts
    the decoding of a posterior *mean* (zeros in those dimensions), which is what imputation
    decodes.
    """
    layers: list[nn.Module] = []
    width = latent_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class MultimodalVAE(nn.Module):
    """One Gaussian encoder and one decoder per modality, joined by products of experts.

    Encoders are the default encoder of each modality's kind (MLP, 1-D conv, CNN) with
    ``2 * latent_dim`` outputs (mean and log-variance); decoders are MLPs from the latent to
    the flattened input (for every kind), without dropout or normalisation layers.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    latent_dim : int
    hidden : int
        Width of the encoders' and decoders' hidden layers.
    depth : int
        Hidden layers of each encoder and decoder.

    Examples
    --------
    >>> import torch
    >>> from mlmm.data.specs import ModalitySpec
    >>> vae = MultimodalVAE([ModalitySpec("a", "vector", (3,))], latent_dim=2, hidden=8, depth=1)
    >>> present = torch.tensor([[True], [False]])
    >>> completed, joint_mu = vae.complete({"a": torch.randn(2, 3)}, present)
    >>> completed["a"].shape, joint_mu.shape
    (torch.Size([2, 3]), torch.Size([2, 2]))
    """

    def __init__(
        self, specs: Sequence[ModalitySpec], latent_dim: int, hidden: int, depth: int
    ) -> None:
        super().__init__()
        self.specs = tuple(specs)
        self.modalities = tuple(s.name for s in self.specs)
        self.latent_dim = latent_dim
        self.n_features = sum(math.prod(s.shape) for s in self.specs)
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, 2 * latent_dim, hidden, depth, 0.0) for s in self.specs}
        )
        self.decoders = nn.ModuleDict(
            {s.name: _decoder(latent_dim, math.prod(s.shape), hidden, depth) for s in self.specs}
        )

    def encode(
        self,
        inputs: dict[str, torch.Tensor],
        present: torch.Tensor,
        lengths: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every modality's expert: ``mu, logvar`` of shape ``[B, M, D]``.

        Absent rows are encoded from zeros (their content is never read) and must be left
        out of any product with the ``present`` mask.
        """
        mus, logvars = [], []
        for j, name in enumerate(self.modalities):
            x = inputs[name]  # [B, *shape]
            keep = present[:, j].reshape(-1, *([1] * (x.dim() - 1)))
            step_count = None if lengths is None else lengths.get(name)  # variable lengths
            out = encode_padded(
                self.encoders[name], torch.where(keep, x, 0.0), step_count, present[:, j]
            )  # [B, 2D]
            mu, raw_logvar = out.chunk(2, dim=-1)
            mus.append(mu)
            logvars.append(LOGVAR_BOUND * torch.tanh(raw_logvar / LOGVAR_BOUND))
        return torch.stack(mus, dim=1), torch.stack(logvars, dim=1)  # [B, M, D] each

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flattened reconstructions ``name -> [..., F_m]`` from latents ``[..., D]``."""
        lead = z.shape[:-1]
        flat = z.reshape(-1, self.latent_dim)  # [N, D]
        return {name: self.decoders[name](flat).reshape(*lead, -1) for name in self.modalities}

    def complete(
        self,
        inputs: dict[str, torch.Tensor],
        present: torch.Tensor,
        lengths: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inputs with absent rows replaced by the decoded mean of the present modalities' posterior.

        ``present`` rows are returned unchanged; absent ones are decoded from the mean of the
        product of the present experts and the prior (the prior mean, 0, for a row with
        nothing present).

        Returns
        -------
        completed : dict of str to Tensor, each [B, *shape]
        joint_mu : Tensor, shape [B, D]
            The posterior mean they were decoded from.
        """
        mu, logvar = self.encode(inputs, present, lengths)  # [B, M, D] each
        joint_mu, _ = product_of_experts(mu, logvar, present)  # [B, D]
        decoded = self.decode(joint_mu)  # name -> [B, F_m]
        completed = {}
        for j, name in enumerate(self.modalities):
            x = inputs[name]
            keep = present[:, j].reshape(-1, *([1] * (x.dim() - 1)))
            completed[name] = torch.where(keep, x, decoded[name].reshape(x.shape))
        return completed, joint_mu


class InputLevelHead(nn.Module):
    """A classifier on (completed) inputs: concatenated vectors and presence flags → MLP.

    Vector modalities enter as they are; sequences and images first pass through their
    kind's encoder (to ``embed_dim``). The ``present`` mask is appended as M indicator
    features, so the head knows which inputs are observed and which were generated.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    out_dim, hidden, depth, dropout : int, int, int, float
        As :class:`~mlmm.nn.MLPHead`.
    embed_dim : int
        Embedding size of sequence and image modalities.
    """

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        out_dim: int,
        hidden: int,
        depth: int,
        dropout: float,
        embed_dim: int,
    ) -> None:
        super().__init__()
        self.modalities = tuple(s.name for s in specs)
        self.encoders = nn.ModuleDict(
            {
                s.name: build_encoder(s, embed_dim, hidden, 1, dropout)
                for s in specs
                if s.kind != "vector"
            }
        )
        width = sum(math.prod(s.shape) if s.kind == "vector" else embed_dim for s in specs)
        self.head = MLPHead(width + len(self.modalities), out_dim, hidden, depth, dropout)

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        present: torch.Tensor,
        lengths: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        parts = []
        for j, name in enumerate(self.modalities):
            x = inputs[name]  # [B, *shape]
            if name in self.encoders:
                step_count = None if lengths is None else lengths.get(name)
                parts.append(encode_padded(self.encoders[name], x, step_count, present[:, j]))
            else:
                parts.append(x.flatten(1))
        parts.append(present.to(parts[0].dtype))  # [B, M]
        return self.head(torch.cat(parts, dim=1))  # [B, out_dim]
