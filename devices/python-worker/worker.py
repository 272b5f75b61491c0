#!/usr/bin/env python3
"""A swarmq worker in plain Python with paho-mqtt: no SDK, just MQTT 5.

It takes `mapper` tasks from queue `word_count` through a shared subscription,
announces its capacity as Receive Maximum, and answers each task on its
Response Topic with its Correlation Data.

    pip install paho-mqtt
    python3 worker.py --host 127.0.0.1 --port 1883
    # as an identity, over TLS with the broker's CA:
    SWARMQ_USERNAME=w1 SWARMQ_PASSWORD=sqt_... python3 worker.py --port 8883 --cafile ca.pem
"""

import argparse
import json
import os
import signal
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def mapper(word):
    """The original word-count mapper."""
    return [word, 1] if len(word) >= 5 else None


HANDLERS = {"mapper": lambda args, kwargs: mapper(*args, **kwargs)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--queue", default="word_count")
    p.add_argument("--group", default="python")
    p.add_argument("--client-id", default="",
                   help="default: <username>:python-<pid> with a username, else assigned")
    p.add_argument("--username", default=os.environ.get("SWARMQ_USERNAME"),
                   help="identity name (default $SWARMQ_USERNAME)")
    p.add_argument("--password", default=os.environ.get("SWARMQ_PASSWORD"),
                   help="its token or password (default $SWARMQ_PASSWORD)")
    p.add_argument("--cafile", help="CA of the broker's TLS certificate: connect with TLS")
    p.add_argument("--cert", help="TLS client certificate (its CN names the identity)")
    p.add_argument("--key", help="the client certificate's key")
    p.add_argument("--max-tasks", type=int, default=0,
                   help="stop after this many tasks (0: run until Ctrl-C)")
    opts = p.parse_args()

    client_id = opts.client_id or (f"{opts.username}:python-{os.getpid()}" if opts.username else "")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=client_id, protocol=mqtt.MQTTv5)
    if opts.username:
        client.username_pw_set(opts.username, opts.password)
    if opts.cafile:
        client.tls_set(ca_certs=opts.cafile, certfile=opts.cert, keyfile=opts.key)
    done = {"n": 0}

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"connection refused: {reason_code}", file=sys.stderr)
            return
        client.subscribe(f"$share/{opts.group}/tasks/{opts.queue}", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        print("ready", flush=True)

    def on_message(client, userdata, msg):
        try:
            task = json.loads(msg.payload)
            handler = HANDLERS.get(task.get("task"))
            if handler is None:
                reply = {"error": f"no handler for task `{task.get('task')}`"}
            else:
                reply = {"result": handler(task.get("args", []), task.get("kwargs", {}))}
        except Exception as exc:  # a bad task must not kill the worker
            task = task if isinstance(task, dict) else {}
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        reply["id"] = task.get("id")
        # MQTT 5: answer on the Response Topic with the Correlation Data.
        props = getattr(msg, "properties", None)
        reply_to = getattr(props, "ResponseTopic", None) or task.get("reply_to")
        out = Properties(PacketTypes.PUBLISH)
        correlation = getattr(props, "CorrelationData", None)
        if correlation is not None:
            out.CorrelationData = correlation
        client.publish(reply_to, json.dumps(reply), qos=1, properties=out)
        done["n"] += 1
        if opts.max_tasks and done["n"] >= opts.max_tasks:
            client.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    connect_props = Properties(PacketTypes.CONNECT)
    connect_props.ReceiveMaximum = 1  # one task at a time: paho calls on_message serially
    client.connect(opts.host, opts.port, keepalive=30, clean_start=True,
                   properties=connect_props)
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    try:
        client.loop_forever()
    except KeyboardInterrupt:
        client.disconnect()
    print(f"worker stopped after {done['n']} tasks", file=sys.stderr)


if __name__ == "__main__":
    main()
