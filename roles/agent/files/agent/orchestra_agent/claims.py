"""Claims on this host: one at a time, a fencing number that only grows, persisted before answering.

All mutations hold one lock, so concurrent claim requests are decided one
after the other; the new fencing number and the claim reach the disk (atomic
replace) before the caller gets its 201. Secrets are kept only as SHA-256
digests, so the state file does not hand out claims.
"""
import hashlib
import hmac
import secrets
import threading
import uuid

from orchestra_agent import clock, persist

FILE_NAME = 'claims.json'
PUBLIC_FIELDS = ('id', 'owner', 'note', 'fencing', 'ttl', 'expires_at', 'created_at')


class ClaimError(Exception):
    """A claim request is refused: HTTP status, error code, message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def digest(secret):
    return hashlib.sha256(secret.encode('utf-8')).hexdigest()


def secret_matches(secret, secret_sha256):
    return secret is not None and hmac.compare_digest(digest(secret), secret_sha256)


def public(claim):
    """A claim as the API shows it: no secret, times as ISO text."""
    out = {key: claim.get(key) for key in PUBLIC_FIELDS}
    out['expires_at'] = clock.iso(claim['expires_at'])
    out['created_at'] = clock.iso(claim['created_at'])
    return out


def _validate_loaded(data, path):
    if not isinstance(data, dict) or not isinstance(data.get('fencing', 0), int) or not isinstance(data.get('claims', []), list):
        raise persist.StoreError('%s is not a claims file' % path)
    for claim in data.get('claims', []):
        if not isinstance(claim, dict) or not {'id', 'owner', 'secret_sha256', 'fencing', 'ttl', 'expires_at', 'created_at'} <= set(claim):
            raise persist.StoreError('%s holds a malformed claim' % path)
    return data.get('fencing', 0), list(data.get('claims', []))


class ClaimStore:
    def __init__(self, path, now=clock.now):
        self._path = path
        self._now = now
        self._lock = threading.Lock()
        self._fencing, self._claims = _validate_loaded(persist.read_json(path, {}), path)

    @property
    def fencing(self):
        """Highest fencing number ever issued here (survives restarts)."""
        return self._fencing

    def active(self):
        """The live claim (raw, with digest) or None; expired claims never count."""
        now = self._now()
        for claim in list(self._claims):
            if claim['expires_at'] > now:
                return claim
        return None

    def list_public(self):
        claim = self.active()
        return [public(claim)] if claim else []

    def _save(self, fencing, claims):
        persist.write_json(self._path, {'fencing': fencing, 'claims': claims})
        self._fencing, self._claims = fencing, claims

    def _live(self, now):
        return [claim for claim in self._claims if claim['expires_at'] > now]

    def create(self, owner, ttl, note, refusal):
        """Issue a claim unless `refusal(current_owner)` names a reason; returns the claim with its secret."""
        with self._lock:
            now = self._now()
            live = self._live(now)
            reason = refusal(live[0]['owner'] if live else None)
            if reason:
                raise ClaimError(409, 'conflict', reason)
            secret = secrets.token_urlsafe(32)
            claim = {'id': uuid.uuid4().hex, 'owner': owner, 'note': note, 'secret_sha256': digest(secret),
                     'fencing': self._fencing + 1, 'ttl': ttl, 'created_at': now, 'expires_at': now + ttl}
            self._save(claim['fencing'], live + [claim])
        out = public(claim)
        out['secret'] = secret
        return out

    def _find_authorised(self, claim_id, secret, fencing, now):
        for claim in self._live(now):
            if claim['id'] == claim_id:
                break
        else:
            raise ClaimError(404, 'not_found', 'no live claim %s (unknown, released or expired)' % claim_id)
        if secret is None:
            raise ClaimError(403, 'forbidden', 'the claim secret is required (body "secret" or X-Claim-Secret)')
        if not secret_matches(secret, claim['secret_sha256']):
            raise ClaimError(403, 'forbidden', 'wrong claim secret')
        if fencing is not None and fencing != claim['fencing']:
            raise ClaimError(409, 'stale_fencing', 'fencing %d is not the claim\'s (%d)' % (fencing, claim['fencing']))
        return claim

    def fenced(self, secret, action):
        """action(live claim or None, whether `secret` is its secret) under the claims lock; its result.

        The fence at the resource: while the action runs (a workflow start), no claim can be
        created, renewed, released or replaced, so what it checked stays true until it returns.
        """
        with self._lock:
            live = self._live(self._now())
            claim = live[0] if live else None
            return action(claim, claim is not None and secret_matches(secret, claim['secret_sha256']))

    def renew(self, claim_id, secret, ttl=None, fencing=None):
        with self._lock:
            now = self._now()
            claim = dict(self._find_authorised(claim_id, secret, fencing, now))
            claim['ttl'] = ttl if ttl is not None else claim['ttl']
            claim['expires_at'] = now + claim['ttl']
            self._save(self._fencing, [claim if item['id'] == claim_id else item for item in self._live(now)])
        return public(claim)

    def release(self, claim_id, secret, fencing=None):
        with self._lock:
            now = self._now()
            self._find_authorised(claim_id, secret, fencing, now)
            self._save(self._fencing, [item for item in self._live(now) if item['id'] != claim_id])
