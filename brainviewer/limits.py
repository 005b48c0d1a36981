"""Resource limits: every budget the readers and the app check before doing work, as named settings.

Each limit is a module-level constant in the module that enforces it, read once from an environment
variable with :func:`env_limit` (so an operator raises it without editing code) and documented in the
README's table of limits. Messages name the limit and the variable: :func:`raise_hint`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

MIB = 1024**2


def env_limit(variable: str, default: int, minimum: int = 1) -> int:
    """The whole number in ``$variable``, or ``default`` when unset, blank or invalid (logged).

    Args:
        variable: environment variable name, e.g. ``BRAINVIEWER_MAX_SCAN_PIXELS``.
        default: value used when the variable is not a whole number >= ``minimum``.
        minimum: smallest accepted value.
    """
    raw = os.environ.get(variable, "").strip().replace("_", "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        logger.warning("%s=%r is not a whole number; using %s", variable, raw, default)
        return default
    if value < minimum:
        logger.warning("%s=%s is below %s; using %s", variable, value, minimum, default)
        return default
    return value


def raise_hint(variable: str) -> str:
    """The sentence every limit message ends with: how an operator raises it."""
    return f"(An operator can raise this limit with the environment variable {variable}.)"


MAX_CONCURRENT_SCANS_ENV = "BRAINVIEWER_MAX_CONCURRENT_SCANS"
#: Scans one server process decodes, segments or shrinks for display at the same time, all sessions together.
MAX_CONCURRENT_SCANS = env_limit(MAX_CONCURRENT_SCANS_ENV, 2)
_SCAN_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_SCANS)


@contextmanager
def scan_slot() -> Iterator[None]:
    """Hold one of the process's :data:`MAX_CONCURRENT_SCANS` slots while doing a scan's heavy work.

    Reading an upload, running the model on a scan and making its display copy each take a few hundred MiB
    for a scan at the pixel budget (a 4096 x 4096 16-bit RGB slice is 96 MiB decoded, and its float copies
    more); ten visitors doing it at once would need ten times that. With the slots, the others wait (their
    spinner turns) and the server's peak stays near ``MAX_CONCURRENT_SCANS`` times one scan's. On a CPU with
    few cores more parallel work would not finish sooner anyway.
    """
    with _SCAN_SLOTS:
        yield
