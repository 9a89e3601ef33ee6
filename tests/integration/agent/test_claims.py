"""Claims against the real agent process: one winner, persistence, expiry, secrets and fencing."""
import json
import os
import threading

import pytest
import requests


def claim(handle, owner='sched-a', ttl=300, **kwargs):
    return handle.request('POST', '/v1/claims', {'owner': owner, 'ttl': ttl}, timeout=30, **kwargs)


@pytest.fixture
def lazy_agent(agent):
    agent.wait_state(lambda s: s['state'] == 'lazy')
    return agent


@pytest.mark.slow
def test_100_concurrent_claims_exactly_one_wins(lazy_agent):
    barrier = threading.Barrier(100)
    answers = [None] * 100

    def attempt(index):
        body = json.dumps({'owner': 'sched-%d' % index, 'ttl': 300}).encode()
        headers = dict(lazy_agent.signed_headers('POST', '/v1/claims', body), **{'Content-Type': 'application/json'})
        with requests.Session() as session:
            barrier.wait(timeout=30)
            response = session.post(lazy_agent.url + '/v1/claims', data=body, headers=headers, timeout=60)
            answers[index] = (response.status_code, response.json())

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    codes = sorted(answer[0] for answer in answers)
    assert codes == [201] + [409] * 99
    winner = next(body for code, body in answers if code == 201)
    assert winner['fencing'] == 1
    losers = [body for code, body in answers if code == 409]
    assert {body['message'] for body in losers} == {'host already claimed by %s' % winner['owner']}
    state = lazy_agent.state()
    assert (state['state'], state['claim']['id'], state['fencing']) == ('claimed', winner['id'], 1)


def test_claim_survives_restart_and_fencing_keeps_growing(lazy_agent):
    created = claim(lazy_agent).json()
    on_disk = open(os.path.join(lazy_agent.state_dir, 'claims.json')).read()
    assert created['id'] in on_disk and created['secret'] not in on_disk
    lazy_agent.restart()
    state = lazy_agent.wait_state(lambda s: s['docker']['reachable'])
    assert (state['state'], state['claim']['id'], state['fencing']) == ('claimed', created['id'], created['fencing'])
    assert claim(lazy_agent, owner='sched-b').status_code == 409
    path = '/v1/claims/%s' % created['id']
    renewed = lazy_agent.request('PUT', path, {'secret': created['secret'], 'ttl': 120, 'fencing': created['fencing']})
    assert (renewed.status_code, renewed.json()['ttl']) == (200, 120)
    released = lazy_agent.request('DELETE', path, {'secret': created['secret']})
    assert released.json() == {'released': True, 'id': created['id']}
    lazy_agent.restart()
    lazy_agent.wait_state(lambda s: s['state'] == 'lazy')
    second = claim(lazy_agent, owner='sched-b').json()
    assert second['fencing'] == created['fencing'] + 1


@pytest.mark.slow
def test_ttl_expiry_releases_the_host(lazy_agent):
    created = claim(lazy_agent, ttl=2).json()
    assert lazy_agent.state()['state'] == 'claimed'
    state = lazy_agent.wait_state(lambda s: s['state'] == 'lazy', timeout=20)
    assert (state['claimed'], state['claim']) == (False, None)
    assert requests.get(lazy_agent.url + '/v1/claims', timeout=5).json() == {'claims': []}
    path = '/v1/claims/%s' % created['id']
    assert lazy_agent.request('PUT', path, {'secret': created['secret']}).status_code == 404
    assert claim(lazy_agent, owner='sched-b').json()['fencing'] == created['fencing'] + 1


def test_wrong_secret_and_stale_fencing_are_rejected(lazy_agent):
    created = claim(lazy_agent).json()
    path = '/v1/claims/%s' % created['id']
    wrong = lazy_agent.request('PUT', path, {'secret': 'not-the-secret'})
    assert (wrong.status_code, wrong.json()['error']) == (403, 'forbidden')
    wrong = lazy_agent.request('DELETE', path, headers={'X-Claim-Secret': 'not-the-secret'}, content_type=None)
    assert wrong.status_code == 403
    stale = lazy_agent.request('DELETE', path, {'secret': created['secret'], 'fencing': created['fencing'] - 1})
    assert (stale.status_code, stale.json()['error']) == (409, 'stale_fencing')
    stale = lazy_agent.request('PUT', path, {'secret': created['secret'], 'fencing': created['fencing'] + 5})
    assert (stale.status_code, stale.json()['error']) == (409, 'stale_fencing')
    assert lazy_agent.state()['claim']['id'] == created['id']
    # The token guards claims too, whatever the secret.
    assert lazy_agent.request('DELETE', path, {'secret': created['secret']}, sign=False).status_code == 401
    released = lazy_agent.request('DELETE', path, headers={'X-Claim-Secret': created['secret']}, content_type=None)
    assert released.status_code == 200


def test_busy_or_failed_host_cannot_be_claimed(agent, workloads):
    agent.wait_state(lambda s: s['docker']['reachable'])
    busy = workloads('sleep 60')
    agent.wait_state(lambda s: s['state'] == 'busy')
    response = claim(agent)
    assert (response.status_code, response.json()['message'], response.json()['state']) == (409, 'host is busy', 'busy')
    busy.remove(force=True)
    workloads(['sh', '-c', 'exit 3'])
    agent.wait_state(lambda s: s['state'] == 'failed')
    response = claim(agent)
    assert (response.status_code, response.json()['message']) == (409, 'host has failed workflows')
    assert json.loads(requests.get(agent.url + '/v1/claims', timeout=5).text) == {'claims': []}
