"""pool.DeadlinePool: bounded concurrency, one deadline per item, hung work abandoned (issue 9's own module)."""
import threading
import time

from ansible_collections.orchestra.fleet.plugins.module_utils import pool


def test_run_bounded_respects_worker_limit_and_deadline():
    active, peak = [0], [0]
    lock = threading.Lock()
    release = threading.Event()

    def work(item, _due):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        if item == 'stuck':
            release.wait(30)  # abandoned by the watchdog
        else:
            time.sleep(0.05)
        with lock:
            active[0] -= 1
        if item == 'boom':
            raise RuntimeError('bug')
        return item.upper()

    items = ['a', 'stuck', 'b', 'c', 'boom', 'd', 'e']
    results = pool.run_bounded(items, work, 3, 0.5, lambda item, started: 'TIMEOUT %s %s' % (item, started))
    release.set()
    assert results[1] == 'TIMEOUT stuck True'
    assert [results[i] for i in (0, 2, 3, 5, 6)] == ['A', 'B', 'C', 'D', 'E']
    assert isinstance(results[4], RuntimeError)
    assert peak[0] <= 4  # 3 workers + 1 replacement for the abandoned thread


def test_results_finished_before_collect_are_not_overdue():
    deadline_pool = pool.DeadlinePool(lambda item, _due: item * 2, 4, 0.2, lambda item, started: 'TIMEOUT')
    for index in range(20):
        deadline_pool.submit(index, index)
    time.sleep(0.5)  # the caller is busy elsewhere (the sweep) long after the work finished
    assert deadline_pool.collect() == dict((index, index * 2) for index in range(20))


def test_hung_items_share_one_deadline_and_do_not_starve_live_ones():
    """98 hung items and 2 quick ones at 32 workers: every item gets a thread in time and the
    whole run ends near one deadline, not ceil(98 / 32) deadlines (the issue-16 discovery bug)."""
    release = threading.Event()
    started = []

    def work(item, due):
        started.append(item)
        if item.startswith('hung'):
            release.wait(30)
            return 'late'
        return 'ok %s' % (due > time.monotonic())

    items = ['hung%d' % n for n in range(49)] + ['live-a'] + ['hung%d' % n for n in range(49, 98)] + ['live-b']
    began = time.monotonic()
    try:
        results = pool.run_bounded(items, work, 32, 1.0, lambda item, was_started: 'overdue' if was_started else 'never asked',
                                   from_submit=True, stall=0.1, max_threads=256)
    finally:
        release.set()
    elapsed = time.monotonic() - began
    assert results[49] == 'ok True' and results[99] == 'ok True'  # the live ones were asked, within their budget
    assert sorted(set(results[i] for i in range(100) if i not in (49, 99))) == ['overdue']
    assert len(started) == 100
    # The old pool took ceil(98 / 32) x deadline (4 s here); one shared deadline is 1 s plus the tick.
    assert elapsed < 2.0, elapsed


def test_a_capped_pool_says_which_items_were_never_asked():
    release = threading.Event()
    try:
        results = pool.run_bounded(list(range(6)), lambda item, _due: release.wait(30), 2, 0.5,
                                   lambda item, was_started: was_started, from_submit=True, stall=None)
    finally:
        release.set()
    assert sorted(results.values()) == [False] * 4 + [True] * 2


def test_deadline_counts_from_start_without_from_submit():
    """Claims: a request gets its full time once it is sent, however long it queued."""
    def work(item, due):
        time.sleep(0.3)
        return round(due - time.monotonic(), 1) > 0

    results = pool.run_bounded(list(range(4)), work, 1, 0.5, lambda item, was_started: 'overdue')
    assert results == {0: True, 1: True, 2: True, 3: True}


def test_an_item_stuck_past_its_deadline_frees_its_slot():
    """Claims (deadline from start, one worker): a hung request is judged and the next one still runs."""
    release = threading.Event()
    try:
        results = pool.run_bounded(['hang', 'next'], lambda item, _due: release.wait(30) if item == 'hang' else item, 1, 0.3,
                                   lambda item, was_started: 'overdue %s' % was_started)
    finally:
        release.set()
    assert results == {0: 'overdue True', 1: 'next'}
