# A swarmq requester for MicroPython boards: submits one task and waits
# for its result on the board's own reply topic.
#
#   import requester, config
#   result = requester.call(config, "word_count", "mapper", ["Fables"])
import json
import time

import swarmq_device


def call(config, queue, task, args, timeout_s=30):
    """Submits task(args) to queue and returns the broker's result object
    ({"status": "success", "result": …} or another status with "error")."""
    c = swarmq_device.client(config, "requester")
    answers = []
    c.set_callback(lambda topic, msg: answers.append(msg))
    c.connect()
    reply_to = swarmq_device.reply_topic(config, c.client_id_str)
    c.subscribe(reply_to.encode(), qos=1)
    correlation = "%s-%d" % (c.client_id_str, time.time())
    request = {"task": task, "args": args, "reply_to": reply_to, "correlation_id": correlation}
    c.publish(b"tasks/" + queue.encode(), json.dumps(request).encode(), qos=1)
    deadline = time.time() + timeout_s
    try:
        while time.time() < deadline:
            while answers:
                answer = json.loads(answers.pop(0))
                if answer.get("correlation_id") == correlation and answer.get("status") != "progress":
                    return answer
            c.check_msg()
            time.sleep(0.05)
        raise OSError("no result within %d s" % timeout_s)
    finally:
        c.disconnect()
