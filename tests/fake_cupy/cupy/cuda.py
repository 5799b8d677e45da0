"""cupy.cuda for the fake: one device."""
import time


class runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDeviceProperties(i):
        return {"name": b"fake GPU (host emulation)"}


class Device:
    def __init__(self, i=0):
        self.id = i

    def synchronize(self):
        pass


class Event:
    def __init__(self, *a, **k):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def get_elapsed_time(start, end):
    return (end.t - start.t) * 1000.0
