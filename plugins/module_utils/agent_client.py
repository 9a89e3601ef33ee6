# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one HTTP client for the orchestra agent protocol (docs/agent-openapi.yaml).

Used by the inventory plugin, the lookup and the claim module. Every call has a
bounded connect timeout and a deadline for the whole answer, reads at most
MAX_BODY_BYTES, and turns every failure into an AgentError subclass whose
message says what the agent (or the thing pretending to be one) did.

The token never leaves the controller: a mutation (and a read, with auth_reads)
is signed with HMAC-SHA256 over the method, the path, the agent's id, a nonce the
agent issued for it (single use) and the body's digest, so whatever answers on the
agent port learns nothing it can reuse. Probes send no credential at all.
"""

import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import threading
import time

from urllib.parse import quote

try:
    import requests
    from requests.adapters import HTTPAdapter
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without requests
    requests = None
    HTTPAdapter = object
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = exc

DEFAULT_PORT = 9009
MAX_BODY_BYTES = 1024 * 1024
AGENT_STATES = ('unknown', 'failed', 'busy', 'claimed', 'lazy')
# Where the orchestra.fleet.agent role keeps the token it provisions (on the controller).
DEFAULT_TOKEN_FILE = '~/.config/orchestra-fleet/agent-token'
SIGNING_SCHEME = 'orchestra-hmac-sha256-v1'
NONCE_PATH = '/v1/nonce'
# Reads the agent answers without a signature even with auth_reads.
OPEN_READS = ('/v1/health', '/healthy', NONCE_PATH)
MUTATIONS = ('POST', 'PUT', 'PATCH', 'DELETE')
WORKFLOWS_PATH = '/v1/workflows'
# The keys of a workflow spec (POST /v1/workflows without the claim's three).
WORKFLOW_SPEC_KEYS = ('image', 'command', 'env', 'labels', 'files', 'name')
WORKFLOW_STATUSES = ('running', 'succeeded', 'failed', 'cancelled', 'unknown')
FINISHED_WORKFLOW_STATUSES = ('succeeded', 'failed', 'cancelled')


class AgentError(Exception):
    """Any failure talking to an agent; str() is a one-line human reason."""

    def __init__(self, message, url=None, status=None, code=None, body=None):
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status
        self.code = code
        self.body = body


class AgentUnreachable(AgentError):
    """No usable connection: refused, reset, no route, TLS failure."""


class AgentTimeout(AgentUnreachable):
    """Connected (or tried to) but no complete answer before the deadline."""


class AgentProtocolError(AgentError):
    """Something answered, but not the agent protocol (HTML, garbage, wrong JSON shape)."""


class AgentHTTPError(AgentError):
    """The agent answered with a protocol error document (4xx/5xx)."""


class AgentAuthError(AgentHTTPError):
    """401/403: missing or wrong token, or wrong claim secret."""


class AgentNotFound(AgentHTTPError):
    """404: unknown route, or unknown / expired claim."""


class AgentConflict(AgentHTTPError):
    """409: host busy, already claimed, failed, docker down, or stale fencing."""


class TokenFileError(ValueError):
    """The token file named (or the default one, when it exists) cannot be read or is empty."""


def read_token_file(path):
    path = os.path.expanduser(path)
    try:
        with open(path, encoding='utf-8') as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise TokenFileError('cannot read the agent token file %s: %s' % (path, exc.strerror or exc))
    # The password lookup that provisions it may append " salt=..." when asked to encrypt: keep the secret only.
    token = token.split(' salt=', 1)[0].strip()
    if not token:
        raise TokenFileError('the agent token file %s is empty' % path)
    return token


def resolve_token(token=None, token_file=None, default_file=DEFAULT_TOKEN_FILE):
    """The token to sign with: the token option (or its environment variables), else the token_file
    option, else the default file the agent role provisions when it exists; None when there is none."""
    if token:
        return token
    if token_file:
        return read_token_file(token_file)
    if default_file and os.path.exists(os.path.expanduser(default_file)):
        return read_token_file(default_file)
    return None


class AgentAuth:
    """Credentials for AgentClient: the token and whether reads are signed too (auth_reads)."""

    def __init__(self, token, auth_reads=False):
        self.token = token or None
        self.auth_reads = bool(auth_reads)

    def __bool__(self):
        return self.token is not None

    def __repr__(self):
        return 'AgentAuth(token=%s, auth_reads=%r)' % ('<set>' if self.token else None, self.auth_reads)


def client_auth(token=None, token_file=None, auth_reads=False, default_file=DEFAULT_TOKEN_FILE):
    """Plugin options -> AgentAuth (or None without a token), for AgentClient's `token` argument."""
    resolved = resolve_token(token, token_file, default_file)
    return AgentAuth(resolved, auth_reads) if resolved else None


