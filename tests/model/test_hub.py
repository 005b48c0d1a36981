"""Hub weights: download, cache, revisions, private repos, offline use and push, against a local stand-in.

The real Hub is never contacted: the ``hub`` fixture points ``huggingface_hub`` at
:class:`tests.hub_standin.HubStandIn` (``127.0.0.1``) and installs a request hook that fails any request
to another host. Outside that fixture the conftest's ``HF_HUB_OFFLINE=1`` stays in force.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from brainviewer.model.hub import HubError, download_weights, push_weights
from brainviewer.model.preprocessing import Preprocessing
from brainviewer.model.segmenter import Segmenter, WeightsError, build_model, save_weights
from brainviewer.model.weights import resolve_segmenter, resolve_weights_folder
from tests.hub_standin import HubStandIn

ALICE = "hf_alice_token"
BOB = "hf_bob_token"
WEIGHT_FILES = {"config.json", "model.safetensors", "preprocessing.json", "README.md"}
FAST_S = 10.0  # "within seconds": loose, so a loaded CI machine does not flake


def _local_hosts_only(request: object) -> None:
    host = request.url.host  # type: ignore[attr-defined]
    if host not in ("127.0.0.1", "localhost"):
        raise RuntimeError(f"test tried to reach {request.url} (only the Hub stand-in is allowed)")  # type: ignore[attr-defined]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A running Hub stand-in with users alice and bob; huggingface_hub pointed at it, online, empty cache."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    server = HubStandIn().start()
    url = server.url
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent-harnesses.json"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)

    def guarded_client():
        client = _http.default_client_factory()
        client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], _local_hosts_only]}
        return client

    _http.set_client_factory(guarded_client)
    server.add_user("alice", ALICE)
    server.add_user("bob", BOB)
    try:
        yield server
    finally:
        server.stop()
        _http.set_client_factory(_http.default_client_factory)
    assert server.unhandled == [], "the stand-in got requests it does not implement"


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture as ``tiny_weights``, different (seeded) parameters."""
    torch.manual_seed(1)
    model = build_model("Unet", "resnet18", in_channels=3, encoder_depth=3, decoder_channels=(32, 16, 8))
    folder = tmp_path_factory.mktemp("weights-v2") / "tiny-v2"
    return save_weights(model, folder, Preprocessing(input_size=64, mean=[0.1] * 3, std=[0.2] * 3), card="# v2\n")


def test_download_lands_in_cache_and_loads(hub: HubStandIn, tiny_weights: Path) -> None:
    from huggingface_hub import constants

    sha = hub.add_folder("alice/tiny", tiny_weights)
    folder = download_weights("alice/tiny")

    assert folder.is_relative_to(Path(constants.HF_HUB_CACHE).resolve())
    assert folder.name == sha  # the snapshot of the commit main pointed at
    assert {p.name for p in folder.iterdir()} == WEIGHT_FILES  # .gitattributes is not a weights file
    for name in WEIGHT_FILES:
        assert (folder / name).read_bytes() == (tiny_weights / name).read_bytes()
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    probs = Segmenter.from_folder(folder, device="cpu").predict_probs(image)
    expected = Segmenter.from_folder(tiny_weights, device="cpu").predict_probs(image)
    np.testing.assert_array_equal(probs, expected)
    assert hub.cdn_auth_headers == 0


