"""Reusable blocks every method composes: encoders, fusions, heads, modality dropout."""

from mlmm.nn.dropout import modality_dropout
from mlmm.nn.encoders import (
    ImageEncoder,
    MLPEncoder,
    SequenceEncoder,
    build_encoder,
    encode_modality,
    encode_padded,
)
from mlmm.nn.fusion import (
    ConcatFusion,
    MeanVarianceFusion,
    combine_predictions,
    masked_mean,
)
from mlmm.nn.heads import MLPHead

__all__ = [
    "ConcatFusion",
    "ImageEncoder",
    "MLPEncoder",
    "MLPHead",
    "MeanVarianceFusion",
    "SequenceEncoder",
    "build_encoder",
    "encode_modality",
    "encode_padded",
    "combine_predictions",
    "masked_mean",
    "modality_dropout",
]
