"""The requester side: submitting tasks and workflows, and their results.

One MQTT connection per :class:`swarmq.App`, opened at the first request.
Results come back on the app's own reply topic with the task id as the
Correlation Data, so any number of tasks can be waited for at once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, Optional

from paho.mqtt.client import MQTTMessage

from . import _conn
from .errors import SwarmqError, TaskFailed, TimeoutError

#: Statuses after which a task or workflow does not change.
FINAL = frozenset({"success", "failure", "rejected", "expired", "revoked"})


class _Waiter:
    """One request's answer, when it comes, and its progress reports."""

    __slots__ = ("done", "answer", "progress", "on_progress")

    def __init__(self, on_progress: Optional[Callable[[Any], None]] = None):
        self.done = _conn.Flag()
        self.answer: Optional[dict] = None
        self.progress: Any = None
        self.on_progress = on_progress


class Requester:
    """Publishes requests with this client's reply topic and hands each
    answer to its waiter. Thread-safe."""

    def __init__(self, broker: _conn.Broker):
        self._broker = broker
        self._lock = threading.Lock()
        self._client = None
        self._waiters: Dict[str, _Waiter] = {}
        self._client_id = broker.client_id("client")
        self.reply_topic = broker.reply_topic(self._client_id)

    def _connected(self):
        with self._lock:
            if self._client is not None:
                return self._client
            client = _conn.new_client(self._broker, self._client_id)
            subscribed = threading.Event()
            client.on_message = self._on_message
            client.on_subscribe = lambda *_a: subscribed.set()
            _conn.connect(
                client,
                self._broker,
                on_connected=lambda c: c.subscribe(self.reply_topic, qos=1),
            )
            if not subscribed.wait(_conn.CONNECT_TIMEOUT):
                client.loop_stop()
                raise SwarmqError(f"the broker did not confirm the subscription to {self.reply_topic}")
            self._client = client
            return client

    def _on_message(self, _client, _userdata, msg: MQTTMessage) -> None:
        try:
            answer = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        props = getattr(msg, "properties", None)
        raw = getattr(props, "CorrelationData", None)
        key = raw.decode("utf-8", "replace") if raw else answer.get("correlation_id")
        with self._lock:
            waiter = self._waiters.get(key) if key else None
            if waiter is None:
                return
            if answer.get("status") == "progress":
                waiter.progress = answer.get("progress")
            else:
                del self._waiters[key]
                waiter.answer = answer
        if answer.get("status") == "progress":
            if waiter.on_progress is not None:
                waiter.on_progress(waiter.progress)
        else:
            waiter.done.set()

    def request(
        self,
        topic: str,
        payload: dict,
        key: Optional[str] = None,
        on_progress: Optional[Callable[[Any], None]] = None,
    ) -> _Waiter:
        """Publishes ``payload`` to ``topic`` (QoS 1) with the answer asked
        for on this client's reply topic under ``key``; returns its waiter."""
        client = self._connected()
        key = key or _conn.new_id()
        waiter = _Waiter(on_progress)
        with self._lock:
            self._waiters[key] = waiter
        info = client.publish(
            topic,
            json.dumps(payload, separators=(",", ":")),
            qos=1,
            properties=_conn.publish_properties(self.reply_topic, key.encode()),
        )
        if info.rc != 0:
            with self._lock:
                self._waiters.pop(key, None)
            raise SwarmqError(f"cannot publish to {topic}: paho error {info.rc}")
        return waiter

    def ask(self, topic: str, payload: dict, timeout: float) -> dict:
        """A request and its answer (for history fetches and revokes)."""
        waiter = self.request(topic, payload)
        if not waiter.done.wait(timeout):
            raise TimeoutError(f"no answer on {topic} within {timeout:g} s")
        assert waiter.answer is not None
        return waiter.answer

    def forget(self, key: str) -> None:
        """Stops waiting for ``key``'s answer."""
        with self._lock:
            self._waiters.pop(key, None)

    def close(self) -> None:
        """Disconnects; waiters still open get nothing more."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()


class AsyncResult:
    """A task's (or workflow's) result, now or later, as in Celery.

    ``status`` is swarmq's: ``queued``, ``scheduled``, ``running``, then one
    of ``success``, ``failure``, ``rejected``, ``expired``, ``revoked``;
    ``unknown`` when the broker has no such id.
    """

    def __init__(self, task_id: str, app: "Any", waiter: Optional[_Waiter] = None):
        self.id = task_id
        self._app = app
        self._waiter = waiter
        self._answer: Optional[dict] = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id} {self.status}>"

    def _final(self) -> Optional[dict]:
        if self._answer is None and self._waiter is not None and self._waiter.done.is_set():
            self._answer = self._waiter.answer
        return self._answer

    def get(self, timeout: Optional[float] = None, propagate: bool = True, interval: float = 0.2) -> Any:
        """Waits for the result and returns its value. Raises
        :class:`TaskFailed` when the task did not succeed (unless
        ``propagate`` is false: then returns the error message) and
        :class:`swarmq.TimeoutError` after ``timeout`` seconds.

        A result of this client's own request arrives pushed on its reply
        topic; one fetched by id only (``app.AsyncResult(id)``) is asked of
        the broker's history every ``interval`` seconds, growing to 2 s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        answer = self._final()
        if answer is None and self._waiter is not None:
            if not self._waiter.done.wait(timeout):
                raise TimeoutError(f"no result for {self.id} within {timeout:g} s")
            answer = self._final()
        while answer is None:
            record = self._app._fetch(self.id)
            if record.get("status") in FINAL:
                self._answer = answer = record
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"no result for {self.id} within {timeout:g} s")
            time.sleep(interval if left is None else min(interval, left))
            interval = min(interval * 1.5, 2.0)
        if answer.get("status") == "success":
            return answer.get("result")
        if propagate:
            raise TaskFailed(self.id, answer.get("status", ""), answer.get("error") or "", answer)
        return answer.get("error")

    @property
    def status(self) -> str:
        """Where it stands (asks the broker unless the result is here)."""
        answer = self._final()
        if answer is not None:
            return answer.get("status", "")
        return self._app._fetch(self.id).get("status", "unknown")

    state = status

    @property
    def result(self) -> Any:
        """The value once it succeeded, the error message once it failed,
        None before."""
        answer = self._final()
        if answer is None:
            return None
        return answer.get("result") if answer.get("status") == "success" else answer.get("error")

    @property
    def progress(self) -> Any:
        """The worker's latest progress report seen (asked for with
        ``apply_async(progress=…)``)."""
        return None if self._waiter is None else self._waiter.progress

    def ready(self) -> bool:
        """True once the task is final."""
        return self.status in FINAL

    def successful(self) -> bool:
        """True once the task succeeded."""
        return self.status == "success"

    def failed(self) -> bool:
        """True once the task ended without success."""
        s = self.status
        return s in FINAL and s != "success"

    def revoke(self, timeout: float = 10.0) -> str:
        """Revokes the task wherever it stands; returns the broker's answer:
        ``revoked``, ``finished`` (too late) or ``unknown``."""
        return self._app.revoke(self.id, timeout=timeout)
