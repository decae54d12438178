"""Local servers for tests, each on 127.0.0.1 and a free port and stopped when its `with` block
ends: an `mlflow server` (optionally with basic auth, as the README's team set-up), a static file
server, and a proxy that logs a browser in to the MLflow server."""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
#: the basic-auth app's first admin (created on first start from basic_auth.ini)
ADMIN = ("admin", "admin-password-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)


@contextlib.contextmanager
def _serving(cmd: list[str], health: str, log: Path, what: str, env: dict[str, str]) -> Iterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_until_up(health, proc, log, what)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _auth_config(home: Path) -> Path:
    """The README's team set-up (`--app-name basic-auth`), with every user allowed only to read
    what others made (the creator of an experiment may edit it)."""
    ini = home / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{home}/basic_auth.db\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # without the cache every request checks the password hash again (a deliberately slow hash,
        # about 0.2 s of CPU here) and a run makes hundreds of requests, one per parameter
        "auth_cache_ttl_seconds = 60\n"
    )
    return ini


@contextlib.contextmanager
def mlflow_server(home: Path, *, basic_auth: bool = False) -> Iterator[str]:
    """`mlflow server` with a SQLite store and an artifact folder under ``home``; yields its URI."""
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{home}/mlflow.db",
        "--artifacts-destination",
        str(home / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    if basic_auth:
        cmd += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_config(home))
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "test-secret-key"
    uri = f"http://127.0.0.1:{port}"
    with _serving(cmd, f"{uri}/health", home / "server.log", "mlflow server", env):
        yield uri


@contextlib.contextmanager
def static_site(folder: Path, log: Path) -> Iterator[str]:
    """`python -m http.server` serving ``folder``; yields its URL (ending in /)."""
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(folder)]
    url = f"http://127.0.0.1:{port}/"
    with _serving(cmd, url, log, "http.server", dict(os.environ)):
        yield url


_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "te",
    "trailers",
    "upgrade",
    "server",
    "date",
}


@contextlib.contextmanager
def logged_in(target: str, user: tuple[str, str]) -> Iterator[str]:
    """A proxy to ``target`` that adds ``user``'s Basic credentials to every request, as a browser
    does once its login prompt was answered; yields the proxy's URL.

    A headless browser has no one to answer the prompt, and credentials in the URL
    (``http://ann:pw@host/``) do not reach MLflow's UI: it builds its ``fetch`` URLs from the page
    address, which Chromium then refuses ("Request cannot be constructed from a URL that includes
    credentials").
    """
    token = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in _HOP_BY_HOP | {"host", "accept-encoding", "authorization"}
            }
            request = urllib.request.Request(
                target + self.path,
                data=self.rfile.read(size) if size else None,
                headers={**headers, "Authorization": token},
                method=self.command,
            )
            try:
                response = urllib.request.urlopen(request, timeout=60)
            except urllib.error.HTTPError as err:
                response = err
            with response:
                body = response.read()
                self.send_response(response.status)
                for key, value in response.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()
