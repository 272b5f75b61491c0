"""The exceptions of the swarmq package."""

from __future__ import annotations

from typing import Any, Optional


class SwarmqError(Exception):
    """Base class of every error this package raises."""


class ConnectError(SwarmqError, ConnectionError):
    """The broker refused the connection or could not be reached."""


class TimeoutError(SwarmqError, TimeoutError):  # noqa: A001 - Celery's name
    """No result within the time given. The task may still run."""


class TaskFailed(SwarmqError):
    """The task ended without success: ``status`` is ``failure``,
    ``rejected``, ``expired`` or ``revoked`` and ``error`` says why."""

    def __init__(self, task_id: Optional[str], status: str, error: str, result: Any = None):
        super().__init__(f"task {task_id} {status}: {error}")
        self.task_id = task_id
        self.status = status
        self.error = error
        #: The whole result object the broker sent.
        self.result = result


class Retry(SwarmqError):
    """Raised by a task (``raise app.retry(after=30)``) to be tried again:
    the broker schedules the next attempt after ``after`` seconds, or after
    its queue's backoff when ``after`` is None. When the attempts are used
    up, the task fails with ``reason``."""

    def __init__(self, reason: str = "retry", after: Optional[float] = None):
        super().__init__(reason)
        self.reason = reason
        self.after = after
