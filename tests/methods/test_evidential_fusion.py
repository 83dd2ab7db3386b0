"""evidential-fusion: the Dempster–Shafer rule by hand, absent opinions skipped, uncertainty."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.base import upgrade_weights
from mlmm.methods.combination.evidential_fusion import ds_combine, nig_combine
from mlmm.testing import contract_dataset


def test_ds_rule_on_numbers_computed_by_hand():
    b1, u1 = torch.tensor([[0.6, 0.2]]), torch.tensor([0.2])
    b2, u2 = torch.tensor([[0.3, 0.5]]), torch.tensor([0.2])
    belief, u = ds_combine(b1, u1, b2, u2)
    # conflict C = 0.6*0.5 + 0.2*0.3 = 0.36; b0 = (0.18 + 0.12 + 0.06) / 0.64
    assert torch.allclose(belief, torch.tensor([[0.5625, 0.375]]))
    assert torch.allclose(u, torch.tensor([0.0625]))  # 0.04 / 0.64
    assert torch.allclose(belief.sum(-1) + u, torch.ones(1))


def test_vacuous_opinion_is_the_identity_and_the_rule_is_associative():
    b1, u1 = torch.tensor([[0.6, 0.2]]), torch.tensor([0.2])
    b2, u2 = torch.tensor([[0.3, 0.5]]), torch.tensor([0.2])
    b3, u3 = torch.tensor([[0.1, 0.1]]), torch.tensor([0.8])
    belief, u = ds_combine(b1, u1, torch.zeros(1, 2), torch.ones(1))
    assert torch.allclose(belief, b1) and torch.allclose(u, u1)
    left = ds_combine(*ds_combine(b1, u1, b2, u2), b3, u3)
    right = ds_combine(b1, u1, *ds_combine(b2, u2, b3, u3))
    assert torch.allclose(left[0], right[0]) and torch.allclose(left[1], right[1])


def test_nig_summation_by_hand():
    one = (torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([1.0]))
    two = (torch.tensor([3.0]), torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([1.0]))
    mu, nu, alpha, beta = nig_combine(one, two)
    # mu = (1 + 9) / 4; beta = 2 + 0.5*1*1.5^2 + 0.5*3*0.5^2
    assert torch.allclose(torch.stack([mu, nu, alpha, beta]).flatten(),
                          torch.tensor([2.5, 4.0, 4.5, 3.5]))  # fmt: skip


def test_fused_opinion_is_the_rule_over_present_modalities_only():
    data = contract_dataset()
    rows = np.array([[True, False, True], [False, True, False], [True, True, True]])
    part = data.subset(np.arange(3)).with_presence(rows)
    model = create_method("evidential-fusion", data.specs, data.task).eval()
    with torch.no_grad():
        out = model(MultimodalBatch.from_dataset(part))
    evidence = out.extras["evidence"]  # [B, M, K]
    k = evidence.shape[-1]
    strength = evidence.sum(-1) + k
    belief, u = evidence / strength.unsqueeze(-1), k / strength
    for row, present in enumerate(rows):
        idx = np.flatnonzero(present)
        fb, fu = belief[row : row + 1, idx[0]], u[row : row + 1, idx[0]]
        for j in idx[1:]:
            fb, fu = ds_combine(fb, fu, belief[row : row + 1, j], u[row : row + 1, j])
        assert torch.allclose(out.extras["uncertainty"][row], fu[0], atol=1e-6)
        alpha = fb[0] * (k / fu[0]) + 1
        assert torch.allclose(out.prediction[row], (alpha / alpha.sum()).log(), atol=1e-5)


def test_uncertainty_rises_as_modalities_go_missing_on_synthetic():
    ds = mlmm.load_dataset("synthetic", n_samples=800, seed=0)
    split = mlmm.train_val_test_split(ds, seed=0)
    train, _ = mlmm.simulate(split.train, "mcar:0.3", seed=0)
    model = create_method("evidential-fusion", ds.specs, ds.task)
    trained = mlmm.Trainer(max_epochs=8, seed=0, progress=False).fit(model, train, split.val)
    test = trained.standardizer.transform(split.test)
    m = ds.n_modalities
    mean_u = {}
    for n_present in range(1, m + 1):
        present = np.zeros((test.n_samples, m), dtype=bool)
        present[:, :n_present] = True
        with torch.no_grad():
            out = trained.model(MultimodalBatch.from_dataset(test.with_presence(present)))
        mean_u[n_present] = out.extras["uncertainty"].mean().item()
    assert mean_u[1] > mean_u[2] > mean_u[3], mean_u


def test_hyperparameters_are_checked():
    data = contract_dataset()
    with pytest.raises(MlmmError, match="annealing_epochs"):
        create_method("evidential-fusion", data.specs, data.task, annealing_epochs=0)


def test_edl_loss_is_the_adjusted_cross_entropy_plus_the_kl_to_the_uniform_dirichlet():
    # TMC eq. (10)-(12): sum_j y_j (psi(S) - psi(alpha_j)) + lambda KL(Dir(alpha~) || Dir(1)),
    # alpha~ = y + (1 - y) * alpha (the true class's evidence removed)
    from torch.distributions import Dirichlet, kl_divergence

    from mlmm.methods.combination.evidential_fusion import _edl_loss

    alpha = torch.tensor([[3.0, 1.5, 1.2], [1.1, 1.0, 7.0]], dtype=torch.float64)
    target = torch.tensor([0, 1])
    strength = alpha.sum(-1)
    ace = torch.digamma(strength) - torch.digamma(alpha[torch.arange(2), target])
    one_hot = torch.nn.functional.one_hot(target, 3).to(alpha.dtype)
    tilde = one_hot + (1 - one_hot) * alpha
    kl = kl_divergence(Dirichlet(tilde), Dirichlet(torch.ones_like(tilde)))
    torch.testing.assert_close(_edl_loss(alpha, target, 0.3), ace + 0.3 * kl)
    torch.testing.assert_close(_edl_loss(alpha, target, 0.0), ace)


@pytest.mark.parametrize(
    ("n_samples", "expected"),
    [(100, [0.25, 0.25, 0.5, 0.5]), (65, [0.25, 0.5]), (129, [0.25, 0.25, 0.5, 0.5])],
)
def test_kl_annealing_counts_the_epochs_the_training_loop_runs(monkeypatch, n_samples, expected):
    """Was: an epoch was floor(n / batch_size) steps, but the loop's last batch may be short:
    with 100 samples in batches of 64 (2 steps an epoch) the KL weight reached epoch 2's in
    epoch 1's second step. Then ceil(n / batch_size), but the loop skips a lone trailing
    row: with 65 or 129 samples epoch 2 kept epoch 1's weight."""
    from mlmm.methods.combination import evidential_fusion

    data = contract_dataset(n_samples=n_samples)
    model = create_method("evidential-fusion", data.specs, data.task, annealing_epochs=4)
    weights = []
    edl_loss = evidential_fusion._edl_loss

    def recording(alpha, target, kl_weight):
        if model.training:
            weights.append(kl_weight)
        return edl_loss(alpha, target, kl_weight)

    monkeypatch.setattr(evidential_fusion, "_edl_loss", recording)
    mlmm.Trainer(max_epochs=2, batch_size=64, seed=0, progress=False).fit(model, data)
    per_step = weights[:: len(data.specs) + 1]  # each step: one loss per modality, one fused
    assert per_step == expected
    assert model.changes_since(1) == []  # a training fix: weights saved before answer as they did


