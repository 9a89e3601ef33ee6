# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Claim, renew and release fleet hosts through their agents (the core of orchestra.fleet.claim).

The agents are the only arbiters: a host is ours only when its agent answered 201.
Claims go out in waves no larger than the number still missing, so we never hold
more than `count` hosts, even for a moment.
"""

import random

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from ansible_collections.orchestra.fleet.plugins.module_utils.pool import run_bounded

CLAIM_KEYS = ('host', 'id', 'secret', 'fencing', 'owner', 'ttl', 'expires_at', 'created_at')


class ClaimError(Exception):
    """A claim operation failed in a way the caller must see (wrong secret, stale fencing, agent down)."""


def order_candidates(hosts, shuffle=True, rng=None):
    """De-duplicated candidates; shuffled so that concurrent schedulers rarely race for the same host first."""
    unique = []
    for host in hosts:
        if host not in unique:
            unique.append(host)
    if shuffle:
        (rng or random.SystemRandom()).shuffle(unique)
    return unique


def _claim_record(host, answer, owner, ttl):
    record = dict((key, answer.get(key)) for key in CLAIM_KEYS if key != 'host')
    record.update(host=host, owner=answer.get('owner') or owner, ttl=answer.get('ttl') or ttl)
    return record


def _try_claim(client_for, owner, ttl, note):
    def attempt(host, _due=None):
        try:
            return _claim_record(host, client_for(host).create_claim(owner, ttl, note), owner, ttl)
        except agent_client.AgentConflict as exc:
            state = exc.body.get('state') if isinstance(exc.body, dict) else None
            return {'host': host, 'reason': str(exc), 'state': state}
        except agent_client.AgentError as exc:
            return {'host': host, 'reason': str(exc), 'state': None}
    return attempt


def claim_hosts(candidates, count, owner, ttl, client_for, note=None, all_or_nothing=False, concurrency=16, timeout=5.0):
    """Claim up to `count` of `candidates` (in order). Returns dict(claims, unclaimed, released, complete).

    `unclaimed` (not `skipped`, which Ansible reads as "the task was skipped") lists the candidates
    asked but not granted, each with the agent's reason.
    """
    claims, unclaimed = [], []
    remaining = list(candidates)
    attempt = _try_claim(client_for, owner, ttl, note)

    def lost(host, _started=True):
        # The POST may have reached the agent: if it was granted, the claim simply expires after `ttl`.
        return {'host': host, 'reason': 'no answer within %.1f s (a claim granted meanwhile expires after %d s)' % (timeout, ttl),
                'state': None}

    while len(claims) < count and remaining:
        need = count - len(claims)
        wave, remaining = remaining[:need], remaining[need:]
        results = run_bounded(wave, attempt, concurrency, timeout + 1.0, lost)
        for index in range(len(wave)):
            outcome = results[index]
            if isinstance(outcome, Exception):
                outcome = {'host': wave[index], 'reason': 'claim failed: %s' % outcome, 'state': None}
            (claims if 'id' in outcome else unclaimed).append(outcome)
    complete = len(claims) >= count
    released = []
    if claims and not complete and all_or_nothing:
        released = release_claims(claims, client_for, concurrency=concurrency, strict=False)
        claims = []
    return {'claims': claims, 'unclaimed': unclaimed, 'released': released, 'complete': complete}


def release_claims(claims, client_for, concurrency=16, strict=True):
    """Release each claim. An unknown or expired claim counts as already released (not changed).

    With strict=True a refusal (wrong secret, stale fencing) or an unreachable agent raises ClaimError
    after every claim was tried.
    """
    def release(claim, _due=None):
        try:
            client_for(claim['host']).release_claim(claim['id'], claim['secret'], claim.get('fencing'))
            return {'host': claim['host'], 'id': claim['id'], 'released': True, 'reason': 'released'}
        except agent_client.AgentNotFound:
            return {'host': claim['host'], 'id': claim['id'], 'released': False, 'reason': 'unknown or already expired'}
        except agent_client.AgentError as exc:
            return {'host': claim['host'], 'id': claim['id'], 'released': False, 'reason': str(exc), 'error': True}
    return _apply(claims, release, concurrency, strict, 'release')


def renew_claims(claims, ttl, client_for, concurrency=16):
    """Extend each claim by `ttl` seconds; any failure (expired, wrong secret, stale fencing) raises ClaimError.

    The renewed records carry no secret: it does not change, and the caller already holds it.
    """
    def renew(claim, _due=None):
        try:
            answer = client_for(claim['host']).renew_claim(claim['id'], claim['secret'], ttl=ttl, fencing=claim.get('fencing'))
        except agent_client.AgentError as exc:
            return {'host': claim['host'], 'id': claim['id'], 'reason': str(exc), 'error': True}
        record = _claim_record(claim['host'], answer, claim.get('owner'), ttl)
        record.pop('secret', None)
        return record
    return _apply(claims, renew, concurrency, True, 'renew')


def _apply(claims, action, concurrency, strict, verb):
    for claim in claims:
        missing = [key for key in ('host', 'id', 'secret') if not claim.get(key)]
        if missing:
            raise ClaimError('cannot %s a claim without %s: %s' % (verb, ', '.join(missing), claim.get('id') or claim.get('host')))
    results = run_bounded(claims, action, concurrency, 30.0,
                          lambda claim, _started: {'host': claim['host'], 'id': claim['id'], 'reason': 'no answer', 'error': True})
    ordered = [results[index] for index in range(len(claims))]
    errors = [r for r in ordered if isinstance(r, Exception) or r.get('error')]
    if strict and errors:
        raise ClaimError('; '.join('%s: %s' % (r.get('host'), r.get('reason')) if isinstance(r, dict) else str(r) for r in errors))
    return ordered


def plan_claims(candidates, count, client_for, concurrency=16):
    """Check mode: which candidates would be claimed now (lazy per their agents), without claiming."""
    def look(host, _due=None):
        try:
            return {'host': host, 'state': client_for(host).state()['state']}
        except agent_client.AgentError as exc:
            return {'host': host, 'state': None, 'reason': str(exc)}
    results = run_bounded(candidates, look, concurrency, 30.0, lambda host, _started: {'host': host, 'state': None, 'reason': 'no answer'})
    would, unclaimed = [], []
    for index in range(len(candidates)):
        outcome = results[index]
        if isinstance(outcome, dict) and outcome.get('state') == 'lazy' and len(would) < count:
            would.append(outcome['host'])
        elif isinstance(outcome, dict) and outcome.get('state') != 'lazy':
            unclaimed.append({'host': outcome['host'], 'reason': outcome.get('reason') or 'host is %s' % outcome['state'],
                              'state': outcome.get('state')})
    return {'would_claim': would, 'unclaimed': unclaimed, 'complete': len(would) >= count}


def existing_claims(claims, client_for):
    """Check mode for renew/release: the given claims that their agents still hold."""
    held = []
    for claim in claims:
        try:
            ids = [c.get('id') for c in client_for(claim['host']).claims()]
        except agent_client.AgentError:
            continue
        if claim.get('id') in ids:
            held.append(claim)
    return held
