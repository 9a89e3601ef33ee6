"""Report benchmark: writing the masking report for 10,000 jobs, time and size (issue 13).

Seeds a temporary SQLite queue store with a day of work (SQL through the store's own transaction, as
bench/queue_history_bench.py does): 4 engines x 4 slots running jobs back to back, each job waiting
0-5 min in the queue first; outcomes 90 % SUCCEEDED, 5 % WARNING, 3 % FAILED (with an engine message),
2 % CANCELLED; at the end 16 RUNNING (with rows) and the rest of the --jobs QUEUED. Then, --rounds times:

- ours: what orchestra.fleet.masking_report does - open the store read-only through the queue facade,
  read jobs and engines, render the page (masking_report.render), write the file;
- peer: what an operator had before - masking_queue_info with limit 0 (the same facade call with every
  job) and its answer as JSON (the module returns it; Ansible serialises it).

Prints the median seconds and the size in bytes (and gzipped, as a mail client would not, but an archive
would) side by side. Targets: report under 2 s, file small enough to mail (under 10 MB; most mail servers
take 10-25 MB attachments).

    .venv/bin/python bench/report_bench.py [--jobs 10000] [--rounds 3] [--keep DIR]
"""
import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

from bench_paths import use_staged_collection  # bench/ is sys.path[0]

STAGED = use_staged_collection()
# pylint: disable=wrong-import-position
from ansible_collections.orchestra.fleet.plugins.module_utils import masking_report  # noqa: E402
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue  # noqa: E402

ENGINES = ['masking%d' % n for n in range(1, 5)]
SLOTS = 4
JOB_NAMES = ['mask_%02d' % n for n in range(60)]
MAIL_LIMIT = 10 * 1024 * 1024


def seed(queue, count, now, rng):
    """count jobs: a day of finished runs on every slot, then RUNNING and QUEUED ones at `now`."""
    for name in ENGINES:
        queue.ensure_engine(name, 'https://%s.example.com:8282' % name, slots=SLOTS, jobs=JOB_NAMES)
    rows = []
    running = len(ENGINES) * SLOTS
    queued = min(200, max(0, count // 50))
    finished = max(0, count - running - queued)
    per_slot = finished // running + 1
    day = 86400.0
    number = 0
    for engine in ENGINES:
        for _slot in range(SLOTS):
            moment = now - day
            for _run in range(per_slot):
                if number >= finished:
                    break
                length = rng.uniform(30, 1.6 * day / per_slot - 30)   # a slot is busy about 80 % of the day
                waited = rng.uniform(0, 300)
                roll = rng.random()
                state = 'SUCCEEDED' if roll < 0.90 else 'WARNING' if roll < 0.95 else 'FAILED' if roll < 0.98 else 'CANCELLED'
                error = None
                if state == 'FAILED':
                    error = 'execution %d on engine %s failed: JOB_FAILURE ORA-01017: invalid username/password' % (number, engine)
                elif state == 'WARNING':
                    error = 'execution %d on engine %s finished with warnings: UNMASKED_DATA 3 values' % (number, engine)
                total = rng.randint(1000, 5000000)
                rows.append((state, engine, number, total if state != 'CANCELLED' else total // 3, total, error,
                             moment - waited, moment, moment + length))
                moment += length + rng.uniform(1, 10)
                number += 1
            if number < finished + running and len([r for r in rows if r[0] == 'RUNNING']) < running:
                total = rng.randint(100000, 5000000)
                rows.append(('RUNNING', engine, number, total // 3, total, None, now - 200, now - 100, None))
                number += 1
    assert max(row[8] or 0 for row in rows) < now - 100, 'seeded runs must end before the running ones start'
    while number < count:
        rows.append(('QUEUED', None, None, None, None, None, now - rng.uniform(0, 600), None, None))
        number += 1

    def insert(tx):
        tx.executemany(
            'INSERT INTO jobs (request_id, job_name, priority, state, attempt, engine, engine_job_id, execution_id, '
            'engine_status, rows_masked, rows_total, error, error_kind, submitted_at, scheduled_at, started_at, '
            'finished_at, updated_at) VALUES (?, ?, 0, ?, 1, ?, 7, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            [('bench-%07d' % index, JOB_NAMES[index % len(JOB_NAMES)], state, engine, execution,
              None if state == 'QUEUED' else state, masked, total, error, 'job_failed' if state == 'FAILED' else None,
              submitted, started, started, finished, finished or now)
             for index, (state, engine, execution, masked, total, error, submitted, started, finished) in enumerate(rows)])
    queue.store.transaction(insert)
    return len(rows)


def ours(store_url, dest):
    """The masking_report module's work, in-process."""
    queue = MaskingQueue(store_url, read_only=True)
    try:
        info = queue.info(jobs=True, engines=True)
    finally:
        queue.close()
    jobs, engines = info['jobs'], info['engines']
    now = masking_report.reference_time(jobs, engines, time.time())
    data = masking_report.build(jobs, engines, now=now, store=info["store"])[0].encode("utf-8")
    with open(dest, 'wb') as handle:
        handle.write(data)
    return data, len(jobs)


def peer(store_url):
    """masking_queue_info limit 0: the same facade call, every job, as JSON."""
    queue = MaskingQueue(store_url, read_only=True)
    try:
        info = queue.info(jobs=True, engines=True, newest_first=True)
    finally:
        queue.close()
    return json.dumps({'jobs': info['jobs'], 'engines': info['engines']}).encode('utf-8')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--jobs', type=int, default=10000)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--keep', help='write the report into this directory (to open it) instead of a temporary one')
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix='report-bench-')
    try:
        store_url = 'sqlite:///%s' % os.path.join(workdir, 'queue.db')
        queue = MaskingQueue(store_url)
        seeded = seed(queue, args.jobs, time.time(), random.Random(13))
        queue.close()
        dest = os.path.join(args.keep or workdir, 'masking-report.html')
        times, peer_times = [], []
        for _round in range(args.rounds):
            started = time.perf_counter()
            data, count = ours(store_url, dest)
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            peer_data = peer(store_url)
            peer_times.append(time.perf_counter() - started)
        mine, theirs = statistics.median(times), statistics.median(peer_times)
        size, peer_size = len(data), len(peer_data)
        print('report for %d jobs (%d seeded: 4 engines x %d slots, a day of runs), median of %d rounds'
              % (count, seeded, SLOTS, args.rounds))
        print('%-44s %8.3f s   %9s bytes (%5.2f MB), gzip %9s bytes' % (
            'ours: masking_report (read, render, write)', mine, format(size, ','), size / 1048576.0,
            format(len(gzip.compress(data)), ',')))
        print('%-44s %8.3f s   %9s bytes (%5.2f MB), gzip %9s bytes' % (
            'peer: masking_queue_info limit 0, as JSON', theirs, format(peer_size, ','), peer_size / 1048576.0,
            format(len(gzip.compress(peer_data)), ',')))
        print('ratio ours/peer: time %.2fx, size %.2fx   rounds: %s' % (
            mine / theirs, size / float(peer_size), ', '.join('%.3f' % t for t in times)))
        print('target: under 2 s: %s; under %d MB to mail: %s' % (
            'met' if mine < 2.0 else 'NOT MET', MAIL_LIMIT // 1048576, 'met' if size < MAIL_LIMIT else 'NOT MET'))
        if args.keep:
            print('report: %s' % dest)
        return 0 if mine < 2.0 and size < MAIL_LIMIT else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
