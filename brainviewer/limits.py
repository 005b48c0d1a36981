"""Resource limits: every budget the readers and the app check before doing work, as named settings.

Each limit is a module-level constant in the module that enforces it, read once from an environment
variable with :func:`env_limit` (so an operator raises it without editing code) and documented in the
README's table of limits. Messages name the limit and the variable: :func:`raise_hint`.
"""

from __future__ import annotations

import logging
import os

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
