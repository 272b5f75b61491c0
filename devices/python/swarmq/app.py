"""``swarmq.App``: tasks declared as in Celery, sent to and served by a
swarmq broker over MQTT 5."""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from . import _conn
from .canvas import Node, Signature, chunks, new_workflow_id
from .client import AsyncResult, Requester
from .errors import Retry, TaskFailed
from .worker import TaskContext, Worker

#: Topics of the broker's own services.
WORKFLOWS_TOPIC = "swarmq/workflows"
HISTORY_TOPIC = "swarmq/history/get"
REVOKE_TOPIC = "swarmq/revoke"


def _time(value: Union[None, float, int, str, _dt.datetime]) -> Any:
    """An ``eta``/``expires`` value as the broker reads it: seconds stay a
    number, a datetime becomes RFC 3339 (naive ones taken as UTC)."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.isoformat()
    return value


class Task:
    """A function registered with ``@app.task``: call it to run it here,
    ``.delay()`` / ``.apply_async()`` to run it on a worker."""

    def __init__(self, app: "App", fn: Callable[..., Any], name: str, queue: str, bind: bool):
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.bind = bind
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<swarmq task {self.name} on {self.queue}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the function in this process, as Celery does."""
        return self.fn(*args, **kwargs)

    def run_here(self, ctx: TaskContext, args: Sequence[Any], kwargs: Dict[str, Any]) -> Any:
        """Runs it for a worker (bound tasks get the context first)."""
        if self.bind:
            return self.fn(ctx, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Dict[str, Any]] = None,
        *,
        countdown: Optional[float] = None,
        eta: Union[None, str, _dt.datetime] = None,
        expires: Union[None, float, str, _dt.datetime] = None,
        priority: Optional[int] = None,
        max_attempts: Optional[int] = None,
        retry: Optional[Dict[str, Any]] = None,
        task_id: Optional[str] = None,
        queue: Optional[str] = None,
        progress: Optional[Callable[[Any], None]] = None,
    ) -> AsyncResult:
        """Sends the task to its queue and returns its :class:`AsyncResult`
        at once. ``countdown`` (seconds) or ``eta`` delay it, ``expires``
        bounds its wait, ``priority`` is 0-9 (higher first), ``max_attempts``
        or ``retry`` (``{"max_attempts", "backoff_ms", "backoff_max_ms",
        "jitter"}``) set its retries, ``task_id`` is its idempotency key;
        ``progress`` is called with each progress report of its worker."""
        return self.app.send_task(
            self.name, args, kwargs, queue=queue or self.queue, countdown=countdown, eta=eta,
            expires=expires, priority=priority, max_attempts=max_attempts, retry=retry,
            task_id=task_id, progress=progress,
        )

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature for workflows: ``mapper.s("Fables")``."""
        return Signature(self.queue, self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a chain does not prepend its previous result."""
        return Signature(self.queue, self.name, args, kwargs, immutable=True, app=self.app)

    def chunks(self, items: Iterable[Sequence[Any]], size: int) -> chunks:
        """``items`` (each a tuple of arguments) in tasks of ``size`` items."""
        return chunks(self.queue, self.name, items, size, app=self.app)