def body_digest(body):
    return hashlib.sha256(body or b'').hexdigest()


def signing_string(method, target, agent_id, nonce, body):
    """Must match orchestra_agent/auth.py: one line per part, the body by its SHA-256."""
    return '\n'.join((SIGNING_SCHEME, method.upper(), target, agent_id, nonce, body_digest(body))).encode('utf-8')


def sign(token, method, target, agent_id, nonce, body):
    return hmac.new(token.encode('utf-8'), signing_string(method, target, agent_id, nonce, body), hashlib.sha256).hexdigest()


def require_requests():
    """Raise ImportError with an actionable message when requests is missing."""
    if not HAS_REQUESTS:
        raise ImportError('the python "requests" library is required on the controller (pip install requests): %s'
                          % REQUESTS_IMPORT_ERROR)


def agent_url(host, port=DEFAULT_PORT, scheme='http'):
    """Base URL for an agent; IPv6 literals get their brackets."""
    if ':' in host and not host.startswith('['):
        host = '[%s]' % host
    return '%s://%s:%d' % (scheme, host, int(port))


def verify_setting(validate_certs=True, ca_path=None):
    """requests' `verify` from the two user options (a CA bundle implies validation)."""
    if not validate_certs:
        return False
    return ca_path or True


def new_session(pool_size=10):
    """A pooled session; no automatic retries (a retry would hide a flaky host and double a POST)."""
    require_requests()
    session = requests.Session()
    session.trust_env = False  # never send agent traffic through an HTTP(S)_PROXY from the environment
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount('http://', adapter)
    session.mount('https://', adapter)
    return session


class ThreadLocalSessions:
    """One pooled session per thread: requests.Session is not documented as thread-safe."""

    def __init__(self, pool_size=4):
        self._local = threading.local()
        self._pool_size = pool_size
        self._all = []
        self._lock = threading.Lock()

    def get(self):
        session = getattr(self._local, 'session', None)
        if session is None:
            session = new_session(self._pool_size)
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self):
        with self._lock:
            sessions, self._all = self._all, []
        for session in sessions:
            session.close()


