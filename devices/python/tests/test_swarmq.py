"""The swarmq Python package against the real broker: worker, client,
retries, progress, revoke, workflows, results by id, a cut connection,
SIGTERM, credentials, bad input."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import swarmq
from conftest import ROOT, until


@contextlib.contextmanager
def serving(app: swarmq.App, **options):
    """A worker of ``app`` running in this process for the block."""
    worker = app.worker(**options)
    worker.start()
    try:
        yield worker
    finally:
        worker.shutdown()


def word_count_app(url: str, **credentials) -> swarmq.App:
    app = swarmq.App(url, **credentials)

    @app.task(queue="word_count")
    def mapper(word):
        return (word, 1) if len(word) >= 5 else None

    @app.task(queue="word_count")
    def broken(why):
        raise ValueError(why)

    @app.task(queue="word_count")
    def add(*numbers):
        return sum(numbers)

    @app.task(queue="word_count")
    def total(results):
        return sum(results)

    @app.task(queue="word_count")
    def letters(word):
        return set(word)  # not JSON: the worker answers with an error

    return app


def test_a_task_runs_on_a_worker_and_its_result_or_error_comes_back(broker):
    app = word_count_app(broker.url)
    with serving(app, concurrency=3) as worker:
        assert app.tasks["mapper"].delay("Fables").get(timeout=10) == ["Fables", 1]
        assert app.tasks["mapper"].delay("ox").get(timeout=10) is None
        pending = [app.tasks["mapper"].delay(w) for w in ["Gulliver", "Lilliput", "Brobdingnag"]]
        assert [r.get(timeout=10) for r in pending] == [["Gulliver", 1], ["Lilliput", 1], ["Brobdingnag", 1]]
        assert pending[0].status == "success" and pending[0].successful() and pending[0].ready()

        failing = app.tasks["broken"].delay("it broke")
        with pytest.raises(swarmq.TaskFailed) as caught:
            failing.get(timeout=10)
        assert caught.value.status == "failure"
        assert caught.value.error == "ValueError: it broke"
        assert failing.failed() and failing.result == "ValueError: it broke"
        assert app.tasks["broken"].delay("quiet").get(timeout=10, propagate=False) == "ValueError: quiet"
        # A result that is not JSON is a failure that says so.
        with pytest.raises(swarmq.TaskFailed) as caught:
            app.tasks["letters"].delay("ox").get(timeout=10)
        assert caught.value.error == "TypeError: Object of type set is not JSON serializable"
        assert worker.failed == 3

        # The concurrency is the capacity the broker sees (Receive Maximum).
        workers = broker.api("/workers")["workers"]
        mine = [w for w in workers if w["id"] == worker.client_id]
        assert mine and mine[0]["capacity"] == 3 and mine[0]["online"]
        # A task called directly runs here, as in Celery.
        assert app.tasks["mapper"]("Laputa") == ("Laputa", 1)
    app.close()


def test_retry_after_progress_and_a_bound_task_context(broker):
    app = swarmq.App(broker.url)
    seen = []

    @app.task(queue="jobs", bind=True)
    def flaky(self, n):
        if self.attempt == 1:
            raise app.retry(after=0.2, reason="not yet")
        for i in range(n):
            self.report_progress({"step": i + 1})
        swarmq.report_progress({"step": "last"})
        return {"attempt": self.attempt, "id": self.request.id}

    with serving(app, concurrency=1):
        result = flaky.apply_async((2,), progress=seen.append, task_id="flaky-1")
        value = result.get(timeout=20)
        assert value == {"attempt": 2, "id": "flaky-1"}
        assert seen == [{"step": 1}, {"step": 2}, {"step": "last"}]
        assert result.progress == {"step": "last"}
        record = app._fetch("flaky-1")
        assert record["attempts"] == 2 and record["status"] == "success"
    app.close()


def test_countdown_priority_and_revoke_of_a_waiting_and_a_running_task(broker):
    app = swarmq.App(broker.url)
    started = threading.Event()
    cancelled = threading.Event()

    @app.task(queue="slow", bind=True)
    def wait_for_revoke(self):
        started.set()
        if self.wait_cancelled(20):
            cancelled.set()
        return "not revoked"

    later = wait_for_revoke.apply_async(countdown=600, priority=5, task_id="later-1")
    until("the task is scheduled", lambda: app._fetch("later-1").get("status") == "scheduled")
    assert later.revoke() == "revoked"
    with pytest.raises(swarmq.TaskFailed) as caught:
        later.get(timeout=10)
    assert caught.value.status == "revoked"

    with serving(app, concurrency=1):
        running = wait_for_revoke.delay()
        assert started.wait(10)
        assert running.revoke() == "revoked"
        assert until("the worker sees the cancel", cancelled.is_set, timeout=10)
        assert running.get(timeout=10, propagate=False) is not None
        assert running.status == "revoked"
        assert app.revoke("never-submitted") == "unknown"
    app.close()


def test_workflows_chain_group_chord_and_chunks(broker):
    app = word_count_app(broker.url)
    add, total, mapper = app.tasks["add"], app.tasks["total"], app.tasks["mapper"]
    with serving(app, concurrency=4):
        assert swarmq.chain(add.s(1, 2), add.s(3), add.s(4)).apply_async().get(timeout=20) == 10
        assert (add.s(1, 2) | add.si(10)).delay().get(timeout=20) == 10
        assert swarmq.group(add.s(i, i) for i in range(5)).apply_async().get(timeout=20) == [0, 2, 4, 6, 8]
        progress = []
        chord = swarmq.chord([add.s(i) for i in range(10)])
        assert chord(total.s()).get(timeout=20) == 45
        result = swarmq.chord([add.s(i) for i in range(3)], total.s()).apply_async(progress=progress.append)
        assert result.get(timeout=20) == 3
        # {"done", "total"} after each member but the last, whose end is the result.
        assert [p["done"] for p in progress] == [1, 2, 3] and progress[0]["total"] == 4
        words = ["Fables", "ox", "Gulliver", "Lilliput", "a"]
        flat = mapper.chunks(((w,) for w in words), 2).apply_async(workflow_id="wc-chunks").get(timeout=20)
        assert flat == [["Fables", 1], None, ["Gulliver", 1], ["Lilliput", 1], None]
        # A failing member fails the workflow, naming it.
        with pytest.raises(swarmq.TaskFailed) as caught:
            swarmq.chain(add.s(1), app.tasks["broken"].s()).apply_async(workflow_id="wf-bad").get(timeout=20)
        assert caught.value.error == "member `wf-bad/1` failure: ValueError: 1"
    app.close()


def test_results_are_fetched_later_by_id_from_another_client(broker):
    producer = word_count_app(broker.url)
    with serving(producer):
        first = producer.tasks["mapper"].apply_async(("Fables",), task_id="later-by-id")
        assert first.get(timeout=10) == ["Fables", 1]
    producer.close()
    other = swarmq.App(broker.url)
    fetched = other.AsyncResult("later-by-id")
    assert fetched.get(timeout=10) == ["Fables", 1]
    assert fetched.status == "success"
    assert other.AsyncResult("no-such-id").status == "unknown"
    with pytest.raises(swarmq.TimeoutError):
        other.AsyncResult("no-such-id").get(timeout=0.5)
    other.close()


class CuttableProxy:
    """A TCP proxy to the broker whose connections can be cut."""

    def __init__(self, port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream = port
        self.sockets = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets += [client, server]
            self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut_all(self):
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()


def test_a_worker_reconnects_after_its_connection_is_cut(broker):
    proxy = CuttableProxy(broker.mqtt_port)
    served = word_count_app(f"mqtt://127.0.0.1:{proxy.port}")
    client = word_count_app(broker.url)
    with serving(served):
        assert client.tasks["mapper"].delay("Fables").get(timeout=10) == ["Fables", 1]
        proxy.cut_all()
        until("the worker is offline",
              lambda: not any(w["online"] for w in broker.api("/workers")["workers"]))
        # Submitted while the worker is away: it waits, then runs once the
        # worker is back (paho reconnects with a backoff of 1 s and more).
        result = client.tasks["mapper"].delay("Gulliver")
        assert result.get(timeout=30) == ["Gulliver", 1]
        assert proxy.accepted >= 2
    client.close()


def test_sigterm_finishes_the_tasks_in_hand_then_exits(broker, tmp_path):
    (tmp_path / "slowtasks.py").write_text(textwrap.dedent(f"""
        import time, swarmq
        app = swarmq.App({broker.url!r})

        @app.task(queue="slow")
        def nap(seconds):
            time.sleep(seconds)
            return "rested"
    """))
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'devices' / 'python'}:{tmp_path}")
    proc = subprocess.Popen([sys.executable, "-m", "swarmq", "worker", "-A", "slowtasks", "-c", "2"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        until("the worker subscribes", lambda: any(
            w["online"] and "slow" in w["queues"] for w in broker.api("/workers")["workers"]))
        client = swarmq.App(broker.url)
        naps = [client.send_task("nap", [1.5], queue="slow") for _ in range(2)]
        until("both tasks run", lambda: all(r.status == "running" for r in naps))
        proc.send_signal(signal.SIGTERM)
        assert [r.get(timeout=20) for r in naps] == ["rested", "rested"]
        assert proc.wait(20) == 0
        stderr = proc.stderr.read()
        assert "2 task(s) done, 0 left unfinished" in stderr, stderr
        # It took nothing more after the signal: a new task waits.
        after = client.send_task("nap", [0], queue="slow")
        assert after.status in ("queued", "scheduled")
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_credentials_are_required_and_bad_input_is_refused_clearly(make_broker):
    b = make_broker()
    token = b.identity("dev1", "device")
    worker_token = b.identity("w1", "worker")
    b.start()
    with pytest.raises(swarmq.ConnectError):
        swarmq.App(b.url).send_task("mapper", ["x"], queue="word_count")
    with pytest.raises(swarmq.ConnectError) as caught:
        swarmq.App(b.url, username="dev1", password="sqt_wrong").send_task("mapper", ["x"], queue="word_count")
    assert "refused" in str(caught.value)
    served = word_count_app(b.url, username="w1", password=worker_token)
    client = word_count_app(f"mqtt://dev1:{token}@127.0.0.1:{b.mqtt_port}")
    with serving(served):
        assert client.tasks["mapper"].delay("Fables").get(timeout=10) == ["Fables", 1]
        bad = client.tasks["mapper"].apply_async(("x",), priority=12)
        with pytest.raises(swarmq.TaskFailed) as caught:
            bad.get(timeout=10)
        assert caught.value.status == "rejected" and "priority" in caught.value.error
    client.close()


def test_the_ported_word_count_runs_with_the_celery_producer_unchanged(broker):
    example = ROOT / "devices" / "python" / "examples" / "word_count"
    celery = ROOT / "benches" / "celery"
    assert (example / "producer.py").read_text() == (celery / "producer.py").read_text()
    env = dict(os.environ, SWARMQ_URL=broker.url, PYTHONPATH=str(ROOT / "devices" / "python"))
    env.pop("SWARMQ_USERNAME", None)
    worker = subprocess.Popen([sys.executable, "-m", "swarmq", "worker", "-A", "tasks", "-c", "8"],
                              cwd=example, env=env, stderr=subprocess.DEVNULL)
    try:
        until("the example's worker subscribes", lambda: any(
            w["online"] for w in broker.api("/workers")["workers"]))
        out = subprocess.run([sys.executable, "producer.py",
                              str(ROOT / "devices" / "word-count" / "text" / "aesop11.txt"), "2190"],
                             cwd=example, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[:5] == ["would 12", "which 8", "their 8", "caught 6", "Farmer 6"]
        assert "2190 tasks in" in out.stdout
    finally:
        worker.terminate()
        assert worker.wait(20) == 0


def test_publish_properties_pack_and_unpack_as_paho_does():
    """The package's own PUBLISH property codec (the task path's fast one)
    writes what paho writes and reads back what paho reads, every kind of
    property a PUBLISH carries; anything it cannot read goes to paho."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from swarmq import _conn

    ours = _conn.publish_properties("replies/kitchen/abc", b"\x00corr")
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.ResponseTopic = "replies/kitchen/abc"
    theirs.CorrelationData = b"\x00corr"
    assert ours.pack() == theirs.pack()

    full = Properties(PacketTypes.PUBLISH)
    full.PayloadFormatIndicator = 1
    full.MessageExpiryInterval = 70000
    full.ContentType = "application/json"
    full.ResponseTopic = "a/b"
    full.CorrelationData = b"\x01\x02"
    full.SubscriptionIdentifier = [300]
    full.UserProperty = [("k", "v"), ("k2", "é")]
    packed = full.pack()
    read, end = _conn._unpack_properties(b"xx" + packed + b"payload", 2)
    assert end == 2 + len(packed)
    for name in ("PayloadFormatIndicator", "MessageExpiryInterval", "ContentType", "ResponseTopic",
                 "CorrelationData", "SubscriptionIdentifier", "UserProperty"):
        assert getattr(read, name) == getattr(full, name), name
    assert _conn._pack_properties(read) == Properties.pack(read)

    for bad in (b"\x05\x63\x00\x01\x00\x00",   # identifier 99: not a PUBLISH property
                b"\x09\x08\x00\x10abc",          # a string running past the properties
                b"\x04\x01\x01\x01\x00",         # Payload Format Indicator twice
                b"\xff\xff\xff\xff\x01"):        # a length of more than four bytes
        with pytest.raises(_conn._NotLean):
            _conn._unpack_properties(bad, 0)


