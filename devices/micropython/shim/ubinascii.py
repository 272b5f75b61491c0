from binascii import *  # noqa: F401,F403 - MicroPython names CPython's binascii ubinascii