def _chain(exc):
    """The exception and every cause/context under it (requests wraps urllib3 wraps OSError)."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        nested = exc.args[0] if getattr(exc, 'args', None) and isinstance(exc.args[0], BaseException) else None
        reason = getattr(exc, 'reason', None)
        exc = exc.__cause__ or (reason if isinstance(reason, BaseException) else None) or nested or exc.__context__
    return seen


def describe_connection_error(exc):
    """(error class, one-line reason) for a requests ConnectionError."""
    for item in _chain(exc):
        # RemoteDisconnected is both a ConnectionResetError and an HTTPException; whether a peer that
        # resets right after accept shows up as it or as ECONNRESET is a race, so both mean "reset".
        if isinstance(item, ConnectionResetError):
            return AgentUnreachable, 'connection reset by peer'
        if isinstance(item, (http.client.BadStatusLine, http.client.LineTooLong, http.client.HTTPException)):
            return AgentProtocolError, 'answered, but not with HTTP (%s)' % (type(item).__name__)
        if isinstance(item, ConnectionRefusedError):
            return AgentUnreachable, 'connection refused'
        if isinstance(item, ssl.SSLError):
            return AgentUnreachable, 'TLS error: %s' % (getattr(item, 'reason', None) or item)
        if isinstance(item, socket.gaierror):
            return AgentUnreachable, 'name does not resolve: %s' % (item.strerror or item)
        if isinstance(item, socket.timeout):
            return AgentTimeout, 'timed out'
    text = str(exc)
    if 'RemoteDisconnected' in text or 'closed connection without response' in text:
        return AgentUnreachable, 'connection reset: closed without an answer'
    return AgentUnreachable, 'connection failed: %s' % text[:200]


def _content_kind(response):
    return (response.headers.get('Content-Type') or '').split(';')[0].strip().lower()


def _snippet(raw):
    text = raw[:80].decode('utf-8', 'replace').replace('\n', ' ').replace('\r', ' ').strip()
    return text + ('...' if len(raw) > 80 else '')


class AgentClient:
    """Client for one agent. `timeout` is the deadline for a whole answer, in seconds."""

    def __init__(self, base_url, token=None, timeout=5.0, connect_timeout=None, verify=True, session=None,
                 auth_reads=False):
        """`token` is the token text or an AgentAuth (which then also says whether reads are signed)."""
        require_requests()
        self.base_url = base_url.rstrip('/')
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout) if connect_timeout else self.timeout
        self.verify = verify
        if isinstance(token, AgentAuth):
            token, auth_reads = token.token, token.auth_reads or auth_reads
        self._token = token or None
        self.auth_reads = bool(auth_reads)
        self._session = session or new_session()

    # -- transport --------------------------------------------------------------------------
    def _read_body(self, response, url, deadline):
        chunks, size = [], 0
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise AgentProtocolError('answer larger than %d bytes' % MAX_BODY_BYTES, url=url, status=response.status_code)
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise AgentTimeout('answer not complete within %.1f s' % self.timeout, url=url)
        return b''.join(chunks)

    def needs_signature(self, method, path):
        if not self._token:
            return False
        if method.upper() in MUTATIONS:
            return True
        return self.auth_reads and path.split('?', 1)[0] not in OPEN_READS

    def _signature_headers(self, method, path, data):
        """A fresh nonce from the agent, and the signature over this request with it."""
        doc = self.request('GET', NONCE_PATH)
        nonce, agent_id = doc.get('nonce'), doc.get('agent_id')
        if not isinstance(nonce, str) or not nonce or not isinstance(agent_id, str) or not agent_id:
            raise _wrong_shape(self.base_url + NONCE_PATH, 'nonce document without "nonce" and "agent_id"')
        return {'X-Orchestra-Nonce': nonce, 'X-Orchestra-Signature': sign(self._token, method, path, agent_id, nonce, data)}

    def request_raw(self, method, path, body=None, headers=None):
        """(status, content type, body bytes) or an AgentError; the deadline covers the whole exchange.

        Mutations always carry a JSON body (Content-Type: application/json, `{}` when there is
        nothing to say); they and, with auth_reads, reads are signed. Nothing else carries a credential.
        """
        url = self.base_url + path
        send_headers = {'Accept': 'application/json'}
        data = None
        if body is not None or method.upper() in MUTATIONS:
            data = json.dumps({} if body is None else body, separators=(',', ':'), sort_keys=True).encode('utf-8')
            send_headers['Content-Type'] = 'application/json'
        send_headers.update(headers or {})
        attempts = 2 if self.needs_signature(method, path) else 1
        for attempt in range(attempts):
            if attempts == 2:
                send_headers.update(self._signature_headers(method, path, data))
            status, kind, raw = self._exchange(method, url, data, send_headers)
            # A nonce can expire or be pushed out between fetch and use; the agent refused before acting, so
            # one retry with a fresh nonce is safe even for a POST.
            if not (status == 401 and attempt == 0 and attempts == 2 and b'"bad_nonce"' in raw):
                break
        return status, kind, raw

    def _exchange(self, method, url, data, send_headers):
        deadline = time.monotonic() + self.timeout
        try:
            response = self._session.request(
                method, url, data=data, headers=send_headers, verify=self.verify, stream=True, allow_redirects=False,
                timeout=(min(self.connect_timeout, self.timeout), self.timeout))
            try:
                raw = self._read_body(response, url, deadline)
            finally:
                response.close()
        except requests.exceptions.ConnectTimeout:
            raise AgentTimeout('no connection within %.1f s' % min(self.connect_timeout, self.timeout), url=url)
        except requests.exceptions.ReadTimeout:
            raise AgentTimeout('accepted the connection but sent no answer within %.1f s' % self.timeout, url=url)
        except requests.exceptions.SSLError as exc:
            raise AgentUnreachable(describe_connection_error(exc)[1], url=url)
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            error_class, reason = describe_connection_error(exc)
            raise error_class(reason, url=url)
        except requests.exceptions.RequestException as exc:
            raise AgentError('request failed: %s' % exc, url=url)
        return response.status_code, _content_kind(response), raw

    def request(self, method, path, body=None, headers=None):
        """Decoded JSON object of a 2xx answer, or the matching AgentError with the agent's message."""
        status, kind, raw = self.request_raw(method, path, body=body, headers=headers)
        url = self.base_url + path
        if kind != 'application/json' and not kind.endswith('+json'):
            raise AgentProtocolError('answered HTTP %d with %s, not JSON: %r' % (status, kind or 'no content type', _snippet(raw)),
                                     url=url, status=status)
        try:
            doc = json.loads(raw.decode('utf-8'))
        except ValueError:
            raise AgentProtocolError('answered HTTP %d with invalid JSON: %r' % (status, _snippet(raw)), url=url, status=status)
        if not isinstance(doc, dict):
            raise AgentProtocolError('answered HTTP %d with a JSON %s, not an object' % (status, type(doc).__name__),
                                     url=url, status=status)
        if 200 <= status < 300:
            return doc
        code = doc.get('error') if isinstance(doc.get('error'), str) else 'http_%d' % status
        message = doc.get('message') if isinstance(doc.get('message'), str) else code
        error_class = {401: AgentAuthError, 403: AgentAuthError, 404: AgentNotFound, 409: AgentConflict}.get(status, AgentHTTPError)
        raise error_class('HTTP %d %s: %s' % (status, code, message), url=url, status=status, code=code, body=doc)

    # -- protocol ---------------------------------------------------------------------------
    def health(self):
        return self.request('GET', '/v1/health')

    def state(self):
        """The agent's /v1/state, checked for the fields callers rely on."""
        return validate_state(self.request('GET', '/v1/state'), self.base_url + '/v1/state')

    def legacy_busy(self):
        """The original tool's /busy endpoint: True, False, or AgentProtocolError."""
        status, _kind, raw = self.request_raw('GET', '/busy', headers={'Accept': 'text/plain'})
        text = raw.strip().upper()
        if status == 200 and text in (b'TRUE', b'FALSE'):
            return text == b'TRUE'
        raise AgentProtocolError('answered /busy with HTTP %d %r, not TRUE/FALSE' % (status, _snippet(raw)),
                                 url=self.base_url + '/busy', status=status)

    def claims(self):
        doc = self.request('GET', '/v1/claims')
        if not isinstance(doc.get('claims'), list):
            raise AgentProtocolError('/v1/claims without a "claims" list', url=self.base_url + '/v1/claims')
        return doc['claims']

    def create_claim(self, owner, ttl, note=None):
        body = {'owner': owner, 'ttl': int(ttl)}
        if note:
            body['note'] = note
        return validate_claim(self.request('POST', '/v1/claims', body=body), self.base_url + '/v1/claims', need_secret=True)

    def renew_claim(self, claim_id, secret, ttl=None, fencing=None):
        body = {'secret': secret}
        if ttl is not None:
            body['ttl'] = int(ttl)
        if fencing is not None:
            body['fencing'] = int(fencing)
        path = '/v1/claims/%s' % quote(str(claim_id), safe='')
        return validate_claim(self.request('PUT', path, body=body), self.base_url + path)

    def release_claim(self, claim_id, secret, fencing=None):
        body = {'secret': secret}
        if fencing is not None:
            body['fencing'] = int(fencing)
        return self.request('DELETE', '/v1/claims/%s' % quote(str(claim_id), safe=''), body=body)

    def ack_failures(self, containers=None):
        body = {} if containers is None else {'containers': list(containers)}
        return self.request('POST', '/v1/failures/ack', body=body)

    # -- fenced workflows (POST /v1/workflows) ---------------------------------------------------
    def _about_host(self, exc, action):
        """The same error, its message naming the agent and the action (callers juggle many hosts)."""
        exc.message = '%s on %s: %s' % (action, self.base_url, exc.message)
        exc.args = (exc.message,)
        return exc

    def start_workflow(self, claim, spec):
        """Start `spec` on this agent for `claim` (a claim record: id, secret, fencing); the 201 document.

        `spec` holds the workflow keys of POST /v1/workflows (image, command, env, labels, files,
        name; see workflow_body). Refusals raise AgentConflict (409: error stale_claim,
        foreign_claim, no_claim, busy, failed, docker_down, image_missing, name_conflict) or
        AgentAuthError (403 image_not_allowed, 401 bad signature), with the host in the message.
        """
        url = self.base_url + WORKFLOWS_PATH
        try:
            return validate_started(self.request('POST', WORKFLOWS_PATH, body=workflow_body(claim, spec)), url)
        except AgentError as exc:
            raise self._about_host(exc, 'start workflow')

    def workflow_status(self, workflow_id):
        """GET /v1/workflows/{id}: status, exit_code, times, log_tail, claim_id, fencing, image."""
        path = workflow_path(workflow_id)
        try:
            return validate_workflow_status(self.request('GET', path), self.base_url + path)
        except AgentError as exc:
            raise self._about_host(exc, 'workflow %s' % workflow_id)

    def cancel_workflow(self, claim, workflow_id):
        """Stop a workflow for `claim` (the one that started it, or the current one); its status document."""
        path = workflow_path(workflow_id) + '/cancel'
        body = {'claim_id': str(claim['id']), 'secret': claim['secret']}
        try:
            return validate_workflow_status(self.request('POST', path, body=body), self.base_url + path)
        except AgentError as exc:
            raise self._about_host(exc, 'cancel workflow %s' % workflow_id)

    def workflows(self):
        """GET /v1/workflows: every workload container (and workflows-directory entry) on this host."""
        doc = self.request('GET', WORKFLOWS_PATH)
        if not isinstance(doc.get('workflows'), list):
            raise _wrong_shape(self.base_url + WORKFLOWS_PATH, 'no "workflows" list')
        return doc['workflows']


