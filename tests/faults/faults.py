#!/usr/bin/env python3
"""The fault suite: the real broker binary under the faults of issue 13,
each case printing its figure and failing loudly when the broker breaks.

    python3 tests/faults/faults.py [--long] [CASE ...]

Cases: kill9 (kill -9 of the broker in a loop under a QoS 1 load),
worker_storm (workers killed while they hold tasks), network (workers
behind a proxy that delays, cuts and black-holes), idle_sockets (10,000
sockets that never send CONNECT), clients (10,000 connected MQTT clients,
RSS per client), reconnect (the same-id reconnect loop, both versions),
slowloris (2,000 half-sent HTTP requests while /healthz must answer).
--long multiplies the sizes (by hand; CI runs the short variant). The
disk-full and non-reading-subscriber cases are integration tests
(tests/integration/hardening.rs) because they need the process's own
mounts and RSS sampling there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The release build when there is one, else the debug build tests/run.sh made.
BIN = os.environ.get("SWARMQ_BIN_DIR") or next(
    (d for d in (os.path.join(ROOT, "target", k) for k in ("release", "debug"))
     if os.path.exists(os.path.join(d, "swarmq"))), os.path.join(ROOT, "target", "debug"))
LONG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(what, check, timeout=30.0, every=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class Broker:
    """The broker process on fixed ports and a data directory that outlive
    its restarts."""

    def __init__(self, data_dir: str, extra_env=None):
        self.mqtt, self.http = free_port(), free_port()
        self.data_dir = data_dir
        self.env = dict(os.environ, **(extra_env or {}))
        self.proc = None

    def start(self):
        log = open(os.path.join(self.data_dir, "broker.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "swarmq"), "serve", "--mqtt-listen", f"127.0.0.1:{self.mqtt}",
             "--http-listen", f"127.0.0.1:{self.http}", "--data-dir", os.path.join(self.data_dir, "data")],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        until("the broker's /healthz", self.healthy)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/api/v1{path}", timeout=10) as r:
            return json.load(r)

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def client(port, client_id, *, clean=True, on_message=None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(100)
    if on_message:
        c.on_message = on_message
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    props = Properties(PacketTypes.CONNECT)
    # A persistent session: replies sent while paho reconnects wait for it.
    props.SessionExpiryInterval = 0 if clean else 300
    c.connect("127.0.0.1", port, keepalive=30, clean_start=clean, properties=props)
    c.loop_start()
    if not connected.wait(10):
        raise AssertionError(f"{client_id} did not connect")
    return c


def word_count_worker(port, n=1):
    return [subprocess.Popen([os.path.join(BIN, "word-count"), "worker", "--url", f"mqtt://127.0.0.1:{port}",
                              "--concurrency", "16", "--client-id", f"fault-worker-{i}-{uuid.uuid4().hex[:6]}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n)]


class Replies:
    """What a requester's reply topic received: answers per task id and per
    status, from paho's network thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.per_id = {}
        self.statuses = {}

    def on_message(self, _c, _u, msg):
        r = json.loads(msg.payload)
        with self.lock:
            self.per_id[r.get("id")] = self.per_id.get(r.get("id"), 0) + 1
            self.statuses[r.get("status")] = self.statuses.get(r.get("status"), 0) + 1

    def __len__(self):
        with self.lock:
            return len(self.per_id)

    def __contains__(self, task_id):
        with self.lock:
            return task_id in self.per_id

    def twice(self):
        with self.lock:
            return [i for i, n in self.per_id.items() if n > 1]


