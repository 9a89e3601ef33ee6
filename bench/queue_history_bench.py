"""Queue history benchmark: does the queue stay as fast with 100,000 finished jobs as with 1,000?

For 1k, 10k and 100k finished jobs in the store (seeded directly by SQL through the store's own
transaction, with the history rows a real run leaves: 5 per job; ANALYZE on PostgreSQL as autovacuum
would), on SQLite and PostgreSQL, the time of:
- enqueue: one MaskingQueue.enqueue call (with a request id, as the modules do);
- schedule step: MaskingQueue.schedule_step() placing a batch of new jobs;
- poll step: MaskingQueue.poll_step() starting them, then one finishing them (an in-process driver that
  answers at once, so the figure is the queue's and its database's, not an engine's);
- queue_info default: MaskingQueue.info(limit=100, newest_first=True), as masking_queue_info calls it with no options (and the size
  of its JSON answer).
Printed side by side with the 1k figure of the same store as the peer: ratio = figure / 1k figure.
Target: flat within 2x.

    .venv/bin/python bench/queue_history_bench.py [--sizes 1000,10000,100000] [--rounds 5] [--batch 10]
           [--no-postgres]

The PostgreSQL server is a throwaway one on loopback (tests/support/lab/postgres.py), started and
stopped by this script.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from bench_paths import use_staged_collection  # bench/ is sys.path[0]

STAGED = use_staged_collection()
# pylint: disable=wrong-import-position
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import ExecutionInfo  # noqa: E402
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue  # noqa: E402

ENGINES = ('eng_a', 'eng_b')
JOB_NAMES = ['mask_%02d' % i for i in range(40)]
HISTORY_STEPS = ((None, 'QUEUED'), ('QUEUED', 'SCHEDULED'), ('SCHEDULED', 'STARTING'), ('STARTING', 'RUNNING'),
                 ('RUNNING', 'SUCCEEDED'))


class InstantDriver:
    """An engine that starts every job at once and finishes it on the next refresh (in process, no I/O)."""

    next_id = [1000000]

    def __init__(self, engine, _credentials):
        self.name = engine['name']

    def start_marker(self, _job):
        return self.next_id[0]

    def start(self, _job):
        self.next_id[0] += 1
        return ExecutionInfo(self.next_id[0], 7, 'RUNNING', 0, -1, time.time(), None)

    def reconcile(self, _job):
        return None

    def status(self, execution_id):
        return ExecutionInfo(execution_id, 7, 'SUCCEEDED', 100, 100, time.time() - 1, time.time())

    def statuses(self, last_known):
        return dict((execution_id, self.status(execution_id)) for execution_id in last_known)

    def cancel(self, execution_id, expected_status=None):
        return ExecutionInfo(execution_id, 7, 'CANCELLED', 0, 0, None, time.time())

    def probe(self):
        return None

    def failure_detail(self, _execution_id):
        return None

    def close(self):
        return None


def make_queue(url):
    return MaskingQueue(url, credentials={'*': {'username': 'bench', 'password': 'bench'}}, driver_factory=InstantDriver,
                        refresh_interval=0.0, probe_interval=3600.0, retry_delay=0.1)


def seed_finished(queue, first, count, now, analyze):
    """count finished jobs (ids first..first+count-1 by request id) with 5 history rows each, in chunks."""
    chunk = 5000
    for start in range(first, first + count, chunk):
        numbers = range(start, min(first + count, start + chunk))

        def insert(tx, numbers=numbers):
            tx.executemany(
                'INSERT INTO jobs (request_id, job_name, priority, state, attempt, engine, engine_job_id, execution_id, '
                'engine_status, rows_masked, rows_total, submitted_at, scheduled_at, started_at, finished_at, updated_at) '
                "VALUES (?, ?, 0, 'SUCCEEDED', 1, ?, 7, ?, 'SUCCEEDED', 100, 100, ?, ?, ?, ?, ?)",
                [('hist-%07d' % n, JOB_NAMES[n % len(JOB_NAMES)], ENGINES[n % 2], n, now - 5, now - 4, now - 3, now - 1, now - 1)
                 for n in numbers])
            ids = tx.rows('SELECT id FROM jobs WHERE request_id >= ? AND request_id <= ? ORDER BY id',
                          ('hist-%07d' % numbers[0], 'hist-%07d' % numbers[-1]))
            tx.executemany('INSERT INTO job_history (job_id, at, from_state, to_state, attempt, engine, execution_id, detail, '
                           'actor) VALUES (?, ?, ?, ?, 1, ?, NULL, ?, ?)',
                           [(row['id'], now - 5 + step, before, after, ENGINES[0], 'seeded history', 'bench')
                            for row in ids for step, (before, after) in enumerate(HISTORY_STEPS)])
        queue.store.transaction(insert)
    # A PostgreSQL store that grew to this size over months has planner statistics (autovacuum gathers
    # them); a bulk seed has none until analysed, and would time plans nobody runs. SQLite gathers none
    # by itself (the store never runs ANALYZE), so it is measured as it is.
    if analyze:
        queue.store.transaction(lambda tx: tx.execute('ANALYZE'))


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def measure(queue, rounds, batch, tag):
    """Medians over `rounds` rounds of: batch enqueues, one schedule step, two poll steps; then info()."""
    enqueue, schedule, poll, info, size = [], [], [], [], 0
    for round_no in range(rounds):
        ids = []
        for index in range(batch):
            seconds, (_created, job) = timed(lambda index=index: queue.enqueue(
                JOB_NAMES[index % len(JOB_NAMES)], request_id='%s-r%d-%d' % (tag, round_no, index)))
            enqueue.append(seconds)
            ids.append(job['id'])
        seconds, placed = timed(queue.schedule_step)
        schedule.append(seconds)
        assert placed['placed'] == batch, placed
        seconds, _started = timed(queue.poll_step)
        first = seconds
        seconds, _finished = timed(queue.poll_step)
        poll.append((first + seconds) / 2.0)
        states = set(row['state'] for row in queue.store.jobs(ids=ids))
        assert states == {'SUCCEEDED'}, states
    for _unused in range(max(1, rounds // 2)):
        # what masking_queue_info asks by default: the newest 100 jobs (its `limit` default), engines, counts
        seconds, answer = timed(lambda: queue.info(limit=100, newest_first=True))
        info.append(seconds)
        size = len(json.dumps(answer, default=str))
    return {'enqueue': statistics.median(enqueue), 'schedule step': statistics.median(schedule),
            'poll step': statistics.median(poll), 'queue_info default': statistics.median(info), 'info bytes': size}


def run_store(label, url, sizes, rounds, batch):
    queue = make_queue(url)
    for name in ENGINES:
        queue.ensure_engine(name, 'https://%s.invalid:8282' % name, slots=batch, jobs=JOB_NAMES)
    results, seeded = [], 0
    for size in sizes:
        started = time.perf_counter()
        seed_finished(queue, seeded, size - seeded, time.time(), analyze=label == 'postgresql')
        seed_seconds = time.perf_counter() - started
        seeded = size
        figures = measure(queue, rounds, batch, '%s-%d' % (label, size))
        figures['seed s'] = seed_seconds
        results.append((size, figures))
        print('  %-10s %7d finished jobs seeded in %5.1f s' % (label, size, seed_seconds), flush=True)
    queue.close()
    return results


def report(label, results):
    metrics = ('enqueue', 'schedule step', 'poll step', 'queue_info default')
    base = results[0][1]
    print('\n%s (ratio = figure / figure at %d finished jobs; target <= 2.0)' % (label, results[0][0]))
    print('  %-20s' % 'finished jobs' + ''.join('%22d' % size for size, _f in results))
    for metric in metrics:
        cells = ''.join('%13.2f ms %5.1fx' % (f[metric] * 1000.0, f[metric] / base[metric]) for _s, f in results)
        print('  %-20s%s' % (metric, cells))
    cells = ''.join('%13.2f MB %5.1fx' % (f['info bytes'] / 1e6, f['info bytes'] / float(base['info bytes'])) for _s, f in results)
    print('  %-20s%s' % ('queue_info answer', cells))
    worst = max(f[m] / base[m] for _s, f in results for m in metrics)
    print('  worst ratio %.1fx: %s' % (worst, 'flat within 2x' if worst <= 2.0 else 'NOT flat within 2x'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='1000,10000,100000')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--batch', type=int, default=10)
    parser.add_argument('--no-postgres', action='store_true')
    args = parser.parse_args()
    sizes = sorted(int(text) for text in args.sizes.split(','))
    scratch = tempfile.mkdtemp(prefix='queue-history-bench-')
    print('queue history benchmark: sizes %s, %d rounds of %d jobs, python %s'
          % (sizes, args.rounds, args.batch, sys.version.split()[0]), flush=True)
    all_results = []
    try:
        all_results.append(('SQLite', run_store('sqlite', 'sqlite:///%s' % os.path.join(scratch, 'queue.db'), sizes,
                                                args.rounds, args.batch)))
        if not args.no_postgres:
            sys.path.insert(0, STAGED)
            from tests.support.lab.postgres import PostgresServer  # pylint: disable=import-outside-toplevel
            server = PostgresServer().start()
            try:
                all_results.append(('PostgreSQL', run_store('postgresql', server.dsn, sizes, args.rounds, args.batch)))
            finally:
                server.stop()
        else:
            print('PostgreSQL: not run (--no-postgres)')
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for label, results in all_results:
        report(label, results)


if __name__ == '__main__':
    main()
