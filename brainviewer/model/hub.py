"""Model weights on the Hugging Face Hub: download (cached, works offline once cached) and push.

A Hub model repo holds a weights folder (see :mod:`brainviewer.model.segmenter`): ``config.json``,
``model.safetensors``, ``preprocessing.json`` and the model card ``README.md``. Nothing here contacts
the Hub unless one of its functions is called.

Downloads go through ``huggingface_hub.snapshot_download`` and its cache (``$HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``): a second call finds the files there; when the Hub cannot be reached
(``HF_HUB_OFFLINE=1``, no network, Hub down) the cached snapshot of that revision is used.

Timeouts. ``huggingface_hub`` 2.4.0 gives its shared ``httpx2`` client no timeout (``timeout=None``) and
sends ``repo_info`` and ``list_repo_tree`` requests without one, so a host that drops packets, or accepts a
connection and never answers, hangs a download forever. While :func:`download_weights` or
:func:`push_weights` runs, every ``huggingface_hub`` request is bounded (:func:`hub_timeouts`: connect 5 s,
read/write ``$BRAINVIEWER_HUB_TIMEOUT``, default 10 s; 120 s for read/write while pushing) by a request hook
added to its client factory on the first call (the factory in place, the default or a user's own, is
wrapped, not replaced; the hook does nothing while no call is in flight). A refused connection fails at
once, and an unreachable or silent Hub with nothing cached fails after about two bounded requests.
Only when the connection drops after the file list was fetched does ``huggingface_hub`` retry a file's
metadata (5 bounded attempts with 1-8 s back-off) before the error is raised.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from brainviewer.model.segmenter import CONFIG_FILE, WEIGHTS_FILE, WeightsError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

#: Files of a Hub repo that make up a weights folder (everything else in the repo is not downloaded).
ALLOW_PATTERNS: list[str] = [
    "config.json",
    "model.safetensors",
    "preprocessing.json",
    "README.md",
    "*.json",
    "evaluation/*",  # the evaluate report the card's Hub metadata quotes (brainviewer.model.hub_card)
]
#: The weights folder's sub-folder of an evaluate report, pushed with it.
EVALUATION_SUBDIR = "evaluation"
#: Environment variable: seconds a Hub request may wait for data while downloading (default 10).
TIMEOUT_ENV = "BRAINVIEWER_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
DEFAULT_COMMIT_MESSAGE = "Upload brainviewer weights"
#: Read/write bound (seconds) while pushing: a commit of large files can take the Hub a while to process.
PUSH_TIMEOUT_S = 120.0


class HubError(WeightsError):
    """The Hugging Face Hub refused or could not serve a request. The message says how to fix it."""


def hub_token(token: str | None = None) -> str | None:
    """The token to send: ``token``, else ``$HF_TOKEN``, else None (``huggingface_hub`` then uses the token
    saved by ``hf auth login``, if any)."""
    return token or os.environ.get("HF_TOKEN") or None


def hub_timeouts() -> dict[str, float]:
    """Upper bounds (seconds) for each phase of a Hub request during a download."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        read = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError as err:
        raise HubError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds; unset it or set e.g. 10.") from err
    read = max(read, 0.1)
    return {"connect": min(CONNECT_TIMEOUT_S, read), "read": read, "write": read, "pool": read}


# -- bounded timeouts -------------------------------------------------------------------------------------------
_bound_lock = threading.Lock()
_install_lock = threading.Lock()
_active_bounds: list[dict[str, float]] = []  # one entry per download/push in flight in this process


def _bound_request_timeouts(request: object) -> None:
    """httpx2 request hook: while a download or push runs, cap every timeout phase (None = unbounded).

    With several calls in flight the most lenient bound of each phase applies. Outside them requests are
    left untouched.
    """
    with _bound_lock:
        active = list(_active_bounds)
    if not active:
        return
    extensions = dict(getattr(request, "extensions", {}) or {})
    timeout = dict(extensions.get("timeout") or {})
    for phase in ("connect", "read", "write", "pool"):
        bound = max(b[phase] for b in active)
        value = timeout.get(phase)
        if value is None or value > bound:
            timeout[phase] = bound
    extensions["timeout"] = timeout
    request.extensions = extensions  # type: ignore[attr-defined]