def test_resumed_training_keeps_its_kl_annealing(tmp_path):
    """Was: the annealing's step count was not in the checkpoint, so a resumed training
    annealed again from epoch 1 and ended elsewhere than an uninterrupted one."""

    class Stop(Exception):
        pass

    seen = []  # the epochs each training ran, in order

    def trainer(folder=None, stop_after=None):
        seen.clear()

        def on_epoch(stage, row):
            seen.append(row["epoch"])
            if len(seen) == stop_after:
                raise Stop

        return mlmm.Trainer(
            max_epochs=4, batch_size=32, seed=0, progress=False, checkpoint_dir=folder,
            checkpoint_every=0, on_epoch=on_epoch,
        )  # fmt: skip

    data = contract_dataset(n_samples=96)
    test = MultimodalBatch.from_dataset(contract_dataset(n_samples=30, seed=1))

    def model():
        return create_method("evidential-fusion", data.specs, data.task, annealing_epochs=4)

    reference = trainer().fit(model(), data)
    with pytest.raises(Stop):
        trainer(tmp_path, stop_after=2).fit(model(), data)
    resumed = trainer(tmp_path).fit(model(), data)
    assert seen[0] > 1  # it resumed (a training from epoch 1 would match without the count)
    with torch.no_grad():
        expected = reference.model.eval()(test).prediction
        assert torch.equal(resumed.model.eval()(test).prediction, expected)
    # weights saved before the count was a buffer load, and predict as they did
    state = {k: v for k, v in reference.model.state_dict().items() if k != "train_steps"}
    fresh = model()
    upgrade_weights(fresh, state)
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(test).prediction, expected)


@pytest.mark.parametrize("world_size", [2, 3])
def test_data_parallel_annealing_counts_the_global_batches_each_process_steps_on(
    monkeypatch, world_size
):
    """Data-parallel, the loop skips a trailing global batch of fewer than two rows a process."""
    from mlmm.methods.combination.evidential_fusion import _loop_steps
    from mlmm.train import distributed

    monkeypatch.setattr(distributed, "current", lambda: distributed.DataParallel(0, world_size))
    for n in range(2 * world_size, 200):
        steps = len(list(distributed.shard_rows(torch.arange(n), 16, 0, world_size)))
        assert _loop_steps(n, 16) == steps, n
