"""Publishes a QoS 1 task to tasks/probe every 5 ms for DURATION seconds and
prints the PUBACK latency percentiles: how long other clients wait while the
broker is busy (benches/workflows.sh runs it during a large workflow's
submission). Nobody serves tasks/probe; the probe purges nothing, it only
measures acknowledgements.

    python3 benches/puback_probe.py HOST PORT DURATION
"""
import sys
import threading
import time

import os

import paho.mqtt.client as mqtt

TRACE = os.environ.get("PROBE_TRACE") == "1"


def main():
    host, port, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sent, latencies, lock = {}, [], threading.Lock()

    def on_publish(_client, _userdata, mid, _rc, _props):
        with lock:
            t = sent.pop(mid, None)
            if t is not None:
                ms = (time.perf_counter() - t) * 1000
                latencies.append(ms)
                if TRACE and ms > 50:
                    print(f"slow PUBACK {ms:.0f} ms, sent at {time.time() - ms / 1000:.3f}", flush=True)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="puback-probe", protocol=mqtt.MQTTv5)
    c.on_publish = on_publish
    c.connect(host, port)
    c.loop_start()
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        with lock:
            info = c.publish("tasks/probe", '{"task": "probe"}', qos=1)
            sent[info.mid] = time.perf_counter()
        time.sleep(0.005)
    time.sleep(1)
    c.loop_stop()
    lat = sorted(latencies)
    if not lat:
        print("probe: no PUBACK")
        return
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"probe PUBACKs: {len(lat)}, p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {lat[-1]:.1f} ms")


if __name__ == "__main__":
    main()
