"""The original experiment's Celery app, on swarmq: one `mapper(word)` task per word.

    python -m swarmq worker -A tasks -c 8          # the worker
    python producer.py aesop11.txt 2190            # the notebook's producer

docs/PYTHON.md shows the diff against the Celery original (benches/celery/tasks.py).
"""
import os

import swarmq

BROKER = os.environ.get("SWARMQ_URL", "mqtt://127.0.0.1:1883")
app = swarmq.App(BROKER, default_queue="word_count",
                 username=os.environ.get("SWARMQ_USERNAME"), password=os.environ.get("SWARMQ_PASSWORD"))


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
