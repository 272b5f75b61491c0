"""The worker side: tasks taken through shared subscriptions, run on a pool
of threads, answered on their Response Topic.

The worker announces its concurrency as MQTT 5 Receive Maximum, which is
its capacity: the broker never sends it more unfinished tasks than that.
On SIGTERM (or :meth:`Worker.stop`) it unsubscribes, finishes the tasks in
hand, sends their results, and disconnects. paho reconnects with a backoff
after a cut; tasks held across a cut are given to another worker by the
broker, so nothing is lost.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from paho.mqtt.client import MQTTMessage

from . import _conn
from .errors import Retry

if TYPE_CHECKING:  # pragma: no cover
    from .app import App, Task

log = logging.getLogger("swarmq.worker")

_local = threading.local()


class TaskContext:
    """The task being run, as a bound task (``@app.task(bind=True)``) gets
    it as ``self`` and any task through :func:`current_task`."""

    def __init__(self, worker: "Worker", message: dict, reply_to: Optional[str], correlation: Optional[bytes]):
        self.id: str = message.get("id", "")
        self.task: str = message.get("task", "")
        self.queue: str = message.get("queue", "")
        self.args: List[Any] = message.get("args") or []
        self.kwargs: Dict[str, Any] = message.get("kwargs") or {}
        #: 1 for the first delivery; more after a retry or a redelivery
        #: (delivery is at-least-once: a task may run again after a crash).
        self.attempt: int = message.get("attempt", 1)
        #: The identity that submitted it, when the broker knows one.
        self.requester: Optional[str] = message.get("requester")
        self.workflow: Optional[str] = message.get("workflow")
        self._worker = worker
        self._reply_to = reply_to
        self._correlation = correlation
        self._cancelled = _conn.Flag()

    @property
    def request(self) -> "TaskContext":
        """Celery's ``self.request``: this context (``self.request.id``)."""
        return self

    def report_progress(self, value: Any) -> None:
        """Sends a progress report (any JSON value): it renews the task's
        lease, is shown on the dashboard, and reaches a requester that asked."""
        self._worker._answer(self, {"progress": value})

    def is_cancelled(self) -> bool:
        """True once the task was revoked while running; its answer is then
        ignored, so a long task may stop early."""
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleeps up to ``timeout`` seconds, waking at a revoke; returns
        whether the task was revoked."""
        return self._cancelled.wait(timeout)

    def retry(self, after: Optional[float] = None, reason: str = "retry") -> Retry:
        """``raise self.retry(after=30)``: try again later."""
        return Retry(reason, after)


def current_task() -> Optional[TaskContext]:
    """The task this thread is running, or None."""
    return getattr(_local, "task", None)


def report_progress(value: Any) -> None:
    """Reports progress for the task this thread is running."""
    ctx = current_task()
    if ctx is None:
        raise RuntimeError("report_progress() called outside a task")
    ctx.report_progress(value)


class Worker:
    """Serves an app's tasks. Build it with :meth:`swarmq.App.worker`."""

    def __init__(
        self,
        app: "App",
        concurrency: int = 4,
        queues: Optional[List[str]] = None,
        group: str = "python",
        client_id: Optional[str] = None,
        grace: float = 30.0,
        pool: str = "threads",
    ):
        if concurrency < 1 or concurrency > 65535:
            raise ValueError("concurrency must be 1 to 65535")
        if pool not in ("threads", "solo"):
            raise ValueError("pool must be 'threads' or 'solo'")
        #: "threads": tasks run on `concurrency` threads. "solo" (Celery's
        #: -P solo): tasks run one after another in the network thread, with
        #: no hand-off between threads, for short tasks; the broker still
        #: sends up to `concurrency`, so none waits for a round trip.
        self.pool = pool
        self.app = app
        self.concurrency = concurrency
        self.queues = sorted(set(queues or [t.queue for t in app.tasks.values()]))
        if not self.queues:
            raise ValueError("no queues: register a task first (@app.task) or pass queues=")
        self.group = group
        self.grace = grace
        self.client_id = client_id or app.broker.client_id("python-worker")
        #: Results sent, and how many of them were failures.
        self.completed = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._running: Dict[str, TaskContext] = {}
        self._idle = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._pool = (ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="swarmq-task")
                      if pool == "threads" else None)
        self._client = _conn.new_client(app.broker, self.client_id)
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._ready = threading.Event()
        self._client.on_subscribe = lambda *_a: self._ready.set()
        self._last_publish = None

    @property
    def filters(self) -> List[str]:
        """The shared subscriptions this worker takes tasks from."""
        return [f"$share/{self.group}/tasks/{q}" for q in self.queues]

    @property
    def control_topic(self) -> str:
        return f"swarmq/control/{self.client_id}"

    def start(self) -> None:
        """Connects and subscribes; returns once the broker has confirmed."""
        def subscribe(client):
            if self._stop.is_set():
                return
            client.subscribe([(self.control_topic, 1)] + [(f, 1) for f in self.filters])

        _conn.connect(self._client, self.app.broker, receive_maximum=self.concurrency,
                      on_connected=subscribe)
        if not self._ready.wait(_conn.CONNECT_TIMEOUT):
            raise _conn.ConnectError("the broker did not confirm the subscriptions")
        log.info("worker %s ready: queues %s, concurrency %d", self.client_id,
                 ",".join(self.queues), self.concurrency)

    def run(self, install_signals: bool = True) -> None:
        """Starts and serves until SIGTERM or SIGINT (or :meth:`stop` from
        another thread), then stops gracefully."""
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stop.set())
        self.start()
        print(f"swarmq worker {self.client_id} ready: {', '.join(self.queues)}", file=sys.stderr, flush=True)
        while not self._stop.wait(0.5):
            pass
        self.shutdown()

    def stop(self) -> None:
        """Asks :meth:`run` to stop (thread-safe, signal-safe)."""
        self._stop.set()

    def shutdown(self) -> None:
        """Stops taking tasks, finishes the ones in hand (up to ``grace``
        seconds), sends their results, and disconnects."""
        self._stop.set()
        try:
            self._client.unsubscribe(self.filters)
        except Exception:  # noqa: BLE001 - disconnected already: nothing to undo
            pass
        with self._idle:
            self._idle.wait_for(lambda: not self._running, timeout=self.grace)
            left = len(self._running)
        if self._pool is not None:
            self._pool.shutdown(wait=left == 0)
        if self._last_publish is not None:
            try:
                self._last_publish.wait_for_publish(5)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        print(f"swarmq worker {self.client_id} stopped: {self.completed} task(s) done, "
              f"{left} left unfinished", file=sys.stderr, flush=True)

    # --- in paho's network thread ---

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        if not self._stop.is_set():
            log.warning("connection lost (%s); reconnecting", reason_code)

    def _on_message(self, _client, _userdata, msg: MQTTMessage) -> None:
        try:
            message = json.loads(msg.payload)
        except ValueError:
            message = None
        if msg.topic == self.control_topic:
            if isinstance(message, dict) and isinstance(message.get("cancel"), str):
                with self._lock:
                    ctx = self._running.get(message["cancel"])
                if ctx is not None:
                    ctx._cancelled.set()
            return
        props = getattr(msg, "properties", None)
        if not isinstance(message, dict):
            log.warning("task message on %s is not a JSON object; ignored", msg.topic)
            return
        reply_to = getattr(props, "ResponseTopic", None) or message.get("reply_to")
        ctx = TaskContext(self, message, reply_to, getattr(props, "CorrelationData", None))
        with self._lock:
            self._running[ctx.id] = ctx
        if self._pool is None:
            self._run(ctx, message.get("chunk"))
        else:
            self._pool.submit(self._run, ctx, message.get("chunk"))

    # --- in a pool thread ---

    def _run(self, ctx: TaskContext, chunk: Optional[list]) -> None:
        _local.task = ctx
        answer: dict = {"error": "the worker failed to run the task"}
        try:
            answer = self._execute(ctx, chunk)
            if not ctx.is_cancelled():
                answer = self._answer(ctx, answer)
        finally:
            _local.task = None
            with self._idle:
                self._running.pop(ctx.id, None)
                self.completed += 1
                if "error" in answer:
                    self.failed += 1
                self._idle.notify_all()

    def _execute(self, ctx: TaskContext, chunk: Optional[list]) -> dict:
        task: Optional["Task"] = self.app.tasks.get(ctx.task)
        if task is None:
            return {"error": f"no handler for task `{ctx.task}`"}
        try:
            if chunk is not None:
                value: Any = [task.run_here(ctx, item if isinstance(item, list) else [item], {})
                              for item in chunk]
            else:
                value = task.run_here(ctx, ctx.args, ctx.kwargs)
        except Retry as r:
            answer: dict = {"error": r.reason, "retry": True}
            if r.after is not None:
                answer["retry_in"] = r.after
            return answer
        except Exception as exc:  # noqa: BLE001 - a task's error is its result
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"result": value}

    def _answer(self, ctx: TaskContext, answer: dict) -> dict:
        """Sends ``answer`` (a result, an error or a progress report) and
        returns what was sent: a result that is not JSON becomes an error
        naming why, as an exception in the task would. Progress that is
        not JSON raises, in the task that reported it."""
        payload = dict(answer, id=ctx.id)
        try:
            body = json.dumps(payload, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            if "result" not in answer:
                raise
            answer = {"error": f"{type(exc).__name__}: {exc}"}
            body = json.dumps(dict(answer, id=ctx.id), separators=(",", ":"))
        if not ctx._reply_to:
            log.warning("task %s has no reply topic; answer dropped", ctx.id)
            return answer
        # QoS 0, as the Rust SDK's worker: an answer lost with its
        # connection is not lost to the task, which the broker gives to
        # another worker when this one disconnects; a PUBACK per answer
        # would only cost a packet each way.
        self._last_publish = self._client.publish(
            ctx._reply_to,
            body,
            qos=0,
            properties=_conn.publish_properties(None, ctx._correlation),
        )
        return answer