def stalled(broker, replies, tasks, extra=""):
    """The AssertionError for tasks left unanswered, with where they are.
    When the broker's API does not answer either, its threads' stacks (gdb)
    go to stacks.txt beside its log: a broker that stops both dispatching
    and answering is stuck somewhere, and the stacks say where."""
    try:
        q = broker.api("/queues/word_count")
        w = broker.api("/workers")
    except OSError as e:
        path = os.path.join(broker.data_dir, "stacks.txt")
        with open(path, "w") as out:
            subprocess.run(["gdb", "-p", str(broker.proc.pid), "-batch", "-ex", "thread apply all bt"],
                           stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False)
        return AssertionError(f"{len(replies)} of {tasks} answered, and the API does not answer ({e}): "
                              f"the broker's thread stacks are in {path}{extra}")
    fields = ("waiting", "scheduled", "in_flight", "dead_letters", "consumer_count")
    return AssertionError(f"{len(replies)} of {tasks} answered; queue {json.dumps({k: q.get(k) for k in fields})}; "
                          f"workers {[(x['id'], x['online'], x['in_flight'], x.get('quarantined_until_us')) for x in w['workers']]}"
                          f"{extra}")


# --- cases ---------------------------------------------------------------

def case_kill9(tmp):
    """kill -9 of the broker in a loop under a QoS 1 load: every task whose
    PUBACK arrived is run; none is answered twice to its requester."""
    cycles = 10 * LONG
    broker = Broker(tmp).start()
    acked, replies = set(), Replies()
    sent = 0
    for cycle in range(cycles):
        requester = client(broker.mqtt, "fault-requester", on_message=replies.on_message)
        requester.subscribe("replies/fault", qos=1)
        mids = {}
        requester.on_publish = lambda _c, _u, mid, rc, _p: (rc.is_failure or (mids.get(mid) and acked.add(mids[mid])))
        killer = threading.Timer(0.5, broker.kill9)
        killer.start()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "replies/fault"
        while broker.proc.poll() is None:
            tid = f"k{cycle}-{sent}"
            info = requester.publish("tasks/word_count",
                                     json.dumps({"id": tid, "task": "mapper", "args": ["Lilliput"]}),
                                     qos=1, properties=props)
            mids[info.mid] = tid
            sent += 1
            if sent % 200 == 0:
                time.sleep(0.001)
        killer.join()
        requester.loop_stop()
        broker.start()
    requester = client(broker.mqtt, "fault-requester", on_message=replies.on_message)
    requester.subscribe("replies/fault", qos=1)
    workers = word_count_worker(broker.mqtt, 2)
    try:
        # Every acknowledged task's result reaches the requester (the
        # history may miss steps a kill cut short; the queue store may not).
        try:
            until("every acknowledged task answered", lambda: all(i in replies for i in acked), timeout=120)
        except AssertionError:
            pass
        missing = [i for i in acked if i not in replies]
        twice = replies.twice()
        ran = len(replies)
        print(f"kill9: {cycles} kill -9 cycles, {sent} tasks sent, {len(acked)} acknowledged, "
              f"{ran} answered (unacknowledged ones that were stored run too), "
              f"{len(missing)} acknowledged lost, {len(twice)} answered twice")
        assert not missing, f"acknowledged tasks lost: {sorted(missing)[:5]}"
        assert not twice, f"answered twice: {twice[:5]}"
    finally:
        for w in workers:
            w.kill()
        requester.loop_stop()
        broker.stop()


def case_worker_storm(tmp):
    """Workers killed again and again while they hold tasks: every task is
    answered exactly once, with its attempts showing the lost deliveries."""
    tasks = 5000 * LONG
    broker = Broker(tmp, {"SWARMQ__TASKS__FLAP_THRESHOLD": "1000"}).start()
    replies = Replies()
    requester = client(broker.mqtt, "storm-requester", on_message=replies.on_message)
    requester.subscribe("replies/storm", qos=1)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/storm"
    ids = [f"s{i}" for i in range(tasks)]
    for tid in ids:
        requester.publish("tasks/word_count", json.dumps({"id": tid, "task": "mapper", "args": ["Brobdingnag"]}),
                          qos=1, properties=props)
    kills = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(replies) >= tasks:
            break
        workers = word_count_worker(broker.mqtt, 2)
        time.sleep(0.2)
        for w in workers:
            w.kill()
            w.wait()
            kills += 1
    workers = word_count_worker(broker.mqtt, 1)
    try:
        try:
            until("every task answered", lambda: len(replies) >= tasks, timeout=60)
        except AssertionError:
            raise stalled(broker, replies, tasks) from None
        twice = replies.twice()
        print(f"worker_storm: {tasks} tasks, {kills} workers killed holding tasks, "
              f"{len(replies)} answered, {len(twice)} answered twice")
        assert not twice
    finally:
        for w in workers:
            w.kill()
        requester.loop_stop()
        broker.stop()


