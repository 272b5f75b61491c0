"""swarmq for Python: Celery-shaped tasks over the swarmq MQTT task broker.

    import swarmq

    app = swarmq.App("mqtt://127.0.0.1:1883")

    @app.task(queue="word_count")
    def mapper(word):
        return (word, 1) if len(word) >= 5 else None

    # a worker process:     app.worker(concurrency=4).run()
    # a client:             mapper.delay("Fables").get(timeout=10) -> ["Fables", 1]

Depends only on paho-mqtt 2.x. The wire contract is docs/PROTOCOL.md.
"""

from .app import App, Task
from .canvas import Signature, chain, chord, chunks, group
from .client import FINAL, AsyncResult
from .errors import ConnectError, Retry, SwarmqError, TaskFailed, TimeoutError
from .worker import TaskContext, Worker, current_task, report_progress

__all__ = [
    "App", "Task", "AsyncResult", "FINAL", "Worker", "TaskContext", "current_task",
    "report_progress", "Signature", "chain", "group", "chord", "chunks",
    "SwarmqError", "ConnectError", "TimeoutError", "TaskFailed", "Retry",
]
__version__ = "0.1.0"
