# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounded concurrency with a hard deadline per item: the one pool of discovery and claims.

Work on remote hosts can hang forever (a tarpit accepts and never answers, a drip server
sends one byte a second). Python cannot interrupt a thread blocked in recv(), so the pool
never waits for one: an item still unfinished at its deadline gets its on_timeout verdict,
its daemon thread is abandoned (it cannot keep the process alive) and the caller moves on.

Two choices the callers make:
- from_submit: whether an item's deadline counts from its submission (one clock for a whole
  discovery run: waiting in the queue behind hung hosts uses up the same budget, so the run
  ends within `deadline` of the last submission however many hosts hang) or from the moment
  a worker starts it (claims: a claim POST must get its full time once it is sent).
- stall: after this many seconds a running item stops counting against `workers`, and a
  new thread (up to max_threads) takes the next item. A hung peer then costs a thread, not a
  slot, so live hosts queued behind hung ones are still asked in time.
"""

import collections
import threading
import time


class DeadlinePool:
    """Run work(item, deadline) on daemon threads, each item under a hard deadline (time.monotonic()).

    submit() may be called while the caller does other work; collect() returns {key: result}
    once every item has a result. A result is what work returned, the exception it raised
    (a bug in one item must not lose the others), or on_timeout(item, started) for an item
    not finished by its deadline (started=False: it never got a thread).
    """

    def __init__(self, work, workers, deadline, on_timeout, from_submit=False, stall=None, max_threads=None, tick=0.05):
        self._work, self._workers, self._deadline, self._on_timeout = work, max(1, int(workers)), float(deadline), on_timeout
        self._from_submit, self._stall, self._tick = from_submit, stall, tick
        self._max_threads = max(self._workers, int(max_threads or self._workers))
        self._cond = threading.Condition()
        self._waiting = collections.deque()
        self._items, self._due, self._running, self._results = {}, {}, {}, {}
        self._threads = self._idle = 0
        self._closed = False
        self._watchdog = None

    # -- caller side -------------------------------------------------------------------------
    def submit(self, key, item):
        with self._cond:
            self._items[key] = item
            if self._from_submit:
                self._due[key] = time.monotonic() + self._deadline
            self._waiting.append(key)
            self._grow()
            self._cond.notify_all()
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name='orchestra-pool-watchdog', daemon=True)
                self._watchdog.start()

    def collect(self):
        with self._cond:
            while len(self._results) < len(self._items):
                self._judge(time.monotonic())
                self._cond.wait(self._tick)
            self._closed = True
            self._cond.notify_all()  # idle workers end; abandoned ones end when their peer lets go
            return dict(self._results)

    # -- inside ------------------------------------------------------------------------------
    def _grow(self):
        """Start threads for waiting items: at most `workers` busy on live work, at most max_threads alive
        apart from those already judged. Judged threads are abandoned to their peer; capping them could
        leave an item waiting forever (a claim has no deadline before it starts)."""
        now = time.monotonic()
        judged = stalled = 0
        for key, began in self._running.items():
            if key in self._results:
                judged += 1
            elif self._stall is not None and now - began >= self._stall:
                stalled += 1
        live = self._threads - judged
        while len(self._waiting) > self._idle and live < self._max_threads and live - stalled < self._workers:
            self._threads += 1
            live += 1
            self._idle += 1  # counted idle until it takes an item, so one submit spawns one thread
            threading.Thread(target=self._run, name='orchestra-pool', daemon=True).start()

    def _judge(self, now):
        """Verdicts for items past their deadline, running or still waiting; called with the lock held."""
        for key in list(self._running):
            if key not in self._results and now >= self._due[key]:
                self._results[key] = self._on_timeout(self._items[key], True)
        if self._from_submit:
            # Less than a tick left is no time to start in: judged now, not started and judged a tick later.
            for key in [k for k in self._waiting if now >= self._due[k] - self._tick]:
                self._waiting.remove(key)
                self._results[key] = self._on_timeout(self._items[key], False)
        self._grow()
        if len(self._results) >= len(self._items):
            self._cond.notify_all()

    def _watch(self):
        with self._cond:
            while not self._closed:
                self._judge(time.monotonic())
                self._cond.wait(self._tick)

    def _run(self):
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:
                    self._idle -= 1
                    self._threads -= 1
                    return
                key = self._waiting.popleft()
                self._idle -= 1
                now = time.monotonic()
                if not self._from_submit:
                    self._due[key] = now + self._deadline
                elif now >= self._due[key] - self._tick:
                    self._results.setdefault(key, self._on_timeout(self._items[key], False))
                    self._idle += 1
                    self._cond.notify_all()
                    continue
                self._running[key] = now
                item, due = self._items[key], self._due[key]
            try:
                result = self._work(item, due)
            except Exception as exc:  # pylint: disable=broad-except  # reported as this item's result
                result = exc
            with self._cond:
                del self._running[key]
                self._results.setdefault(key, result)  # a verdict given at the deadline stands
                self._idle += 1
                self._cond.notify_all()


def run_bounded(items, work, workers, deadline, on_timeout, **options):
    """{index: result} of work(item, deadline) for each item (see DeadlinePool for `options`)."""
    pool = DeadlinePool(work, workers, deadline, on_timeout, **options)
    for index, item in enumerate(items):
        pool.submit(index, item)
    return pool.collect()
