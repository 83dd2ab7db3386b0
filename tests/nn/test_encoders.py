"""Encoders and heads: output shapes per kind, and no statistics shared across samples."""

from __future__ import annotations

import pytest
import torch

from mlmm.data.specs import ModalitySpec
from mlmm.errors import MlmmError
from mlmm.nn import ImageEncoder, MLPEncoder, MLPHead, SequenceEncoder, build_encoder, encoders
from mlmm.nn.encoders import gru_last_valid


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


CASES = [
    ("vector", (7,), MLPEncoder, "conv"),
    ("sequence", (9, 3), SequenceEncoder, "conv"),
    ("sequence", (9, 3), SequenceEncoder, "gru"),
    ("image", (2, 5, 7), ImageEncoder, "conv"),  # odd sizes: ceil-mode pooling
]


@pytest.mark.parametrize("kind, shape, cls, arch", CASES, ids=lambda v: str(v))
def test_build_encoder_output_shape(kind, shape, cls, arch):
    encoder = build_encoder(
        ModalitySpec("m", kind, shape), 11, hidden=32, depth=1, sequence_architecture=arch
    )
    assert isinstance(encoder, cls)
    if kind == "sequence":
        assert encoder.architecture == arch
    out = encoder(torch.randn(4, *shape))
    assert out.shape == (4, 11)
    assert encoder(torch.randn(1, *shape)).shape == (1, 11)  # batch size 1


def test_vector_encoder_flattens_and_depth_zero_is_linear():
    encoder = MLPEncoder(6, 3, depth=0)
    assert len(encoder.net) == 1 and isinstance(encoder.net[0], torch.nn.Linear)
    assert encoder(torch.randn(5, 6)).shape == (5, 3)


@pytest.mark.parametrize(
    "encoder, shape",
    [
        (MLPEncoder(6, 4, hidden=8, dropout=0.0), (6,)),
        (SequenceEncoder(3, 4, hidden=8, dropout=0.0), (10, 3)),
        (SequenceEncoder(3, 4, hidden=8, dropout=0.0, architecture="gru"), (10, 3)),
        (ImageEncoder(2, 4, hidden=4, dropout=0.0), (2, 6, 6)),
    ],
    ids=["mlp", "conv", "gru", "image"],
)
def test_a_samples_output_does_not_depend_on_the_other_rows(encoder, shape):
    """Training mode included: GroupNorm/LayerNorm, never BatchNorm, so absent (zero) rows
    in a batch cannot change the embedding of a present row."""
    encoder.train()
    x = torch.randn(1, *shape)
    alone = encoder(x)
    with_zeros = encoder(torch.cat([x, torch.zeros(5, *shape)]))[:1]
    with_others = encoder(torch.cat([x, 50 * torch.randn(5, *shape)]))[:1]
    assert torch.allclose(alone, with_zeros, atol=1e-5)
    assert torch.allclose(alone, with_others, atol=1e-5)


def test_no_batch_norm_anywhere():
    for kind, shape, _, arch in CASES:
        encoder = build_encoder(ModalitySpec("m", kind, shape), 4, sequence_architecture=arch)
        assert not any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in encoder.modules()
        )


def test_build_encoder_scales_channel_width_from_hidden():
    seq = build_encoder(ModalitySpec("s", "sequence", (8, 2)), 5, hidden=256, depth=1)
    assert seq.body[0].out_channels == 64  # hidden // 4
    assert len([m for m in seq.body if isinstance(m, torch.nn.Conv1d)]) == 2  # depth + 1
    img = build_encoder(ModalitySpec("i", "image", (1, 8, 8)), 5, hidden=32, depth=1)
    assert img.body[0].out_channels == 16  # max(32 // 8, 16)


def test_unknown_sequence_architecture():
    with pytest.raises(MlmmError, match="'conv' or 'gru', got 'lstm'"):
        SequenceEncoder(3, 4, architecture="lstm")


def test_mlp_head_shape():
    head = MLPHead(10, 3, hidden=8, depth=2)
    assert head(torch.randn(4, 10)).shape == (4, 3)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 3


def _padded_batch(b: int = 7, t: int = 9, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T, C]`` with large values in the padding, and lengths 1 to ``T`` (both ends)."""
    lengths = torch.tensor([1, t, 4, 2, t, 5, 1][:b])
    x = torch.randn(b, t, c)
    padding = torch.arange(t)[None, :] >= lengths[:, None]  # [B, T]
    return torch.where(padding[..., None], torch.full_like(x, 100.0), x), lengths


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("layers", [1, 2])
def test_gru_last_valid_is_the_packed_final_state(bidirectional, layers):
    gru = torch.nn.GRU(3, 5, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    x, lengths = _padded_batch()
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, lengths, batch_first=True, enforce_sorted=False
    )
    _, want = gru(packed)  # [layers * directions, B, H]
    got = gru_last_valid(gru, x, lengths)
    assert got.shape == want.shape == (layers * (1 + bidirectional), 7, 5)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # the padding is read and discarded: other values there give the same state
    torch.testing.assert_close(gru_last_valid(gru, x.clamp(max=5), lengths), got)


def test_gru_last_valid_drops_out_between_layers_in_training_only():
    """As nn.GRU: dropout on every layer's output but the last's, in training only. At p = 1
    the layers above the first read zeros, so the two paths compare exactly in both modes."""
    gru = torch.nn.GRU(3, 5, num_layers=3, bidirectional=True, batch_first=True, dropout=1.0)
    x, lengths = _padded_batch()
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, lengths, batch_first=True, enforce_sorted=False
    )
    states = {}
    for training in (True, False):
        gru.train(training)
        states[training] = gru_last_valid(gru, x, lengths)  # [6, B, H]
        torch.testing.assert_close(states[training], gru(packed)[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(states[True][:2], states[False][:2])  # layer 0: no dropout
    assert not torch.allclose(states[True][2:], states[False][2:])  # layers 1, 2: dropped


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_gru_encoder_unpacked_path_equals_packed_path(training, monkeypatch):
    """Absent rows (length 0: one zero step) included; gradients agree too."""
    encoder = SequenceEncoder(3, 4, hidden=8, depth=3, dropout=0.0, architecture="gru")
    assert encoder.body.num_layers == 2 and encoder.body.bidirectional
    encoder.train(training)
    x, lengths = _padded_batch()
    lengths[2] = 0  # an absent row
    packed = encoder(x, lengths)
    packed.sum().backward()
    grads = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    monkeypatch.setattr(encoders, "PACKED_GRU", False)
    unpacked = encoder(x, lengths)
    unpacked.sum().backward()
    torch.testing.assert_close(unpacked, packed, rtol=0, atol=1e-6)
    for got, want in zip([p.grad for p in encoder.parameters()], grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace, as the exporter
def test_a_traced_gru_encoder_honours_each_rows_length():
    """Traced once, run on other lengths and another padded length: the eager answer."""
    encoder = SequenceEncoder(3, 4, hidden=8, dropout=0.0, architecture="gru").eval()
    x, lengths = _padded_batch()
    with torch.no_grad():
        traced = torch.jit.trace(encoder, (x, lengths), check_trace=False)
        other = torch.tensor([3, 2, 6, 0, 1])
        short = torch.randn(5, 6, 3)
        torch.testing.assert_close(traced(short, other), encoder(short, other), atol=1e-6, rtol=0)
