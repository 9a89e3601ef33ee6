"""Scheduler step benchmark: 10,000 queued jobs, 100 engines x 8 slots, on SQLite and PostgreSQL.

Side by side, in one run:
- ours: MaskingQueue.schedule_step() (one transaction: read engines, slot use and the queue, place with the
  pure function, apply grouped updates, write reasons);
- the old tool's method, modelled on marco69v/orchestrator's bin/scheduler.bash + bin/insert.bash: a
  `sqlite3` CLI process per statement, per job: mark SCHEDULING, find a free CPU row of the round-robin
  engine, mark SCHEDULED, five updates of the CPU's key/value rows, link job and CPU (9 statements a job);
- the same statements in-process, one round trip each (the old method without the process spawns;
  on PostgreSQL this is the only fair peer: the old tool had no PostgreSQL).

    .venv/bin/python bench/queue_schedule_bench.py [--jobs 10000] [--engines 100] [--slots 8] [--runs 5]
           [--no-postgres] [--no-cli]

Prints one line per method and the ratios. The PostgreSQL server is a throwaway one on loopback
(tests/support/lab/postgres.py), started and stopped by this script.
"""
import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time

from bench_paths import use_staged_collection  # bench/ is sys.path[0]

use_staged_collection()
# pylint: disable=wrong-import-position
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue  # noqa: E402


# ---- ours -------------------------------------------------------------------------------------
def seed_ours(url, jobs, engines, slots, names=200):
    queue = MaskingQueue(url)
    job_names = ['job_%03d' % i for i in range(names)]
    for index in range(engines):
        queue.ensure_engine('eng%03d' % index, 'https://eng%03d:8282' % index, slots=slots, jobs=job_names)
    store = queue.store
    now = time.time()

    def insert(tx):
        tx.executemany('INSERT INTO jobs (request_id, job_name, priority, state, attempt, reason, submitted_at, updated_at) '
                       'VALUES (?, ?, ?, ?, 0, ?, ?, ?)',
                       [('r%06d' % i, job_names[i % names], (i % 3), 'QUEUED', 'waiting for the scheduler', now, now)
                        for i in range(jobs)])
    store.transaction(insert)
    return queue


def reset_ours(queue):
    def reset(tx):
        tx.execute("UPDATE jobs SET state = 'QUEUED', engine = NULL, owner = NULL, scheduled_at = NULL, "
                   "reason = 'waiting for the scheduler' WHERE state IN ('SCHEDULED', 'QUEUED')")
        tx.execute("DELETE FROM job_history")
    queue.store.transaction(reset)


def time_ours(queue, runs, expected):
    cold, steady = [], []
    for _unused in range(runs):
        reset_ours(queue)
        started = time.perf_counter()
        result = queue.schedule_step()
        cold.append(time.perf_counter() - started)
        assert result['placed'] == expected, result
        started = time.perf_counter()
        result = queue.schedule_step()          # every slot taken: the usual tick of a busy queue
        steady.append(time.perf_counter() - started)
        assert result['placed'] == 0, result
    return cold, steady


# ---- the old tool's method ------------------------------------------------------------------------
OLD_SCHEMA = [
    'CREATE TABLE CODA (idcoda INTEGER PRIMARY KEY, app TEXT, tab TEXT, stato TEXT, ts TEXT)',
    'CREATE TABLE ENGINES (nome TEXT, chiave TEXT, valore TEXT)',
    'CREATE TABLE CODA_ENGINE (idcoda INTEGER, nome TEXT, cpu TEXT)',
]


