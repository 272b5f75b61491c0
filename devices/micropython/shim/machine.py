"""CPython shim of MicroPython's `machine`: only `unique_id`, from the
process id (distinct per process, as a board's id is per board)."""
import os


def unique_id():
    return os.getpid().to_bytes(4, "big")
