"""The agent against the real Docker engine: busy, failed, acknowledged, label filter, restarts."""
import requests

from tests.support.agent_proc import start_agent


def test_idle_host_is_lazy(agent):
    state = agent.wait_state(lambda s: s['docker']['reachable'])
    assert (state['state'], state['reason'], state['running']) == ('lazy', 'no workload running', 0)
    assert requests.get(agent.url + '/busy', timeout=5).text == 'FALSE'


def test_running_workload_makes_the_host_busy(agent, workloads):
    agent.wait_state(lambda s: s['docker']['reachable'])
    container = workloads('sleep 60', name='agent-busy-%s' % agent.port)
    state = agent.wait_state(lambda s: s['state'] == 'busy')
    assert (state['busy'], state['running'], state['reason']) == (True, 1, '1 workload container running')
    assert requests.get(agent.url + '/busy', timeout=5).text == 'TRUE'
    assert requests.get(agent.url + '/containers', timeout=5).text == container.name + '\n'
    listed = requests.get(agent.url + '/v1/containers', timeout=5).json()['containers']
    assert [(item['id'], item['status'], item['failed']) for item in listed] == [(container.id, 'running', False)]
    container.remove(force=True)
    assert agent.wait_state(lambda s: s['state'] == 'lazy')['running'] == 0


def test_nonzero_exit_is_a_failed_workflow_until_acknowledged(agent, workloads, token):
    agent.wait_state(lambda s: s['docker']['reachable'])
    container = workloads(['sh', '-c', 'exit 3'], name='agent-fail-%s' % agent.port)
    state = agent.wait_state(lambda s: s['state'] == 'failed')
    assert state['reason'] == '1 failed workflow: %s exited 3' % container.name
    assert state['failed_workflows'] == 1
    workflows = requests.get(agent.url + '/v1/workflows', timeout=5).json()['workflows']
    assert [(item['name'], item['status'], item['exit_code']) for item in workflows] == [(container.name, 'failed', 3)]
    # Acknowledging needs the token.
    assert requests.post(agent.url + '/v1/failures/ack', json={}, timeout=5).status_code == 401
    response = agent.request('POST', '/v1/failures/ack', {'containers': [container.name]})
    assert (response.status_code, response.json()) == (200, {'acknowledged': [container.id]})
    assert agent.state()['state'] == 'lazy'
    # The acknowledgement is persisted: a restarted agent does not bring the failure back.
    agent.restart()
    state = agent.wait_state(lambda s: s['docker']['reachable'])
    assert (state['state'], state['failed_workflows']) == ('lazy', 0)


def test_zero_exit_is_succeeded_not_failed(agent, workloads):
    agent.wait_state(lambda s: s['docker']['reachable'])
    workloads(['true'])
    agent.wait_state(lambda s: len(requests.get(agent.url + '/v1/containers', timeout=5).json()['containers']) == 1
                     and requests.get(agent.url + '/v1/containers', timeout=5).json()['containers'][0]['status'] == 'exited')
    state = agent.state()
    assert (state['state'], state['failed']) == ('lazy', False)
    statuses = [item['status'] for item in requests.get(agent.url + '/v1/workflows', timeout=5).json()['workflows']]
    assert statuses == ['succeeded']


def test_label_filter_decides_what_counts(busybox_image, selector, workloads):
    # Only key=blue counts: a container of the same key with another value, and one without the key, do not.
    handle = start_agent(labels=[selector + '=blue'])
    try:
        handle.wait_state(lambda s: s['docker']['reachable'])
        workloads('sleep 60', labels={selector: 'red'})
        workloads('sleep 60', labels={'orchestra.test.unrelated': 'x'})
        workloads(['sh', '-c', 'exit 4'], labels={selector: 'red'})
        counted = workloads('sleep 60', labels={selector: 'blue'})
        state = handle.wait_state(lambda s: s['state'] == 'busy')
        assert (state['running'], state['failed_workflows']) == (1, 0)
        listed = requests.get(handle.url + '/v1/containers', timeout=5).json()['containers']
        assert [item['id'] for item in listed] == [counted.id]
    finally:
        handle.close()


def test_existing_containers_are_seen_at_start(busybox_image, selector, workloads):
    workloads('sleep 60')
    handle = start_agent(labels=[selector])
    try:
        assert handle.wait_state(lambda s: s['docker']['reachable'])['state'] == 'busy'
    finally:
        handle.close()


