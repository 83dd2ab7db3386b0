"""Downloads: a temporary file left by a download killed mid-transfer is removed by the next
download of the same file once its writer is gone; a live download's is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from mlmm.data.formats import _common
from mlmm.utils import temporary_prefix


def test_a_download_killed_mid_transfer_leaves_nothing_after_the_next_one(tmp_path):
    source = tmp_path / "f.csd"
    source.write_bytes(b"x" * 100_000)
    dest = tmp_path / "data" / "f.csd"
    script = textwrap.dedent(
        f"""
        import io, os
        from pathlib import Path
        from mlmm.data.formats import _common

        class Dying(io.BytesIO):  # a transfer killed (kill -9) after its first block
            def read(self, size=-1):
                if self.tell():
                    os._exit(9)
                return super().read(10)

        _common.urllib.request.urlopen = lambda url, timeout: Dying(b"y" * 100)
        _common.download("file:///nowhere", Path({str(dest)!r}), "mosi")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert killed.returncode == 9
    (left,) = dest.parent.iterdir()  # the partial file, named by its dead writer
    assert left.name != dest.name
    _common.download(source.as_uri(), dest, "mosi")  # no network: a file:// URL
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]
    assert dest.read_bytes() == source.read_bytes()


def test_a_live_downloads_temporary_file_is_left_alone(tmp_path):
    source = tmp_path / "f.csd"
    source.write_bytes(b"x" * 10)
    dest = tmp_path / "data" / "f.csd"
    dest.parent.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        prefix = temporary_prefix(dest).replace(f".p{os.getpid()}-", f".p{live.pid}-", 1)
        running = dest.parent / f"{prefix}abc123.tmp"
        running.write_bytes(b"partial")
        _common.download(source.as_uri(), dest, "mosi")
        assert running.exists() and dest.read_bytes() == b"x" * 10
    finally:
        live.kill()
        live.wait()
