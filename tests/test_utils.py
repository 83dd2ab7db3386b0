"""Seeds, devices, atomic writes and output-path checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

from mlmm.errors import MlmmError
from mlmm.utils import (
    _temporary_stem,
    atomic_write,
    check_name_length,
    check_output_file,
    derive_seed,
    host_tag,
    resolve_device,
    rng_for,
    torch_seed_for,
)


def test_derive_seed_is_the_seed_followed_by_crc32_of_each_key():
    """crc32, not the per-process salted ``hash()``: the same streams in every run."""
    expected = np.random.SeedSequence([7, zlib.crc32(b"test-mask"), zlib.crc32(b"3")])
    assert derive_seed(7, "test-mask", 3).entropy == expected.entropy
    assert (derive_seed(7, "test-mask", 3).generate_state(4) == expected.generate_state(4)).all()


def test_keys_and_seeds_give_different_streams():
    draws = {
        (seed, keys): rng_for(seed, *keys).integers(0, 2**62)
        for seed in (0, 1)
        for keys in (("train-mask",), ("test-mask",), ("test-mask", "mcar:0.5"), ())
    }
    assert len(set(draws.values())) == len(draws)
    assert rng_for(0, "a").integers(0, 2**62) == rng_for(0, "a").integers(0, 2**62)
    assert derive_seed(0, "a", "b").entropy != derive_seed(0, "ab").entropy


def test_torch_seed_is_a_non_negative_63_bit_integer():
    seeds = [torch_seed_for(s, "weights") for s in range(20)]
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)
    assert len(set(seeds)) == 20
    torch.manual_seed(seeds[0])  # accepted by torch


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0", None])
def test_bad_seed(seed):
    with pytest.raises(MlmmError, match="seed must be a non-negative integer"):
        derive_seed(seed, "x")


def test_numpy_integer_seed_is_accepted():
    assert derive_seed(np.int64(4), "x").entropy == derive_seed(4, "x").entropy


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(MlmmError, match="no CUDA GPU is available; use --device cpu"):
            resolve_device(name)
    with pytest.raises(MlmmError, match="unknown device 'gpu0'; use 'cpu', 'cuda'"):
        resolve_device("gpu0")


def test_auto_picks_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_atomic_write_writes_text_and_bytes(tmp_path):
    with atomic_write(tmp_path / "sub" / "a.txt") as fh:
        fh.write("hello")
    assert (tmp_path / "sub" / "a.txt").read_text() == "hello"
    with atomic_write(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "sub"]


def test_atomic_write_leaves_no_partial_file_when_the_body_raises(tmp_path):
    target = tmp_path / "table.csv"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as fh:
        fh.write("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    target.write_text("previous")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as fh:
        fh.write("partial")
        raise KeyboardInterrupt
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_on_a_full_disk_is_one_line_and_still_an_oserror(tmp_path, monkeypatch):
    """A full disk while writing came out as a bare OSError: a traceback in the CLI."""
    import errno

    from mlmm.errors import OutputWriteError

    target = tmp_path / "table.csv"
    target.write_text("previous")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(MlmmError) as info, atomic_write(target) as fh:
        fh.write("new")
    err = info.value
    assert isinstance(err, OutputWriteError) and isinstance(err, OSError)
    assert err.errno == errno.ENOSPC and err.strerror == "No space left on device"
    assert str(err) == (
        f"cannot write {target} (No space left on device); free some disk space or choose "
        f"another path; the earlier file is unchanged"
    )
    assert target.read_text() == "previous" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(OSError, match="nothing was written"), atomic_write(tmp_path / "n") as fh:
        fh.write("new")
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_refused_by_permissions_does_not_blame_the_disk(tmp_path, monkeypatch):
    """Every write error advised 'free some disk space', also a permission refused."""
    import errno
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)  # a folder this user may not write to
    with pytest.raises(MlmmError) as info, atomic_write(tmp_path / "t.csv") as fh:
        fh.write("new")
    assert str(info.value) == (
        f"cannot write {tmp_path / 't.csv'} (Permission denied); choose another path; nothing "
        f"was written"
    )


def _reaped() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.skipif(os.name != "posix", reason="writers are judged alive by os.kill(pid, 0)")
def test_temporaries_of_writers_killed_mid_write_are_removed_by_the_next_write(tmp_path):
    """kill -9 during an atomic write left its hidden .NAME.*.tmp beside the output forever;
    the next write removes it, and never the temporary of a writer still alive."""
    target = tmp_path / "table.csv"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from mlmm.utils import atomic_write\n"
            f"with atomic_write({str(target)!r}) as fh:\n"
            "    fh.write('half a table')\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    [killed] = tmp_path.glob(".table.csv.*.tmp")
    assert killed.name.startswith(f".table.csv.p{writer.pid}-h")
    host = killed.name.split("-h")[1][:8]
    alive = subprocess.Popen(["sleep", "60"])  # a process still writing the table
    try:
        planted = {
            "live": tmp_path / f".table.csv.p{alive.pid}-h{host}.abc123_x.tmp",
            "own": tmp_path / f".table.csv.p{os.getpid()}-h{host}.zz.tmp",  # another thread's
            "another host": tmp_path / f".table.csv.p{_reaped()}-h00000000.q1.tmp",
            "older mlmm": tmp_path / ".table.csv.k2j3l4m5.tmp",  # names no writer
            "another target": tmp_path / f".table.csv.bak.p{_reaped()}-h{host}.a1.tmp",
            "not ours": tmp_path / f".table.csv.p{_reaped()}-h{host}.notes.txt",
        }
        for path in planted.values():
            path.write_text("x")
        with atomic_write(target) as fh:
            fh.write("whole table")
        assert target.read_text() == "whole table"
        assert not killed.exists()
        assert all(path.exists() for path in planted.values())
    finally:
        alive.kill()
        alive.wait()
    with atomic_write(target) as fh:  # its writer is gone now
        fh.write("again")
    left = {path for path in planted.values() if path.exists()}
    assert left == set(planted.values()) - {planted["live"]}


def test_the_writer_tag_tells_apart_machines_cloned_with_one_name_and_machine_id(
    tmp_path, monkeypatch
):
    """Two machines (or containers of one image) of one host name and machine id, in their
    first PID namespace (whose id is the same on every Linux), had one writer tag: each
    removed the other's live temporaries on a shared disk as those of writers gone. The boot
    id (random per machine and boot) tells them apart."""
    files = []
    for boot in ("0f3e", "9a1c"):
        file = tmp_path / f"boot-{boot}"
        file.write_text(f"{boot}-machine-boot\n")
        files.append(file)
    tags = set()
    for file in files:
        monkeypatch.setattr("mlmm.utils._HOST_FILES", ("/etc/machine-id", str(file)))
        tags.add(host_tag())
    assert len(tags) == 2


def test_a_file_name_too_long_for_a_temporary_beside_it_is_written(tmp_path):
    """A file name of 250 characters (within the 255 file systems allow) could not be written:
    its temporary file's name, the name plus about 15 characters, was too long."""
    target = tmp_path / ("r" * 246 + ".csv")
    with atomic_write(target) as fh:
        fh.write("x")
    assert target.read_text() == "x" and list(tmp_path.iterdir()) == [target]
    other = tmp_path / ("r" * 246 + ".tsv")  # the same start: another temporary name
    stale = tmp_path / f".{_temporary_stem(target.name)}.p{_reaped()}-h{host_tag()}.k.tmp"
    stale.write_text("x")
    with atomic_write(other) as fh:
        fh.write("y")
    assert stale.exists()
    with atomic_write(target) as fh:
        fh.write("z")
    assert not stale.exists() and target.read_text() == "z"


