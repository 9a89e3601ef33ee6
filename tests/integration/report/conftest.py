"""Fixtures of the report suite: two real simulated engines over HTTP, a real ansible-playbook runner, and a
real browser (headless Chromium) that opens the written report from disk."""
import pytest

from tests.integration.masking_modules.helpers import USER, Runner
from tests.integration.report.browser import Browser
from tests.support.delphix_sim.launcher import seed_config, start_simulator

# Each name runs on both engines; an engine runs one execution of a job at a time, so every job has its own name.
JOBS = [
    {'name': 'mask_customers', 'outcome': 'SUCCEEDED', 'duration': 0.8, 'rows': 120000},
    {'name': 'mask_orders', 'outcome': 'SUCCEEDED', 'duration': 0.6, 'rows': 80000},
    {'name': 'mask_invoices', 'outcome': 'SUCCEEDED', 'duration': 0.5, 'rows': 30000},
    {'name': 'mask_archive', 'outcome': 'SUCCEEDED', 'duration': 0.9, 'rows': 250000},
    {'name': 'mask_contacts', 'outcome': 'SUCCEEDED', 'duration': 0.4, 'rows': 9000},
    {'name': 'mask_legacy_crm', 'outcome': 'WARNING', 'duration': 0.5, 'rows': 4000},
    {'name': 'mask_payroll', 'outcome': 'FAILED', 'duration': 0.4, 'rows': 700},
    {'name': 'mask_slow', 'outcome': 'SUCCEEDED', 'duration': 8.0, 'rows': 400000},
]
SLOTS = 2


@pytest.fixture(scope='module')
def engines():
    """Two simulated engines carrying JOBS, SLOTS slots each: {name: handle}."""
    started = {}
    try:
        for name in ('masking-a', 'masking-b'):
            started[name] = start_simulator(seed_config(name, JOBS, slots=SLOTS, users=[dict(USER)]))
        yield started
    finally:
        for handle in started.values():
            handle.stop()


@pytest.fixture
def runner(tmp_path):
    return Runner(tmp_path, str(tmp_path / 'queue.db'))


@pytest.fixture(scope='session')
def browser():
    return Browser()