def old_statements_for(idcoda, app, tab, engine, cpu):
    """The statements the old scheduler sends for one job once it found a free CPU (scheduler.bash + insert.bash)."""
    stamp = int(time.time())
    return [
        "update coda set stato='SCHEDULED' where idcoda='%d';" % idcoda,
        "update ENGINES set VALORE='A: %s' where NOME='%s' and chiave='%s' and valore like 'A:%%'" % (app, engine, cpu),
        "update ENGINES set VALORE='D: %s' where NOME='%s' and chiave='%s' and valore like 'D:%%'" % (tab, engine, cpu),
        "update ENGINES set VALORE='T: %d' where NOME='%s' and chiave='%s' and valore like 'T:%%'" % (stamp, engine, cpu),
        "update ENGINES set VALORE='S: JUST_INSERTED' where NOME='%s' and chiave='%s' and valore like 'S:%%'" % (engine, cpu),
        "update ENGINES set VALORE='I: %d' where NOME='%s' and chiave='%s' and valore like 'I:%%'" % (idcoda, engine, cpu),
        "insert into coda_engine (idcoda, nome, cpu) values (%d, '%s', '%s');" % (idcoda, engine, cpu),
    ]


def seed_old_sqlite(path, jobs, engines, slots):
    conn = sqlite3.connect(path)
    for statement in OLD_SCHEMA:
        conn.execute(statement)
    conn.executemany('INSERT INTO CODA (idcoda, app, tab, stato, ts) VALUES (?, ?, ?, ?, ?)',
                     [(i, 'APP%d' % (i % 7), 'TAB%d' % i, 'QUEUED', '0') for i in range(1, jobs + 1)])
    rows = []
    for e in range(engines):
        for c in range(1, slots + 1):
            for key in ('A:', 'T:', 'D:', 'S:', 'X:', 'I:'):
                rows.append(('10.0.%d.%d' % (e // 250, e % 250), 'CPU%d' % c, key))
    conn.executemany('INSERT INTO ENGINES (nome, chiave, valore) VALUES (?, ?, ?)', rows)
    conn.commit()
    conn.close()


def time_old(label, statements, engines, expected, ours):
    """Time one step of the old method (statements = its (execute, query) pair) and print it beside ours."""
    started = time.perf_counter()
    placed = run_old(*statements, engines=engines)
    elapsed = time.perf_counter() - started
    assert placed == expected, placed
    print('%s step %s   ratio %.1fx' % (label, fmt(elapsed), elapsed / ours))
    return elapsed


def run_old(execute, query, engines):
    """The old scheduler loop: per job, mark it, look for a free CPU on the next engine (round robin), book it."""
    names = ['10.0.%d.%d' % (e // 250, e % 250) for e in range(engines)]
    jobs = [line.split('|') for line in query("select * from CODA where STATO='QUEUED';")]
    placed, engine = 0, 0
    for idcoda, app, tab, _stato, _ts in jobs:
        idcoda = int(idcoda)
        execute("update coda set stato='SCHEDULING' where idcoda=%d;" % idcoda)
        cpu = query("select distinct(chiave) from engines where nome='%s' and valore ='A:' limit 1;" % names[engine])
        if not cpu:   # no free CPU: put the selection back and stop, as the old tool does
            execute("update CODA set stato = 'QUEUED' where stato = 'SCHEDULING';")
            break
        for statement in old_statements_for(idcoda, app, tab, names[engine], cpu[0]):
            execute(statement)
        placed += 1
        engine = (engine + 1) % engines
    return placed


def old_cli(path):
    """One sqlite3 CLI process per statement, as $CMD in the bash tool."""
    def execute(sql):
        subprocess.run(['sqlite3', path, sql], check=True, stdout=subprocess.DEVNULL)

    def query(sql):
        out = subprocess.run(['sqlite3', path, sql], check=True, stdout=subprocess.PIPE).stdout.decode()
        return [line for line in out.splitlines() if line]
    return execute, query


def old_in_process_sqlite(path):
    conn = sqlite3.connect(path, isolation_level=None)

    def execute(sql):
        conn.execute(sql)

    def query(sql):
        return ['|'.join(str(v) for v in row) for row in conn.execute(sql).fetchall()]
    return execute, query


def old_in_process_postgres(dsn, jobs, engines, slots):
    import psycopg
    conn = psycopg.connect(dsn, autocommit=True)
    for statement in OLD_SCHEMA:
        conn.execute(statement.replace('INTEGER PRIMARY KEY', 'BIGINT PRIMARY KEY'))
    with conn.cursor() as cur:
        cur.executemany('INSERT INTO CODA (idcoda, app, tab, stato, ts) VALUES (%s, %s, %s, %s, %s)',
                        [(i, 'APP%d' % (i % 7), 'TAB%d' % i, 'QUEUED', '0') for i in range(1, jobs + 1)])
        rows = [('10.0.%d.%d' % (e // 250, e % 250), 'CPU%d' % c, key)
                for e in range(engines) for c in range(1, slots + 1) for key in ('A:', 'T:', 'D:', 'S:', 'X:', 'I:')]
        cur.executemany('INSERT INTO ENGINES (nome, chiave, valore) VALUES (%s, %s, %s)', rows)

    def execute(sql):
        conn.execute(sql.replace('%', '%%'))

    def query(sql):
        return ['|'.join(str(v) for v in row) for row in conn.execute(sql.replace('%', '%%')).fetchall()]
    return execute, query, conn


# ---- main ---------------------------------------------------------------------------------------
def fmt(seconds):
    return '%8.3f s' % seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=10000)
    parser.add_argument('--engines', type=int, default=100)
    parser.add_argument('--slots', type=int, default=8)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--no-postgres', action='store_true')
    parser.add_argument('--no-cli', action='store_true', help='skip the slow sqlite3-CLI-per-statement model')
    args = parser.parse_args()
    expected = min(args.jobs, args.engines * args.slots)
    print('scheduler step: %d queued jobs, %d engines x %d slots (%d placements), median of %d runs'
          % (args.jobs, args.engines, args.slots, expected, args.runs))
    scratch = tempfile.mkdtemp(prefix='queue-bench-')
    results = {}
    try:
        queue = seed_ours(os.path.join(scratch, 'ours.db'), args.jobs, args.engines, args.slots)
        cold, steady = time_ours(queue, args.runs, expected)
        results['sqlite ours'] = statistics.median(cold)
        print('SQLite      ours (one transaction)            step %s   (full-queue tick %s)'
              % (fmt(results['sqlite ours']), fmt(statistics.median(steady))))
        old_path = os.path.join(scratch, 'old.db')
        seed_old_sqlite(old_path, args.jobs, args.engines, args.slots)
        shutil.copy(old_path, old_path + '.clean')
        results['sqlite old in-process'] = time_old('SQLite      old method, in-process per row   ', old_in_process_sqlite(old_path),
                                                    args.engines, expected, results['sqlite ours'])
        if not args.no_cli and shutil.which('sqlite3'):
            shutil.copy(old_path + '.clean', old_path)
            results['sqlite old cli'] = time_old('SQLite      old tool, sqlite3 CLI per stmt   ', old_cli(old_path),
                                                 args.engines, expected, results['sqlite ours'])
        if not args.no_postgres:
            from tests.support.lab.postgres import PostgresServer  # pylint: disable=import-outside-toplevel
            server = PostgresServer().start()
            try:
                import psycopg  # pylint: disable=import-outside-toplevel
                with psycopg.connect(server.dsn, autocommit=True) as conn:
                    conn.execute('CREATE DATABASE ours')
                    conn.execute('CREATE DATABASE old')
                base = server.dsn.rsplit('/', 1)[0]
                queue = seed_ours(base + '/ours', args.jobs, args.engines, args.slots)
                cold, steady = time_ours(queue, args.runs, expected)
                results['pg ours'] = statistics.median(cold)
                queue.close()
                print('PostgreSQL  ours (one transaction)            step %s   (full-queue tick %s)'
                      % (fmt(results['pg ours']), fmt(statistics.median(steady))))
                execute, query, conn = old_in_process_postgres(base + '/old', args.jobs, args.engines, args.slots)
                try:
                    results['pg old'] = time_old('PostgreSQL  old method, one round trip a stmt', (execute, query),
                                                 args.engines, expected, results['pg ours'])
                finally:
                    conn.close()
            finally:
                server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print('targets: SQLite <= 0.25 s: %s; PostgreSQL <= 1 s: %s' % (
        verdict(results.get('sqlite ours'), 0.25), verdict(results.get('pg ours'), 1.0)))


def verdict(seconds, target):
    if seconds is None:
        return 'not run'
    return 'met' if seconds <= target else 'MISSED'


if __name__ == '__main__':
    main()