def test_output_write_error_survives_pickling_and_copy():
    """It could not be pickled (a process pool or a Ray task raising it) nor copied: OSError's
    reduction rebuilt it from (errno, strerror) without its message."""
    import copy
    import errno
    import pickle

    from mlmm.errors import OutputWriteError

    err = OutputWriteError("cannot write t.csv (No space left on device)", errno.ENOSPC, "No")
    for again in (pickle.loads(pickle.dumps(err)), copy.copy(err)):
        assert type(again) is OutputWriteError and str(again) == str(err)
        assert (again.errno, again.strerror) == (errno.ENOSPC, "No")


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    import os
    import stat

    from mlmm.utils import atomic_write

    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    with atomic_write(tmp_path / "atomic.txt") as fh:
        fh.write("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)


def test_check_output_file_refuses_what_cannot_be_written(tmp_path):
    assert check_output_file(tmp_path / "new" / "table.csv") == tmp_path / "new" / "table.csv"
    (tmp_path / "old.csv").write_text("a\n")
    check_output_file(tmp_path / "old.csv")  # an existing file is replaced atomically
    (tmp_path / "afile").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    for path, phrase in (
        (tmp_path, "is a directory; give a file path"),
        (tmp_path / "afile" / "t.csv", "afile is a file"),
        (tmp_path / "fifo", "is not a regular file"),  # refused unopened (opening would hang)
    ):
        with pytest.raises(MlmmError, match=phrase):
            check_output_file(path)


def test_an_output_that_is_an_input_is_refused_by_any_name(tmp_path, monkeypatch):
    store = tmp_path / "same.db"
    store.write_bytes(b"SQLite format 3\x00" + bytes(100))
    (tmp_path / "link.db").symlink_to(store)
    monkeypatch.chdir(tmp_path)
    for out in (store, "same.db", "./sub/../same.db", tmp_path / "link.db"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(MlmmError, match="is the file it is made from"):
            check_output_file(out, "HTML", inputs=["same.db"], what="report")
    # a store that does not exist yet is compared by its resolved path
    with pytest.raises(MlmmError, match="is the file it is made from"):
        check_output_file("new.html", "HTML", inputs=[tmp_path / "new.html"])


@pytest.mark.parametrize(
    "content, kind, phrase",
    [
        (b"SQLite format 3\x00" + bytes(100), "HTML", "is an SQLite database"),
        (b"SQLite format 3\x00" + bytes(100), None, "is an SQLite database"),
        (b"\\documentclass{article}", "HTML", "is not a HTML file"),
        (b"PAR1\x00\x01", "CSV", "is not a CSV file"),
        (b"a,b\n1,2\n", "Parquet", "is not a Parquet file"),
        (b"a,b\n1,2\n", "parameters", "is not a parameters file"),
        # a user's YAML holding the keys nested, not a file of mlmm tune --params-out
        (b"runs:\n  - method: hemis\n    params: {}\n", "parameters", "not a parameters"),
    ],
)
def test_an_existing_file_of_another_kind_is_refused(tmp_path, content, kind, phrase):
    path = tmp_path / "out.file"
    path.write_bytes(content)
    with pytest.raises(MlmmError, match=phrase):
        check_output_file(path, kind)
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    "content, kind",
    [
        (b"", "HTML"),
        (b"\n<!DOCTYPE html>\n<html>", "HTML"),
        (b"<HTML><body>", "HTML"),
        (b"a,b\n1,2\n", "CSV"),
        (b"PAR1\x00", "Parquet"),
        (b"# mlmm tune: best of 2 trials\nmethod: hemis\nparams: {}\ntrainer: {}\n", "parameters"),
        (b"method: hemis\nparams:\n  dropout: 0.1\n", "parameters"),
    ],
)
def test_an_earlier_output_of_the_same_kind_may_be_replaced(tmp_path, content, kind):
    path = tmp_path / "out.file"
    path.write_bytes(content)
    assert check_output_file(path, kind) == path
    assert check_output_file(tmp_path / "new.html", "HTML") == tmp_path / "new.html"


def test_an_output_name_too_long_for_the_file_system_is_one_line_before_the_work(tmp_path):
    """A --params-out, report, export or --output name over 255 bytes passed the checks made
    before the work and raised a bare OSError (a traceback), from the check itself or after
    the work; a folder name too long on the way did too."""
    name = "e" * 256 + ".csv"
    with pytest.raises(MlmmError) as info:
        check_output_file(tmp_path / name, "CSV", what="--out")
    assert str(info.value) == (
        f"cannot write {tmp_path / name}: its name is 260 bytes long, and this file system "
        f"takes names of 255 bytes at most; choose a shorter --out name (at most 255 bytes)"
    )
    with pytest.raises(MlmmError, match=r"^cannot use .* as the --out \(File name too long\)"):
        check_output_file(tmp_path / ("d" * 300) / "t.csv", "CSV", what="--out")
    assert list(tmp_path.iterdir()) == []
    fits = tmp_path / ("e" * 251 + ".csv")  # 255 bytes: written, its temporary name shortened
    assert check_output_file(fits, "CSV") == fits
    with atomic_write(fits) as fh:
        fh.write("x")
    assert fits.read_text() == "x"


def test_a_name_is_measured_as_its_file_system_counts_and_never_refused_without_a_limit(
    tmp_path, monkeypatch
):
    """Windows' file systems take 255 UTF-16 code units: a name of 132 accented letters (260
    bytes in UTF-8) was refused there as over 255 bytes; and a file system that tells no
    limit (pathconf -1, or 0 from some FUSE ones) refused every name."""
    long = "é" * 128 + ".csv"  # 132 characters, 260 bytes
    with pytest.raises(MlmmError, match="its name is 260 bytes long"):
        check_name_length(tmp_path / long, "--out")
    monkeypatch.setattr("mlmm.utils._NAMES_IN_UTF16", True)
    monkeypatch.setattr(os, "pathconf", lambda *a: 255)
    check_name_length(tmp_path / long, "--out")  # 132 characters: taken
    with pytest.raises(MlmmError, match=r"is 256 characters long.*at most 255 characters"):
        check_name_length(tmp_path / ("λ" * 252 + ".csv"), "--out")
    check_name_length(tmp_path / long, "--out", beside=14)
    monkeypatch.setattr("mlmm.utils._NAMES_IN_UTF16", False)
    for unknown in (-1, 0):
        monkeypatch.setattr(os, "pathconf", lambda *a, unknown=unknown: unknown)
        check_name_length(tmp_path / long, "--out")
