"""A clock the queue's unit tests drive: calling it tells the time, sleeping moves it (never backwards, never still)."""


class Clock:
    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.001)
