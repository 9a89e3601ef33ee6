"""Fixtures for the delphix suite: real simulator processes on loopback, stopped after use."""
import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import delphix as dx
from tests.integration.delphix.helpers import KNOB_DEFAULTS
from tests.support.delphix_sim.launcher import seed_config, start_simulator

MAIN_JOBS = [
    {'name': 'fast_ok', 'duration': 0.05, 'rows': 500},
    {'name': 'fast_warn', 'duration': 0.05, 'outcome': 'WARNING'},
    {'name': 'fast_fail', 'duration': 0.05, 'outcome': 'FAILED', 'rows': 800},
    {'name': 'odd', 'duration': 0.05, 'outcome': 'MYSTERY'},
    {'name': 'slow', 'duration': 60, 'rows': 10000},
    {'name': 'slow2', 'duration': 60},
    {'name': 'dup', 'environment': 'dev', 'duration': 0.05},
    {'name': 'dup', 'environment': 'prod', 'duration': 0.05},
    {'name': 'tenant', 'duration': 0.05, 'multi_tenant': True},
] + [{'name': 'lost_%d' % n, 'duration': 0.05} for n in range(12)]


@pytest.fixture(name='sims')
def sims_fixture():
    """Start extra engines in a test: sims(config, faults=None) -> SimHandle; all stopped at teardown."""
    started = []

    def start(config, faults=None):
        sim = start_simulator(config, faults=faults)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture(scope='module', name='main_sim')
def main_sim_fixture():
    sim = start_simulator(seed_config('main', MAIN_JOBS, slots=4))
    yield sim
    sim.stop()


@pytest.fixture(name='engine')
def engine_fixture(main_sim):
    """The shared engine with its fault knobs back to defaults after every test."""
    yield main_sim
    main_sim.set_faults(KNOB_DEFAULTS)


@pytest.fixture(autouse=True)
def fresh_token_cache():
    dx._TOKENS.clear()  # pylint: disable=protected-access
    yield
    dx._TOKENS.clear()  # pylint: disable=protected-access
