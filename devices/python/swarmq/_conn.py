"""Broker addresses and MQTT 5 connections (paho-mqtt 2.x), shared by the
worker and the requester side of :class:`swarmq.App`."""

from __future__ import annotations

import os
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .errors import ConnectError

#: Seconds a connection may take before :class:`ConnectError`.
CONNECT_TIMEOUT = 10.0
#: Seconds a network thread may go on handling packets already received
#: before it writes what they produced (answers, PUBACKs): short, so that a
#: long burst of short tasks does not hold back its first answers. (A solo
#: worker's long task holds back the answer before it, as in paho's loop,
#: which reads before it writes: solo is for short tasks.)
READ_BATCH = 0.002


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


class _BufferedSocket:
    """The connection's socket with buffers on both sides.

    paho reads each packet with three ``recv`` calls (the type byte, the
    length a byte at a time, the rest) and writes each packet with its own
    ``send``: on the task path those system calls cost more than the rest
    of the packet's handling. Here reads take up to 64 KiB at once and are
    served from memory, and writes gather until paho's write loop ends
    (:meth:`flush`). ``pending()`` tells paho's loop that buffered bytes
    wait, as it already asks a TLS socket."""

    __slots__ = ("_sock", "_rbuf", "_rpos", "_wbuf")

    def __init__(self, sock):
        self._sock = sock
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()

    def recv(self, bufsize: int) -> bytes:
        pos = self._rpos
        if pos >= len(self._rbuf):
            data = self._sock.recv(65536)
            if len(data) <= bufsize:
                return data
            self._rbuf, pos = data, 0
        chunk = self._rbuf[pos:pos + bufsize]
        self._rpos = pos + len(chunk)
        return chunk

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._rbuf) - self._rpos + inner

    def send(self, data) -> int:
        self._wbuf += data
        return len(data)

    def unflushed(self) -> bool:
        return bool(self._wbuf)

    def flush(self) -> None:
        """Sends what is gathered, as much as the socket takes now; raises
        OSError when the connection is gone."""
        while self._wbuf:
            try:
                sent = self._sock.send(self._wbuf)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            del self._wbuf[:sent]

    def close(self) -> None:
        # paho closes right after writing DISCONNECT: send it first.
        if self._wbuf:
            try:
                self._sock.settimeout(1.0)
                self._sock.sendall(self._wbuf)
            except OSError:
                pass
            self._wbuf.clear()
        self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _Client(mqtt.Client):
    """paho's client on a :class:`_BufferedSocket` (plain or TLS), with two
    costs of its task path taken away: a wake-up byte through its socket
    pair for every packet another thread queues (one is enough until the
    network thread has written), and a scan of every message in flight at
    each PUBACK (kept short by a window of 100, see :func:`new_client`)."""

    _wake_sent = False

    def _create_socket(self):
        return _BufferedSocket(super()._create_socket())

    def _packet_queue(self, command, packet, mid, qos, info=None):
        if self._thread is None or self._sockpairW is None:
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                 "to_process": len(packet), "packet": packet, "info": info})
        # The network thread clears the flag before it writes the queue
        # (_packet_write), so a packet queued after that wakes it again. A
        # packet queued by the network thread itself (a PUBACK, a solo
        # worker's answer) needs no wake-up: its loop writes next.
        if not self._wake_sent and threading.get_ident() != self._thread.ident:
            self._wake_sent = True
            try:
                self._sockpairW.send(b"0")
            except BlockingIOError:
                pass
        self._call_socket_register_write()
        return mqtt.MQTT_ERR_SUCCESS

    def loop_read(self, max_packets: int = 1):
        """paho's read, then more while packets already read wait in the
        buffer, for up to :data:`READ_BATCH` seconds. paho handles one
        packet per turn of its loop when nothing of its own is in flight,
        as for a worker: each task then cost a select() and a send() of
        its own; now one of each serves every task that came in together."""
        rc = super().loop_read(max_packets)
        sock = self._sock
        if rc or sock is None:
            return rc
        end = time.monotonic() + READ_BATCH
        while sock.pending() and time.monotonic() < end:
            rc = super().loop_read(max_packets)
            if rc or self._sock is not sock:
                return rc
        return rc

    def _packet_write(self):
        self._wake_sent = False
        rc = super()._packet_write()
        sock = self._sock  # a _BufferedSocket (see _create_socket), or None
        if rc == mqtt.MQTT_ERR_SUCCESS and sock is not None:
            try:
                sock.flush()
            except OSError:
                return mqtt.MQTT_ERR_CONN_LOST
        return rc

    def want_write(self) -> bool:
        sock = self._sock
        return super().want_write() or (sock is not None and sock.unflushed())

    def _handle_publish(self):
        """paho's PUBLISH handling for QoS 0 and 1 on MQTT 5, with the
        properties read by :func:`_unpack_properties` instead of a new
        ``Properties`` (its tables built anew, then scanned per property:
        about 70 µs, several times the rest of a task's handling). Anything
        else, or anything unusual in the packet, goes to paho's own."""
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if self._protocol != mqtt.MQTTv5 or qos == 2:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            pos = 2 + int.from_bytes(packet[0:2], "big")
            topic = bytes(packet[2:pos])
            mid = 0
            if qos:
                mid = int.from_bytes(packet[pos:pos + 2], "big")
                pos += 2
            props, pos = _unpack_properties(packet, pos)
        except _NotLean:
            return super()._handle_publish()
        message = mqtt.MQTTMessage(mid=mid, topic=topic)
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.properties = props
        message.payload = bytes(packet[pos:])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return mqtt.MQTT_ERR_SUCCESS

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        """paho's dispatch without its per-message work for topic callbacks
        (``message_callback_add``), which the package does not use: paho
        decodes the topic twice and walks its filter tree under a lock for
        every message. With such callbacks, paho's own dispatch."""
        on_message = self._on_message
        if on_message is None or self._on_message_filtered._root._children:
            return super()._handle_on_message(message)
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def _handle_pubackcomp(self, cmd):
        """A successful MQTT 5 PUBACK without properties (what the broker
        sends for every task accepted) read in place: paho builds two
        ``ReasonCode`` and two ``Properties`` for each, a quarter of a
        requester's network thread. Reason codes are shared, one per value;
        with an ``on_publish`` callback, a failure code or properties,
        paho's own handling."""
        packet = self._in_packet["packet"]
        n = len(packet)
        if (cmd != "PUBACK" or self._protocol != mqtt.MQTTv5 or self._on_publish is not None
                or n < 2 or n > 4 or (n >= 3 and packet[2] >= 0x80) or (n == 4 and packet[3] != 0)):
            return super()._handle_pubackcomp(cmd)
        mid = int.from_bytes(packet[0:2], "big")
        reason = _PUBACK_REASONS.get(packet[2] if n >= 3 else 0)
        if reason is None:
            return super()._handle_pubackcomp(cmd)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _EMPTY_PUBACK_PROPERTIES)
        return mqtt.MQTT_ERR_SUCCESS