class FlakyLink:
    """A TCP proxy standing for a bad network between workers and the
    broker (this kernel has no netem): every chunk is held 0-10 ms, and
    every `every` seconds one connection is hit at random: cut with a reset,
    or black-holed (everything it sends either way is dropped from then on,
    with no close) until the broker's keep-alive gives up on it."""

    def __init__(self, target_port: int, every: float = 0.3, seed: int = 13):
        import random
        self.rng = random.Random(seed)
        self.target = target_port
        self.every = every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links = []  # [client socket, broker socket, black-holed until]
        self.lock = threading.Lock()
        self.cuts = self.holes = 0
        self.chaos = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._strike, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            try:
                far = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                near.close()
                continue
            link = [near, far, 0.0]
            with self.lock:
                self.links.append(link)
            for src, dst in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(link, src, dst), daemon=True).start()

    def _pump(self, link, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if time.monotonic() < link[2]:
                    continue  # black-holed: lost
                time.sleep(self.rng.random() * 0.01)
                dst.sendall(data)
        except OSError:
            pass
        self._drop(link)

    @staticmethod
    def _reset(sock):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        except OSError:
            pass

    def _drop(self, link):
        with self.lock:
            if link not in self.links:
                return
            self.links.remove(link)
        self._reset(link[0])
        self._reset(link[1])

    def _strike(self):
        while not self.closed:
            time.sleep(self.every)
            if not self.chaos.is_set():
                continue
            with self.lock:
                live = [l for l in self.links if l[2] == 0.0]
            if not live:
                continue
            link = self.rng.choice(live)
            if self.rng.random() < 0.7:
                self.cuts += 1
                self._drop(link)
            else:
                # Never resumed: a stream with a hole in it is not what a
                # network delivers (TCP retransmits or the connection dies).
                self.holes += 1
                link[2] = float("inf")

    def close(self):
        self.closed = True
        self.listener.close()
        with self.lock:
            links = list(self.links)
        for link in links:
            self._drop(link)


def case_network(tmp):
    """Workers behind a lossy, cutting network (FlakyLink): every task
    submitted is answered once, none lost, none twice."""
    tasks = 5000 * LONG
    # A short keep-alive, so that the broker gives up on a black-holed
    # worker within seconds (MQTT 5 clients are told the server's value).
    # Quarantine off and attempts plenty: this case is about the network
    # losing nothing, not about the policy for flapping workers.
    broker = Broker(tmp, {"SWARMQ__MQTT__MAX_KEEP_ALIVE_SECS": "2", "SWARMQ__TASKS__FLAP_THRESHOLD": "0",
                          "SWARMQ__TASKS__MAX_ATTEMPTS": "100"}).start()
    link = FlakyLink(broker.mqtt)
    replies = Replies()
    requester = client(broker.mqtt, "network-requester", on_message=replies.on_message)
    requester.subscribe("replies/network", qos=1)
    workers = word_count_worker(link.port, 3)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/network"
    try:
        link.chaos.set()
        start = time.monotonic()
        for i in range(tasks):
            requester.publish("tasks/word_count", json.dumps({"id": f"n{i}", "task": "mapper", "args": ["Laputa"]}),
                              qos=1, properties=props)
            if i % 50 == 0:
                time.sleep(0.1)  # spread over ~10 s (x LONG), so the chaos meets work in flight
        until("the chaos has run 15 s", lambda: time.monotonic() - start > 15, timeout=60, every=0.5)
        link.chaos.clear()
        try:
            until("every task answered", lambda: len(replies) >= tasks, timeout=120)
        except AssertionError:
            raise stalled(broker, replies, tasks,
                          f"; links open {len(link.links)} (black-holed {sum(1 for l in link.links if l[2])}), "
                          f"cuts {link.cuts} holes {link.holes}, worker exits {[p.poll() for p in workers]}") from None
        twice = replies.twice()
        answered = len(replies)
        statuses = dict(replies.statuses)
        print(f"network: {tasks} tasks to 3 workers behind a flaky link: {link.cuts} connections cut, "
              f"{link.holes} black-holed until the broker's keep-alive, chunks held 0-10 ms; {answered} answered {statuses}, "
              f"{len(twice)} answered twice")
        assert not twice, f"answered twice: {twice[:5]}"
        assert statuses.get("success") == tasks, statuses
        assert link.cuts + link.holes > 10, "the link was hardly hit"
    finally:
        link.close()
        for w in workers:
            w.kill()
        requester.loop_stop()
        broker.stop()


def raise_fd_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, n), hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def case_idle_sockets(tmp):
    """10,000 sockets that never send CONNECT are closed after
    mqtt.connect_timeout_ms, and the broker serves meanwhile."""
    n = min(10000 * LONG, raise_fd_limit(10000 * LONG + 200) - 200)
    broker = Broker(tmp, {"SWARMQ__MQTT__CONNECT_TIMEOUT_MS": "3000"}).start()
    try:
        before = broker.rss()
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", broker.mqtt))
            socks.append(s)
        held = broker.rss()
        assert broker.healthy()
        # A real client behind them connects at once (a raw CONNECT: paho's
        # select() loop cannot take descriptors past 1,024).
        start = time.monotonic()
        s = socket.create_connection(("127.0.0.1", broker.mqtt))
        s.sendall(connect_packet(b"idle-check"))
        s.settimeout(10)
        assert s.recv(4)[:1] == b"\x20", "no CONNACK behind the idle sockets"
        connack_s = time.monotonic() - start
        s.close()
        start = time.monotonic()
        for s in socks:
            s.settimeout(30)
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
            s.close()
        took = time.monotonic() - start
        print(f"idle_sockets: {n} sockets without CONNECT, RSS {before >> 20} -> {held >> 20} MiB while held; "
              f"a real client's CONNACK after {connack_s * 1000:.0f} ms; all closed {took:.1f} s after the last "
              f"opened (timeout 3 s); /healthz answered meanwhile")
    finally:
        broker.stop()