def test_pubacks_read_in_place_end_a_publish_as_paho_does():
    """The package reads a successful PUBACK itself (the requester's task
    path); the message is then published and out of the window, as after
    paho's own reading, which still handles failure codes and properties."""
    import paho.mqtt.client as mqtt

    from swarmq import _conn

    client = _conn.new_client(_conn.Broker.parse("mqtt://127.0.0.1:1"), "puback-test")
    for packet, reason in ((b"\x00\x07", 0), (b"\x00\x07\x10", 0x10), (b"\x00\x07\x00\x00", 0),
                           (b"\x00\x07\x97", 0x97), (b"\x00\x07\x00\x03\x1f\x00\x00", 0)):
        message = mqtt.MQTTMessage(mid=7, topic=b"tasks/q")
        message.qos = 1
        client._out_messages[7] = message
        client._inflight_messages = 1
        seen = []
        if packet == b"\x00\x07\x10":
            # With an on_publish callback paho reads it: the callback gets its objects.
            client.on_publish = lambda _c, _u, mid, rc, _p: seen.append((mid, rc.value))
        client._in_packet = {"command": 0x40, "packet": packet}
        assert client._handle_pubackcomp("PUBACK") == mqtt.MQTT_ERR_SUCCESS
        assert message.info.is_published(), packet
        assert 7 not in client._out_messages and client._inflight_messages == 0
        if client.on_publish is not None:
            assert seen == [(7, reason)]
            client.on_publish = None
    # A PUBACK for nothing in flight is ignored.
    client._in_packet = {"command": 0x40, "packet": b"\x00\x08"}
    assert client._handle_pubackcomp("PUBACK") == mqtt.MQTT_ERR_SUCCESS


def test_flag_wakes_its_waiters_and_times_out():
    from swarmq import _conn

    flag = _conn.Flag()
    assert not flag.is_set() and flag.wait(0.01) is False
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(flag.wait(10)))
    waiter.start()
    until("the waiter to wait", lambda: flag._event is not None)
    flag.set()
    waiter.join(10)
    assert woke == [True] and flag.is_set() and flag.wait(0) is True
