"""Fixtures of the engine_discovery suite: simulated engines (real processes, real HTTP) that describe themselves.

Each test starts the engines it changes (users, jobs, executions started outside the queue) and stops them at the
end; the queue store is a SQLite file in tmp_path. Module-level tests run the real ansible-playbook (the
masking_modules suite's Runner).
"""
import pytest

from tests.integration.masking_modules.helpers import USER, Runner
from tests.support.delphix_sim.launcher import start_simulator

ENVIRONMENTS = ('dev', 'test', 'prod')
JOBS_PER_ENVIRONMENT = 130      # the client reads 100 a page: two pages per environment


def catalogue_config(name, slots=0, cores=5, memory_mb=8192, jobs_per_environment=JOBS_PER_ENVIRONMENT, extra_jobs=()):
    """An engine with two applications and three environments (dev and test in one, prod in the other),
    `jobs_per_environment` jobs in each (mask_<env>_<n>), plus extra_jobs [(environment, spec)]."""
    def jobs(env):
        listed = [{'name': 'mask_%s_%03d' % (env, n), 'duration': 0.2, 'max_memory': 512 + n}
                  for n in range(jobs_per_environment)]
        return listed + [dict(spec) for where, spec in extra_jobs if where == env]
    return {
        'engine': {'name': name, 'num_simul_jobs_allowed': slots, 'total_available_cores': cores,
                   'max_memory_for_jobs': memory_mb},
        'users': [dict(USER)],
        'applications': [
            {'name': 'crm', 'environments': [{'name': env, 'jobs': jobs(env)} for env in ENVIRONMENTS[:2]]},
            {'name': 'billing', 'environments': [{'name': ENVIRONMENTS[2], 'jobs': jobs(ENVIRONMENTS[2])}]},
        ],
    }


@pytest.fixture(name='sims')
def sims_fixture():
    """Start engines in a test: sims(config) -> SimHandle; every one stopped at teardown (by its pid)."""
    started = []

    def start(config):
        sim = start_simulator(config)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def runner(tmp_path):
    return Runner(tmp_path, str(tmp_path / 'queue.db'))
