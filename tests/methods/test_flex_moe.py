"""flex-moe: the load-balancing loss by hand, top-k routing with a forced top-1 expert, the
S-Router's choice of the combination expert, expert usage, active parameters, the two stages,
hyperparameter errors, and artifacts that record the sizes None resolved to."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.registry import list_datasets, load_dataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.data.split import train_val_test_split
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.architecture.flex_moe import (
    ACTIVE_SHARE,
    MAX_EXPERT_WIDTH,
    MAX_EXPERTS,
    MIN_COMPLETE,
    sample_experts,
    sparse_expert_width,
)
from mlmm.nn.moe import SparseMoE, cv_squared, load_balancing_loss
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer

SMALL = {"embed_dim": 16, "hidden": 32, "expert_hidden": 32}
NAME = "flex-moe"


def test_load_balancing_loss_by_hand():
    gates = torch.tensor([[0.75, 0.25, 0.0], [0.0, 0.5, 0.5]])
    # importance [0.75, 0.75, 0.5]: mean 2/3, variance 1/72 -> cv² = 1/32
    # load [1, 2, 1]: mean 4/3, variance 2/9 -> cv² = 1/8
    assert load_balancing_loss(gates).item() == pytest.approx(1 / 32 + 1 / 8)
    assert cv_squared(torch.tensor([2.0, 2.0, 2.0])).item() == 0.0
    balanced = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    assert load_balancing_loss(balanced).item() == pytest.approx(0.0)


def test_routing_top_k_with_a_forced_top1():
    moe = SparseMoE(dim=2, n_experts=4, top_k=2, hidden=3, dropout=0.0)
    logits = torch.tensor([[4.0, 3.0, 1.0, 0.0], [4.0, 3.0, 1.0, 0.0]])
    index, gates = moe.route(logits, torch.tensor([-1, 2]))
    assert index.tolist() == [[0, 1], [2, 0]]  # free: the top 2; forced: expert 2, then the best
    e = np.exp(1.0)
    assert gates[0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)])  # softmax(4, 3)
    assert gates[1].tolist() == pytest.approx(
        [np.exp(1) / (np.exp(1) + np.exp(4)), np.exp(4) / (np.exp(1) + np.exp(4))]
    )


def test_moe_output_is_the_gated_sum_of_the_selected_experts():
    torch.manual_seed(0)
    moe = SparseMoE(dim=3, n_experts=4, top_k=2, hidden=5, dropout=0.0).eval()
    x = torch.randn(6, 3)
    y, logits, index, gates = moe(x, torch.tensor([-1, 1, -1, 3, 0, -1]))
    expected = torch.stack(
        [sum(gates[t, s] * moe.experts[int(index[t, s])](x[t]) for s in range(2)) for t in range(6)]
    )
    assert torch.allclose(y, expected, atol=1e-6)
    assert index[1, 0] == 1 and index[3, 0] == 3 and index[4, 0] == 0


def test_incomplete_rows_go_to_their_combination_expert():
    data = contract_dataset()
    model = create_method(NAME, data.specs, data.task, top_k=2, n_experts=7).eval()
    batch = MultimodalBatch.from_dataset(data)
    present = torch.ones(len(batch), 3, dtype=torch.bool)
    present[:120, 0] = False  # pattern of {1, 2}: bits 2 + 4 - 1 = 5
    present[120:240, 1:] = False  # {0} alone: pattern 0
    batch = MultimodalBatch(batch.inputs, present, batch.modalities, None)
    out = model(batch)
    top1 = out.extras["experts"][:, 0, :, 0]  # [B, M]: every token's first expert
    assert (top1[:120] == 5).all() and (top1[120:240] == 0).all()
    # complete rows use the G-Router: their first expert is the router's own best
    assert out.extras["pattern"][240:].eq(6).all()
    usage = out.extras["expert_usage"]
    assert usage.sum().item() == len(batch) * 3 * 2  # rows x tokens x top_k
    assert usage[5, 5].item() == 120 * 3 and usage[0, 0].item() == 120 * 3
    assert usage[[1, 2, 3, 4]].sum().item() == 0  # no row has these patterns


def test_active_parameters_count_one_tokens_path_and_one_samples_worst_case():
    data = contract_dataset()
    model = create_method(
        NAME, data.specs, data.task, n_layers=2, top_k=3, n_experts=7, expert_hidden=128
    )
    expert = model.blocks[0].moe.expert_size()
    assert expert == (64 * 128 + 128) + (128 * 64 + 64)
    bank = (7 - 1) * 3 * 64  # the other patterns' bank entries
    assert model.total_parameters() - model.token_active_parameters() == 2 * (7 - 3) * expert + bank
    # a complete sample's 3 tokens x top-3 can reach all 7 experts of each block
    assert model.total_parameters() - model.active_parameters() == bank
    assert model.total_parameters() == sum(p.numel() for p in model.parameters())
    top1 = create_method(NAME, data.specs, data.task, top_k=1, n_experts=7, expert_hidden=128)
    assert sample_experts(3, 1, 7) == 3  # one expert per token
    assert top1.active_parameters() - top1.token_active_parameters() == 2 * expert


def test_sample_experts_is_the_complete_samples_reach():
    assert sample_experts(3, 1, 12) == 3
    assert sample_experts(6, 2, 63) == 12
    assert sample_experts(4, 4, 16) == 16  # the paper: 4 modalities, top-4, 16 experts
    assert sample_experts(2, 2, 3) == 3  # never more than there are


def test_sample_active_parameters_count_every_expert_a_samples_tokens_used():
    data = contract_dataset()
    model = create_method(NAME, data.specs, data.task, n_layers=2, top_k=1).eval()
    expert = model.blocks[0].moe.expert_size()
    batch = MultimodalBatch.from_dataset(data)
    present = torch.ones(len(batch), 3, dtype=torch.bool)
    present[:100, 2] = False  # incomplete: every token forced to the pattern's expert
    batch = batch.with_present(present)
    with torch.no_grad():
        experts = model(batch).extras["experts"]  # [B, L, M, 1]
    counts = model.sample_active_parameters(experts)  # [B]
    assert (counts[:100] == model.token_active_parameters()).all()
    assert (counts <= model.active_parameters()).all()  # the worst case bounds every sample
    distinct = torch.tensor(
        [[len(set(block.flatten().tolist())) for block in row] for row in experts]
    )
    extra = (distinct - 1).sum(dim=1) * expert  # [B]: experts beyond one per block
    assert torch.equal(counts - model.token_active_parameters(), extra)
    # by hand: tokens of one complete sample on experts 0, 1, 1 (block 1) and 2, 2, 2 (block 2)
    by_hand = torch.tensor([[[[0], [1], [1]], [[2], [2], [2]]]])
    assert (
        model.sample_active_parameters(by_hand).item() == model.token_active_parameters() + expert
    )
    # every token of both blocks on another expert: the worst case
    spread = torch.tensor([[[[0], [1], [2]], [[3], [4], [5]]]])
    assert model.sample_active_parameters(spread).item() == model.active_parameters()


def test_the_worst_case_bounds_every_presence_pattern_with_top_2():
    # incomplete rows: the S-Router's expert first, then the router's best other; complete
    # rows: the G-Router's best two per token. Neither may pass active_parameters().
    data = contract_dataset()
    model = create_method(NAME, data.specs, data.task, n_layers=2).eval()  # top_k=2
    batch = MultimodalBatch.from_dataset(data)
    patterns = torch.arange(len(batch)) % 7 + 1  # [B]: every non-empty pattern, as bits
    present = (patterns.unsqueeze(1) >> torch.arange(3)) & 1 == 1  # [B, M]
    with torch.no_grad():
        out = model(batch.with_present(present))
    experts = out.extras["experts"]  # [B, L, M, 2]
    counts = model.sample_active_parameters(experts)  # [B]
    assert (counts <= model.active_parameters()).all()
    incomplete = ~present.all(dim=1)
    distinct = torch.tensor([[len(set(b.flatten().tolist())) for b in row] for row in experts])
    assert (distinct[incomplete] <= 1 + 3 * (2 - 1)).all()  # the shared expert + one each
    assert (distinct <= 3 * 2).all()
    forced = model.combination_expert(out.extras["pattern"])[incomplete]  # [B']
    assert (experts[incomplete][..., 0] == forced.view(-1, 1, 1)).all()
    # by hand: an incomplete sample's tokens spread as far as they can (4 experts per block),
    # a complete one's as far (6): 2 and 0 experts per block fewer than the worst case
    expert = model.blocks[0].moe.expert_size()
    spread = torch.tensor([[[[5, 0], [5, 1], [5, 2]]] * 2, [[[0, 1], [2, 3], [4, 5]]] * 2])
    assert model.sample_active_parameters(spread).tolist() == [
        model.active_parameters() - 2 * 2 * expert,
        model.active_parameters(),
    ]


def test_generalised_stage_on_complete_samples_then_specialised():
    data = contract_dataset()
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    model = create_method(NAME, data.specs, data.task)
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, split.train, split.val)
    assert [h.stage for h in trained.histories] == ["generalised", "specialised"]
    assert model.generalised_samples == split.train.n_samples

    n = split.train.n_samples
    drop = np.eye(3, dtype=bool)[np.arange(n) % 3]  # each row lacks one modality
    few = split.train.with_presence(~drop)  # no complete sample: the generalised stage is skipped
    model = create_method(NAME, data.specs, data.task)
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, few, None)
    assert [h.stage for h in trained.histories] == ["specialised"]
    assert model.generalised_samples == 0 < MIN_COMPLETE


def test_bad_hyperparameters():
    data = contract_dataset()
    with pytest.raises(MlmmError, match=r"number of experts \(2\), got top_k=3"):
        create_method(NAME, data.specs, data.task, n_experts=2, top_k=3)
    with pytest.raises(MlmmError, match="n_experts must be"):
        create_method(NAME, data.specs, data.task, n_experts=0)
    with pytest.raises(MlmmError, match="divisible"):
        create_method(NAME, data.specs, data.task, n_heads=3)
    with pytest.raises(MlmmError, match="between 1 and the number of experts"):
        SparseMoE(4, 2, 3, 8, 0.0)


def test_default_expert_count_follows_what_one_sample_may_use_beyond_the_patterns():
    # n_experts=None is at least 4 * M * top_k: a top_k above 2**M - 1 is not rejected (1
    # modality has 1 pattern, and the tuning space's top_k=2 must build there)
    one = [ModalitySpec("a", "vector", (5,))]
    model = create_method(NAME, one, TaskSpec("classification", 3), top_k=2)
    assert (model.n_patterns, model.expert_count) == (1, 8)
    data = contract_dataset()
    assert create_method(NAME, data.specs, data.task).expert_count == 24  # 3 tokens x top-2
    assert create_method(NAME, data.specs, data.task, top_k=1).expert_count == 12
    model = create_method(NAME, data.specs, data.task, top_k=8)
    assert model.expert_count == 96
    assert model.active_parameters() <= model.total_parameters() / 3


def test_fewer_experts_than_patterns_share_them():
    data = contract_dataset()
    model = create_method(NAME, data.specs, data.task, n_experts=3, top_k=1).eval()
    out = model(MultimodalBatch.from_dataset(data))
    pattern = out.extras["pattern"]
    incomplete = pattern != 6
    assert (out.extras["experts"][incomplete, 0, :, 0] == (pattern[incomplete] % 3)[:, None]).all()


def test_beats_chance_on_every_subset_of_small_synthetic_data():
    from mlmm.data.missingness import simulate
    from mlmm.eval.protocol import evaluate
    from mlmm.utils import rng_for

    data = contract_dataset(n_samples=240)
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    train, _ = simulate(split.train, "mcar:0.4", rng_for(0, "train-mask"))
    model = create_method(NAME, data.specs, data.task, **SMALL)
    trained = Trainer(max_epochs=15, batch_size=32, seed=0, progress=False).fit(model, train, None)
    table = evaluate(trained, split.test, "none", patterns=False)
    acc = table[(table.scope == "subset") & (table.metric == "accuracy")]
    assert len(acc) == 7  # every non-empty subset of 3 modalities, single ones included
    assert (acc.value > 1 / 3 + 0.25).all(), acc[["subset", "value"]].to_string()


def test_sparse_expert_width_by_hand():
    # dense 1000, no idle bank, 4-wide tokens, 7 experts, top-1, one block: an expert of width
    # h has 9 h + 4 parameters; the share (1000 + E) / (1000 + 7 E) <= 1/3 needs E >= 500
    assert sparse_expert_width(1000, 0, 4, 7, 1, 1) == 56  # 508 parameters: 1508 / 4556
    share = (1000 + 9 * 48 + 4) / (1000 + 7 * (9 * 48 + 4))  # one step of 8 narrower
    assert share > ACTIVE_SHARE
    assert sparse_expert_width(10, 0, 4, 7, 1, 1) == 8  # never below two times the token
    assert sparse_expert_width(1000, 0, 4, 3, 1, 1) == 8  # 3 experts, top-1: no width reaches it
    # a sample that may use 3 of 10 experts: (1000 + 3 E) / (1000 + 10 E) <= 1/3 needs E >= 2000
    assert sparse_expert_width(1000, 0, 4, 10, 3, 1) == 224  # 2020 parameters; 216: 1948
    assert sparse_expert_width(1000, 0, 4, 9, 3, 1) == 8  # 9 <= 3 * 3: none reaches it


#: Built-in datasets read from files, as specs shaped like their loaders' defaults.
FILE_DATASETS = {
    "avmnist": [ModalitySpec("image", "image", (1, 28, 28)), ModalitySpec("audio", "image", (1, 112, 112))],
    "brats": [ModalitySpec(s, "image", (38, 60, 60)) for s in ("t1", "t1ce", "t2", "flair")],
    "food101": [ModalitySpec("image", "image", (3, 64, 64)), ModalitySpec("text", "vector", (768,))],
    "mmimdb": [ModalitySpec("text", "vector", (768,)), ModalitySpec("image", "image", (3, 64, 64))],
    "mosi": [ModalitySpec(m, "sequence", (50, d)) for m, d in (("text", 300), ("audio", 5), ("vision", 20))],
    "mosei": [ModalitySpec(m, "sequence", (50, d)) for m, d in (("text", 300), ("audio", 74), ("vision", 35))],
    "iemocap": [ModalitySpec(m, "sequence", (50, d)) for m, d in (("audio", 130), ("vision", 342), ("text", 1024))],
}  # fmt: skip
GENERATED = {"synthetic": {"n_samples": 40}, "synthetic-interaction": {"n_samples": 40},
             "synthetic-multilabel": {"n_samples": 40}, "handwritten": {}, "basicmotions": {}}  # fmt: skip


def test_every_built_in_dataset_is_listed_here():
    assert set(list_datasets()) == set(FILE_DATASETS) | set(GENERATED)


def _worst_case(model) -> int:
    """One sample's active parameters at most, by hand: every expert its M tokens can reach
    (min(M * top_k, N) per block) and its own bank entries."""
    m, n = len(model.modalities), model.expert_count
    unreached = sum((n - min(m * model.top_k, n)) * b.moe.expert_size() for b in model.blocks)
    return model.total_parameters() - unreached - (model.n_patterns - 1) * m * model.embed_dim


def _complete_batch(specs, n: int) -> MultimodalBatch:
    torch.manual_seed(0)
    inputs = {s.name: torch.randn(n, *s.shape) for s in specs}
    return MultimodalBatch(
        inputs, torch.ones(n, len(specs), dtype=torch.bool), [s.name for s in specs], None
    )


@pytest.mark.parametrize("dataset", sorted(set(FILE_DATASETS) | set(GENERATED)))
def test_one_samples_active_parameters_are_at_most_a_third_at_the_defaults(dataset):
    if dataset in GENERATED:
        data = load_dataset(dataset, **GENERATED[dataset])
        specs, task = data.specs, data.task
    else:
        specs, task = FILE_DATASETS[dataset], TaskSpec("classification", 2)
    model = create_method(NAME, specs, task)
    worst = _worst_case(model)
    assert model.active_parameters() == worst <= model.total_parameters() / 3
    assert model.expert_count > 3 * sample_experts(len(specs), model.top_k, model.expert_count)
    assert model.expert_width <= MAX_EXPERT_WIDTH
    if dataset in GENERATED:  # measured after a short training, on complete samples
        Trainer(max_epochs=1, batch_size=32, seed=0, progress=False).fit(model, data, None)
        batch = MultimodalBatch.from_dataset(data).with_present(
            torch.ones(data.n_samples, len(specs), dtype=torch.bool)
        )
    else:  # untrained, on random complete inputs
        batch = _complete_batch(specs, 4)
    with torch.no_grad():
        experts = model.eval()(batch).extras["experts"]  # [B, L, M, k]
    counts = model.sample_active_parameters(experts)  # [B]
    assert (counts <= worst).all()
    assert counts.max().item() <= model.total_parameters() / 3


def test_expert_width_is_capped_and_more_experts_keep_the_third():
    specs = [ModalitySpec("wide", "vector", (20_000,)), ModalitySpec("b", "vector", (8,))]
    task = TaskSpec("classification", 3)
    model = create_method(NAME, specs, task)
    assert model.expert_width <= MAX_EXPERT_WIDTH
    assert model.expert_count > 4 * 2 * 1  # more than the 8 the count alone gives
    assert model.active_parameters() <= model.total_parameters() / 3
    fewer = create_method(NAME, specs, task, n_experts=model.expert_count - 1, expert_hidden=None)
    assert fewer.expert_width == MAX_EXPERT_WIDTH  # explicit count: capped width, no error
    assert fewer.active_parameters() > fewer.total_parameters() / 3  # the third not kept


def test_tokens_wider_than_half_the_cap_build_at_twice_their_width():
    # 2 * embed_dim above MAX_EXPERT_WIDTH: no count of experts narrows the width under the
    # cap, so the cap is the floor there (adding experts until it did never ended)
    specs = [ModalitySpec("a", "vector", (5,)), ModalitySpec("b", "vector", (8,))]
    model = create_method(NAME, specs, TaskSpec("classification", 3), embed_dim=640)
    assert model.expert_width == 2 * 640 > MAX_EXPERT_WIDTH
    assert model.expert_count == 4 * 2 * 2  # the floor already reaches the third
    assert model.active_parameters() <= model.total_parameters() / 3


#: (n_experts, expert_hidden) that None resolves to on every built-in dataset, at the defaults
#: and at the search space's widest encoders: the sizes its benchmark figures were measured
#: with, before MAX_EXPERTS existed. A sizing change that moves them changes those figures.
BUILT_IN_SIZES = {
    "avmnist": ((16, 192), (18, 1024)), "basicmotions": ((16, 216), (19, 1000)),
    "brats": ((32, 200), (39, 976)), "food101": ((16, 584), (28, 1024)),
    "handwritten": ((63, 128), (63, 624)), "iemocap": ((24, 808), (57, 1016)),
    "mmimdb": ((16, 584), (28, 1024)), "mosei": ((24, 360), (36, 1016)),
    "mosi": ((24, 320), (35, 976)), "synthetic": ((24, 200), (24, 704)),
    "synthetic-interaction": ((24, 200), (24, 696)), "synthetic-multilabel": ((16, 216), (16, 664)),
}  # fmt: skip


@pytest.mark.parametrize("dataset", sorted(BUILT_IN_SIZES))
def test_the_caps_leave_every_built_in_datasets_sizes_as_they_were(dataset):
    assert set(BUILT_IN_SIZES) == set(list_datasets())
    if dataset in GENERATED:
        data = load_dataset(dataset, **GENERATED[dataset])
        specs, task = data.specs, data.task
    else:
        specs, task = FILE_DATASETS[dataset], TaskSpec("classification", 2)
    default = create_method(NAME, specs, task)
    widest = create_method(NAME, specs, task, embed_dim=32, hidden=512)
    sizes = tuple((m.expert_count, m.expert_width) for m in (default, widest))
    assert sizes == BUILT_IN_SIZES[dataset]


def test_experts_stay_bounded_for_any_input_width():
    # a 20,000-feature modality: 80,736-wide experts before the width cap; with encoders four
    # times wider (hidden=512), keeping a third active would need about 200 capped experts
    specs = [ModalitySpec("wide", "vector", (20_000,)), ModalitySpec("b", "vector", (8,))]
    task = TaskSpec("classification", 3)
    bound = MAX_EXPERTS * (MAX_EXPERT_WIDTH * (2 * 64 + 1) + 64)  # one block's experts, at most
    model = create_method(NAME, specs, task)
    assert (model.expert_count, model.expert_width) == (52, 1016)  # under both caps
    assert model.total_parameters() < 10_000_000
    wide = create_method(NAME, specs, task, hidden=512)
    assert (wide.expert_count, wide.expert_width) == (MAX_EXPERTS, MAX_EXPERT_WIDTH)
    assert wide.expert_count * wide.blocks[0].moe.expert_size() == bound  # 8,458,240
    encoders = sum(p.numel() for p in wide.encoders.parameters())
    assert wide.total_parameters() - encoders < bound + 100_000  # attention, bank, head
    assert wide.active_parameters() > wide.total_parameters() / 3  # the documented price
    more = create_method(NAME, specs, task, hidden=512, n_experts=MAX_EXPERTS + 8)
    assert more.expert_count == MAX_EXPERTS + 8  # an explicit count is used as given


def test_a_model_past_both_caps_records_its_sizes_and_reloads(tmp_path, monkeypatch):
    from mlmm.methods.architecture import flex_moe
    from mlmm.train.trained import TrainedModel

    rng = np.random.default_rng(0)
    specs = [ModalitySpec("wide", "vector", (20_000,)), ModalitySpec("b", "vector", (8,))]
    targets = np.arange(40) % 3
    inputs = {
        "wide": rng.normal(size=(40, 20_000)),
        "b": rng.normal(size=(40, 8)) + targets[:, None],
    }
    data = MultimodalDataset(specs, TaskSpec("classification", 3), inputs, targets)
    model = create_method(NAME, specs, data.task, embed_dim=16, hidden=64)
    resolved = {"n_experts": MAX_EXPERTS, "expert_hidden": MAX_EXPERT_WIDTH}
    assert model.resolved_hyperparameters() == resolved
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, data, None)
    path = trained.save(tmp_path / "wide")
    monkeypatch.setattr(flex_moe, "MAX_EXPERTS", 16)  # a later mlmm with a lower cap
    assert create_method(NAME, specs, data.task, embed_dim=16, hidden=64).expert_count == 16
    loaded = TrainedModel.load(path)
    assert loaded.model.resolved_hyperparameters() == resolved
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))


@pytest.mark.parametrize("top_k,n_layers,hidden", [(1, 1, 64), (2, 1, 256), (3, 2, 128)])
@pytest.mark.parametrize("n_modalities", [2, 3, 5])
def test_sized_experts_reach_a_third_and_one_step_narrower_does_not(
    top_k, n_layers, hidden, n_modalities
):
    specs = [ModalitySpec(f"m{j}", "vector", (5 + 7 * j,)) for j in range(n_modalities)]
    params = {"top_k": top_k, "n_layers": n_layers, "hidden": hidden}
    model = create_method(NAME, specs, TaskSpec("classification", 3), **params)
    assert model.expert_count == max(2**n_modalities - 1, 4 * n_modalities * top_k)
    assert model.active_parameters() <= model.total_parameters() / 3
    width = model.expert_width
    if width > 2 * model.embed_dim:  # the narrowest multiple of 8 that reaches a third
        narrower = create_method(
            NAME, specs, TaskSpec("classification", 3), expert_hidden=width - 8, **params
        )
        assert narrower.active_parameters() > narrower.total_parameters() / 3


def _trained_small(data):
    model = create_method(NAME, data.specs, data.task, embed_dim=16, hidden=32)
    return Trainer(max_epochs=1, seed=0, progress=False).fit(model, data, None)


def _change_the_sizing_rule(monkeypatch):
    """Fewer experts per slot and a narrower cap: what a later mlmm might resolve None to."""
    from mlmm.methods.architecture import flex_moe

    monkeypatch.setattr(flex_moe, "EXPERTS_PER_SLOT", 1)
    monkeypatch.setattr(flex_moe, "MAX_EXPERT_WIDTH", 8)


def _save_as_before_sizes_were_recorded(trained, path):
    """The artifact an mlmm that did not record resolved sizes wrote: hyperparameters only."""
    from mlmm.train.card import model_card
    from mlmm.train.checkpoint import save_artifact

    config = trained.config()
    del config["resolved_hyperparameters"]
    return save_artifact(path, trained.model.state_dict(), config, card=model_card(config))


def test_the_resolved_sizes_are_recorded_only_for_arguments_given_as_none():
    data = contract_dataset()
    model = create_method(NAME, data.specs, data.task, embed_dim=16, hidden=32)
    assert model.resolved_hyperparameters() == {
        "n_experts": model.expert_count,
        "expert_hidden": model.expert_width,
    }
    width = create_method(NAME, data.specs, data.task, n_experts=9, embed_dim=16, hidden=32)
    assert width.resolved_hyperparameters() == {"expert_hidden": width.expert_width}
    given = create_method(NAME, data.specs, data.task, n_experts=9, expert_hidden=24)
    assert given.resolved_hyperparameters() == {}


def test_a_saved_model_rebuilds_as_trained_after_the_sizing_rule_changes(tmp_path, monkeypatch):
    from mlmm.train.trained import TrainedModel

    data = contract_dataset()
    trained = _trained_small(data)
    path = trained.save(tmp_path / "model")
    count, width = trained.model.expert_count, trained.model.expert_width
    _change_the_sizing_rule(monkeypatch)
    today = create_method(NAME, data.specs, data.task, embed_dim=16, hidden=32)
    assert (today.expert_count, today.expert_width) != (count, width)  # the rule did change
    assert today.expert_count != count and today.expert_width != width
    loaded = TrainedModel.load(path)
    assert (loaded.model.expert_count, loaded.model.expert_width) == (count, width)
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))
    # the arguments read as given (None: sized by the method), so a re-save records the sizes
    assert loaded.model.get_hyperparameters() == trained.model.get_hyperparameters()
    assert loaded.model.n_experts is None and loaded.model.expert_hidden is None
    card = (path / "README.md").read_text()
    assert f"- Built with: `n_experts={count}`, `expert_hidden={width}`" in card
    again = TrainedModel.load(loaded.save(tmp_path / "again"))
    np.testing.assert_array_equal(again.predict_raw(data), trained.predict_raw(data))


def test_an_artifact_from_before_sizes_were_recorded_loads_when_todays_rule_fits(tmp_path):
    from mlmm.train.trained import TrainedModel

    data = contract_dataset()
    trained = _trained_small(data)
    path = _save_as_before_sizes_were_recorded(trained, tmp_path / "old")
    assert "resolved_hyperparameters" not in (path / "config.json").read_text()
    loaded = TrainedModel.load(path)
    assert loaded.model.expert_count == trained.model.expert_count
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))


@pytest.mark.parametrize("rule", ["fewer", "more"])
def test_an_artifact_from_before_sizes_were_recorded_loads_after_the_rule_changed(
    rule, tmp_path, monkeypatch
):
    """Its sizes are read off its weights (FlexMoE.resolved_from_state). It was refused:
    'config.json describes a flex-moe model of 532,700 values but model.safetensors holds
    249,803; ... another mlmm version sizes this method differently', for every flex-moe saved
    with n_experts=None before the sizes were recorded (checked against such an artifact)."""
    from mlmm.train.trained import TrainedModel

    data = contract_dataset()
    if rule == "more":  # today's rule gives more experts than the weights hold
        _change_the_sizing_rule(monkeypatch)
    trained = _trained_small(data)
    path = _save_as_before_sizes_were_recorded(trained, tmp_path / "old")
    monkeypatch.undo()
    if rule == "fewer":  # today's rule gives fewer, narrower experts
        _change_the_sizing_rule(monkeypatch)
    today = create_method(NAME, data.specs, data.task, embed_dim=16, hidden=32)
    assert today.expert_count != trained.model.expert_count  # the rule did change
    loaded = TrainedModel.load(path)
    sizes = (loaded.model.expert_count, loaded.model.expert_width)
    assert sizes == (trained.model.expert_count, trained.model.expert_width)
    assert loaded.model.n_experts is None and loaded.model.expert_hidden is None
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))
