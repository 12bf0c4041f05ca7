"""A Hugging Face Hub look-alike on loopback: enough of its file API for ``huggingface_hub``.

It answers what ``hf_hub_download`` and ``snapshot_download`` (huggingface_hub 0.2x to 2.x)
ask, the way the Hub does:

``GET /api/models/{repo_id}`` and ``GET /api/models/{repo_id}/revision/{revision}``
    The model's info: ``{"id", "sha", "siblings": [{"rfilename": ...}], ...}``.
``GET /api/models/{repo_id}/tree/{revision}[/{path}]?recursive=...``
    The file list (one page): ``[{"type": "file", "path", "size", "oid", "lfs"?}, ...]``,
    folders as ``{"type": "directory", "path", "oid"}`` when not recursive.
``HEAD`` / ``GET /{repo_id}/resolve/{revision}/{filename}``
    A small ("git") file: 200 with ``X-Repo-Commit``, ``ETag`` (its git blob hash) and
    ``Content-Length``. A large ("LFS") file: 302 to a CDN address on another origin
    (``localhost`` instead of ``127.0.0.1``), with ``X-Repo-Commit``, ``X-Linked-Etag``
    (its SHA-256) and ``X-Linked-Size``, as the Hub answers for files kept in LFS.
``HEAD`` / ``GET /cdn/{sha256}``
    The LFS file's bytes.

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``), which huggingface_hub turns into its own exceptions. A revision is
``main`` or the repository's commit hash.

Every request is recorded (:meth:`HubServer.recorded`, :meth:`HubServer.downloads`), so a
test can tell whether a model was fetched again or loaded from the cache without a request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import attrs

from ..loopback import running

#: Suffixes the Hub's default ``.gitattributes`` keeps in LFS.
LFS_SUFFIXES = frozenset({".onnx", ".safetensors", ".bin", ".model", ".spm", ".h5", ".ot"})


@attrs.frozen
class HubFile:
    """One file of a repository, with the hashes the Hub reports for it."""

    path: str
    data: bytes

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def lfs(self) -> bool:
        return Path(self.path).suffix in LFS_SUFFIXES


@attrs.define
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    sha: str


@attrs.frozen
class Recorded:
    """One request the server received."""

    method: str
    path: str


@attrs.define
class HubServer:
    """The served repositories and the request log; ``url`` is what ``HF_ENDPOINT`` should be."""

    url: str = ""
    cdn_url: str = ""
    repos: dict[str, HubRepo] = attrs.field(factory=dict)
    requests: list[Recorded] = attrs.field(factory=list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def add_repo(self, repo_id: str, files: Mapping[str, bytes | Path]) -> str:
        """Serve a model repository; ``files`` maps paths in it to bytes or local files.

        Returns:
            Its commit hash (derived from the contents, so equal contents give equal hashes).
        """
        entries = {
            name: HubFile(name, data if isinstance(data, bytes) else Path(data).read_bytes())
            for name, data in files.items()
        }
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(entries):
            digest.update(f"{name}\0{entries[name].git_oid}\n".encode())
        with self._lock:
            self.repos[repo_id] = HubRepo(repo_id, entries, digest.hexdigest())
        return digest.hexdigest()

    def add_folder(self, repo_id: str, folder: Path) -> str:
        """Serve every file under ``folder`` as a repository."""
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_repo(repo_id, files)

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def recorded(self) -> list[Recorded]:
        """Every request received so far (since :meth:`clear_requests`), in order."""
        with self._lock:
            return list(self.requests)

    def downloads(self) -> list[str]:
        """Paths of the ``GET`` requests for file contents, in order."""
        with self._lock:
            return [
                r.path
                for r in self.requests
                if r.method == "GET" and ("/resolve/" in r.path or r.path.startswith("/cdn/"))
            ]

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path))

    def _repo(self, repo_id: str) -> HubRepo | None:
        with self._lock:
            return self.repos.get(repo_id)

    def _blob(self, sha256: str) -> HubFile | None:
        with self._lock:
            for repo in self.repos.values():
                for file in repo.files.values():
                    if file.lfs and file.sha256 == sha256:
                        return file
        return None


def _handler(state: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        # -- answers ------------------------------------------------------------------------

        def _send(
            self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, length: int = -1
        ) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body) if length < 0 else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, payload: Any, headers: Mapping[str, str] | None = None) -> None:
            body = json.dumps(payload).encode("utf-8")
            self._send(200, body, {"Content-Type": "application/json", **(headers or {})})

        def _error(
            self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
        ) -> None:
            body = json.dumps({"error": message}).encode("utf-8")
            self._send(
                status,
                body,
                {
                    "Content-Type": "application/json",
                    "X-Error-Code": code,
                    "X-Error-Message": message,
                    **(headers or {}),
                },
            )

        def _file(self, file: HubFile, headers: Mapping[str, str]) -> None:
            self._send(
                200,
                file.data,
                {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers},
            )

        # -- routing ------------------------------------------------------------------------

        def _handle(self) -> None:
            split = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(split.path)
            state._record(self.command, path)
            query = urllib.parse.parse_qs(split.query)
            parts = path.strip("/").split("/")
            if parts[0] == "cdn" and len(parts) == 2:
                return self._cdn(parts[1])
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._api(parts[2:], query)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            return self._error(404, "NotFound", f"no route for {path}")

        def _revision(self, repo_id: str, revision: str) -> HubRepo | None:
            repo = state._repo(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                return None
            if revision not in ("main", repo.sha):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return repo

        def _api(self, parts: list[str], query: Mapping[str, list[str]]) -> None:
            repo_id = f"{parts[0]}/{parts[1]}"
            rest = parts[2:]
            revision = rest[1] if len(rest) >= 2 else "main"
            repo = self._revision(repo_id, revision)
            if repo is None:
                return None
            if not rest or rest[0] == "revision":
                return self._json(
                    {
                        "_id": repo.sha[:24],
                        "id": repo.repo_id,
                        "modelId": repo.repo_id,
                        "sha": repo.sha,
                        "private": False,
                        "gated": False,
                        "disabled": False,
                        "lastModified": "2024-01-01T00:00:00.000Z",
                        "tags": [],
                        "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                    }
                )
            if rest[0] == "tree" and len(rest) >= 2:
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._json(self._tree(repo, "/".join(rest[2:]), recursive))
            return self._error(404, "NotFound", "unknown API route")

        def _tree(self, repo: HubRepo, folder: str, recursive: bool) -> list[dict[str, Any]]:
            prefix = f"{folder}/" if folder else ""
            entries: list[dict[str, Any]] = []
            folders: set[str] = set()
            for name in sorted(repo.files):
                if not name.startswith(prefix):
                    continue
                inner = name[len(prefix) :]
                if "/" in inner and not recursive:
                    folders.add(prefix + inner.split("/", 1)[0])
                    continue
                file = repo.files[name]
                entry: dict[str, Any] = {
                    "type": "file",
                    "oid": file.git_oid,
                    "size": len(file.data),
                    "path": name,
                }
                if file.lfs:
                    entry["lfs"] = {"oid": file.sha256, "size": len(file.data), "pointerSize": 134}
                entries.append(entry)
            entries += [
                {"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                for f in sorted(folders)
            ]
            return entries

        def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
            repo = self._revision(repo_id, revision)
            if repo is None:
                return None
            commit = {"X-Repo-Commit": repo.sha}
            file = repo.files.get(filename)
            if file is None:
                return self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}", commit)
            if file.lfs:
                # The Hub sends LFS files from its CDN: the redirect itself carries the metadata.
                headers = {
                    **commit,
                    "Location": f"{state.cdn_url}/cdn/{file.sha256}",
                    "X-Linked-Etag": f'"{file.sha256}"',
                    "X-Linked-Size": str(len(file.data)),
                    "ETag": f'W/"{file.git_oid}"',
                }
                return self._send(302, b"", headers)
            return self._file(file, {**commit, "ETag": f'"{file.git_oid}"'})

        def _cdn(self, sha256: str) -> None:
            file = state._blob(sha256)
            if file is None:
                return self._send(404, b"")
            return self._file(file, {"ETag": f'"{sha256}"'})

    return Handler


@contextlib.contextmanager
def hub_server() -> Iterator[HubServer]:
    """Run the Hub look-alike on 127.0.0.1 (a free port) for the block's duration."""
    state = HubServer()
    with running(_handler(state)) as server:
        state.url = f"http://127.0.0.1:{server.port}"
        # Another origin for the same server, as the Hub's CDN is another host.
        state.cdn_url = f"http://localhost:{server.port}"
        yield state
