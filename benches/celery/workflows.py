"""Celery's canvas on the word count, as benches/workflows.sh runs swarmq's:
`chord` (one mapper per word, then the reduce) or `chunks` (chunks of N
words, then the reduce). Prints the top 5 and members/s, or that it did not
finish within the timeout.

    python3 workflows.py chord FILE [TIMEOUT_S]
    python3 workflows.py chunks FILE SIZE [TIMEOUT_S]
"""
import sys
import time

from celery import chord
from celery.exceptions import TimeoutError as CeleryTimeout

from producer import tokenize
from tasks import mapper, reduce


def main():
    mode, path = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if mode == "chunks" else 0
    timeout = float(sys.argv[4 if mode == "chunks" else 3]) if len(sys.argv) > (4 if mode == "chunks" else 3) else 600.0
    words = tokenize(path)
    start = time.perf_counter()
    if mode == "chord":
        members = len(words) + 1
        workflow = chord((mapper.s(w) for w in words), reduce.s())
    else:
        members = -(-len(words) // size) + 1
        workflow = chord(mapper.chunks(((w,) for w in words), size).group(), reduce.s())
    result = workflow.apply_async()
    try:
        top = result.get(timeout=timeout)
    except CeleryTimeout:
        wall = time.perf_counter() - start
        print(f"{len(words)} words, {members} members: did not finish within {wall:.0f} s")
        return
    wall = time.perf_counter() - start
    for word, n in top:
        print(f"{word} {n}")
    print(f"{len(words)} words, {members} members in {wall:.3f} s ({members / wall:.0f} members/s)")


if __name__ == "__main__":
    main()