def connect_packet(client_id: bytes, version=4) -> bytes:
    body = b"\x00\x04MQTT" + bytes([version, 0x02, 0, 60]) + (b"\x00" if version == 5 else b"")
    body += len(client_id).to_bytes(2, "big") + client_id
    return bytes([0x10, len(body)]) + body


def case_clients(tmp):
    """10,000 connected MQTT clients: RSS per client, and a task still runs."""
    n = min(10000 * LONG, raise_fd_limit(10000 * LONG + 200) - 200)
    broker = Broker(tmp).start()
    workers = word_count_worker(broker.mqtt, 1)
    try:
        before = broker.rss()
        socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", broker.mqtt))
            s.sendall(connect_packet(f"many-{i}".encode(), 4 if i % 2 else 5))
            socks.append(s)
        for s in socks:
            s.settimeout(30)
            assert s.recv(4)[:1] == b"\x20"
        until("all connected", lambda: broker.api("/overview").get("connections", 0) >= n, timeout=60)
        held = broker.rss()
        out = subprocess.run([os.path.join(BIN, "word-count"), "count", "--url", f"mqtt://127.0.0.1:{broker.mqtt}",
                              "--words", "2190", os.path.join(ROOT, "devices", "word-count", "text", "aesop11.txt")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.splitlines()[0] == "would 12", out.stdout + out.stderr
        per = (held - before) / n
        print(f"clients: {n} connected clients (half 3.1.1, half 5), RSS {before >> 20} -> {held >> 20} MiB, "
              f"{per / 1024:.1f} KiB per client; the word count meanwhile: {out.stdout.splitlines()[-1]}")
        for s in socks:
            s.close()
    finally:
        for w in workers:
            w.kill()
        broker.stop()


def case_reconnect(tmp):
    """DISCONNECT, close, CONNECT again at once with the same client id:
    never refused, in both versions."""
    tries = 1000 * LONG
    broker = Broker(tmp).start()
    try:
        refused = {4: 0, 5: 0}
        for version in (4, 5):
            for _ in range(tries):
                s = socket.create_connection(("127.0.0.1", broker.mqtt))
                s.sendall(connect_packet(b"same-id", version))
                ack = s.recv(16)
                code = ack[3] if len(ack) > 3 else 255
                if ack[:1] != b"\x20" or code != 0:
                    refused[version] += 1
                s.sendall(b"\xe0\x00")
                s.close()
        print(f"reconnect: {tries} same-id reconnects per version, refused: 3.1.1 {refused[4]}, 5.0 {refused[5]}")
        assert refused == {4: 0, 5: 0}
    finally:
        broker.stop()


def case_slowloris(tmp):
    """2,000 half-sent HTTP requests: cut off, and /healthz answers throughout."""
    n = min(2000 * LONG, raise_fd_limit(2000 * LONG + 200) - 200)
    broker = Broker(tmp).start()
    try:
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", broker.http))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: swarmq\r\n")
            socks.append(s)
        start = time.monotonic()
        answered = 0
        while time.monotonic() - start < 3:
            answered += broker.healthy()
        closed = 0
        for s in socks:
            s.settimeout(30)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, socket.timeout):
                pass
            closed += 1
            s.close()
        took = time.monotonic() - start
        print(f"slowloris: {n} half-sent requests, /healthz answered {answered} times in the 3 s after, "
              f"all {closed} cut off within {took:.1f} s")
        assert answered > 0
    finally:
        broker.stop()


