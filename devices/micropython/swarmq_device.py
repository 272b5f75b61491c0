# swarmq on a MicroPython board (ESP32, Raspberry Pi Pico W): the network
# and the MQTT 3.1.1 connection shared by worker.py and requester.py.
#
# umqtt.simple speaks MQTT 3.1.1, so the board uses the contract's 3.1.1
# forms: a task carries "reply_to" and "correlation_id" in its JSON, a
# worker receives "reply_to" and "id" in the task's JSON and answers with
# "id". Its capacity is the broker's default for 3.1.1 workers (one task at
# a time), which is what a microcontroller can do.
import time

import machine
import network
from umqtt.simple import MQTTClient


def wifi(ssid, password, timeout_s=20):
    """Joins the Wi-Fi network; returns the board's address."""
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(ssid, password)
        deadline = time.time() + timeout_s
        while not wlan.isconnected():
            if time.time() > deadline:
                raise OSError("cannot join Wi-Fi network %s" % ssid)
            time.sleep(0.2)
    return wlan.ifconfig()[0]


def board_id():
    """This board's unique id, as hex."""
    return "".join("%02x" % b for b in machine.unique_id())


def client(config, role):
    """An MQTT client for this board. With an identity, the client id is
    "<name>:<role>-<board id>", as the broker requires."""
    name = config.USERNAME
    suffix = "%s-%s" % (role, board_id())
    client_id = "%s:%s" % (name, suffix) if name else "mpy-" + suffix
    c = MQTTClient(client_id, config.BROKER, port=config.PORT, user=name,
                   password=config.PASSWORD, keepalive=60)
    c.client_id_str = client_id
    return c


def reply_topic(config, client_id):
    """Where this board's results come back: an identity may read only its
    own replies/<name>/…"""
    if config.USERNAME:
        return "replies/%s/%s" % (config.USERNAME, client_id.split(":", 1)[-1])
    return "swarmq/replies/" + client_id