class App:
    """A swarmq application: its tasks, its broker, a worker and a client.

        app = swarmq.App("mqtt://127.0.0.1:1883", username="dev1", password="sqt_…")

        @app.task(queue="word_count")
        def mapper(word):
            return (word, 1) if len(word) >= 5 else None

        mapper.delay("Fables").get(timeout=10)      # ["Fables", 1]
        app.worker(concurrency=4).run()             # in the worker process
    """

    def __init__(
        self,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        username: Optional[str] = None,
        password: Optional[str] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        default_queue: str = "celery",
    ):
        self.broker = _conn.Broker.parse(
            url, username=username, password=password, ca_file=ca_file,
            cert_file=cert_file, key_file=key_file,
        )
        self.default_queue = default_queue
        #: Registered tasks by name.
        self.tasks: Dict[str, Task] = {}
        self._requester: Optional[Requester] = None

    def __repr__(self) -> str:
        return f"<swarmq.App {self.broker.host}:{self.broker.port}>"

    # --- declaring tasks ---

    def task(self, fn: Optional[Callable[..., Any]] = None, *, name: Optional[str] = None,
             queue: Optional[str] = None, bind: bool = False) -> Any:
        """Registers a task: ``@app.task`` or ``@app.task(queue="q",
        name="n", bind=True)``. The name defaults to the function's (as the
        wire's ``task`` field), the queue to ``default_queue``."""
        def register(f: Callable[..., Any]) -> Task:
            t = Task(self, f, name or f.__name__, queue or self.default_queue, bind)
            self.tasks[t.name] = t
            return t

        if fn is not None and inspect.isfunction(fn):
            return register(fn)
        return register

    @staticmethod
    def retry(after: Optional[float] = None, reason: str = "retry") -> Retry:
        """``raise app.retry(after=30)`` in a task: try it again after 30 s
        (or the queue's backoff), until its attempts are used up."""
        return Retry(reason, after)

    # --- serving ---

    def worker(self, concurrency: int = 4, queues: Optional[List[str]] = None,
               group: str = "python", grace: float = 30.0, pool: str = "threads") -> Worker:
        """A worker for this app's tasks (or ``queues``): call ``.run()``.
        ``pool="solo"`` runs tasks in the network thread (short tasks)."""
        return Worker(self, concurrency=concurrency, queues=queues, group=group, grace=grace, pool=pool)

    # --- requesting ---

    @property
    def requester(self) -> Requester:
        if self._requester is None:
            self._requester = Requester(self.broker)
        return self._requester

    def send_task(
        self,
        name: str,
        args: Optional[Sequence[Any]] = None,
        kwargs: Optional[Dict[str, Any]] = None,
        *,
        queue: Optional[str] = None,
        countdown: Optional[float] = None,
        eta: Union[None, str, _dt.datetime] = None,
        expires: Union[None, float, str, _dt.datetime] = None,
        priority: Optional[int] = None,
        max_attempts: Optional[int] = None,
        retry: Optional[Dict[str, Any]] = None,
        task_id: Optional[str] = None,
        progress: Optional[Callable[[Any], None]] = None,
    ) -> AsyncResult:
        """Sends task ``name`` by name (it need not be registered here), as
        Celery's ``send_task``; the options are :meth:`Task.apply_async`'s."""
        task_id = task_id or _conn.new_id()
        payload: Dict[str, Any] = {"id": task_id, "task": name, "args": list(args or [])}
        if kwargs:
            payload["kwargs"] = kwargs
        options = {"countdown": countdown, "eta": _time(eta), "expires": _time(expires),
                   "priority": priority}
        payload.update({k: v for k, v in options.items() if v is not None})
        if max_attempts is not None:
            retry = dict(retry or {}, max_attempts=max_attempts)
        if retry:
            payload["retry"] = retry
        if progress is not None:
            payload["progress"] = True
        topic = f"tasks/{queue or self.default_queue}"
        waiter = self.requester.request(topic, payload, key=task_id, on_progress=progress)
        return AsyncResult(task_id, self, waiter)

    def send_workflow(self, node: Node, workflow_id: Optional[str] = None,
                      progress: Optional[Callable[[Any], None]] = None) -> AsyncResult:
        """Submits a workflow (see :mod:`swarmq.canvas`); one result comes."""
        workflow_id = workflow_id or new_workflow_id()
        payload: Dict[str, Any] = {"id": workflow_id, "workflow": node.to_json()}
        if progress is not None:
            payload["progress"] = True
        waiter = self.requester.request(WORKFLOWS_TOPIC, payload, key=workflow_id, on_progress=progress)
        return AsyncResult(workflow_id, self, waiter)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        """The result of a task or workflow by id, submitted by anybody at
        any time (fetched from the broker's history)."""
        return AsyncResult(task_id, self)

    def revoke(self, task_id: str, timeout: float = 10.0) -> str:
        """Revokes a task or workflow wherever it stands; returns
        ``revoked``, ``finished`` (too late) or ``unknown``. Raises
        :class:`TaskFailed` with status ``denied`` when not allowed."""
        answer = self.requester.ask(REVOKE_TOPIC, {"id": task_id}, timeout)
        status = answer.get("status", "")
        if status == "denied":
            raise TaskFailed(task_id, status, answer.get("error") or "not allowed", answer)
        return status

    def _fetch(self, task_id: str, timeout: float = 10.0) -> dict:
        """The broker's record of a task or workflow (``swarmq/history/get``)."""
        return self.requester.ask(HISTORY_TOPIC, {"id": task_id}, timeout)

    def close(self) -> None:
        """Closes the client connection, if one was opened."""
        if self._requester is not None:
            self._requester.close()
            self._requester = None

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
