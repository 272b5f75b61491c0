"""Broker addresses and MQTT 5 connections (paho-mqtt 2.x), shared by the
worker and the requester side of :class:`swarmq.App`."""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .errors import ConnectError

#: Seconds a connection may take before :class:`ConnectError`.
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Broker:
    """Where the broker is and who connects to it."""

    host: str
    port: int
    tls: bool
    username: Optional[str] = None
    password: Optional[str] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None

    @classmethod
    def parse(cls, url: str, **credentials: Optional[str]) -> "Broker":
        """Reads ``mqtt://host:port`` (or ``mqtts://`` for TLS, default ports
        1883 and 8883). Credentials in the URL (``mqtt://name:token@host``)
        are used unless given as arguments."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl", "tls"):
            raise ValueError(f"invalid broker address {url!r}: expected mqtt://HOST:PORT")
        tls = parts.scheme in ("mqtts", "ssl", "tls")
        if not parts.hostname:
            raise ValueError(f"invalid broker address {url!r}: no host")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ValueError(f"invalid broker address {url!r}: {exc}") from None
        username = credentials.get("username") or parts.username
        password = credentials.get("password") or parts.password
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=username,
            password=password,
            ca_file=credentials.get("ca_file"),
            cert_file=credentials.get("cert_file"),
            key_file=credentials.get("key_file"),
        )

    def client_id(self, role: str) -> str:
        """A client id the broker accepts: ``<name>:<role>-…`` for an
        identity (the broker requires the prefix), ``<role>-…`` otherwise."""
        suffix = f"{role}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return f"{self.username}:{suffix}" if self.username else f"swarmq-{suffix}"

    def reply_topic(self, client_id: str) -> str:
        """Where results for this client come back: an identity may read
        only its own ``replies/<name>/…``."""
        if self.username:
            return f"replies/{self.username}/{client_id.split(':', 1)[-1]}"
        return f"swarmq/replies/{client_id}"


def new_client(broker: Broker, client_id: str) -> mqtt.Client:
    """A paho MQTT 5 client for ``broker``, not yet connected, that
    reconnects with a backoff of 1 s doubling up to 30 s."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def connect(
    client: mqtt.Client,
    broker: Broker,
    *,
    receive_maximum: Optional[int] = None,
    on_connected: Optional[Callable[[mqtt.Client], None]] = None,
    timeout: float = CONNECT_TIMEOUT,
) -> None:
    """Connects, starts paho's network thread, and returns once the broker
    has accepted the connection. ``on_connected`` runs after every CONNACK
    that accepts it, reconnects included (subscribe there).

    Raises :class:`ConnectError` when the broker refuses or cannot be
    reached in time."""
    accepted = threading.Event()
    outcome: dict = {}

    def on_connect(c, _userdata, _flags, reason_code, _props):
        if reason_code.is_failure:
            outcome["refused"] = str(reason_code)
            accepted.set()
            return
        if on_connected is not None:
            on_connected(c)
        accepted.set()

    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    try:
        client.connect(broker.host, broker.port, keepalive=30, clean_start=True, properties=props)
    except OSError as exc:
        raise ConnectError(f"cannot connect to the broker at {broker.host}:{broker.port}: {exc}") from exc
    client.loop_start()
    if not accepted.wait(timeout) or "refused" in outcome:
        client.loop_stop()
        why = outcome.get("refused", f"no answer within {timeout:g} s")
        raise ConnectError(f"the broker at {broker.host}:{broker.port} refused the connection: {why}"
                           if "refused" in outcome else
                           f"cannot connect to the broker at {broker.host}:{broker.port}: {why}")


# paho's Properties() builds its tables anew each time, which cost more than
# the publish itself on the task path; a copy of an empty one shares them
# (paho only reads them) and is a few times cheaper.
_EMPTY_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)


def publish_properties(reply_topic: Optional[str], correlation: Optional[bytes]) -> Properties:
    """PUBLISH properties asking for the answer on ``reply_topic``."""
    props = Properties.__new__(Properties)
    props.__dict__.update(_EMPTY_PUBLISH_PROPERTIES.__dict__)
    if reply_topic is not None:
        props.ResponseTopic = reply_topic
    if correlation is not None:
        props.CorrelationData = correlation
    return props
