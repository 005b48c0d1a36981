"""brainviewer.limits: named limits from the environment, and the process-wide slots for a scan's heavy work."""

from __future__ import annotations

import threading
import time

import pytest

from brainviewer import limits


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 7), ("", 7), ("12", 12), ("4_096", 4096), ("0", 7), ("-3", 7), ("lots", 7)]
)
def test_env_limit_reads_whole_numbers_and_falls_back(monkeypatch: pytest.MonkeyPatch, raw, expected) -> None:
    if raw is None:
        monkeypatch.delenv("BRAINVIEWER_TEST_LIMIT", raising=False)
    else:
        monkeypatch.setenv("BRAINVIEWER_TEST_LIMIT", raw)
    assert limits.env_limit("BRAINVIEWER_TEST_LIMIT", 7) == expected


def test_scan_slots_bound_the_heavy_work_running_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "_SCAN_SLOTS", threading.BoundedSemaphore(2))
    lock, running, peak = threading.Lock(), [0], [0]

    def work() -> None:
        with limits.scan_slot():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak[0] == 2 and running[0] == 0


def test_a_failing_scan_gives_its_slot_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "_SCAN_SLOTS", threading.BoundedSemaphore(1))
    with pytest.raises(ValueError), limits.scan_slot():
        raise ValueError("a bad scan")
    with limits.scan_slot():  # would block forever if the slot had been kept
        pass


def test_an_upload_keeps_the_newest_scans_that_fit_the_session_budget() -> None:
    import io

    import numpy as np
    from PIL import Image

    from brainviewer.views.review_sources import items_from_uploads

    def png(seed: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
        return buffer.getvalue()

    files = [(f"scan_{n}.png", png(n)) for n in range(5)]  # 4,096 bytes decoded each
    items, errors = items_from_uploads(files, max_bytes=10_000)
    assert [item.name for item in items] == ["scan_3.png", "scan_4.png"]
    assert len(errors) == 1 and "the 3 read first were dropped" in errors[0]
    assert "BRAINVIEWER_MAX_SESSION_MB" in errors[0]
    items, errors = items_from_uploads(files[:1], max_bytes=100)  # one scan over the budget is still shown
    assert [item.name for item in items] == ["scan_0.png"] and errors == []
    items, errors = items_from_uploads(files)  # the default budget holds them all
    assert len(items) == 5 and errors == []