def _install_timeout_hook() -> None:
    """Wrap huggingface_hub's client factory once so that new clients carry :func:`_bound_request_timeouts`.

    Requests run in worker threads (per-file downloads) too, so the hook is process-wide rather than a
    context variable; it does nothing while no download or push is in flight.
    """
    from huggingface_hub.utils import _http

    with _install_lock:
        current = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
        if getattr(current, "_brainviewer_bounded", False):
            return
        # Closes the current client: the next request builds one through the wrapped factory.
        _http.set_client_factory(_bounded_factory(current))


def _bounded_factory(current: Callable[[], object]) -> Callable[[], object]:
    """``current`` (a client factory) with :func:`_bound_request_timeouts` added to its clients' request hooks."""

    def factory() -> object:
        client = current()
        hooks = client.event_hooks
        if _bound_request_timeouts not in hooks.get("request", []):
            hooks["request"] = [*hooks.get("request", []), _bound_request_timeouts]
            client.event_hooks = hooks
        return client

    factory._brainviewer_bounded = True  # type: ignore[attr-defined]
    return factory


@contextmanager
def _bounded_requests(bounds: dict[str, float]) -> Iterator[None]:
    _install_timeout_hook()
    with _bound_lock:
        _active_bounds.append(bounds)
    try:
        yield
    finally:
        with _bound_lock:
            _active_bounds.remove(bounds)


# -- download ---------------------------------------------------------------------------------------------------
def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"{repo_id!r} is not a Hugging Face repo id: use 'user/model' ({err}).") from err