CASES = {
    "kill9": case_kill9,
    "worker_storm": case_worker_storm,
    "network": case_network,
    "idle_sockets": case_idle_sockets,
    "clients": case_clients,
    "reconnect": case_reconnect,
    "slowloris": case_slowloris,
}


def main():
    global LONG
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--long", action="store_true", help="the long variants (by hand)")
    p.add_argument("cases", nargs="*", help=", ".join(CASES))
    opts = p.parse_args()
    unknown = [c for c in opts.cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}: choose from {', '.join(CASES)}")
    LONG = 5 if opts.long else 1
    failed = []
    for name in opts.cases or list(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.monotonic()
            try:
                CASES[name](tmp)
                print(f"  ok {name} ({time.monotonic() - start:.0f} s)", flush=True)
            except Exception as exc:  # noqa: BLE001 - report every case
                failed.append(name)
                print(f"  FAILED {name}: {type(exc).__name__}: {exc}", flush=True)
                log = os.path.join(tmp, "broker.log")
                if os.path.exists(log):
                    print(open(log, errors="replace").read()[-2000:])
                stacks = os.path.join(tmp, "stacks.txt")
                if os.path.exists(stacks):
                    kept = shutil.copy(stacks, f"/tmp/swarmq-faults-{name}-stacks.txt")
                    print(f"the broker's thread stacks (also in {kept}):")
                    print(open(stacks, errors="replace").read()[:20000])
    print(f"faults: {len(opts.cases or CASES) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
