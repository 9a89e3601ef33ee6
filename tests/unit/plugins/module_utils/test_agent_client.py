"""agent_client against real sockets on loopback: good answers, protocol errors and misbehaving peers."""

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client as ac
from tests.support.lab.ports import free_port
from tests.support.misbehaving import MisbehavingServer

STATE = {'hostname': 'w1', 'version': '0.1.0', 'state': 'lazy', 'reason': 'no workload running', 'busy': False,
         'failed': False, 'claimed': False, 'running': 0, 'failed_workflows': 0, 'claim': None, 'fencing': 3}


def client_for(server, **kwargs):
    kwargs.setdefault('timeout', 1.0)
    return ac.AgentClient(ac.agent_url('127.0.0.1', server.port), **kwargs)


def test_agent_url_brackets_ipv6():
    assert ac.agent_url('10.0.0.1') == 'http://10.0.0.1:9009'
    assert ac.agent_url('fd00::1', 9100, 'https') == 'https://[fd00::1]:9100'


def test_verify_setting():
    assert ac.verify_setting(True, None) is True
    assert ac.verify_setting(True, '/ca.pem') == '/ca.pem'
    assert ac.verify_setting(False, '/ca.pem') is False


def test_state_ok_and_token_sent():
    with MisbehavingServer('json', routes={'/v1/state': (200, STATE)}) as server:
        doc = client_for(server, token='s3cret').state()
    assert doc['state'] == 'lazy'
    method, path, _body = server.requests[0]
    assert (method, path) == ('GET', '/v1/state')


def test_error_carries_agent_message():
    conflict = {'error': 'conflict', 'message': 'host already claimed by sched-a', 'state': 'claimed'}
    with MisbehavingServer('json', routes={('POST', '/v1/claims'): (409, conflict)}) as server:
        with pytest.raises(ac.AgentConflict) as info:
            client_for(server).create_claim('me', 60)
    assert 'host already claimed by sched-a' in str(info.value)
    assert info.value.status == 409 and info.value.code == 'conflict'
    assert info.value.body['state'] == 'claimed'


@pytest.mark.parametrize('status, error_class', [(401, ac.AgentAuthError), (403, ac.AgentAuthError),
                                                 (404, ac.AgentNotFound), (400, ac.AgentHTTPError)])
def test_status_maps_to_error_class(status, error_class):
    with MisbehavingServer('json', routes={'/v1/health': (status, {'error': 'x', 'message': 'because'})}) as server:
        with pytest.raises(error_class, match='because'):
            client_for(server).health()


def test_create_claim_requires_secret_in_answer():
    with MisbehavingServer('json', routes={('POST', '/v1/claims'): (201, {'id': 'c1', 'fencing': 1})}) as server:
        with pytest.raises(ac.AgentProtocolError, match='secret'):
            client_for(server).create_claim('me', 60)


def test_release_sends_secret_and_fencing():
    with MisbehavingServer('json', routes={('DELETE', '/v1/claims/c%201'): (200, {'released': True, 'id': 'c 1'})}) as server:
        assert client_for(server).release_claim('c 1', 'sec', fencing=4)['released'] is True
    assert b'"secret": "sec"' in server.requests[0][2] and b'"fencing": 4' in server.requests[0][2]


@pytest.mark.parametrize('mode, error_class, text', [
    ('html', ac.AgentProtocolError, 'text/html, not JSON'),
    ('garbage', ac.AgentProtocolError, 'not with HTTP'),
    ('wrong_json', ac.AgentProtocolError, 'wrong shape'),
    ('reset', ac.AgentUnreachable, 'reset'),
])
def test_misbehaving_peers_raise_clear_errors(mode, error_class, text):
    with MisbehavingServer(mode) as server:
        with pytest.raises(error_class, match=text):
            client_for(server).state()


def test_tarpit_times_out_within_deadline():
    with MisbehavingServer('tarpit') as server:
        # The reason names the configured deadline: the call ended through it, not through the server.
        with pytest.raises(ac.AgentTimeout, match='no answer within 0.5 s'):
            client_for(server, timeout=0.5).state()


def test_connection_refused():
    port = free_port()
    with pytest.raises(ac.AgentUnreachable, match='refused'):
        ac.AgentClient(ac.agent_url('127.0.0.1', port), timeout=1).health()


def test_oversized_answer_rejected():
    big = b'{"a": "' + b'x' * (ac.MAX_BODY_BYTES + 10) + b'"}'
    with MisbehavingServer('json', routes={'/v1/state': (200, big)}) as server:
        with pytest.raises(ac.AgentProtocolError, match='larger than'):
            client_for(server, timeout=5).state()


@pytest.mark.parametrize('doc, text', [
    ({'state': 'sleepy'}, 'unknown state'),
    ({'reason': 'x'}, '"state" missing'),
    ({'state': 'lazy', 'running': 'two'}, '"running" is not an integer'),
    ({'state': 'lazy', 'running': True}, '"running" is not an integer'),
    ({'state': 'claimed', 'claim': 'yes'}, '"claim" is not an object'),
])
def test_validate_state_names_the_problem(doc, text):
    with pytest.raises(ac.AgentProtocolError, match=text):
        ac.validate_state(doc)


def test_legacy_busy():
    routes = {'/busy': (200, b'TRUE\n', 'text/plain')}
    with MisbehavingServer('json', routes=routes) as server:
        assert client_for(server).legacy_busy() is True
