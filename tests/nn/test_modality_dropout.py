"""Modality dropout: hides present modalities, never adds any, keeps one per non-empty row."""

from __future__ import annotations

import torch

from mlmm.nn import modality_dropout


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_present(n: int = 5000, m: int = 4, seed: int = 1) -> torch.Tensor:
    present = torch.rand(n, m, generator=gen(seed)) < 0.6  # [N, M]
    present[:10] = False  # some rows are empty on purpose
    return present


def test_p_zero_is_the_identity():
    present = random_present()
    assert modality_dropout(present, 0.0, gen()) is present


def test_never_adds_a_modality_and_keeps_one_per_non_empty_row():
    present = random_present()
    for p in (0.3, 0.7, 0.99):
        kept = modality_dropout(present, p, gen())
        assert kept.dtype == torch.bool and kept.shape == present.shape
        assert not (kept & ~present).any(), "dropout marked an absent modality present"
        non_empty = present.any(dim=1)
        assert kept[non_empty].any(dim=1).all(), f"a non-empty row lost every modality (p={p})"
        assert not kept[~non_empty].any(), "an empty row gained a modality"


def test_drop_rate_is_close_to_p():
    present = torch.ones(30_000, 3, dtype=torch.bool)
    kept = modality_dropout(present, 0.3, gen())
    # each slot is dropped with p = 0.3, but a row that lost all three (p^3 = 0.027) gets one
    # back: expected dropped fraction 0.3 - 0.027 / 3 = 0.291
    dropped = 1 - kept.float().mean().item()
    assert abs(dropped - 0.291) < 0.01


def test_the_survivor_of_an_emptied_row_is_chosen_uniformly():
    present = torch.ones(3000, 3, dtype=torch.bool)
    present[:, 1] = False  # only modalities 0 and 2 can survive
    kept = modality_dropout(present, 0.999, gen())
    assert (kept.sum(dim=1) == 1).all()
    counts = kept.sum(dim=0)
    assert counts[1] == 0
    assert abs(counts[0].item() / 3000 - 0.5) < 0.05
    assert abs(counts[2].item() / 3000 - 0.5) < 0.05


def test_seeded_and_reproducible():
    present = random_present()
    a = modality_dropout(present, 0.5, gen(3))
    b = modality_dropout(present, 0.5, gen(3))
    c = modality_dropout(present, 0.5, gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_rows_with_one_modality_keep_it():
    present = torch.zeros(500, 3, dtype=torch.bool)
    present[torch.arange(500), torch.arange(500) % 3] = True
    kept = modality_dropout(present, 0.9, gen())
    assert torch.equal(kept, present)


def test_each_modality_is_dropped_at_its_own_rate_and_one_is_always_kept():
    torch.manual_seed(0)
    present = torch.ones(20000, 3, dtype=torch.bool)
    present[::2, 2] = False  # half the rows lack the third modality
    kept = modality_dropout(present, torch.tensor([0.5, 0.0, 0.2]))
    assert not (kept & ~present).any()  # never adds a modality
    assert kept.any(dim=1).all()
    assert kept[:, 1].all()  # probability 0: never dropped
    # modality 0 is dropped at 0.5, except where it is the last survivor of its row
    rows_with_two = present[:, 2]
    rate_0 = 1 - kept[~rows_with_two, 0].float().mean().item()
    assert abs(rate_0 - 0.5) < 0.02
    rate_2 = 1 - kept[rows_with_two, 2].float().mean().item()
    assert abs(rate_2 - 0.2) < 0.02


def test_a_row_left_empty_gets_one_present_modality_back():
    torch.manual_seed(0)
    present = torch.tensor([[True, False, True]] * 2000)
    kept = modality_dropout(present, torch.tensor([0.9, 0.9, 0.9]))
    assert (kept.sum(1) >= 1).all() and not kept[:, 1].any()
    lone = kept.sum(1) == 1
    share = kept[lone, 0].float().mean().item()  # survivors split between the two
    assert 0.4 < share < 0.6