def test_cache_hit_needs_no_hub(hub: HubStandIn, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    sha = hub.add_folder("alice/tiny", tiny_weights)
    first = download_weights("alice/tiny")
    hub.stop()  # connection refused from now on

    start = time.monotonic()
    assert download_weights("alice/tiny") == first  # network fails -> cached snapshot of main
    assert download_weights("alice/tiny", revision=sha) == first
    assert time.monotonic() - start < FAST_S

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert download_weights("alice/tiny") == first
    assert Segmenter.from_folder(first, device="cpu").prep.input_size == 64


@pytest.fixture
def no_local_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure a repo id is not also a local folder (cwd or weights/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(tmp_path / "no-local-weights"))


def test_revision_pinning(hub: HubStandIn, tiny_weights: Path, other_weights: Path, no_local_weights: None) -> None:
    old_sha = hub.add_folder("alice/tiny", tiny_weights)
    hub.tag("alice/tiny", "v1", old_sha)
    new_sha = hub.add_folder("alice/tiny", other_weights)  # main moves on
    hub.add_folder("alice/tiny", other_weights, branch="v2-branch")

    old, new = _tensors(tiny_weights), _tensors(other_weights)
    assert not _same_tensors(old, new)
    assert _same_tensors(_tensors(download_weights("alice/tiny", revision=old_sha)), old)
    assert _same_tensors(_tensors(download_weights("alice/tiny", revision="v1")), old)
    assert _same_tensors(_tensors(download_weights("alice/tiny")), new)
    assert download_weights("alice/tiny").name == new_sha
    assert _same_tensors(_tensors(download_weights("alice/tiny", revision="v2-branch")), new)

    image = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    probs_old = resolve_segmenter("alice/tiny", device="cpu", revision="v1").predict_probs(image)
    probs_new = resolve_segmenter("alice/tiny", device="cpu").predict_probs(image)
    assert np.abs(probs_old - probs_new).max() > 1e-4


def test_missing_repo_and_revision_fail_fast(hub: HubStandIn, tiny_weights: Path) -> None:
    start = time.monotonic()
    with pytest.raises(HubError, match=r"alice/nothing-here was not found.*HF_TOKEN"):
        download_weights("alice/nothing-here")
    assert time.monotonic() - start < FAST_S

    hub.add_folder("alice/tiny", tiny_weights)
    start = time.monotonic()
    with pytest.raises(HubError, match=r"alice/tiny has no revision 'v9'"):
        download_weights("alice/tiny", revision="v9")
    assert time.monotonic() - start < FAST_S


def test_bad_repo_id_is_refused_without_a_request(hub: HubStandIn) -> None:
    with pytest.raises(HubError, match="not a Hugging Face repo id"):
        download_weights("alice/bad name")
    assert hub.requests == []


def test_repo_without_weights_is_a_weights_error(hub: HubStandIn, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("# not weights\n")
    hub.add_folder("alice/notes", notes)
    with pytest.raises(WeightsError, match=r"has no config\.json or model\.safetensors"):
        download_weights("alice/notes")


def test_private_repo_needs_a_token(hub: HubStandIn, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = hub.add_folder("alice/secret", tiny_weights, private=True)

    with pytest.raises(HubError, match=r"or it is private and no token was given.*HF_TOKEN"):
        download_weights("alice/secret")
    with pytest.raises(HubError, match="the token given cannot read it"):
        download_weights("alice/secret", token=BOB)
    with pytest.raises(HubError, match="token was rejected"):
        download_weights("alice/secret", token="hf_not_a_token")

    assert download_weights("alice/secret", token=ALICE).name == sha
    monkeypatch.setenv("HF_TOKEN", ALICE)
    assert download_weights("alice/secret").name == sha
    if hub.cdn_host == "localhost":  # the "CDN" is another origin: the token must not be sent there
        assert hub.cdn_auth_headers == 0


def test_offline_with_nothing_cached(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(HubError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\).*not in the Hub cache"):
        download_weights("alice/tiny")
    assert time.monotonic() - start < FAST_S
    assert hub.requests == []

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.stop()
    start = time.monotonic()
    with pytest.raises(HubError, match="the Hub cannot be reached, and it is not in the Hub cache"):
        download_weights("alice/tiny")
    assert time.monotonic() - start < FAST_S


def test_silent_host_times_out(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that accepts connections and never answers: huggingface_hub alone would wait forever."""
    from huggingface_hub import constants

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("BRAINVIEWER_HUB_TIMEOUT", "1")
    try:
        start = time.monotonic()
        with pytest.raises(HubError, match="the Hub cannot be reached"):
            download_weights("alice/tiny")
        assert time.monotonic() - start < FAST_S
    finally:
        silent.close()


def test_push_then_download(hub: HubStandIn, tiny_weights: Path) -> None:
    url = push_weights(tiny_weights, "alice/pushed", token=ALICE)

    sha = url.rsplit("/", 1)[1]
    assert url == f"{hub.url}/alice/pushed/commit/{sha}"
    assert hub.repos["alice/pushed"].private  # private by default
    folder = download_weights("alice/pushed", revision=sha, token=ALICE)
    assert _same_tensors(_tensors(folder), _tensors(tiny_weights))
    assert (folder / "README.md").read_text() == "# tiny test model\n"
    assert {p.name for p in folder.iterdir()} == WEIGHT_FILES


def test_push_adds_a_card_and_leaves_the_folder_alone(hub: HubStandIn, tiny_weights: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessing.json"):
        (bare / name).write_bytes((tiny_weights / name).read_bytes())
    (bare / "last.pt").write_bytes(b"not for the Hub")

    sha = push_weights(bare, "alice/bare", token=ALICE, private=False).rsplit("/", 1)[1]

    pushed = hub.repos["alice/bare"].commits[sha]
    assert set(pushed) == WEIGHT_FILES | {".gitattributes"}  # last.pt stays local
    assert pushed["README.md"].startswith(b"---\nlibrary_name: segmentation-models-pytorch")
    assert not hub.repos["alice/bare"].private
    left = sorted(p.name for p in bare.iterdir())
    assert left == ["config.json", "last.pt", "model.safetensors", "preprocessing.json"]


def test_push_refusals(hub: HubStandIn, tiny_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="needs a token with write access"):
        push_weights(tiny_weights, "alice/pushed")
    assert hub.requests == []
    with pytest.raises(HubError, match=r"refused to write to alice/pushed \(403\)"):
        push_weights(tiny_weights, "alice/pushed", token=BOB)
    with pytest.raises(WeightsError, match="not a complete weights folder"):
        push_weights(tmp_path, "alice/pushed", token=ALICE)


def test_resolve_weights_folder_with_a_repo_id(
    hub: HubStandIn, tiny_weights: Path, no_local_weights: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = hub.add_folder("alice/tiny", tiny_weights)

    folder = resolve_weights_folder("alice/tiny")
    assert folder.name == sha and (folder / "model.safetensors").is_file()
    assert resolve_weights_folder("alice/tiny", revision=sha) == folder

    hub.stop()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert resolve_weights_folder("alice/tiny") == folder
    with pytest.raises(WeightsError, match="offline mode is on"):  # HubError is a WeightsError
        resolve_weights_folder("alice/other")


def test_cli_push(
    hub: HubStandIn, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from brainviewer.cli import main as cli_main

    assert cli_main(["push", str(tiny_weights), "alice/cli"]) == 2  # no token anywhere
    assert "needs a token with write access" in capsys.readouterr().err

    monkeypatch.setenv("HF_TOKEN", ALICE)
    assert cli_main(["push", str(tiny_weights), "alice/cli", "--public", "--message", "first weights"]) == 0
    url = capsys.readouterr().out.strip()
    sha = url.rsplit("/", 1)[1]
    assert url == f"{hub.url}/alice/cli/commit/{sha}"
    assert not hub.repos["alice/cli"].private
    assert _same_tensors(_tensors(download_weights("alice/cli", revision=sha)), _tensors(tiny_weights))