def new_client(broker: Broker, client_id: str) -> mqtt.Client:
    """A paho MQTT 5 client for ``broker``, not yet connected, that
    reconnects with a backoff of 1 s doubling up to 30 s."""
    client = _Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    # paho scans the window at each PUBACK; 100 keeps that short and is
    # plenty on a local network (100 tasks per round trip).
    client.max_inflight_messages_set(100)
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


# paho's Properties() builds its tables anew each time, and its pack() and
# unpack() scan them for every property: together about 150 µs per task on
# the task path, more than the rest of it. PUBLISH properties here are
# paho's own objects (what callbacks see is unchanged), made as copies of an
# empty one, which share its tables (paho only reads them), and packed and
# unpacked by the two functions below for the properties a PUBLISH carries.
_EMPTY_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)
_EMPTY_PUBACK_PROPERTIES = Properties(PacketTypes.PUBACK)
#: The PUBACK success codes (MQTT 5 §3.4.2.1), made once.
_PUBACK_REASONS = {code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in (0x00, 0x10)}

_BYTE, _U16, _U32, _VBI, _BIN, _STR, _PAIR = range(7)
#: identifier -> (paho's attribute name, kind, may repeat): MQTT 5 §3.3.2.3.
_PUBLISH_PROPERTIES = {
    1: ("PayloadFormatIndicator", _BYTE, False),
    2: ("MessageExpiryInterval", _U32, False),
    3: ("ContentType", _STR, False),
    8: ("ResponseTopic", _STR, False),
    9: ("CorrelationData", _BIN, False),
    11: ("SubscriptionIdentifier", _VBI, True),
    35: ("TopicAlias", _U16, False),
    38: ("UserProperty", _PAIR, True),
}
_BY_NAME = {name: (ident, kind, many) for ident, (name, kind, many) in _PUBLISH_PROPERTIES.items()}
_TABLES = frozenset(_EMPTY_PUBLISH_PROPERTIES.__dict__)


class _NotLean(Exception):
    """The packet needs paho's own handling (malformed, or unusual)."""


def _new_properties(cls: type = Properties) -> Properties:
    """An empty PUBLISH ``Properties`` (or subclass) sharing the tables of
    :data:`_EMPTY_PUBLISH_PROPERTIES`."""
    props = cls.__new__(cls)
    props.__dict__.update(_EMPTY_PUBLISH_PROPERTIES.__dict__)
    return props


