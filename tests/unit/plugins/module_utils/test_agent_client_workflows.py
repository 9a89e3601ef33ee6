"""agent_client's fenced-workflow calls against a real loopback server: bodies, answers, errors naming the host."""

import json

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client as ac
from tests.support.misbehaving import MisbehavingServer

CLAIM = {'host': 'w1', 'id': 'c1', 'secret': 's3cret', 'fencing': 4, 'owner': 'queue'}
STARTED = {'id': 'wf-' + 'a' * 32, 'container_id': 'x' * 64, 'name': 'orchestra-wf-a', 'status': 'running',
           'claim_id': 'c1', 'fencing': 4, 'image': 'img:1', 'started_at': '2026-12-04T10:00:00Z'}
STATUS = {'id': STARTED['id'], 'status': 'failed', 'exit_code': 3, 'started_at': '2026-12-04T10:00:00Z',
          'finished_at': '2026-12-04T10:00:05Z', 'elapsed_s': 5.0, 'log_tail': 'boom\n', 'claim_id': 'c1', 'fencing': 4,
          'image': 'img:1'}


def client_for(server):
    return ac.AgentClient(ac.agent_url('127.0.0.1', server.port), timeout=2.0)


def test_workflow_body_carries_the_fence_and_the_spec():
    spec = {'image': 'img:1', 'command': ('run', '--ini', '/w/a.ini'), 'files': [{'path': '/w/a.ini', 'content': 'x'}]}
    assert ac.workflow_body(CLAIM, spec) == {
        'claim_id': 'c1', 'secret': 's3cret', 'fencing': 4, 'image': 'img:1', 'command': ['run', '--ini', '/w/a.ini'],
        'env': {}, 'labels': {}, 'files': [{'path': '/w/a.ini', 'content': 'x'}]}
    assert ac.workflow_body(CLAIM, {'image': 'img:1', 'name': 'n'})['name'] == 'n'


@pytest.mark.parametrize('claim, spec, text', [
    (CLAIM, {'command': ['x']}, 'needs an image'),
    (CLAIM, {'image': 'i', 'privileged': True}, 'unknown workflow spec key(s): privileged'),
    (CLAIM, ['image'], 'must be a dict'),
    (dict(CLAIM, fencing=None), {'image': 'i'}, 'the claim has no fencing'),
])
def test_workflow_body_refuses_bad_specs(claim, spec, text):
    with pytest.raises(ValueError, match=text.replace('(', r'\(').replace(')', r'\)')):
        ac.workflow_body(claim, spec)


def test_start_status_and_cancel():
    routes = {('POST', '/v1/workflows'): (201, STARTED), ('GET', '/v1/workflows/' + STARTED['id']): (200, STATUS),
              ('POST', '/v1/workflows/%s/cancel' % STARTED['id']): (200, dict(STATUS, status='cancelled'))}
    with MisbehavingServer('json', routes=routes) as server:
        client = client_for(server)
        assert client.start_workflow(CLAIM, {'image': 'img:1'})['id'] == STARTED['id']
        assert client.workflow_status(STARTED['id'])['exit_code'] == 3
        assert client.cancel_workflow(CLAIM, STARTED['id'])['status'] == 'cancelled'
    assert json.loads(server.requests[0][2])['fencing'] == 4
    assert json.loads(server.requests[2][2]) == {'claim_id': 'c1', 'secret': 's3cret'}


def test_refusals_name_the_host_and_keep_the_agents_code():
    refusal = {'error': 'stale_claim', 'message': 'claim c1 (fencing 4) is over: the host is held by fencing 5'}
    with MisbehavingServer('json', routes={('POST', '/v1/workflows'): (409, refusal)}) as server:
        with pytest.raises(ac.AgentConflict) as info:
            client_for(server).start_workflow(CLAIM, {'image': 'img:1'})
    assert (info.value.code, info.value.status) == ('stale_claim', 409)
    assert str(info.value) == 'start workflow on http://127.0.0.1:%d: HTTP 409 stale_claim: %s' % (server.port, refusal['message'])


@pytest.mark.parametrize('doc, text', [
    (dict(STATUS, status='exploded'), 'unknown workflow status'),
    (dict(STATUS, exit_code='3'), 'not an integer'),
    ({'id': 'wf-1'}, 'without "status"'),
])
def test_status_documents_of_the_wrong_shape_are_protocol_errors(doc, text):
    with MisbehavingServer('json', routes={('GET', '/v1/workflows/wf-1'): (200, doc)}) as server:
        with pytest.raises(ac.AgentProtocolError, match=text):
            client_for(server).workflow_status('wf-1')
