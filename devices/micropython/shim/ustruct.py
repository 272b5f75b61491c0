from struct import *  # noqa: F401,F403 - MicroPython names CPython's struct ustruct
