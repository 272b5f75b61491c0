"""Fixtures of the device tests (devices/python, devices/micropython): the
real swarmq broker binary on free loopback ports.

The binary is ``$SWARMQ_BIN`` or the workspace's ``target/debug/swarmq``
(``cargo build`` first; tests/run.sh does).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "devices" / "python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> str:
    path = os.environ.get("SWARMQ_BIN") or str(ROOT / "target" / "debug" / "swarmq")
    if not os.path.exists(path):
        pytest.exit(f"no broker binary at {path}: run cargo build first", returncode=2)
    return path


def until(what: str, check, timeout: float = 20.0, every: float = 0.05):
    """Polls ``check`` until it returns a true value, or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class Broker:
    """A running broker process and its addresses."""

    def __init__(self, tmp: pathlib.Path, config: str = ""):
        self.mqtt_port, self.http_port = free_port(), free_port()
        self.data_dir = tmp / "data"
        self.config = tmp / "swarmq.toml"
        self.config.write_text(config)
        self.log = open(tmp / "broker.log", "wb")
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def identity(self, name: str, role: str) -> str:
        """Adds an identity (before or while the broker runs); its token."""
        out = subprocess.run(
            [binary(), "identity", "add", name, "--role", role, "--data-dir", str(self.data_dir)],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def start(self) -> "Broker":
        self.proc = subprocess.Popen(
            [binary(), "serve", "--mqtt-listen", f"127.0.0.1:{self.mqtt_port}",
             "--http-listen", f"127.0.0.1:{self.http_port}", "--data-dir", str(self.data_dir),
             "--config", str(self.config)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        until("the broker's /healthz", self.healthy)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, token: str = None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/api/v1{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=5) as r:
            return json.load(r)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def make_broker(tmp_path):
    """A broker started by the test (to add identities or config first)."""
    made = []

    def make(config: str = "") -> Broker:
        b = Broker(tmp_path, config)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()
