"""A local weights server for the zoo tests: nothing in them touches the internet.

`weights_server` serves byte strings on 127.0.0.1 (a thread of `http.server`), honours
`Range: bytes=N-` with 206 answers, records every request, and has switches for the failures a
download must survive or refuse: `missing` (404), `corrupt` (one byte flipped), `drop_next`
(the next N answers stop half way and close), `ignore_range` (200 with the whole file),
`no_length` (no Content-Length: the body ends when the connection closes).

`zoo_env` points retina at it: `RETINA_WEIGHTS_MIRROR` is the server, `TORCH_HOME` a fresh
folder (so the cache is `<tmp>/torch/hub/checkpoints`), proxies are off, and `zoo_env.use(...)`
replaces the zoo table with entries made by `zoo_env.entry(...)` for bytes the server holds.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from retinacli.weights import zoo as zoo_module
from retinacli.weights.zoo import ZooEntry, parse_entry

ORIGIN = "https://weights.invalid"
"""The host of test entries' URLs: never reached, RETINA_WEIGHTS_MIRROR replaces it."""

TORCHVISION_SETTINGS = {
    "model.input_format": "RGB",
    "model.pixel_mean": [123.675, 116.28, 103.53],
    "model.pixel_std": [58.395, 57.12, 57.375],
    "model.backbone.depth": 18,
    "model.backbone.res2_out_channels": 64,
    "model.backbone.stride_in_1x1": False,
}


@dataclass
class WeightsServer:
    """State of the local server; the switches may be changed between requests."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    missing: bool = False
    corrupt: bool = False
    drop_next: int = 0
    ignore_range: bool = False
    no_length: bool = False

    def ranges(self) -> list[str | None]:
        """The Range header of each request so far (None: the whole file was asked for)."""
        return [r["range"] for r in self.requests]


def _handler(state: WeightsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            wanted = self.headers.get("Range")
            state.requests.append({"path": self.path, "range": wanted})
            body = state.files.get(self.path)
            if state.missing or body is None:
                self.send_error(404, "Not Found")
                return
            if state.corrupt:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            start = 0
            if wanted and not state.ignore_range:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_error(416, "Range Not Satisfiable")
                    return
            payload = body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            if not state.no_length:
                self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if state.drop_next:
                state.drop_next -= 1
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
            pass

    return Handler


@pytest.fixture
def weights_server() -> Iterator[WeightsServer]:
    state = WeightsServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class ZooEnv:
    """What `zoo_env` set up: the server, the cache folder, and helpers for test tables."""

    server: WeightsServer
    cache: Path
    monkeypatch: pytest.MonkeyPatch

    def entry(
        self,
        name: str,
        content: bytes,
        *,
        kind: str = "backbone",
        depth: int = 18,
        verification: str = "sha256",
        size_bytes: int | None = -1,
        max_bytes: int | None = None,
        settings: Mapping[str, Any] | None = None,
        suffix: str = ".pth",
    ) -> ZooEntry:
        """A zoo entry for `content`, which the server then serves at the entry's URL path.
        `size_bytes` -1 means the content's real size; `verification` sha256, sha256_prefix or
        none says which hash the entry publishes; `suffix` ends the file name (`.pkl` is read as a
        pickle)."""
        digest = hashlib.sha256(content).hexdigest()
        file_name = name.replace("/", "-") + suffix
        self.server.files[f"/models/{file_name}"] = content
        return parse_entry(
            {
                "name": name,
                "source": "test",
                "architecture": f"ResNet-{depth} backbone",
                "kind": kind,
                "depth": depth,
                "trained_on": "random numbers",
                "url": f"{ORIGIN}/models/{file_name}",
                "file_name": file_name,
                "size_bytes": len(content) if size_bytes == -1 else size_bytes,
                "max_bytes": max_bytes,
                "sha256": digest if verification == "sha256" else None,
                "sha256_prefix": digest[:8] if verification in ("sha256", "sha256_prefix") else None,
                "settings": dict(TORCHVISION_SETTINGS if settings is None else settings),
                "provenance": {"sha256": "computed by the test"},
            }
        )

    def use(self, *entries: ZooEntry) -> None:
        """Make `entries` the zoo table (for recipes, `retina weights` and downloads)."""
        table = tuple(entries)
        self.monkeypatch.setattr(zoo_module, "zoo_table", lambda: table)

    def file(self, entry: ZooEntry) -> Path:
        return self.cache / entry.file_name


@pytest.fixture
def zoo_env(weights_server: WeightsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ZooEnv:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RETINA_WEIGHTS_MIRROR", weights_server.base_url)
    return ZooEnv(weights_server, tmp_path / "torch" / "hub" / "checkpoints", monkeypatch)
