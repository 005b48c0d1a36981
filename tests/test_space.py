"""The Hugging Face Space: Dockerfile, .dockerignore and the README front matter.

No Docker daemon here, so the Dockerfile is parsed and checked, and the slow test does what a build
would: it runs the Dockerfile's pip installs in a fresh virtual environment (with
``BRAINVIEWER_FAST_SPACE_TEST=1``: one that sees the system packages, which skips the big installs),
copies the build context as ``.dockerignore`` filters it, starts the ``CMD`` with the Dockerfile's
``ENV`` on a free port and waits for ``/_stcore/health`` to answer ``ok``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
SPACE_DOC = ROOT / "docs" / "space.md"
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
HEALTH_WAIT_S = 90


# -- Dockerfile parsing -----------------------------------------------------------------------------------------
def parse_dockerfile(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, with comments dropped and ``\\`` continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def _all(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _all(instructions, "ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"use ENV KEY=VALUE, not {args!r}"
            env[key] = value
    return env


def _cmd(instructions: list[tuple[str, str]]) -> list[str]:
    commands = _all(instructions, "CMD")
    assert len(commands) == 1, "the Dockerfile needs exactly one CMD"
    cmd = json.loads(commands[0])  # exec form: no shell in between
    assert isinstance(cmd, list) and all(isinstance(c, str) for c in cmd)
    return cmd


def _option(cmd: list[str], name: str) -> str:
    assert name in cmd, f"CMD has no {name}"
    return cmd[cmd.index(name) + 1]


def _copies(instructions: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    result = []
    for args in _all(instructions, "COPY"):
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        result.append((parts[:-1], parts[-1]))
    return result


# -- .dockerignore ----------------------------------------------------------------------------------------------
def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.strip().startswith("#")]


def _match(path: list[str], pattern: list[str]) -> bool:
    """Go ``filepath.Match`` per path segment (``*`` never crosses ``/``), plus ``**`` for any depth."""
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_match(path[i:], pattern[1:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], pattern[0]) and _match(path[1:], pattern[1:])


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rules, as far as this repo needs them: a pattern is rooted at the context, matches a path or
    one of its parent folders (so a folder's whole content); ``**`` matches any depth; ``!`` re-includes;
    the last matching pattern wins."""
    ignored = False
    parts = relative.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern_parts = pattern.lstrip("!").strip("/").split("/")
        if any(_match(parts[: i + 1], pattern_parts) for i in range(len(parts))):
            ignored = not negate
    return ignored


def build_context() -> list[str]:
    """Repo files (relative, ``/``-separated) that ``COPY . ...`` sends, after ``.dockerignore``."""
    patterns = dockerignore_patterns()
    files = []
    for path in ROOT.rglob("*"):
        if path.is_file():
            relative = path.relative_to(ROOT).as_posix()
            if not _ignored(relative, patterns):
                files.append(relative)
    return sorted(files)


# -- front matter -----------------------------------------------------------------------------------------------
def front_matter(text: str) -> dict | None:
    """The YAML block a Space reads: the text must start with ``---``; None when it does not."""
    if not text.startswith("---"):
        return None
    lines = text.splitlines()
    try:
        end = lines.index("---", 1)
    except ValueError:
        raise AssertionError("front matter starts with --- but has no closing --- line") from None
    data = yaml.safe_load("\n".join(lines[1:end]))
    assert isinstance(data, dict), "front matter must be a YAML mapping"
    return data


def space_doc_front_matter() -> dict:
    """The block in docs/space.md that the lead pastes at the top of README.md."""
    match = re.search(r"```yaml\n(---\n.*?\n---)\n```", SPACE_DOC.read_text(), flags=re.DOTALL)
    assert match, "docs/space.md must hold the README front matter in a ```yaml block"
    data = front_matter(match.group(1) + "\n")
    assert data is not None
    return data


def check_front_matter(data: dict, port: int, where: str) -> None:
    for key in ("title", "emoji", "colorFrom", "colorTo", "sdk", "app_port", "pinned", "license", "short_description"):
        assert key in data, f"{where}: front matter lacks {key}"
    assert data["sdk"] == "docker", f"{where}: sdk must be docker (the Space builds the Dockerfile)"
    assert data["app_port"] == port, f"{where}: app_port {data['app_port']} but the container serves {port}"
    assert data["colorFrom"] in SPACE_COLORS and data["colorTo"] in SPACE_COLORS, where
    assert isinstance(data["pinned"], bool), where
    assert 0 < len(data["short_description"]) <= 60, f"{where}: short_description is 1-60 characters"
    assert data["license"] == "mit", f"{where}: license should match pyproject.toml (MIT)"


