"""CPython shim of MicroPython's `network`: a WLAN that is always connected
(this machine's loopback); `connect` only records what it was given."""

STA_IF = 0


class WLAN:
    def __init__(self, interface=STA_IF):
        self.joined = None

    def active(self, flag=None):
        return True

    def isconnected(self):
        return True

    def connect(self, ssid, password):
        self.joined = ssid

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
