"""``python -m swarmq worker -A tasks -c 5``: a worker for the App in a
module, as ``celery -A tasks worker -c 5`` is."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from .app import App
from .errors import ConnectError


def _find_app(spec: str) -> App:
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    if attr:
        return getattr(module, attr)
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) != 1:
        raise SystemExit(f"swarmq: {module_name} has {len(apps)} swarmq.App objects; name one: -A {module_name}:app")
    return apps[0]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m swarmq", description="Run a swarmq worker for an App's tasks.")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="serve the tasks of an App")
    w.add_argument("-A", "--app", required=True, help="module[:attribute] holding the swarmq.App")
    w.add_argument("-c", "--concurrency", type=int, default=4, help="tasks at once (default 4)")
    w.add_argument("-Q", "--queues", help="comma-separated queues (default: every task's queue)")
    w.add_argument("--group", default="python", help="shared-subscription group (default python)")
    w.add_argument("-P", "--pool", choices=["threads", "solo"], default="threads",
                   help="threads (default), or solo: tasks in the network thread, for short tasks")
    w.add_argument("--loglevel", default="WARNING")
    opts = p.parse_args(argv)
    logging.basicConfig(level=opts.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = _find_app(opts.app)
    queues = opts.queues.split(",") if opts.queues else None
    try:
        app.worker(concurrency=opts.concurrency, queues=queues, group=opts.group, pool=opts.pool).run()
    except ConnectError as exc:
        print(f"swarmq: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
