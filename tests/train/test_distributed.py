"""Data-parallel training (src/mlmm/train/distributed.py): Gloo process groups on the CPU."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mlmm
from mlmm import cli
from mlmm.errors import MlmmError
from mlmm.train import distributed
from mlmm.train.distributed import shard_rows

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mlmm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_each_rank_takes_its_slice_of_every_global_batch():
    """The convention: the global batch is batch_size; rank r of N takes rows r::N of it."""
    order = torch.randperm(104, generator=torch.Generator().manual_seed(0))
    one = list(shard_rows(order, 20, 0, 1))
    two = [list(shard_rows(order, 20, rank, 2)) for rank in range(2)]
    assert [size for _, size in one] == [20, 20, 20, 20, 20, 4]  # the same global batches
    for (rows, size), (rows0, size0), (rows1, size1) in zip(one, *two, strict=True):
        assert size == size0 == size1
        assert len(rows0) == len(rows1) == size // 2  # per-rank batch = batch_size / N
        assert sorted(torch.cat([rows0, rows1]).tolist()) == sorted(rows.tolist())
        assert not set(rows0.tolist()) & set(rows1.tolist())
    # a trailing global batch of fewer than 2 N rows is skipped (3 rows with N = 2 are kept)
    assert [size for _, size in shard_rows(order[:23], 20, 0, 2)] == [20]
    assert [size for _, size in shard_rows(order[:24], 20, 0, 2)] == [20, 4]


def test_two_gloo_processes_train_as_one_with_the_same_global_batch(tmp_path):
    """2 processes give the final metrics of 1 process with the same global batch: exactly
    (up to float sums, predictions within 1e-4) without randomness in the forward (a staged
    frozen-backbone method with LoRA included), and within 0.05 accuracy with dropout (seeded
    per rank, so its draws differ)."""
    port = free_port()
    env = {
        **os.environ,
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path / "ddp")],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    single = worker.train_all()  # the one-process run, while the two train
    for proc in procs:
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output[-2000:]
    rank0, rank1 = (json.loads((tmp_path / f"ddp-{r}.json").read_text()) for r in range(2))

    for method in single:
        # every rank ends with the same weights and the same decisions
        assert rank0[method] == rank1[method], f"{method}: the ranks disagree"
    exact, one = rank0["late-fusion"], single["late-fusion"]
    assert exact["epochs"] == one["epochs"] and exact["best_epoch"] == one["best_epoch"]
    assert exact["part_best_epochs"] == one["part_best_epochs"]
    assert one["part_best_epochs"]  # late fusion selects each head on its own
    np.testing.assert_allclose(exact["val_loss"], one["val_loss"], atol=1e-5)
    np.testing.assert_allclose(exact["train_loss"], one["train_loss"], atol=1e-5)
    np.testing.assert_allclose(exact["proba"], one["proba"], atol=1e-4)
    staged, one = rank0["frozen-backbone-prompting"], single["frozen-backbone-prompting"]
    assert staged["epochs"] == one["epochs"] and staged["best_epoch"] == one["best_epoch"]
    np.testing.assert_allclose(staged["val_loss"], one["val_loss"], atol=1e-5)
    np.testing.assert_allclose(staged["proba"], one["proba"], atol=1e-4)
    noisy, one = rank0["hemis"], single["hemis"]
    assert abs(noisy["accuracy"] - one["accuracy"]) <= 0.05
    assert one["accuracy"] > 0.6  # both learned, not two equal failures


@pytest.mark.skipif(distributed.available_devices("cpu") < 2, reason="needs 2 CPU cores")
def test_train_devices_2_launches_two_processes_and_rank_0_alone_saves(
    monkeypatch, capfd, tmp_path
):
    from mlmm.train.trained import TrainedModel

    out_dir = tmp_path / "model"
    monkeypatch.setattr(sys, "argv", ["mlmm", "train", "--dataset", "synthetic",
        "--dataset-param", "n_samples=150", "--method", "hemis", "--epochs", "2",
        "--batch-size", "16", "--out", str(out_dir), "--devices", "2", "--quiet"])  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capfd.readouterr()
    assert exc.value.code in (0, None), err[-2000:]
    assert out.count("saved model to") == 1  # rank 0 prints and writes; rank 1 neither
    assert "trained data-parallel in 2 processes (gloo)" in out
    trained = TrainedModel.load(out_dir)
    assert trained.trainer_config["batch_size"] == 16  # the global batch is what was asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no stray temporaries


def test_devices_beyond_this_machine_are_refused_in_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--method", "hemis",
        "--out", str(tmp_path / "m"), "--devices", "4096",
    )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and "--devices 4096" in err and "CPU cores" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_processes_on_a_machine_without_cuda_are_one_line():
    with pytest.raises(distributed.MlmmError, match="needs CUDA GPUs and this machine has none"):
        distributed.check_devices(2, "cuda")
    distributed.check_devices(1, "cpu")  # one CPU process is always there


def test_a_method_that_cannot_train_data_parallel_says_so_before_any_process(
    monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(distributed, "launch", lambda *a, **k: pytest.fail("launched"))
    for method, why in (("knn-impute", "all-gather"), ("per-subset", "separate stages")):
        code, _, err = run_cli(
            monkeypatch, capsys, "train", "--dataset", "synthetic", "--method", method,
            "--out", str(tmp_path / "m"), "--devices", "2",
        )  # fmt: skip
        assert code == 2 and err.count("\n") == 1
        assert f"method {method!r} cannot train data-parallel" in err and why in err


def test_a_global_batch_too_small_to_shard_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(distributed, "launch", lambda *a, **k: pytest.fail("launched"))
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--method", "hemis",
        "--out", str(tmp_path / "m"), "--devices", "2", "--batch-size", "3",
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "--batch-size 3 is the global batch over 2 processes and must be at least 4" in err


def test_the_docs_name_every_method_that_cannot_train_data_parallel():
    from mlmm.methods.registry import METHODS, list_methods

    page = (Path(__file__).resolve().parents[2] / "docs" / "distributed.md").read_text()
    table = page[page.index("## Methods that cannot train data-parallel") :]
    refused = [n for n in list_methods() if not METHODS.get(n).obj.supports_data_parallel]
    assert refused and all(f"`{name}`" in table for name in refused)


def test_an_unreachable_rendezvous_fails_within_its_timeout(monkeypatch, capsys, tmp_path):
    """Rank 1 of 2 with no rank 0 listening: one clear line after the timeout, not a hang."""
    port = free_port()  # nothing listens there
    for name, value in {
        "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    start = time.perf_counter()
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--method", "hemis",
        "--out", str(tmp_path / "m"), "--rendezvous-timeout", "2",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert code == 2 and err.count("\n") == 1, err
    assert f"could not join the process group at 127.0.0.1:{port} within 2s" in err
    assert 1.5 <= seconds < 30
    assert not torch.distributed.is_initialized()


def test_each_rank_reseeds_torch_for_its_own_dropout(monkeypatch):
    from mlmm.utils import torch_seed_for

    torch.manual_seed(123)
    distributed.seed_rank(7)  # outside a process group: the global seed is left alone
    assert torch.initial_seed() == 123
    seeds = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "current", lambda r=rank: distributed.DataParallel(r, 2))
        distributed.seed_rank(7)
        seeds.append(torch.initial_seed())
    assert seeds == [torch_seed_for(7, "rank", 0), torch_seed_for(7, "rank", 1)]
    assert seeds[0] != seeds[1]


@pytest.mark.parametrize("timeout", ["0", "nan", "-5"])
def test_a_rendezvous_timeout_must_be_positive_seconds(monkeypatch, capsys, tmp_path, timeout):
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--method", "hemis",
        "--out", str(tmp_path / "m"), "--devices", "2", "--rendezvous-timeout", timeout,
    )  # fmt: skip
    assert code == 2 and "--rendezvous-timeout must be a positive number of seconds" in err


def test_an_out_of_core_dataset_is_refused_in_one_line_when_data_parallel(tmp_path, monkeypatch):
    from mlmm.data.lazy import open_dataset, write_dataset
    from mlmm.train import trainer as trainer_module

    data = mlmm.load_dataset("synthetic", n_samples=120)
    write_dataset(data, tmp_path / "ds")
    lazy = open_dataset(tmp_path / "ds")
    model = mlmm.create_method("zero-impute", data.specs, data.task)

    class _TwoRanks:  # a process group of two, as far as the loop's first check sees
        world_size, rank = 2, 0

    monkeypatch.setattr(trainer_module.distributed, "current", lambda: _TwoRanks())
    with pytest.raises(MlmmError, match="data-parallel training shards data held in memory"):
        mlmm.Trainer(max_epochs=1, progress=False).fit(model, lazy)


def test_an_nccl_group_also_carries_gloo_for_the_loops_cpu_collectives(monkeypatch):
    """The loop sums losses and broadcasts decisions on CPU tensors (DataParallel.sum, agree,
    same_row); an NCCL-only group refuses those, so on GPUs the group must add Gloo for CPU."""
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed, "check_devices", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a: None)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda b, **k: calls.append(b))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    info = distributed.join("cuda", timeout=5)
    assert info.backend == "nccl" and info.device() == "cuda:0"
    assert calls == ["cpu:gloo,cuda:nccl"]
    distributed.join("cpu", timeout=5)
    assert calls[-1] == "gloo"


@pytest.mark.parametrize(
    ("precision", "message"),
    [("16-mixed", "precision '16-mixed' needs a CUDA GPU"), ("fp8", "precision must be one of")],
)
def test_a_bad_precision_is_refused_before_any_process_starts(
    monkeypatch, capsys, tmp_path, precision, message
):
    monkeypatch.setattr(distributed, "launch", lambda *a, **k: pytest.fail("launched"))
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--method", "hemis",
        "--out", str(tmp_path / "m"), "--devices", "2", "--precision", precision,
    )  # fmt: skip
    assert code == 2 and message in err and err.count("\n") == 1, err


class _OneProcessGroup(distributed.DataParallel):
    """The data-parallel loop of rank 0 in a group of ``world_size``, without other processes:
    the collectives return this process's own values."""

    def wrap(self, module):
        return module

    def sum(self, *values):
        return list(values)

    def agree(self, flag):
        return flag

    def same_row(self, row):
        return row


def test_fewer_training_rows_than_two_per_process_is_one_line(monkeypatch):
    """3 rows over 2 processes: every global batch was skipped, so the model silently kept its
    initial weights with a train loss of 0.0; it is now refused in one line."""
    monkeypatch.setattr(distributed, "current", lambda: _OneProcessGroup(0, 2))
    ds = mlmm.load_dataset("synthetic", n_samples=60)
    train = ds.subset(np.arange(3))
    model = mlmm.create_method("late-fusion", ds.specs, ds.task)
    trainer = mlmm.Trainer(max_epochs=2, batch_size=32, seed=0, progress=False)
    with pytest.raises(MlmmError) as err:
        trainer.fit_module(model, mlmm.Standardizer().fit(train).transform(train), None)
    message = str(err.value)
    assert "\n" not in message
    assert "over 2 processes needs at least 4 training rows (two per process), got 3" in message
    assert "in stage 'main'" in message  # a staged method's subset stage is named
    # 4 rows (two per process) train
    train = ds.subset(np.arange(4))
    history = trainer.fit_module(model, mlmm.Standardizer().fit(train).transform(train), None)
    assert history.epochs[-1]["train_loss"] > 0
