"""Fixtures for the masking_modules suite: real simulator processes, real ansible-playbook runs.

Every test gets its own queue store (a SQLite file in tmp_path unless it asks for PostgreSQL); the
two simulated engines are shared by the module (starting them costs a second) and tests tell their
executions apart by job name and by the before/after difference of the simulator's record.
"""
import pytest

from tests.integration.masking_modules.helpers import JOBS, USER, Runner
from tests.support.delphix_sim.launcher import seed_config, start_simulator


@pytest.fixture(scope='module')
def engines():
    """Two simulated engines carrying JOBS, 2 slots each: {name: handle}."""
    started = {}
    try:
        for name in ('sim-a', 'sim-b'):
            started[name] = start_simulator(seed_config(name, JOBS, slots=2, users=[dict(USER)]))
        yield started
    finally:
        for handle in started.values():
            handle.stop()


@pytest.fixture
def runner(tmp_path):
    return Runner(tmp_path, str(tmp_path / 'queue.db'))
