# A swarmq worker for MicroPython boards: takes tasks of one queue through a
# shared subscription and answers each on its reply topic.
#
#   import worker, config
#   worker.serve(config, {"mapper": mapper})
import json
import time

import swarmq_device


def serve(config, handlers, max_tasks=0):
    """Serves the tasks named in `handlers` (name -> function of the
    task's args) from config.QUEUE, reconnecting after a lost connection.
    Returns after `max_tasks` tasks when it is not 0."""
    done = 0
    backoff = 1
    while True:
        try:
            done = _serve_once(config, handlers, max_tasks, done)
            return done
        except OSError as e:
            print("connection lost (%s); reconnecting in %d s" % (e, backoff))
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)


def _serve_once(config, handlers, max_tasks, done):
    c = swarmq_device.client(config, "worker")
    inbox = []
    # Called from inside umqtt while it reads: only keep the message, so a
    # publish (which reads its PUBACK) never runs inside another.
    c.set_callback(lambda topic, msg: inbox.append(msg))
    c.connect()
    c.subscribe(b"$share/micropython/tasks/" + config.QUEUE.encode(), qos=1)
    print("worker %s ready on queue %s" % (c.client_id_str, config.QUEUE))
    while True:
        if not inbox:
            c.wait_msg()
            continue
        task = json.loads(inbox.pop(0))
        reply = {"id": task.get("id")}
        handler = handlers.get(task.get("task"))
        try:
            if handler is None:
                reply["error"] = "no handler for task `%s` on this board" % task.get("task")
            elif "chunk" in task:
                reply["result"] = [handler(*item) for item in task["chunk"]]
            else:
                reply["result"] = handler(*task.get("args", []))
        except Exception as e:  # a task's error is its answer
            reply["error"] = "%s: %s" % (type(e).__name__, e)
        c.publish(task["reply_to"].encode(), json.dumps(reply).encode(), qos=1)
        done += 1
        if max_tasks and done >= max_tasks:
            c.disconnect()
            return done
