"""The original producer: send every mapper task, then collect every result."""
import collections
import sys
import time

from tasks import mapper


def tokenize(path, limit=None):
    with open(path, encoding="latin-1") as f:
        words = " ".join(f.readlines()).replace(",", "").replace(".", "").split()
    return words[:limit] if limit else words


def main():
    path, limit = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None
    words = tokenize(path, limit)
    start = time.perf_counter()
    pending = [mapper.delay(w) for w in words]
    counts = collections.Counter()
    for r in pending:
        pair = r.get(timeout=600)
        if pair is not None:
            counts[pair[0]] += pair[1]
    wall = time.perf_counter() - start
    top = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:5]
    for word, n in top:
        print(f"{word} {n}")
    print(f"{len(words)} tasks in {wall:.3f} s ({len(words) / wall:.0f} tasks/s)")


if __name__ == "__main__":
    main()
