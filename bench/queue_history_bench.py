"""History benchmark: the queue's hot calls with 1k / 10k / 100k finished jobs (one history row each) in the store, on SQLite and a throwaway PostgreSQL, as ratios against the 1k figure (target: flat within 2x).

Measured, median of --runs, after a warm-up:
- enqueue: MaskingQueue.enqueue of a new request id (validation, carrier check, insert);
- schedule step: MaskingQueue.schedule_step() with 10 new jobs queued;
- poll step: MaskingQueue.poll_step() starting them (a driver that answers at once: the store's share only);
- queue_info default: what masking_queue_info's default call asks (newest 100 jobs, engines, counts, schema).

    .venv/bin/python bench/queue_history_bench.py [--sizes 1000,10000,100000] [--runs 7] [--no-postgres]

Written by engineer "mcore" because no bench/queue_history_bench.py from "mdelphix" was in this tree
by 21:50; the lead may keep either (same measurements).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

from bench_paths import use_staged_collection  # bench/ is sys.path[0]

use_staged_collection()
# pylint: disable=wrong-import-position
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import ExecutionInfo  # noqa: E402
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue  # noqa: E402

NAMES = ['job_%02d' % i for i in range(20)]


class Driver:
    def __init__(self):
        self.next = 1000000

    def start_marker(self, job):
        return 0

    def start(self, job):
        self.next += 1
        return ExecutionInfo(self.next, 1, 'RUNNING', None, None, time.time(), None)

    def reconcile(self, job):
        return None

    def statuses(self, last):
        return dict((i, ExecutionInfo(i, 1, 'RUNNING', None, None, time.time(), None)) for i in last)

    def status(self, i):
        return ExecutionInfo(i, 1, 'RUNNING', None, None, time.time(), None)

    def probe(self):
        return None

    def failure_detail(self, i):
        return None

    def close(self):
        return None


def seed(url, finished):
    driver = Driver()
    queue = MaskingQueue(url, credentials={'*': {'username': 'u', 'password': 'p'}}, driver_factory=lambda e, c: driver,
                         refresh_interval=0)
    for index in range(4):
        queue.ensure_engine('eng%d' % index, 'https://eng%d:8282' % index, slots=8, jobs=NAMES)
    now = time.time() - 3600

    def insert(tx):
        tx.executemany('INSERT INTO jobs (request_id, job_name, priority, state, attempt, engine, execution_id, engine_status, '
                       'submitted_at, scheduled_at, started_at, finished_at, updated_at) '
                       'VALUES (?, ?, 0, ?, 4, ?, ?, ?, ?, ?, ?, ?, ?)',
                       [('h%07d' % i, NAMES[i % 20], 'SUCCEEDED', 'eng%d' % (i % 4), i + 1, 'SUCCEEDED', now, now, now, now, now)
                        for i in range(finished)])
    queue.store.transaction(insert)
    queue.store.transaction(lambda tx: tx.execute(
        "INSERT INTO job_history (job_id, at, from_state, to_state, attempt, engine, execution_id, detail, actor) "
        "SELECT id, updated_at, 'RUNNING', 'SUCCEEDED', 4, engine, execution_id, 'done', 'bench' FROM jobs"))
    queue.store.compact_counts(force=True)
    if queue.store.kind == 'sqlite':   # the bulk seed leaves a large WAL: checkpoint it, as a live queue does over time
        queue.store.transaction(lambda tx: tx.execute('PRAGMA wal_checkpoint(TRUNCATE)'), atomic=False)
    else:
        queue.store.transaction(lambda tx: tx.execute('ANALYZE'), atomic=False)
    measure(queue, 1)   # warm-up (caches, prepared plans)
    return queue


def measure(queue, runs):
    figures = {'enqueue': [], 'schedule step': [], 'poll step': [], 'queue_info default': []}
    for run in range(runs):
        t = time.perf_counter()
        for k in range(10):
            queue.enqueue(NAMES[k], request_id='new-%d-%d' % (run, k))
        figures['enqueue'].append((time.perf_counter() - t) / 10)
        t = time.perf_counter()
        queue.schedule_step()
        figures['schedule step'].append(time.perf_counter() - t)
        t = time.perf_counter()
        queue.poll_step()
        figures['poll step'].append(time.perf_counter() - t)
        t = time.perf_counter()
        info = queue.info(jobs=True, engines=True, limit=100, newest_first=True)
        figures['queue_info default'].append(time.perf_counter() - t)
        assert len(info['jobs']) == 100
        # finish what ran so the active set stays the same size between runs
        queue.store.transaction(lambda tx: tx.execute("UPDATE jobs SET state = 'SUCCEEDED', updated_at = ? WHERE state IN "
                                                      "('RUNNING', 'SCHEDULED', 'STARTING')", (time.time(),)))
    return dict((k, statistics.median(v)) for k, v in figures.items())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--sizes', default='1000,10000,100000')
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--no-postgres', action='store_true')
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(',')]
    server = None
    if not args.no_postgres:
        from tests.support.lab.postgres import PostgresServer  # pylint: disable=import-outside-toplevel
        server = PostgresServer().start()
    try:
        run(sizes, args.runs, [('sqlite', None)] + ([('postgresql', server.dsn)] if server else []))
    finally:
        if server is not None:
            server.stop()


def run(sizes, runs, kinds):
    for kind, dsn in kinds:
        results = {}
        for size in sizes:
            if kind == 'sqlite':
                url = os.path.join(tempfile.mkdtemp(), 'q.db')
            else:
                import psycopg  # pylint: disable=import-outside-toplevel
                name = 'hist_%d_%d' % (size, os.getpid())
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute('CREATE DATABASE %s' % name)
                url = dsn.rsplit('/', 1)[0] + '/' + name
            queue = seed(url, size)
            results[size] = measure(queue, runs)
            queue.close()
        for what in results[sizes[0]]:
            base = results[sizes[0]][what]
            print('%-10s %-20s ' % (kind, what) + '  '.join('%6dk %8.2f ms (x%.2f)' % (s // 1000, results[s][what] * 1000,
                                                                                     results[s][what] / base) for s in sizes))


if __name__ == '__main__':
    main()
