"""Request signing: the token never travels; each signed request spends a nonce this agent issued.

A client that holds the token asks `GET /v1/nonce` (no secret needed), then sends
    X-Orchestra-Nonce: <nonce>
    X-Orchestra-Signature: hex(HMAC-SHA256(token, signing_string(...)))
with the request. The signature covers the method, the request target, this agent's
identity, the nonce and the SHA-256 of the body, so what a listener on the agent port
(or the network) sees cannot be reused: not for another request, not at another agent
(a different agent id, and a nonce it never issued), not later (a nonce is spent on first
use and expires on this agent's own monotonic clock; no clock is compared across machines).
The same signing code lives in the collection's plugins/module_utils/agent_client.py
(the agent is installed on its own and does not import the collection).
"""
import collections
import hashlib
import hmac
import secrets
import threading
import time

SCHEME = 'orchestra-hmac-sha256-v1'
NONCE_HEADER = 'HTTP_X_ORCHESTRA_NONCE'
SIGNATURE_HEADER = 'HTTP_X_ORCHESTRA_SIGNATURE'
NONCE_TTL = 60.0
MAX_NONCES = 4096
MAX_NONCE_TEXT = 64


def body_digest(body):
    return hashlib.sha256(body or b'').hexdigest()


def signing_string(method, target, agent_id, nonce, body):
    """What is signed: one line per part, the body by its digest."""
    return '\n'.join((SCHEME, method.upper(), target, agent_id, nonce, body_digest(body))).encode('utf-8')


def sign(token, method, target, agent_id, nonce, body):
    return hmac.new(token.encode('utf-8'), signing_string(method, target, agent_id, nonce, body), hashlib.sha256).hexdigest()


class Refused(Exception):
    """Authentication failed; `code` is the error code the client sees."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class NonceStore:
    """Outstanding nonces, each spendable once until it expires (monotonic clock of this process).

    Bounded: past MAX_NONCES the oldest are forgotten, so a flood of nonce requests costs
    memory only up to the bound (a client whose nonce was pushed out retries once).
    """

    def __init__(self, ttl=NONCE_TTL, limit=MAX_NONCES, clock=time.monotonic):
        self._ttl, self._limit, self._clock = ttl, limit, clock
        self._nonces = collections.OrderedDict()
        self._lock = threading.Lock()

    def issue(self):
        nonce = secrets.token_urlsafe(24)
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._nonces[nonce] = now + self._ttl
            while len(self._nonces) > self._limit:
                self._nonces.popitem(last=False)
        return nonce

    def spend(self, nonce):
        """True once for a live nonce this store issued; False for unknown, spent or expired ones."""
        with self._lock:
            expires = self._nonces.pop(nonce, None)
        return expires is not None and expires > self._clock()

    def _expire(self, now):
        while self._nonces:
            nonce, expires = next(iter(self._nonces.items()))
            if expires > now:
                break
            del self._nonces[nonce]

    def __len__(self):
        return len(self._nonces)


class Verifier:
    def __init__(self, token, agent_id, nonces=None):
        self._key = token.encode('utf-8') if token else None
        self.agent_id = agent_id
        self.nonces = nonces or NonceStore()

    @property
    def enabled(self):
        return self._key is not None

    def check(self, environ, body):
        """Raise Refused unless the request carries a valid signature over a live nonce; no-op without a token."""
        if self._key is None:
            return
        nonce = environ.get(NONCE_HEADER) or ''
        given = (environ.get(SIGNATURE_HEADER) or '').strip().lower()
        if not nonce or not given:
            raise Refused('unauthorized', 'this request must be signed: get a nonce from GET /v1/nonce and send '
                                          'X-Orchestra-Nonce and X-Orchestra-Signature (see docs/agent.md)')
        if len(nonce) > MAX_NONCE_TEXT:
            raise Refused('bad_nonce', 'unknown, spent or expired nonce')
        target = environ.get('REQUEST_URI') or environ.get('PATH_INFO', '')
        expected = hmac.new(self._key, signing_string(environ.get('REQUEST_METHOD', ''), target, self.agent_id, nonce,
                                                      body), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode('ascii'), given.encode('ascii', 'replace')):
            raise Refused('unauthorized', 'bad signature (wrong token, or the request was altered)')
        # Spent only by a correctly signed request: nobody without the token can burn a client's nonce.
        if not self.nonces.spend(nonce):
            raise Refused('bad_nonce', 'unknown, spent or expired nonce; get a fresh one from GET /v1/nonce')
