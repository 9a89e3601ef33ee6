"""Docker stopped -> 'unknown' with the reason (never lazy, never a crash); back -> recovered.

Uses a private dockerd (own socket, data-root, exec-root), never the shared engine.
"""
import pytest
import requests

from tests.support.agent_proc import start_agent


@pytest.mark.slow
def test_stopped_docker_is_reported_and_recovered(private_dockerd, selector):
    handle = start_agent(labels=[selector], docker_url=private_dockerd.url, token='t0k')
    try:
        state = handle.wait_state(lambda s: s['docker']['reachable'])
        assert state['state'] == 'lazy'
        agent_pid = handle.pid

        private_dockerd.stop()
        state = handle.wait_state(lambda s: not s['docker']['reachable'])
        assert state['state'] == 'unknown'
        assert state['reason'].startswith('docker unreachable: ')
        assert state['docker']['error']
        assert {key: value for key, value in handle.health().items() if key != 'agent_id'} == {
            'status': 'ok', 'version': '0.1.0', 'docker': 'down'}
        assert requests.get(handle.url + '/busy', timeout=5).text == 'TRUE'
        response = handle.request('POST', '/v1/claims', {'owner': 'sched', 'ttl': 60})
        assert (response.status_code, response.json()['message'], response.json()['state']) == (409, 'docker unreachable', 'unknown')
        assert handle.proc.poll() is None and handle.pid == agent_pid

        private_dockerd.start()
        state = handle.wait_state(lambda s: s['docker']['reachable'], timeout=60)
        assert (state['state'], state['docker']['error']) == ('lazy', None)
    finally:
        handle.close()


def test_docker_absent_from_the_start(selector, tmp_path):
    handle = start_agent(labels=[selector], docker_url='unix://%s' % (tmp_path / 'no-such.sock'))
    try:
        state = handle.wait_state(lambda s: s['docker']['error'] != 'not connected yet')
        assert state['state'] == 'unknown'
        assert state['reason'].startswith('docker unreachable: ')
    finally:
        handle.close()
