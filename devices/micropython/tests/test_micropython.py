"""The MicroPython board code, run under CPython with the shim of
devices/micropython/shim (umqtt.simple itself unchanged), against the real
broker: the worker serves the word count to the Rust producer, and the
requester gets a result. No real board was tried here."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT, until

MPY = ROOT / "devices" / "micropython"


def board(tmp_path, broker, role, **settings):
    """Starts main.py as a board would run it, with its config.py."""
    config = {"WIFI_SSID": "test", "WIFI_PASSWORD": "", "BROKER": "127.0.0.1",
              "PORT": broker.mqtt_port, "USERNAME": None, "PASSWORD": None, "ROLE": role,
              "QUEUE": "word_count", "TASK": "mapper", "ARGS": ["Fables"], **settings}
    home = tmp_path / role
    home.mkdir()
    (home / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in config.items()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(home), str(MPY / "shim"), str(MPY / "lib"), str(MPY)]))
    # As a board boots: `main` imported with its config.py beside it (the
    # repository's own config.py is the template, and must not be found).
    return subprocess.Popen([sys.executable, "-c", "import main"], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_micropython_worker_serves_the_word_count_to_the_rust_producer(broker, tmp_path):
    worker = board(tmp_path, broker, "worker")
    try:
        until("the board's worker subscribes", lambda: any(
            w["online"] for w in broker.api("/workers")["workers"]))
        out = subprocess.run(
            [str(ROOT / "target" / "debug" / "word-count"), "count", "--url", broker.url,
             "--words", "2190", str(ROOT / "devices" / "word-count" / "text" / "aesop11.txt")],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        top = out.stdout.splitlines()[:5]
        assert top == ["would 12", "which 8", "their 8", "caught 6", "Farmer 6"], out.stdout
        # Every task was the board's (the history counts them a moment later).
        until("2,190 tasks counted for the board", lambda: [
            w["completed"] for w in broker.api("/workers")["workers"]
            if w["id"].startswith("mpy-worker-")] == [2190])
    finally:
        worker.kill()
        worker.wait()


def test_the_micropython_requester_gets_its_result_with_an_identity(make_broker, tmp_path):
    b = make_broker()
    device_token = b.identity("esp32-kitchen", "device")
    worker_token = b.identity("pi-worker", "worker")
    ops = b.identity("ops", "app")
    b.start()
    worker = board(tmp_path, b, "worker", USERNAME="pi-worker", PASSWORD=worker_token)
    try:
        until("the board's worker subscribes", lambda: any(
            w["online"] for w in b.api("/workers", token=ops)["workers"]), timeout=20)
        requester = board(tmp_path, b, "requester", USERNAME="esp32-kitchen", PASSWORD=device_token,
                          ARGS=["Gulliver"])
        out, _ = requester.communicate(timeout=60)
        assert requester.returncode == 0, out
        assert "result success ['Gulliver', 1]" in out, out
        record = b.api("/tasks?requester=esp32-kitchen", token=ops)["tasks"]
        assert len(record) == 1 and record[0]["status"] == "success"
    finally:
        worker.kill()
        worker.wait()
