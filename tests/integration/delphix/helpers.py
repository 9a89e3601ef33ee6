"""Helpers shared by the delphix suite's tests."""
import time

from ansible_collections.orchestra.fleet.plugins.module_utils import delphix as dx

USER, PASSWORD = 'admin', 'Admin-12'
KNOB_DEFAULTS = {name: None for name in ('error_rate', 'latency_ms', 'lost_response_rate', 'lost_mode', 'lost_hold_s',
                                         'token_expiry_calls', 'token_timeout_s', 'down_after', 'down_for',
                                         'down_mode', 'match', 'budget', 'seed', 'post_status')}


def client_for(sim, **options):
    settings = {'timeout': 3.0, 'retries': 3, 'backoff': 0.05}
    settings.update(options)
    return dx.MaskingEngineClient(sim.url, USER, PASSWORD, **settings)


def wait_terminal(client, execution_id, timeout=20.0):
    """Poll until the execution is terminal (bounded); returns the last Execution seen."""
    deadline = time.monotonic() + timeout
    while True:
        execution = client.get_execution(execution_id)
        if execution.terminal or time.monotonic() > deadline:
            return execution
        time.sleep(0.02)


def wait_status(client, execution_id, status, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        execution = client.get_execution(execution_id)
        if execution.status == status or time.monotonic() > deadline:
            return execution
        time.sleep(0.02)
