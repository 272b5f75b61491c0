"""The original experiment's Celery app: one `mapper(word)` task per word.

Used by benches/wordcount.sh as the anchor, run on the same machine in the
same benchmark run (Celery + Redis, 2 prefork processes).
"""
import os

from celery import Celery

BROKER = os.environ.get("CELERY_BROKER", "redis://127.0.0.1:6379/0")
app = Celery("tasks", broker=BROKER, backend=BROKER)


@app.task
def mapper(word):
    return (word, 1) if len(word) >= 5 else None


@app.task
def reduce(results):
    """The reduce step of the workflow benchmarks: the mapper results (or,
    after chunks, lists of them) summed into the top 5."""
    counts = {}
    stack = list(results)
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
            counts[item[0]] = counts.get(item[0], 0) + item[1]
        elif isinstance(item, list):
            stack.extend(item)
    return sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:5]
