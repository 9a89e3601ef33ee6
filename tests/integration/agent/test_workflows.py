"""Fenced workflow starts on the real agent process over the real Docker engine (POST /v1/workflows).

The agent runs with an allow-list naming the lab's busybox image; every container it starts
carries the test's label selector, and all of them are removed at the end of each test.
Requests are signed with the suite's own signer (tests/support/agent_proc.py); one test drives
the collection's client (agent_client) end to end.
"""
import time

import docker
import pytest
import requests

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from tests.support.agent_proc import start_agent

INI = '[workflow]\nsample = S-001\nsteps = 3\n'


@pytest.fixture
def wf_agent(busybox_image, selector, docker_client, token):
    handle = start_agent(labels=[selector], token=token,
                         config={'workflow_images': [busybox_image], 'workflow_network': 'none'})
    handle.wait_state(lambda s: s['docker']['reachable'])
    yield handle
    handle.close()
    for container in docker_client.containers.list(all=True, filters={'label': selector}):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


def claim(handle, owner='sched-a', ttl=300):
    response = handle.request('POST', '/v1/claims', {'owner': owner, 'ttl': ttl}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def start(handle, held, image, command, **extra):
    body = {'claim_id': held['id'], 'secret': held['secret'], 'fencing': held['fencing'], 'image': image,
            'command': command}
    body.update(extra)
    return handle.request('POST', '/v1/workflows', body, timeout=30)


def wait_workflow(handle, workflow_id, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        doc = handle.request('GET', '/v1/workflows/' + workflow_id, sign=False, timeout=15).json()
        if predicate(doc):
            return doc
        time.sleep(0.1)
    raise AssertionError('workflow never matched within %ss: %r' % (timeout, doc))


def test_allowed_image_runs_to_completion_with_files_mounted_read_only(wf_agent, busybox_image, docker_client, selector):
    held = claim(wf_agent)
    script = ('cat /etc/orchestra/sample.ini; echo env=$SAMPLE; '
              'if (echo x >> /etc/orchestra/sample.ini) 2>/dev/null; then echo WRITABLE; else echo readonly; fi; '
              'cat /data/second.txt; exit 0')
    response = start(wf_agent, held, busybox_image, ['sh', '-c', script], env={'SAMPLE': 'S-001'},
                     labels={'team': 'genomics'},
                     files=[{'path': '/etc/orchestra/sample.ini', 'content': INI},
                            {'path': '/data/second.txt', 'content': 'second file\n'}])
    assert response.status_code == 201, response.text
    started = response.json()
    assert (started['status'], started['claim_id'], started['fencing']) == ('running', held['id'], held['fencing'])
    assert started['id'].startswith('wf-') and started['name'] == 'orchestra-' + started['id']
    done = wait_workflow(wf_agent, started['id'], lambda d: d['status'] != 'running')
    assert (done['status'], done['exit_code'], done['image']) == ('succeeded', 0, busybox_image)
    assert (done['claim_id'], done['fencing'], done['container_id']) == (held['id'], held['fencing'], started['container_id'])
    assert done['log_tail'] == INI + 'env=S-001\nreadonly\nsecond file\n'
    assert done['finished_at'] and done['started_at'] and done['elapsed_s'] >= 0
    # The container carries the selector (the host counted busy), the fence, the id, and the user's label.
    labels = docker_client.containers.get(started['container_id']).labels
    assert labels[selector] == ''
    assert (labels['orchestra.claim.id'], labels['orchestra.claim.fence']) == (held['id'], str(held['fencing']))
    assert (labels['orchestra.workflow.id'], labels['team']) == (started['id'], 'genomics')
    # The list keeps working and names the workflow's id and claim.
    listed = requests.get(wf_agent.url + '/v1/workflows', timeout=5).json()['workflows']
    assert [(item['id'], item['status'], item['claim_id'], item['fencing']) for item in listed] == [
        (started['id'], 'succeeded', held['id'], held['fencing'])]
    assert wf_agent.state()['state'] == 'claimed'


def test_running_workflow_makes_the_host_busy_and_cancel_stops_it_without_failing_the_host(wf_agent, busybox_image):
    held = claim(wf_agent)
    started = start(wf_agent, held, busybox_image, ['sleep', '300']).json()
    state = wf_agent.wait_state(lambda s: s['state'] == 'busy')
    assert state['double_booking'] is None
    # While it runs nobody else can claim the host.
    assert wf_agent.request('POST', '/v1/claims', {'owner': 'rival', 'ttl': 60}).status_code == 409
    running = wait_workflow(wf_agent, started['id'], lambda d: d['status'] == 'running')
    assert running['exit_code'] is None and running['finished_at'] is None
    path = '/v1/workflows/%s/cancel' % started['id']
    wrong = wf_agent.request('POST', path, {'claim_id': held['id'], 'secret': 'not-the-secret'})
    assert (wrong.status_code, wrong.json()['error']) == (409, 'foreign_claim')
    assert wf_agent.request('POST', path, {'claim_id': held['id'], 'secret': held['secret']}, sign=False).status_code == 401
    cancelled = wf_agent.request('POST', path, {'claim_id': held['id'], 'secret': held['secret']}, timeout=60)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()['status'] == 'cancelled' and cancelled.json()['exit_code'] != 0
    # A cancel is deliberate: the host is claimed again, not failed.
    state = wf_agent.wait_state(lambda s: s['running'] == 0)
    assert (state['state'], state['failed_workflows']) == ('claimed', 0)


def test_failed_workflow_makes_the_host_failed_until_acknowledged(wf_agent, busybox_image):
    held = claim(wf_agent)
    started = start(wf_agent, held, busybox_image, ['sh', '-c', 'echo broken >&2; exit 7']).json()
    done = wait_workflow(wf_agent, started['id'], lambda d: d['status'] != 'running')
    assert (done['status'], done['exit_code'], done['log_tail'], done['acknowledged']) == ('failed', 7, 'broken\n', False)
    state = wf_agent.wait_state(lambda s: s['state'] == 'failed')
    assert state['reason'] == '1 failed workflow: %s exited 7' % started['name']
    # A failed host takes no further workflow, even for the claim that holds it.
    again = start(wf_agent, held, busybox_image, ['true'])
    assert (again.status_code, again.json()['error']) == (409, 'failed')
    assert wf_agent.request('POST', '/v1/failures/ack', {'containers': [started['name']]}).status_code == 200
    assert wf_agent.state()['state'] == 'claimed'
    assert wait_workflow(wf_agent, started['id'], lambda d: d['acknowledged'])['status'] == 'failed'


def test_image_not_in_the_allow_list_is_403_and_nothing_starts(wf_agent, docker_client, selector):
    held = claim(wf_agent)
    response = start(wf_agent, held, 'orchestra-test/not-allowed:1', ['true'])
    assert (response.status_code, response.json()['error']) == (403, 'image_not_allowed')
    assert docker_client.containers.list(all=True, filters={'label': selector}) == []


def test_default_agent_has_fenced_starts_disabled(agent, busybox_image):
    agent.wait_state(lambda s: s['docker']['reachable'])
    held = claim(agent)
    response = start(agent, held, busybox_image, ['true'])
    assert (response.status_code, response.json()['error']) == (403, 'image_not_allowed')
    assert 'disabled' in response.json()['message']


def test_missing_stale_and_foreign_fences_are_409(wf_agent, busybox_image, docker_client, selector):
    # No claim at all.
    nobody = {'id': 'f' * 32, 'secret': 'x', 'fencing': 1}
    response = start(wf_agent, nobody, busybox_image, ['true'])
    assert (response.status_code, response.json()['error']) == (409, 'no_claim')
    held = claim(wf_agent)
    # The claim's own id and secret with another fencing number.
    for fencing in (held['fencing'] - 1, held['fencing'] + 1):
        response = start(wf_agent, dict(held, fencing=fencing), busybox_image, ['true'])
        assert (response.status_code, response.json()['error']) == (409, 'stale_claim')
    # A fence field that is missing altogether is malformed input.
    body = {'claim_id': held['id'], 'secret': held['secret'], 'image': busybox_image}
    response = wf_agent.request('POST', '/v1/workflows', body)
    assert (response.status_code, response.json()['error']) == (400, 'bad_request')
    # Somebody else's claim id (a higher fence than the live one), and the right id with a wrong secret.
    response = start(wf_agent, {'id': 'e' * 32, 'secret': held['secret'], 'fencing': held['fencing'] + 3},
                     busybox_image, ['true'])
    assert (response.status_code, response.json()['error']) == (409, 'foreign_claim')
    response = start(wf_agent, dict(held, secret='guess'), busybox_image, ['true'])
    assert (response.status_code, response.json()['error']) == (409, 'foreign_claim')
    assert docker_client.containers.list(all=True, filters={'label': selector}) == []


@pytest.mark.slow
def test_claim_that_expired_and_was_reclaimed_by_a_rival_cannot_start(wf_agent, busybox_image, docker_client, selector):
    old = claim(wf_agent, owner='slow-controller', ttl=1)
    wf_agent.wait_state(lambda s: s['state'] == 'lazy', timeout=20)
    rival = claim(wf_agent, owner='rival')
    assert rival['fencing'] == old['fencing'] + 1
    response = start(wf_agent, old, busybox_image, ['sleep', '30'])
    assert (response.status_code, response.json()['error']) == (409, 'stale_claim')
    assert docker_client.containers.list(all=True, filters={'label': selector}) == []
    # The rival's own start goes through, and the old holder cannot cancel it.
    started = start(wf_agent, rival, busybox_image, ['sleep', '30']).json()
    response = wf_agent.request('POST', '/v1/workflows/%s/cancel' % started['id'],
                                {'claim_id': old['id'], 'secret': old['secret']})
    assert (response.status_code, response.json()['error']) == (409, 'foreign_claim')


def test_unsigned_is_401_and_text_plain_is_415(wf_agent, busybox_image, docker_client, selector):
    held = claim(wf_agent)
    body = {'claim_id': held['id'], 'secret': held['secret'], 'fencing': held['fencing'], 'image': busybox_image}
    unsigned = wf_agent.request('POST', '/v1/workflows', body, sign=False)
    assert (unsigned.status_code, unsigned.json()['error']) == (401, 'unauthorized')
    as_text = wf_agent.request('POST', '/v1/workflows', body, content_type='text/plain')
    assert (as_text.status_code, as_text.json()['error']) == (415, 'unsupported_media_type')
    assert docker_client.containers.list(all=True, filters={'label': selector}) == []


def test_bad_files_labels_and_names_are_refused_before_anything_starts(wf_agent, busybox_image, docker_client, selector):
    held = claim(wf_agent)
    cases = [
        ({'files': [{'path': 'relative.ini', 'content': 'x'}]}, 400, 'bad_path'),
        ({'files': [{'path': '/etc/../root/x', 'content': 'x'}]}, 400, 'bad_path'),
        ({'files': [{'path': '/a', 'content': 'x'}, {'path': '/a/b', 'content': 'y'}]}, 400, 'bad_path'),
        ({'files': [{'path': '/f%d' % index, 'content': ''} for index in range(33)]}, 400, 'bad_request'),
        ({'files': [{'path': '/big', 'content': 'x' * 70000}]}, 413, 'too_large'),
        ({'labels': {'orchestra.claim.id': 'forged'}}, 400, 'reserved_label'),
        ({'env': {'BAD-NAME': 'x'}}, 400, 'bad_request'),
        ({'name': '../escape'}, 400, 'bad_request'),
        ({'privileged': True}, 400, 'bad_request'),
    ]
    for extra, status, code in cases:
        response = start(wf_agent, held, busybox_image, ['true'], **extra)
        assert (response.status_code, response.json()['error']) == (status, code), extra
    assert docker_client.containers.list(all=True, filters={'label': selector}) == []


def test_unknown_workflow_is_404(wf_agent):
    response = requests.get(wf_agent.url + '/v1/workflows/wf-' + '0' * 32, timeout=5)
    assert (response.status_code, response.json()['error']) == (404, 'not_found')


def test_collection_client_starts_follows_and_cancels(wf_agent, busybox_image, token):
    client = agent_client.AgentClient(wf_agent.url, token=token, timeout=30)
    held = client.create_claim('client-test', 300)
    started = client.start_workflow(held, {'image': busybox_image, 'command': ['sleep', '300'],
                                           'files': [{'path': '/w/sample.ini', 'content': INI}]})
    assert client.workflow_status(started['id'])['status'] == 'running'
    assert [item.get('id') for item in client.workflows()] == [started['id']]
    with pytest.raises(agent_client.AgentConflict) as refused:
        client.start_workflow(dict(held, fencing=held['fencing'] - 1), {'image': busybox_image})
    assert refused.value.code == 'stale_claim' and wf_agent.url in str(refused.value)
    with pytest.raises(agent_client.AgentAuthError) as refused:
        client.start_workflow(held, {'image': 'not/allowed'})
    assert refused.value.code == 'image_not_allowed' and 'start workflow on %s' % wf_agent.url in str(refused.value)
    assert client.cancel_workflow(held, started['id'])['status'] == 'cancelled'
    with pytest.raises(agent_client.AgentNotFound):
        client.workflow_status('wf-' + '1' * 32)


@pytest.mark.slow
def test_claim_lapsing_under_a_running_workflow_keeps_the_host_busy_and_survives_a_restart(wf_agent, busybox_image):
    """A controller killed mid-run stops renewing: its claim lapses, its workflow runs on. The host is
    busy (not lazy, not double-booked: the agent checked the fence itself), after a restart too, and the
    claim that started the workflow can still cancel it."""
    held = claim(wf_agent, owner='killed-controller', ttl=2)
    started = start(wf_agent, held, busybox_image, ['sleep', '300']).json()
    state = wf_agent.wait_state(lambda s: s['claim'] is None, timeout=20)
    assert (state['state'], state['double_booking'], state['running']) == ('busy', None, 1)
    assert wf_agent.request('POST', '/v1/claims', {'owner': 'rival', 'ttl': 60}).status_code == 409
    wf_agent.restart()
    state = wf_agent.wait_state(lambda s: s['docker']['reachable'])
    assert (state['state'], state['double_booking']) == ('busy', None)
    assert wait_workflow(wf_agent, started['id'], lambda d: True)['status'] == 'running'
    response = wf_agent.request('POST', '/v1/workflows/%s/cancel' % started['id'],
                                {'claim_id': held['id'], 'secret': held['secret']}, timeout=60)
    assert (response.status_code, response.json()['status']) == (200, 'cancelled')
    assert wf_agent.wait_state(lambda s: s['running'] == 0)['state'] == 'lazy'