def test_workflows_directory_is_a_second_source(busybox_image, selector, tmp_path):
    (tmp_path / 'nightly-etl').mkdir()
    (tmp_path / 'report.yml').write_text('x')
    handle = start_agent(labels=[selector], workflows_dir=str(tmp_path))
    try:
        workflows = requests.get(handle.url + '/v1/workflows', timeout=5).json()['workflows']
        assert [(item['name'], item['source']) for item in workflows] == [('nightly-etl', 'directory'), ('report.yml', 'directory')]
        assert requests.get(handle.url + '/workflows', timeout=5).text == 'nightly-etl\nreport.yml\n'
    finally:
        handle.close()


def test_legacy_endpoints_answer_plain_text(agent):
    response = requests.get(agent.url + '/healthy', timeout=5)
    assert (response.status_code, response.text) == (200, 'TRUE')
    assert response.headers['Content-Type'].startswith('text/plain')


def test_metrics_follow_the_state(agent, workloads):
    agent.wait_state(lambda s: s['docker']['reachable'])
    workloads('sleep 60')
    agent.wait_state(lambda s: s['state'] == 'busy')
    text = requests.get(agent.url + '/v1/metrics', timeout=5).text
    assert 'orchestra_agent_state{state="busy"} 1' in text
    assert 'orchestra_agent_running_containers 1' in text
    assert 'orchestra_agent_docker_reachable 1' in text


def fenced_labels(selector, claim_id, fence):
    return {selector: 'yes', 'orchestra.claim.id': claim_id, 'orchestra.claim.fence': str(fence)}


def test_workload_of_a_rival_or_stale_claim_is_a_double_booking(agent, workloads, selector):
    """Issue 16 item 5, the agent's half: a container started for a claim that is no longer the host's."""
    lazy = agent.wait_state(lambda s: s['state'] == 'lazy')
    assert lazy['double_booking'] is None
    first = agent.request('POST', '/v1/claims', {'owner': 'slow-controller', 'ttl': 60}).json()
    # The workflow of the current claim, correctly labelled: busy, no double booking.
    ours = workloads('sleep 60', labels=fenced_labels(selector, first['id'], first['fencing']))
    state = agent.wait_state(lambda s: s['state'] == 'busy')
    assert state['double_booking'] is None
    ours.remove(force=True)
    agent.wait_state(lambda s: s['state'] == 'claimed')
    # The claim is released (or lapsed) and a rival claims the host ...
    agent.request('DELETE', '/v1/claims/%s' % first['id'], {'secret': first['secret']})
    rival = agent.request('POST', '/v1/claims', {'owner': 'rival', 'ttl': 60}).json()
    assert rival['fencing'] == first['fencing'] + 1
    # ... and then the slow controller's `docker run` lands with its old claim's labels.
    late = workloads('sleep 60', labels=fenced_labels(selector, first['id'], first['fencing']))
    state = agent.wait_state(lambda s: s['double_booking'] is not None)
    assert state['state'] == 'busy'
    assert state['double_booking']['containers'] == [{'id': late.id, 'name': late.name, 'claim_id': first['id'],
                                                     'fence': first['fencing']}]
    assert 'the live claim is %s' % rival['id'] in state['double_booking']['reason']
    late.remove(force=True)
    state = agent.wait_state(lambda s: s['double_booking'] is None)
    assert state['state'] == 'claimed'
    # Right claim id but an old fence, and claim labels with no live claim at all, are double bookings too.
    stale = workloads('sleep 60', labels=fenced_labels(selector, rival['id'], rival['fencing'] - 1))
    assert "is not the live claim's" in agent.wait_state(lambda s: s['double_booking'] is not None)['double_booking']['reason']
    agent.request('DELETE', '/v1/claims/%s' % rival['id'], {'secret': rival['secret']})
    state = agent.wait_state(lambda s: s['claim'] is None)
    assert state['state'] == 'busy' and 'no claim is live' in state['double_booking']['reason']
    refused = agent.request('POST', '/v1/claims', {'owner': 'third', 'ttl': 60})
    assert refused.status_code == 409 and refused.json()['message'].startswith('host is double-booked: ')
    stale.remove(force=True)
    assert agent.wait_state(lambda s: s['state'] == 'lazy')['double_booking'] is None
