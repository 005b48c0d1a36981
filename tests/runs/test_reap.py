"""A process the app launched is reaped as soon as it ends, with no page asking about it: no zombie."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from brainviewer.runs import process


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to see a zombie")
def test_a_finished_child_is_reaped_without_polling():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    process.track_child(proc)
    stat = Path("/proc") / str(proc.pid) / "stat"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (stat.exists() or proc.returncode is None):
        time.sleep(0.05)  # nothing here calls poll(), wait() or process_alive()
    assert proc.returncode == 0
    assert not stat.exists(), f"{proc.pid} is still in the process table: {stat.read_text() if stat.exists() else ''}"
    assert proc.pid not in process._CHILDREN
