"""Test session settings.

One intra-op thread: the test models are tiny, and on small shared machines several threads
per process oversubscribe the cores (tens of times slower), see docs/developer.md.

Default stop-signal handling: a shell that starts pytest in the background without job control
ignores SIGINT in it, and ``nohup`` ignores SIGHUP; children inherit an ignored signal, and
``mlmm`` rightly leaves an ignored signal ignored, so the tests of Ctrl-C, SIGTERM and SIGHUP
would test that instead. The session starts from the defaults (a test that needs a signal
ignored sets it itself).
"""

import itertools
import signal
import sys
import textwrap

import pytest
import torch

torch.set_num_threads(1)

signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
if hasattr(signal, "SIGHUP"):
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

_plugin_ids = itertools.count()


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """The name of an importable module (in ``tmp_path``) that registers the method
    ``plugin-fusion`` (late-fusion under another name); the registration is undone after the
    test, so the registry-driven tests never see it."""
    from mlmm.methods import METHODS

    name = f"mlmm_test_plugin_{next(_plugin_ids)}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from mlmm.methods.combination.late_fusion import LateFusion
            from mlmm.methods.registry import register_method


            @register_method(
                "plugin-fusion", family="combination", subtype="ensemble", paper="a test plugin"
            )
            class PluginFusion(LateFusion):
                \"\"\"late-fusion under another name.\"\"\"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    yield name
    sys.modules.pop(name, None)


_SLOW_HEMIS = """\
import time

from mlmm.methods.registry import register_method
from mlmm.methods.representation.hemis import HeMIS


@register_method("slow-hemis", family="representation", subtype="composition", paper="a test")
class SlowHemis(HeMIS):
    \"\"\"hemis, {delay} s slower per training batch: a run long enough to be killed mid-way.\"\"\"

    def forward(self, batch):
        if self.training:
            time.sleep({delay})
        return super().forward(batch)
"""


@pytest.fixture
def slow_hemis_plugin(tmp_path, monkeypatch):
    """Write a plugin module into ``tmp_path`` registering ``slow-hemis`` (hemis, ``delay``
    seconds slower per training batch, the same weights) for a subprocess to load with
    ``--plugin``; call it with ``delay`` and ``name``, it returns the module name. Should the
    test import it too (a spec's ``plugins:`` read in-process), the registration is undone
    after the test, so the registry-driven tests never see it."""
    from mlmm.methods import METHODS

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    names = []

    def write(delay: float = 0.02, name: str = "slow_hemis_plugin") -> str:
        (tmp_path / f"{name}.py").write_text(_SLOW_HEMIS.format(delay=delay))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def kill_mid_training(command, cwd, env, folder, pattern, epochs, timeout=120.0, poll=0.05):
    """Start ``command`` (an ``mlmm`` subprocess that trains with a checkpoint), SIGKILL it once
    the checkpoint ``folder.glob(pattern)`` holds ``epochs`` written epochs (or at ``timeout``),
    assert it was killed mid-training, not finished, and return the epochs written."""
    import json
    import subprocess
    import time

    process = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE)
    deadline, written = time.monotonic() + timeout, 0
    while written < epochs and process.poll() is None and time.monotonic() < deadline:
        time.sleep(poll)
        try:
            [state] = folder.glob(pattern)
            running = json.loads(state.read_text())["running"]
            written = len(running["history"]["epochs"]) if running else 0
        except (OSError, ValueError, KeyError, TypeError):
            continue
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL  # killed mid-training, not finished
    return written


@pytest.fixture
def killed_mid_training():
    """:func:`kill_mid_training`, for the kill-and-resume tests."""
    return kill_mid_training