def _wrong_shape(url, what):
    return AgentProtocolError('JSON of the wrong shape: %s' % what, url=url)


def validate_state(doc, url=None):
    """Check a /v1/state document; raise AgentProtocolError naming the first problem."""
    state = doc.get('state')
    if not isinstance(state, str):
        raise _wrong_shape(url, '"state" missing or not a string')
    if state not in AGENT_STATES:
        raise _wrong_shape(url, 'unknown state %r' % state[:40])
    if not isinstance(doc.get('reason', ''), str):
        raise _wrong_shape(url, '"reason" is not a string')
    for key in ('running', 'failed_workflows', 'fencing'):
        value = doc.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _wrong_shape(url, '"%s" is not an integer' % key)
    claim = doc.get('claim')
    if claim is not None and not isinstance(claim, dict):
        raise _wrong_shape(url, '"claim" is not an object')
    return doc


def workflow_path(workflow_id):
    return '%s/%s' % (WORKFLOWS_PATH, quote(str(workflow_id), safe=''))


def workflow_body(claim, spec):
    """The POST /v1/workflows body for a claim record and a workflow spec; ValueError names a bad key.

    Only the shape is checked here (the agent validates everything and answers 400 with why), so
    a spec can be checked when it is queued, long before a host is chosen.
    """
    if not isinstance(spec, dict):
        raise ValueError('a workflow spec must be a dict')
    unknown = sorted(set(spec) - set(WORKFLOW_SPEC_KEYS))
    if unknown:
        raise ValueError('unknown workflow spec key(s): %s' % ', '.join(unknown))
    if not isinstance(spec.get('image'), str) or not spec['image']:
        raise ValueError('a workflow spec needs an image')
    for key in ('id', 'secret', 'fencing'):
        if claim.get(key) is None:
            raise ValueError('the claim has no %s' % key)
    body = {'claim_id': str(claim['id']), 'secret': claim['secret'], 'fencing': int(claim['fencing']),
            'image': spec['image'], 'command': None if spec.get('command') is None else list(spec['command']),
            'env': dict(spec.get('env') or {}), 'labels': dict(spec.get('labels') or {}),
            'files': [dict(item) for item in spec.get('files') or []]}
    if spec.get('name'):
        body['name'] = spec['name']
    return body


