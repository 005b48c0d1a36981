"""A local stand-in for the Hugging Face Hub HTTP API, for tests that must never reach the real Hub.

It serves just enough of the API for ``huggingface_hub`` 2.4.0's ``snapshot_download`` /
``hf_hub_download`` / ``create_repo`` / ``create_commit`` / ``upload_folder``, as read from its source:

===========================================================  ===========================================
request                                                       used by
===========================================================  ===========================================
``GET  /api/models/{repo}[/revision/{rev}]``                  ``repo_info`` (snapshot_download resolves
                                                              a branch/tag to a commit sha: ``sha``)
``GET  /api/models/{repo}/tree/{rev}[/{path}]``               ``list_repo_tree`` (file list, sizes, oids)
``HEAD|GET /{repo}/resolve/{rev}/{file}``                     ``hf_hub_download``: headers ``X-Repo-Commit``,
                                                              ``ETag``, ``Content-Length``; for LFS-style
                                                              files a ``302`` with ``Location`` (a "CDN" URL),
                                                              ``X-Linked-Etag`` (sha256), ``X-Linked-Size``
``HEAD|GET /_cdn/{sha256}``                                   the "CDN" the ``Location`` points at
``POST /api/repos/create``                                    ``create_repo`` (``409`` if it exists)
``POST /api/validate-yaml``                                   ``create_commit`` when README.md is committed
``POST /api/models/{repo}/preupload/{rev}``                   upload mode per file (always ``regular``)
``POST /api/models/{repo}/commit/{rev}``                      the commit itself (ndjson, base64 files)
``GET  /api/whoami-v2``                                       ``whoami``
``GET  /api/agent-harnesses``                                 user-agent registry (fetched once a process)
===========================================================  ===========================================

Errors carry the headers ``huggingface_hub.utils.hf_raise_for_status`` maps to exceptions, the way the real
Hub sends them: ``X-Error-Code: RepoNotFound`` with ``401`` (no token) or ``404`` (a token without access)
for a missing *or* private repo, ``X-Error-Code: RevisionNotFound`` / ``EntryNotFound`` with ``404``, and
``401`` + ``X-Error-Message: Invalid credentials in Authorization header`` for an unknown token.

Simplifications (documented so nobody mistakes this for the Hub): every upload is a regular (inline base64)
git blob: no LFS or Xet storage; files ending in :data:`LFS_SUFFIXES` are *served* LFS-style (redirect to the
"CDN") so that the download path used for real weights is exercised. Commit shas are random 40-hex ids.

Usage::

    with HubStandIn() as hub:
        hub.add_user("alice", token="hf_alice")
        sha = hub.add_folder("alice/model", weights_folder)
        ...  # point huggingface_hub at hub.url (see tests/model/test_hub.py: the ``standin`` fixture)
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

#: Files served the way the Hub serves LFS/Xet files (a redirect to a storage host).
LFS_SUFFIXES = (".safetensors", ".onnx", ".bin", ".pt", ".pth")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid`` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """A model repo: commits (sha -> {path: bytes}) and refs (branch or tag -> sha)."""

    repo_id: str
    owner: str
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """A commit sha for a branch, a tag or a full commit sha; None when unknown."""
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        return None


class HubStandIn:
    """The stand-in server: a ``ThreadingHTTPServer`` on ``127.0.0.1`` and a free port, in a daemon thread.

    Attributes:
        url: the endpoint to give ``huggingface_hub`` (``http://127.0.0.1:PORT``).
        requests: ``(method, path, authenticated)`` of every request served, in order.
        unhandled: requests no route matched (a test should assert this stays empty).
        cdn_auth_headers: how many "CDN" requests carried an Authorization header (the client must drop it).
    """

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, str] = {}  # token -> user name
        self.requests: list[tuple[str, str, bool]] = []
        self.unhandled: list[str] = []
        self.cdn_auth_headers = 0
        self._blobs: dict[str, bytes] = {}  # sha256 -> content, for the "CDN"
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0

    # -- content -----------------------------------------------------------------------------------------------
    def add_user(self, name: str, token: str) -> None:
        """Register a user and the token that authenticates them."""
        self.tokens[token] = name

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        """Create a repo owned by its namespace, with the initial ``.gitattributes`` commit the Hub makes."""
        with self._lock:
            if repo_id in self.repos:
                return self.repos[repo_id]
            repo = Repo(repo_id=repo_id, owner=repo_id.split("/")[0], private=private)
            self.repos[repo_id] = repo
        self.commit(repo_id, {".gitattributes": GITATTRIBUTES.encode()}, message="initial commit")
        return repo

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        branch: str = "main",
        message: str = "",
        deleted: tuple[str, ...] = (),
        parent: str | None = None,
    ) -> str:
        """Add a commit on ``branch`` (created from ``parent``, default the branch head or main) and return its sha."""
        repo = self.repos[repo_id]
        with self._lock:
            base_sha = parent or repo.refs.get(branch) or repo.refs.get("main")
            tree = dict(repo.commits.get(base_sha, {})) if base_sha else {}
            for path in deleted:
                for name in [p for p in tree if p == path or p.startswith(path.rstrip("/") + "/")]:
                    del tree[name]
            tree.update(files)
            for content in files.values():
                self._blobs[hashlib.sha256(content).hexdigest()] = content
            sha = secrets.token_hex(20)
            repo.commits[sha] = tree
            repo.refs[branch] = sha
        return sha

    def add_folder(self, repo_id: str, folder: str | Path, branch: str = "main", private: bool = False) -> str:
        """Create ``repo_id`` if needed and commit every file of ``folder`` (top level) to ``branch``."""
        if repo_id not in self.repos:
            self.create_repo(repo_id, private=private)
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        return self.commit(repo_id, files, branch=branch, message=f"upload {Path(folder).name}")

    def tag(self, repo_id: str, name: str, sha: str) -> None:
        """Point a tag (or branch) at a commit."""
        self.repos[repo_id].refs[name] = sha

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_host(self) -> str:
        """Host of the "CDN": ``localhost`` (another origin than ``127.0.0.1``, as a real CDN is another host,
        so the client keeps its metadata from the redirect and drops the token), else ``127.0.0.1``."""
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo("localhost", self.port, socket.AF_INET)}
        except OSError:
            addresses = set()
        return "localhost" if "127.0.0.1" in addresses else "127.0.0.1"

    def start(self) -> HubStandIn:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.port = self._server.server_address[1]
        self._cdn = self.cdn_host
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections, so the port really refuses connections."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.hub._lock:
                self.hub._connections.discard(self.connection)

    # -- plumbing ----------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(
        self, status: int, body: bytes | dict | list = b"", headers: dict[str, str] | None = None, method: str = "GET"
    ) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, method: str = "GET", **extra: str) -> None:
        headers = {"X-Error-Message": message, **extra}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers, method)

    def _user(self) -> tuple[str | None, bool]:
        """(user, ok): ok is False when a token was sent but is unknown."""
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None, True
        token = auth.removeprefix("Bearer ").strip()
        user = self.hub.tokens.get(token)
        return user, user is not None

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        raw_parts = split.path.strip("/").split("/")
        parts = [unquote(p) for p in raw_parts]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        body = self._body() if method == "POST" else b""
        user, token_ok = self._user()
        self.hub.requests.append((method, split.path, user is not None))
        if parts[:1] == ["_cdn"] and len(parts) == 2:
            return self._cdn(method, parts[1])
        if not token_ok:
            return self._error(401, None, "Invalid credentials in Authorization header", method)
        try:
            if method == "POST" and parts == ["api", "repos", "create"]:
                return self._create_repo(user, json.loads(body or b"{}"))
            if method == "POST" and parts == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body or b"{}"))
            if method == "GET" and parts == ["api", "agent-harnesses"]:  # huggingface_hub's user-agent registry
                return self._send(200, {"standardEnvVars": [], "harnesses": {}})
            if method == "GET" and parts == ["api", "whoami-v2"]:
                if user is None:
                    return self._error(401, None, "Invalid username or password.", method)
                return self._send(200, {"type": "user", "name": user, "orgs": [], "auth": {}})
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id = "/".join(parts[2:4])
                rest = parts[4:]
                if method == "GET" and not rest:
                    return self._repo_info(user, repo_id, "main")
                if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                    return self._repo_info(user, repo_id, rest[1])
                if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                    return self._tree(user, repo_id, rest[1], "/".join(rest[2:]), query)
                if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                    return self._preupload(user, repo_id, rest[1], json.loads(body or b"{}"))
                if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                    return self._commit(user, repo_id, rest[1], body)
            if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(method, user, "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        except (ValueError, KeyError) as err:
            return self._error(400, None, f"bad request: {err}", method)
        self.hub.unhandled.append(f"{method} {self.path}")
        return self._error(501, None, f"the Hub stand-in does not implement {method} {split.path}", method)

    # -- access ------------------------------------------------------------------------------------------------
    def _readable(self, user: str | None, repo_id: str, method: str = "GET") -> Repo | None:
        """The repo if ``user`` may read it; else sends the Hub's ambiguous not-found answer and returns None."""
        repo = self.hub.repos.get(repo_id)
        if repo is not None and (not repo.private or user == repo.owner):
            return repo
        if user is None:
            self._error(401, "RepoNotFound", "Invalid username or password.", method)
        else:
            self._error(404, "RepoNotFound", "Repository not found", method)
        return None

    def _writable(self, user: str | None, repo_id: str) -> Repo | None:
        repo = self._readable(user, repo_id)
        if repo is None:
            return None
        if user != repo.owner:
            self._error(403, None, "You don't have the rights to write to this repository")
            return None
        return repo

    def _revision(self, repo: Repo, revision: str, method: str = "GET") -> str | None:
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", method)
        return sha

    # -- routes ------------------------------------------------------------------------------------------------
    def _repo_info(self, user: str | None, repo_id: str, revision: str) -> None:
        repo = self._readable(user, repo_id)
        if repo is None:
            return
        sha = self._revision(repo, revision)
        if sha is None:
            return
        files = repo.commits[sha]
        self._send(
            200,
            {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo.owner,
                "sha": sha,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "tags": [],
                "siblings": [{"rfilename": name} for name in sorted(files)],
            },
        )

    def _file_entry(self, path: str, content: bytes) -> dict:
        entry = {"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": path}
        if path.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
        return entry

    def _tree(self, user: str | None, repo_id: str, revision: str, prefix: str, query: dict[str, str]) -> None:
        repo = self._readable(user, repo_id)
        if repo is None:
            return
        sha = self._revision(repo, revision)
        if sha is None:
            return
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        base = prefix.rstrip("/") + "/" if prefix else ""
        entries, folders = [], set()
        for path, content in sorted(repo.commits[sha].items()):
            if not path.startswith(base):
                continue
            rest = path[len(base) :]
            if "/" in rest:
                parents = rest.split("/")[:-1]
                for depth in range(1, len(parents) + 1 if recursive else 2):
                    folders.add(base + "/".join(parents[:depth]))
                if not recursive:
                    continue
            entries.append(self._file_entry(path, content))
        if prefix and not entries and not folders:
            return self._error(404, "EntryNotFound", f"{prefix} does not exist on {revision}")
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)]
        self._send(200, entries)

    def _resolve(self, method: str, user: str | None, repo_id: str, revision: str, path: str) -> None:
        repo = self._readable(user, repo_id, method)
        if repo is None:
            return
        sha = self._revision(repo, revision, method)
        if sha is None:
            return
        content = repo.commits[sha].get(path)
        if content is None:
            return self._error(404, "EntryNotFound", f"{path} not found", method, **{"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if path.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(content).hexdigest()
            headers.update(
                {
                    "ETag": f'"{git_blob_sha1(content)}"',
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(content)),
                    "Location": f"http://{self.hub._cdn}:{self.hub.port}/_cdn/{sha256}",
                }
            )
            return self._send(302, b"", headers, method)
        headers.update({"ETag": f'"{git_blob_sha1(content)}"', "Content-Type": "application/octet-stream"})
        self._send(200, content, headers, method)

    def _cdn(self, method: str, sha256: str) -> None:
        if self.headers.get("Authorization"):
            self.hub.cdn_auth_headers += 1
        content = self.hub._blobs.get(sha256)
        if content is None:
            return self._send(404, b"no such object", {}, method)
        start = 0
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes="):
            start = int(range_header[6:].split("-")[0] or 0)
        headers = {"ETag": f'"{sha256}"', "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            return self._send(206, content[start:], headers, method)
        self._send(200, content, headers, method)

    def _create_repo(self, user: str | None, payload: dict) -> None:
        if user is None:
            return self._error(401, None, "Invalid username or password.")
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        if payload.get("type", "model") not in (None, "model"):
            return self._error(400, None, "the Hub stand-in only holds model repos")
        if namespace != user:
            return self._error(403, None, f"You don't have the rights to create a repo under {namespace}")
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            return self._send(
                409,
                {"error": "You already created this model repo", "url": url},
                {"X-Error-Message": "You already created this model repo"},
            )
        self.hub.create_repo(
            repo_id, private=payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        )
        self._send(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        if content.startswith("---"):
            import yaml

            front = content.split("---", 2)[1] if content.count("---") >= 2 else ""
            try:
                yaml.safe_load(front)
            except yaml.YAMLError as err:
                return self._send(400, {"errors": [{"message": str(err)}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def _preupload(self, user: str | None, repo_id: str, revision: str, payload: dict) -> None:
        repo = self._writable(user, repo_id)
        if repo is None:
            return
        sha = self._revision(repo, revision)
        if sha is None:
            return
        tree = repo.commits[sha]
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha1(tree[f["path"]]) if f["path"] in tree else None,
            }
            for f in payload["files"]
        ]
        self._send(200, {"files": files, "commitOid": sha})

    def _commit(self, user: str | None, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._writable(user, repo_id)
        if repo is None:
            return
        if repo.resolve(revision) is None or revision not in repo.refs:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        message = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and parent != repo.refs[revision]:
                    return self._error(412, None, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, None, "only base64 file content is supported")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                return self._error(422, None, f"the Hub stand-in does not store {key} (LFS/Xet) entries")
        sha = self.hub.commit(repo_id, files, branch=revision, message=message, deleted=tuple(deleted))
        self._send(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}"})
