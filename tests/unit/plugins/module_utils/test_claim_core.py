"""fleet_claims with in-memory agents that follow the claim rules of the agent contract."""
import itertools
import threading

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client as ac
from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_claims as fc


class FakeAgent:
    """One host: lazy unless busy; one claim at a time; fencing only grows."""
    ids = itertools.count(1)

    def __init__(self, host, state='lazy', fail=None):
        self.host, self.status, self.fail = host, state, fail
        self.claim, self.fencing, self.posts = None, 0, 0
        self.lock = threading.Lock()

    def create_claim(self, owner, ttl, note=None):
        self.posts += 1
        if self.fail:
            raise self.fail
        with self.lock:
            if self.status != 'lazy' or self.claim:
                state = 'claimed' if self.claim else self.status
                raise ac.AgentConflict('HTTP 409 conflict: host is %s' % state, status=409, code='conflict', body={'state': state})
            self.fencing += 1
            self.claim = {'id': 'c%d' % next(self.ids), 'owner': owner, 'secret': 's-' + self.host, 'fencing': self.fencing,
                          'ttl': ttl, 'expires_at': 'later', 'created_at': 'now'}
            return dict(self.claim)

    def _check(self, claim_id, secret, fencing):
        if not self.claim or self.claim['id'] != claim_id:
            raise ac.AgentNotFound('HTTP 404 not_found: no such claim', status=404)
        if secret != self.claim['secret']:
            raise ac.AgentAuthError('HTTP 403 forbidden: wrong secret', status=403)
        if fencing is not None and fencing != self.claim['fencing']:
            raise ac.AgentConflict('HTTP 409 stale_fencing: stale', status=409, code='stale_fencing')

    def release_claim(self, claim_id, secret, fencing=None):
        self._check(claim_id, secret, fencing)
        self.claim = None
        return {'released': True, 'id': claim_id}

    def renew_claim(self, claim_id, secret, ttl=None, fencing=None):
        self._check(claim_id, secret, fencing)
        self.claim['expires_at'] = 'much later'
        return dict((k, v) for k, v in self.claim.items() if k != 'secret')

    def state(self):
        return {'state': 'claimed' if self.claim else self.status}

    def claims(self):
        return [self.claim] if self.claim else []


@pytest.fixture
def fleet():
    agents = dict((h, FakeAgent(h)) for h in ('h1', 'h2', 'h3', 'h4'))
    agents['h2'].status = 'busy'
    return agents


def test_claims_stop_at_count(fleet):
    result = fc.claim_hosts(['h1', 'h2', 'h3', 'h4'], 2, 'me', 60, fleet.get)
    assert [c['host'] for c in result['claims']] == ['h1', 'h3']
    assert result['complete'] is True
    assert fleet['h4'].posts == 0  # never asked: never more than `count` claims held
    assert result['unclaimed'] == [{'host': 'h2', 'reason': 'HTTP 409 conflict: host is busy', 'state': 'busy'}]
    claim = result['claims'][0]
    assert claim['secret'] == 's-h1' and claim['fencing'] == 1 and claim['owner'] == 'me'


def test_partial_kept_without_all_or_nothing(fleet):
    result = fc.claim_hosts(['h1', 'h2'], 2, 'me', 60, fleet.get)
    assert [c['host'] for c in result['claims']] == ['h1'] and result['complete'] is False
    assert fleet['h1'].claim is not None


def test_all_or_nothing_releases_partial_claims(fleet):
    fleet['h3'].fail = ac.AgentUnreachable('connection refused')
    result = fc.claim_hosts(['h1', 'h2', 'h3'], 2, 'me', 60, fleet.get, all_or_nothing=True)
    assert result['claims'] == [] and result['complete'] is False
    assert [r['host'] for r in result['released']] == ['h1'] and result['released'][0]['released'] is True
    assert fleet['h1'].claim is None
    assert {'host': 'h3', 'reason': 'connection refused', 'state': None} in result['unclaimed']


def test_race_between_two_schedulers_never_shares_a_host(fleet):
    outcomes = []

    def scheduler():
        outcomes.append(fc.claim_hosts(fc.order_candidates(list(fleet)), 1, threading.current_thread().name, 60, fleet.get))
    threads = [threading.Thread(target=scheduler, name='s%d' % i) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hosts = [c['host'] for o in outcomes for c in o['claims']]
    assert sorted(hosts) == ['h1', 'h3', 'h4']  # three lazy hosts, three schedulers, no host twice


def test_release_and_renew(fleet):
    claims = fc.claim_hosts(['h1', 'h3'], 2, 'me', 60, fleet.get)['claims']
    renewed = fc.renew_claims(claims, 120, fleet.get)
    assert [r['expires_at'] for r in renewed] == ['much later', 'much later']
    assert not any('secret' in r for r in renewed)  # unchanged by a renewal; the caller holds it
    assert [r['fencing'] for r in renewed] == [c['fencing'] for c in claims]
    released = fc.release_claims(claims, fleet.get)
    assert [r['released'] for r in released] == [True, True]
    again = fc.release_claims(claims, fleet.get)  # idempotent: already gone is not an error
    assert [r['released'] for r in again] == [False, False]
    assert again[0]['reason'] == 'unknown or already expired'


def test_wrong_secret_and_stale_fencing_are_errors(fleet):
    claim = fc.claim_hosts(['h1'], 1, 'me', 60, fleet.get)['claims'][0]
    with pytest.raises(fc.ClaimError, match='wrong secret'):
        fc.release_claims([dict(claim, secret='nope')], fleet.get)
    with pytest.raises(fc.ClaimError, match='stale'):
        fc.renew_claims([dict(claim, fencing=claim['fencing'] + 5)], 60, fleet.get)
    with pytest.raises(fc.ClaimError, match='without secret'):
        fc.release_claims([{'host': 'h1', 'id': claim['id']}], fleet.get)
    assert fleet['h1'].claim is not None


def test_plan_claims_and_existing(fleet):
    plan = fc.plan_claims(['h1', 'h2', 'h3', 'h4'], 2, fleet.get)
    assert plan['would_claim'] == ['h1', 'h3'] and plan['complete'] is True
    assert all(agent.posts == 0 for agent in fleet.values())
    claim = fc.claim_hosts(['h4'], 1, 'me', 60, fleet.get)['claims'][0]
    assert fc.existing_claims([claim, dict(claim, host='h1')], fleet.get) == [claim]


def test_order_candidates_dedupes():
    assert fc.order_candidates(['a', 'b', 'a'], shuffle=False) == ['a', 'b']
    assert sorted(fc.order_candidates(['a', 'b', 'c'])) == ['a', 'b', 'c']
