"""Fixtures of the queue_core suite: queue stores on SQLite and a real PostgreSQL, simulated engines,
worker processes. Everything a test starts is stopped by the fixture that started it (by pid)."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from tests.support.delphix_sim.launcher import seed_config, start_simulator

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(FLEET_ROOT)))
CREDENTIALS = {'*': {'username': 'admin', 'password': 'Admin-12'}}


@pytest.fixture(scope='session')
def postgres_server():
    from tests.support.lab.postgres import PostgresServer
    server = PostgresServer().start()
    yield server
    server.stop()


def _fresh_database(server):
    import psycopg
    name = 'q_' + uuid.uuid4().hex[:12]
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute('CREATE DATABASE %s' % name)
    return server.dsn.rsplit('/', 1)[0] + '/' + name


@pytest.fixture(params=['sqlite', 'postgresql'])
def store_url(request, tmp_path):
    """A fresh, empty queue store of each kind."""
    if request.param == 'sqlite':
        return 'sqlite:///%s' % (tmp_path / 'queue.db')
    return _fresh_database(request.getfixturevalue('postgres_server'))


@pytest.fixture
def credentials_file(tmp_path):
    path = tmp_path / 'credentials.json'
    with open(os.open(str(path), os.O_WRONLY | os.O_CREAT, 0o600), 'w', encoding='utf-8') as handle:
        json.dump(CREDENTIALS, handle)
    return str(path)


@pytest.fixture
def simulators():
    """start(name, jobs, slots, faults=None, **engine_options) -> SimHandle; all stopped at the end."""
    started = []

    def start(name, jobs, slots=4, faults=None, memory_mb=None, **options):
        sim = start_simulator(seed_config(name, jobs, slots=slots, memory_mb=memory_mb, **options), faults=faults)
        started.append(sim)
        return sim
    yield start
    for sim in started:
        sim.stop()


class Workers:
    """queue_worker processes started by a test (stopped by pid at the end)."""

    def __init__(self, store_url, credentials_file, log_dir):
        self.store_url = store_url
        self.credentials_file = credentials_file
        self.log_dir = log_dir
        self.procs = []

    def start(self, *extra):
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join([COLLECTIONS_ROOT, FLEET_ROOT, env.get('PYTHONPATH', '')])
        log = tempfile.NamedTemporaryFile(prefix='worker-', suffix='.log', dir=self.log_dir, delete=False)  # pylint: disable=consider-using-with
        cmd = [sys.executable, '-m', 'tests.support.queue_worker', '--store', self.store_url,
               '--credentials-file', self.credentials_file] + list(extra)
        proc = subprocess.Popen(cmd, cwd=FLEET_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # pylint: disable=consider-using-with
        proc.log_path = log.name
        log.close()
        self.procs.append(proc)
        return proc

    def wait_all(self, timeout):
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                pass
        return [proc.poll() for proc in self.procs]

    def output(self, proc):
        with open(proc.log_path, encoding='utf-8', errors='replace') as handle:
            return handle.read()

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test alone (it may be restarted)."""
    from tests.support.lab.postgres import PostgresServer
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def worker_pool(credentials_file, tmp_path):
    """worker_pool(store_url) -> Workers on that store; all stopped at the end."""
    pools = []

    def make(url):
        pools.append(Workers(url, credentials_file, str(tmp_path)))
        return pools[-1]
    yield make
    for pool in pools:
        pool.stop()


@pytest.fixture
def workers(store_url, credentials_file, tmp_path):
    pool = Workers(store_url, credentials_file, str(tmp_path))
    yield pool
    pool.stop()


def max_overlap(executions):
    """Highest number of executions alive at once on an engine: from POST (submitted) to end."""
    events = []
    for execution in executions:
        events.append((execution['submitted'], 1))
        events.append((execution['ended'] if execution['ended'] is not None else float('inf'), -1))
    level = peak = 0
    for _moment, step in sorted(events, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


def check_exactly_once(queue, sims, slots):
    """Every queue job terminal, one execution per started job, no stray execution, no engine over its slots.

    sims: {engine name: SimHandle}; slots: {engine name: queue slots}. Returns the jobs.
    """
    jobs = queue.info(engines=False)['jobs']
    unfinished = [j for j in jobs if j['state'] not in ('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED')]
    assert not unfinished, 'unfinished jobs: %r' % unfinished[:5]
    claimed = {}
    for job in jobs:
        if job['execution_id'] is not None:
            key = (job['engine'], job['execution_id'])
            assert key not in claimed, 'two queue jobs claim execution %r: %r and %r' % (key, claimed[key], job['id'])
            claimed[key] = job['id']
    recorded = set()
    for name, sim in sims.items():
        record = sim.record()
        assert record['overlaps'] == [], 'engine %s ran one job twice at once: %r' % (name, record['overlaps'][:3])
        peak = max_overlap(record['executions'])
        assert peak <= slots[name], 'engine %s had %d executions alive at once, slots %d' % (name, peak, slots[name])
        for execution in record['executions']:
            recorded.add((name, execution['executionId']))
    counted = queue.store.counts()   # the trigger-kept counters agree with a full count, on both databases
    actual = dict((row['state'], row['n']) for row in queue.store.read(
        lambda tx: tx.rows('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state')))
    assert counted == actual, (counted, actual)
    stray = recorded - set(claimed)
    missing = set(claimed) - recorded
    assert not stray, 'executions no queue job owns (duplicates or lost starts): %r' % sorted(stray)[:10]
    assert not missing, 'queue jobs name executions the engines never had: %r' % sorted(missing)[:10]
    return jobs


@pytest.fixture
def checks():
    class Checks:
        exactly_once = staticmethod(check_exactly_once)
        overlap = staticmethod(max_overlap)
    return Checks