def _read_vbi(buf, pos: int):
    value = shift = 0
    for _ in range(4):
        if pos >= len(buf):
            raise _NotLean
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _NotLean


def _vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _unpack_properties(buf, pos: int):
    """The PUBLISH properties at ``buf[pos:]`` as a paho ``Properties``, and
    the position after them. Raises :class:`_NotLean` for anything paho
    should judge itself (an unknown identifier, a repeated one, a length
    past the end)."""
    length, pos = _read_vbi(buf, pos)
    end = pos + length
    if end > len(buf):
        raise _NotLean
    props = _new_properties()
    d = props.__dict__
    try:
        while pos < end:
            ident = buf[pos]
            pos += 1
            name, kind, many = _PUBLISH_PROPERTIES[ident]
            if kind == _STR or kind == _BIN or kind == _PAIR:
                n = int.from_bytes(buf[pos:pos + 2], "big")
                value = bytes(buf[pos + 2:pos + 2 + n])
                pos += 2 + n
                if kind == _STR:
                    value = value.decode("utf-8")
                elif kind == _PAIR:
                    m = int.from_bytes(buf[pos:pos + 2], "big")
                    value = (value.decode("utf-8"), bytes(buf[pos + 2:pos + 2 + m]).decode("utf-8"))
                    pos += 2 + m
            elif kind == _VBI:
                value, pos = _read_vbi(buf, pos)
            else:
                size = 1 if kind == _BYTE else 2 if kind == _U16 else 4
                value = int.from_bytes(buf[pos:pos + size], "big")
                pos += size
            if pos > end:
                raise _NotLean
            if many:
                d.setdefault(name, []).append(value)
            elif name in d:
                raise _NotLean
            else:
                d[name] = value
    except (KeyError, IndexError, UnicodeDecodeError):
        raise _NotLean from None
    return props, end


def _pack_properties(props: Properties) -> bytes:
    """``props`` as paho's ``pack()`` writes them (for PUBLISH properties
    only; anything else is left to paho)."""
    out = bytearray()
    for name, value in props.__dict__.items():
        if name in _TABLES:
            continue
        spec = _BY_NAME.get(name)
        if spec is None:
            return Properties.pack(props)
        ident, kind, many = spec
        for v in value if many else (value,):
            out.append(ident)
            if kind == _STR or kind == _BIN:
                raw = v.encode("utf-8") if kind == _STR else bytes(v)
                out += len(raw).to_bytes(2, "big") + raw
            elif kind == _PAIR:
                for part in v:
                    raw = part.encode("utf-8")
                    out += len(raw).to_bytes(2, "big") + raw
            elif kind == _VBI:
                out += _vbi(v)
            else:
                out += v.to_bytes(1 if kind == _BYTE else 2 if kind == _U16 else 4, "big")
    return _vbi(len(out)) + bytes(out)


class _PublishProperties(Properties):
    """The PUBLISH properties the package sends: paho's class, packed by
    :func:`_pack_properties`."""

    pack = _pack_properties


class Flag:
    """A one-way ``threading.Event`` whose Event is made only when a thread
    has to wait for it. Every task has one (its cancellation) and every
    request one (its answer), and most are never waited for: the answer is
    there before ``get()`` or the task is never revoked, and an Event with
    its Condition and locks cost as much as the rest of a task's handling."""

    __slots__ = ("_set", "_event")
    _lock = threading.Lock()  # shared: held for a few bytecodes at a time

    def __init__(self) -> None:
        self._set = False
        self._event: Optional[threading.Event] = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with Flag._lock:
            self._set = True
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Returns True once set, False after ``timeout`` seconds."""
        if self._set:
            return True
        with Flag._lock:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


_ids = bytearray()
_ids_lock = threading.Lock()


def new_id() -> str:
    """A random id in uuid4's hex form. Random bytes are read 4 KiB at a
    time: one os.urandom call per id cost more than the rest of a
    submission."""
    global _ids
    with _ids_lock:
        if not _ids:
            _ids = bytearray(os.urandom(4096))
        raw = bytes(_ids[:16])
        del _ids[:16]
    return uuid.UUID(bytes=raw, version=4).hex


def publish_properties(reply_topic: Optional[str], correlation: Optional[bytes]) -> Properties:
    """PUBLISH properties asking for the answer on ``reply_topic``."""
    props = _new_properties(_PublishProperties)
    d = props.__dict__
    # Straight into the instance: paho's __setattr__ checks the name against
    # its tables each time, and these two are known to be right.
    if reply_topic is not None:
        d["ResponseTopic"] = reply_topic
    if correlation is not None:
        d["CorrelationData"] = correlation
    return props
