"""CPython shim of MicroPython's `usocket`, for running the board's code here.

MicroPython sockets are streams: `read(n)` returns n bytes (fewer only at the
end), `write(buf, n)` writes the first n bytes (a str as UTF-8), and a non-blocking `read`
returns None when nothing is there. Only what umqtt.simple uses is here.
"""
import socket as _socket

AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM


def getaddrinfo(host, port, *args):
    return _socket.getaddrinfo(host, port, _socket.AF_INET, _socket.SOCK_STREAM)


class socket:
    def __init__(self, *args):
        self._s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        # umqtt.simple writes each packet in pieces (header, topic, payload):
        # with Nagle's algorithm and the peer's delayed ACK, every round trip
        # here would wait 40 ms for the later pieces.
        self._s.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)

    def connect(self, addr):
        self._s.connect(addr)

    def setblocking(self, flag):
        self._s.setblocking(flag)

    def read(self, n):
        out = b""
        while len(out) < n:
            try:
                chunk = self._s.recv(n - len(out))
            except BlockingIOError:
                if not out:
                    return None
                self._s.setblocking(True)
                continue
            if not chunk:
                break
            out += chunk
        return out

    def write(self, buf, n=None):
        if isinstance(buf, str):  # MicroPython writes a str as its UTF-8
            buf = buf.encode()
        data = bytes(buf if n is None else buf[:n])
        self._s.sendall(data)
        return len(data)

    def close(self):
        self._s.close()
