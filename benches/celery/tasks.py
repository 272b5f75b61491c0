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
