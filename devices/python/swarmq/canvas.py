"""Celery's canvas, run by the broker: signatures, ``chain``, ``group``,
``chord`` and ``chunks``, sent as one message to ``swarmq/workflows``.

    from swarmq import chord
    res = chord(mapper.s(w) for w in words)(reduce.s())
    top5 = res.get(timeout=60)

The broker stores the whole workflow before acknowledging it, runs each
member as an ordinary task (ids ``<workflow id>/<path>``), and sends one
result; see docs/PROTOCOL.md, "Workflows".
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

#: Task options a signature may carry (as ``apply_async`` takes them).
OPTIONS = ("countdown", "eta", "expires", "priority", "retry")


class Node:
    """A workflow node: a signature, chain, group, chord or chunks."""

    _app: Any = None

    def to_json(self) -> dict:
        """The node as the workflow topic reads it."""
        raise NotImplementedError

    def _find_app(self) -> Any:
        return self._app

    def apply_async(
        self,
        workflow_id: Optional[str] = None,
        progress: Optional[Callable[[Any], None]] = None,
        app: Any = None,
    ):
        """Submits this node as a workflow and returns its
        :class:`~swarmq.AsyncResult`. ``workflow_id`` is its idempotency
        key; ``progress`` is called with each ``{"done", "total"}``."""
        app = app or self._find_app()
        if app is None:
            raise ValueError("this workflow names no app: build it from tasks of an App, or pass app=")
        return app.send_workflow(self, workflow_id=workflow_id, progress=progress)

    def delay(self):
        """Submits this node as a workflow (``apply_async()``)."""
        return self.apply_async()

    def __call__(self, **options: Any):
        return self.apply_async(**options)


class Signature(Node):
    """One task with its arguments and options: ``mapper.s("Fables")``.
    In a chain, the previous result is prepended to its args unless it is
    immutable (``mapper.si(…)``)."""

    def __init__(
        self,
        queue: str,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Optional[dict] = None,
        immutable: bool = False,
        app: Any = None,
        **options: Any,
    ):
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise TypeError(f"unknown task options: {', '.join(sorted(unknown))}")
        self.queue = queue
        self.task = task
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        self.options = options
        self._app = app

    def __repr__(self) -> str:
        return f"{self.task}{tuple(self.args)!r}"

    def set(self, **options: Any) -> "Signature":
        """The same signature with these task options (countdown, eta,
        expires, priority, retry)."""
        return Signature(self.queue, self.task, self.args, self.kwargs, self.immutable,
                         self._app, **{**self.options, **options})

    def to_json(self) -> dict:
        node = {"queue": self.queue, "task": self.task, "args": self.args}
        if self.kwargs:
            node["kwargs"] = self.kwargs
        if self.immutable:
            node["immutable"] = True
        node.update({k: v for k, v in self.options.items() if v is not None})
        return node


def _nodes(items: Iterable[Any]) -> List[Node]:
    nodes = list(items)
    for n in nodes:
        if not isinstance(n, Node):
            raise TypeError(f"not a signature or workflow node: {n!r}")
    return nodes


def _app_of(nodes: Iterable[Node]) -> Any:
    for n in nodes:
        app = n._find_app()
        if app is not None:
            return app
    return None


class chain(Node):
    """Runs its nodes one after another, each result prepended to the next
    node's args; the chain's result is the last node's.
    ``chain(a.s(), b.s())`` or ``a.s() | b.s()``."""

    def __init__(self, *nodes: Node):
        self.nodes = _nodes(nodes)
        if not self.nodes:
            raise ValueError("a chain needs at least one node")

    def _find_app(self) -> Any:
        return _app_of(self.nodes)

    def to_json(self) -> dict:
        return {"chain": [n.to_json() for n in self.nodes]}


class group(Node):
    """Runs its nodes at once; the result is their results, in order.
    ``group(mapper.s(w) for w in words)``."""

    def __init__(self, *nodes: Union[Node, Iterable[Node]]):
        if len(nodes) == 1 and not isinstance(nodes[0], Node):
            nodes = tuple(nodes[0])  # group(generator)
        self.nodes = _nodes(nodes)
        if not self.nodes:
            raise ValueError("a group needs at least one node")

    def _find_app(self) -> Any:
        return _app_of(self.nodes)

    def to_json(self) -> dict:
        return {"group": [n.to_json() for n in self.nodes]}


class chord(Node):
    """A group (the header) whose list of results is the first argument of
    the body. ``chord(header, body)``, or Celery's ``chord(header)(body)``,
    which submits at once."""

    def __init__(self, header: Union[Iterable[Node], group], body: Optional[Node] = None):
        self.header = header.nodes if isinstance(header, group) else _nodes(header)
        if not self.header:
            raise ValueError("a chord needs a header")
        self.body = body

    def _find_app(self) -> Any:
        return _app_of(self.header + ([self.body] if self.body else []))

    def __call__(self, body: Optional[Node] = None, **options: Any):  # type: ignore[override]
        if body is not None:
            return chord(self.header, body).apply_async(**options)
        return self.apply_async(**options)

    def to_json(self) -> dict:
        if self.body is None:
            raise ValueError("a chord needs a body: chord(header, body) or chord(header)(body)")
        return {"chord": {"header": [n.to_json() for n in self.header], "body": self.body.to_json()}}


class chunks(Node):
    """``items`` (each a list of arguments) cut into tasks of ``size``
    items; each chunk is one message, whose worker calls the task once per
    item. The result is the flat list of item results.
    ``mapper.chunks(((w,) for w in words), 100)``."""

    def __init__(self, queue: str, task: str, items: Iterable[Sequence[Any]], size: int, app: Any = None):
        if size < 1:
            raise ValueError("chunk size must be at least 1")
        self.queue, self.task, self.size, self._app = queue, task, size, app
        self.items = [list(i) for i in items]

    def to_json(self) -> dict:
        return {"chunks": {"queue": self.queue, "task": self.task, "items": self.items, "size": self.size}}


def _or(self: Node, other: Node) -> chain:
    left = self.nodes if isinstance(self, chain) else [self]
    right = other.nodes if isinstance(other, chain) else [other]
    return chain(*left, *right)


Node.__or__ = _or  # type: ignore[attr-defined]


def new_workflow_id() -> str:
    """A fresh workflow id."""
    return f"wf-{uuid.uuid4().hex}"