# -- static checks ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile()


def test_parse_dockerfile_joins_continuations(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text('# c\nFROM x:1\nENV A=1 \\\n    B="two words"\nRUN a \\\n  # note\n  && b\nCMD ["s", "t"]\n')
    parsed = parse_dockerfile(path)
    assert parsed == [("FROM", "x:1"), ("ENV", 'A=1 B="two words"'), ("RUN", "a && b"), ("CMD", '["s", "t"]')]
    assert _env(parsed) == {"A": "1", "B": "two words"}


def test_dockerignore_matching() -> None:
    patterns = ["runs", "**/__pycache__", "*.onnx", "tests", "!tests/keep.py"]
    assert _ignored("runs/a/last.pt", patterns)
    assert _ignored("brainviewer/__pycache__/x.pyc", patterns)
    assert _ignored("model.onnx", patterns)
    assert not _ignored("weights/m/model.onnx", patterns)  # Docker's *.onnx is root-level only
    assert _ignored("tests/test_x.py", patterns) and not _ignored("tests/keep.py", patterns)
    assert not _ignored("brainviewer/runs.py", patterns)


def test_base_image_user_and_port(instructions: list[tuple[str, str]]) -> None:
    froms = _all(instructions, "FROM")
    assert len(froms) == 1 and re.fullmatch(r"python:3\.\d+-slim", froms[0]), froms
    runs = " ".join(_all(instructions, "RUN"))
    assert re.search(r"useradd\b[^&;]*(--uid|-u) 1000\b", runs), "Spaces run as uid 1000: create that user"
    users = _all(instructions, "USER")
    assert users and users[-1] in ("user", "1000"), "the container must not run as root"
    assert [kw for kw, _ in instructions].index("CMD") > max(
        i for i, (kw, _) in enumerate(instructions) if kw == "USER"
    )

    cmd = _cmd(instructions)
    assert cmd[:3] == ["streamlit", "run", "app.py"] and (ROOT / "app.py").is_file()
    port = int(_option(cmd, "--server.port"))
    assert _all(instructions, "EXPOSE") == [str(port)]
    assert _option(cmd, "--server.address") == "0.0.0.0"
    assert _option(cmd, "--server.headless") == "true"
    assert 0 < int(_option(cmd, "--server.maxUploadSize")) <= 50
    assert _env(instructions)["BRAINVIEWER_DEMO"] == "1"
    health = " ".join(_all(instructions, "HEALTHCHECK"))
    assert "/_stcore/health" in health and f":{port}/" in health


def test_pinned_torch_matches_requirements(instructions: list[tuple[str, str]]) -> None:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.lower()] = version
    runs = " ".join(_all(instructions, "RUN"))
    for package in ("torch", "torchvision"):
        assert f"{package}=={pins[package]}" in runs, f"Dockerfile must install {package}=={pins[package]}"
    assert "-r /tmp/requirements.txt" in runs or "-r requirements.txt" in runs


def test_copy_sources_exist_and_context_is_complete(instructions: list[tuple[str, str]]) -> None:
    copies = _copies(instructions)
    assert copies, "the Dockerfile copies nothing"
    for sources, _dest in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source == "." or not _ignored(source, dockerignore_patterns()), f"COPY {source} is .dockerignored"
    context = build_context()
    assert not any(f.startswith(("runs/", ".git/", "tests/")) for f in context)
    assert not any("__pycache__" in f for f in context)
    needed = [
        "app.py",
        "requirements.txt",
        "brainviewer/__init__.py",
        "brainviewer/model/segmenter.py",
        "brainviewer/model/hub.py",
    ]
    needed += [p.relative_to(ROOT).as_posix() for p in (ROOT / "pages").glob("*.py")]
    assert set(needed) <= set(context), sorted(set(needed) - set(context))
    for name in (".streamlit/config.toml",):
        if (ROOT / name).exists():
            assert name in context


def test_space_front_matter(instructions: list[tuple[str, str]]) -> None:
    port = int(_option(_cmd(instructions), "--server.port"))
    check_front_matter(space_doc_front_matter(), port, "docs/space.md")
    data = front_matter((ROOT / "README.md").read_text(encoding="utf-8"))
    assert data is not None, "README.md must start with the Space's YAML front matter (see docs/space.md)"
    check_front_matter(data, port, "README.md")