def _revision_label(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


def download_weights(
    repo_id: str,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Download a weights folder from a Hub model repo (or find it in the cache) and return its local path.

    Args:
        repo_id: ``user/model``.
        revision: a branch, tag or full commit sha to pin (default: the ``main`` branch).
        token: for private repos; default ``$HF_TOKEN``, else the token saved by ``hf auth login``.
        cache_dir: the Hub cache to use (default ``$HF_HUB_CACHE``, ``~/.cache/huggingface/hub``).

    Returns:
        The snapshot folder in the cache, holding at least ``config.json`` and ``model.safetensors``.

    Raises:
        HubError: the repo or revision does not exist, is private and no (valid) token was given, or the Hub
            cannot be reached and nothing is cached; always within seconds (see the module docstring).
        WeightsError: the repo is reachable but does not hold a brainviewer weights folder.
    """
    import httpx2
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    _check_repo_id(repo_id)
    token = hub_token(token)
    label = _revision_label(repo_id, revision)
    where = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    timeouts = hub_timeouts()
    try:
        with _bounded_requests(timeouts):
            folder = snapshot_download(
                repo_id,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                allow_patterns=ALLOW_PATTERNS,
                etag_timeout=timeouts["read"],
            )
    except RevisionNotFoundError as err:
        raise HubError(
            f"{repo_id} has no revision {revision!r}. Give an existing branch, tag or full commit sha "
            f"(see the repo's 'Files and versions' tab), or leave the revision out to use main."
        ) from err
    except GatedRepoError as err:
        raise HubError(
            f"{repo_id} is gated: accept its conditions on the Hub with your account, then give a token "
            "(set HF_TOKEN or run `hf auth login`)."
        ) from err
    except RepositoryNotFoundError as err:
        if token is None:
            raise HubError(
                f"Repository {repo_id} was not found on the Hugging Face Hub, or it is private and no token was "
                "given. Check the id; for a private repo set HF_TOKEN (or run `hf auth login`) with a token "
                "that can read it."
            ) from err
        raise HubError(
            f"Repository {repo_id} was not found on the Hugging Face Hub, or the token given cannot read it "
            "(private repo of another account). Check the id and the token's permissions."
        ) from err
    except IncompleteSnapshotError as err:
        raise HubError(
            f"The cached copy of {label} in {where} is incomplete and the Hub cannot be reached to complete it. "
            "Connect to the internet and try again, or use a local weights folder."
        ) from err
    except LocalEntryNotFoundError as err:
        offline = constants.HF_HUB_OFFLINE or isinstance(err.__cause__, OfflineModeIsEnabled)
        reason = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "the Hub cannot be reached"
        fix = "unset HF_HUB_OFFLINE" if offline else "connect to the internet"
        raise HubError(
            f"Cannot download {label}: {reason}, and it is not in the Hub cache at {where}. "
            f"Download it once online ({fix}), or use a local weights folder."
        ) from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise HubError(
                f"The Hub refused access to {repo_id} ({status}): the token was rejected or lacks read access. "
                "Check HF_TOKEN (or run `hf auth login` again)."
            ) from err
        raise HubError(f"The Hub answered {status} for {label}: {err}. Try again later.") from err
    except (httpx2.HTTPError, OSError) as err:
        # Network failures after the file list was fetched (connection lost mid-download, timeouts).
        raise HubError(
            f"Downloading {label} failed: {type(err).__name__}: {err}. Check the connection and retry."
        ) from err

    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise WeightsError(
            f"{label} has no {' or '.join(missing)}: it is not a brainviewer weights repo. Push one with "
            "`python -m brainviewer push WEIGHTS_FOLDER user/model`."
        )
    logger.info("weights %s at %s", label, folder)
    return folder


# -- push -------------------------------------------------------------------------------------------------------
def _card_for(folder: Path, repo_id: str) -> str:
    """A minimal model card for a folder that has none (the folder itself is not modified)."""
    from brainviewer.model.hub_card import folder_card_data, with_front_matter

    body = (
        f"# {repo_id}\n\nbrainviewer tumour-segmentation weights (`{folder.name}`). No model card was "
        "saved with this folder. Not a medical device: for research and review, never for diagnosis.\n"
    )
    return with_front_matter(body, folder_card_data(folder))


def push_weights(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = True,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Upload a weights folder and its model card to a Hub model repo, creating the repo if needed.

    Only the weights files are uploaded (``config.json``, ``model.safetensors``, ``preprocessing.json``,
    ``README.md``, other top-level ``*.json`` and the files of an ``evaluation/`` report). A folder
    without ``README.md`` gets a minimal card (written to the Hub only; the folder is left as it is).

    Args:
        folder: a complete weights folder.
        repo_id: ``user/model`` (or ``org/model``).
        token: a token with write access; default ``$HF_TOKEN``, else the ``hf auth login`` token.
        private: create the repo private (an existing repo keeps its visibility).
        commit_message: the commit title.

    Returns:
        The commit URL; its last path segment is the commit sha to pin with ``--revision``.

    Raises:
        WeightsError: ``folder`` is not a complete weights folder.
        HubError: no token, no write access, or the Hub refused the upload.
    """
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        raise WeightsError(f"{folder} is not a complete weights folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}).")
    _check_repo_id(repo_id)
    token = hub_token(token) or get_token()
    if not token:
        raise HubError(
            "Pushing to the Hub needs a token with write access: set HF_TOKEN or run `hf auth login` "
            "(create one at https://huggingface.co/settings/tokens)."
        )
    names = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file()
        and (p.name in (WEIGHTS_FILE, "README.md") or (p.suffix == ".json" and not p.name.startswith(".")))
    )
    report = folder / EVALUATION_SUBDIR
    if report.is_dir():  # the evaluate report whose numbers the card's model-index carries
        names += sorted(
            f"{EVALUATION_SUBDIR}/{p.name}" for p in report.iterdir() if p.is_file() and not p.name.startswith(".")
        )
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names]
    if "README.md" not in names:
        card = _card_for(folder, repo_id).encode()
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
    bounds = hub_timeouts()
    bounds.update(read=max(bounds["read"], PUSH_TIMEOUT_S), write=max(bounds["write"], PUSH_TIMEOUT_S))
    api = HfApi(token=token)
    try:
        with _bounded_requests(bounds):
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403, 404):
            raise HubError(
                f"The Hub refused to write to {repo_id} ({status}): the token must have write access to the "
                f"'{repo_id.split('/')[0]}' namespace. Check HF_TOKEN or `hf auth login`."
            ) from err
        raise HubError(f"Pushing to {repo_id} failed ({status}): {err}") from err
    except (httpx2.HTTPError, OSError) as err:
        raise HubError(f"Pushing to {repo_id} failed: {type(err).__name__}: {err}. Check the connection.") from err
    logger.info("pushed %s to %s: %s", folder, repo_id, info.commit_url)
    return str(info.commit_url)
