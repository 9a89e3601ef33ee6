"""Fixtures of the masking_skew suite: the real queue on SQLite and a real PostgreSQL, simulated engines
whose clocks run minutes ahead of or behind this host's (real processes over HTTP, stopped after use)."""
import uuid

import pytest

from tests.support.delphix_sim.launcher import seed_config, start_simulator


@pytest.fixture(scope='session')
def postgres_server():
    from tests.support.lab.postgres import PostgresServer  # pylint: disable=import-outside-toplevel
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=['sqlite', 'postgresql'])
def store_url(request, tmp_path):
    """A fresh, empty queue store of each kind."""
    if request.param == 'sqlite':
        return 'sqlite:///%s' % (tmp_path / 'queue.db')
    import psycopg  # pylint: disable=import-outside-toplevel
    server = request.getfixturevalue('postgres_server')
    name = 'skew_' + uuid.uuid4().hex[:12]
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute('CREATE DATABASE %s' % name)
    return server.dsn.rsplit('/', 1)[0] + '/' + name


@pytest.fixture
def simulators():
    """start(name, jobs, slots, clock_offset_s=0, faults=None) -> SimHandle; all stopped at the end."""
    started = []

    def start(name, jobs, slots=3, clock_offset_s=0.0, faults=None, **options):
        sim = start_simulator(seed_config(name, jobs, slots=slots, clock_offset_s=clock_offset_s, **options),
                              faults=faults)
        started.append(sim)
        return sim
    yield start
    for sim in started:
        sim.stop()