def test_front_matter_checks_can_fail() -> None:
    assert front_matter("# no front matter\n") is None
    good = space_doc_front_matter()
    with pytest.raises(AssertionError, match="app_port"):
        check_front_matter({**good, "app_port": 7860}, 8501, "x")
    with pytest.raises(AssertionError, match="sdk must be docker"):
        check_front_matter({**good, "sdk": "streamlit"}, 8501, "x")
    with pytest.raises(AssertionError, match="no closing"):
        front_matter("---\ntitle: x\n")


# -- the slow end-to-end check ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pip_steps(instructions: list[tuple[str, str]]) -> list[str]:
    """The RUN steps that pip-install, with COPY destinations mapped back to repo files and package index
    options dropped (no internet here: this machine's pip configuration serves the same pinned wheels,
    torch==2.13.0 as a local CPU wheel)."""
    mapping = {}
    for sources, dest in _copies(instructions):
        if len(sources) == 1 and sources[0] != ".":
            mapping[dest] = str(ROOT / sources[0])
    steps = []
    for run in _all(instructions, "RUN"):
        if "pip install" not in run:
            continue
        for dest, source in mapping.items():
            run = run.replace(dest, source)
        run = re.sub(r"--(extra-)?index-url[ =]\S+", "", run)
        steps.append(run)
    return steps


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_space_container_starts_and_is_healthy(instructions: list[tuple[str, str]], tmp_path: Path) -> None:
    fast = os.environ.get("BRAINVIEWER_FAST_SPACE_TEST") == "1"
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", *(["--system-site-packages"] if fast else []), str(venv)],
        check=True,
        timeout=300,
    )
    bin_dir = venv / "bin"
    python = bin_dir / "python"
    env_docker = _env(instructions)
    home = tmp_path / "home"
    home.mkdir()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "STREAMLIT_"))}
    base_env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    base_env["VIRTUAL_ENV"] = str(venv)
    for step in _pip_steps(instructions):
        result = subprocess.run(
            step, shell=True, env=base_env, cwd=tmp_path, capture_output=True, text=True, timeout=1200
        )
        assert result.returncode == 0, f"{step}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    app_dir = tmp_path / "app"  # the image's WORKDIR: the build context after .dockerignore
    for relative in build_context():
        target = app_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    imports = (
        "import torch, streamlit, huggingface_hub; from brainviewer.compat import import_smp; import_smp(); "
        "import brainviewer.model.hub, brainviewer.model.segmenter; print(torch.__version__)"
    )
    check = subprocess.run(
        [str(python), "-c", imports], capture_output=True, text=True, timeout=300, env=base_env, cwd=app_dir
    )
    assert check.returncode == 0 and check.stdout.startswith("2.13.0"), check.stderr[-3000:]

    port = _free_port()
    cmd = _cmd(instructions)
    cmd[cmd.index("--server.port") + 1] = str(port)
    cmd = [str(python), "-m", "streamlit", *cmd[1:]]
    env = dict(base_env)
    for key, value in env_docker.items():
        value = value.replace("/home/user", str(home)).replace("$PATH", env["PATH"])
        env[key] = value
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["HF_HUB_OFFLINE"] = "1"
    log = (tmp_path / "streamlit.log").open("w")
    process = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + HEALTH_WAIT_S
        answer = b""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    answer = response.read()
                if answer == b"ok":
                    break
            except OSError:
                time.sleep(1)
        assert answer == b"ok", (
            f"no health answer in {HEALTH_WAIT_S} s:\n{(tmp_path / 'streamlit.log').read_text()[-3000:]}"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200 and b'<div id="root">' in response.read()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_streamlit_sends_large_messages_in_full() -> None:
    """The app's config turns off Streamlit's message references (see .streamlit/config.toml), with a value
    Streamlit can read: it takes ``int()`` of the option, which ``inf`` would break."""
    import tomllib
    from streamlit import config as st_config
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.runtime.forward_msg_cache import populate_hash_if_needed

    def cacheable(min_size: float) -> bool:
        msg = ForwardMsg()
        msg.delta.new_element.markdown.body = "x" * 100_000  # ten times Streamlit's default threshold
        previous = st_config.get_option("global.minCachedMessageSize")
        st_config.set_option("global.minCachedMessageSize", min_size)
        try:
            populate_hash_if_needed(msg)
        finally:
            st_config.set_option("global.minCachedMessageSize", previous)
        return msg.metadata.cacheable

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert cacheable(10 * 1e3)  # Streamlit's default would send a reference to it
    assert not cacheable(config["global"]["minCachedMessageSize"])