def _need(doc, url, keys, what):
    for key in keys:
        if key not in doc:
            raise _wrong_shape(url, '%s without "%s"' % (what, key))


def validate_started(doc, url=None):
    _need(doc, url, ('id', 'container_id', 'name', 'status', 'claim_id', 'fencing', 'started_at'), 'started workflow')
    if not isinstance(doc['id'], str) or not doc['id']:
        raise _wrong_shape(url, 'started workflow "id" is not a string')
    return doc


def validate_workflow_status(doc, url=None):
    _need(doc, url, ('id', 'status', 'exit_code', 'log_tail'), 'workflow status')
    if doc['status'] not in WORKFLOW_STATUSES:
        raise _wrong_shape(url, 'unknown workflow status %r' % str(doc['status'])[:40])
    code = doc['exit_code']
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise _wrong_shape(url, 'workflow "exit_code" is not an integer')
    return doc


def validate_claim(doc, url=None, need_secret=False):
    for key in ('id', 'fencing'):
        if key not in doc:
            raise _wrong_shape(url, 'claim without "%s"' % key)
    if isinstance(doc['fencing'], bool) or not isinstance(doc['fencing'], int):
        raise _wrong_shape(url, 'claim "fencing" is not an integer')
    if need_secret and not isinstance(doc.get('secret'), str):
        raise _wrong_shape(url, 'new claim without a "secret"')
    return doc
