"""The WSGI application: routing, signed-request auth, media types, body limits, JSON and legacy text answers.

Every answer to bad input is a 4xx with {"error", "message"}; an unexpected
exception is logged and answered 500 without details. No route runs commands.
"""
import json
import logging
import os
import re
import threading

from orchestra_agent import auth, claims, fenced, metrics, payloads, persist

LOG = logging.getLogger('orchestra_agent.http')
JSON_TYPE = 'application/json'
TEXT_TYPE = 'text/plain; charset=utf-8'
CLAIM_PATH = re.compile(r'^/v1/claims/([^/]+)$')
WORKFLOW_PATH = re.compile(r'^/v1/workflows/([A-Za-z0-9_-]{1,64})$')
WORKFLOW_CANCEL_PATH = re.compile(r'^/v1/workflows/([A-Za-z0-9_-]{1,64})/cancel$')
STATUS_TEXT = {200: 'OK', 201: 'Created', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
               404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 411: 'Length Required',
               408: 'Request Timeout', 413: 'Payload Too Large', 415: 'Unsupported Media Type',
               431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 502: 'Bad Gateway',
               503: 'Service Unavailable'}
# Reads that stay open even with auth_reads: liveness, and the nonce a signed request needs.
OPEN_READS = frozenset(('/v1/health', '/healthy', '/v1/nonce'))
OPENAPI_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'openapi.yaml')


class Response:
    __slots__ = ('status', 'body', 'content_type', 'headers')

    def __init__(self, status, body, content_type=JSON_TYPE, headers=()):
        self.status, self.body, self.content_type, self.headers = status, body, content_type, list(headers)


def json_response(status, data, headers=()):
    return Response(status, json.dumps(data, separators=(',', ':')).encode('utf-8'), JSON_TYPE, headers)


def error(status, code, message, headers=(), **extra):
    data = {'error': code, 'message': message}
    data.update(extra)
    return json_response(status, data, headers)


def error_answer(status, code, message):
    """(status, reason, headers, body) of an error document, for answers the server gives itself."""
    response = error(status, code, message)
    headers = [('Content-Type', response.content_type), ('Content-Length', str(len(response.body))),
               ('Cache-Control', 'no-store')]
    return status, STATUS_TEXT.get(status, 'Error'), headers, response.body


def text(lines):
    return Response(200, ''.join(line + '\n' for line in lines).encode('utf-8'), TEXT_TYPE)


def media_type(environ):
    return (environ.get('CONTENT_TYPE') or '').split(';')[0].strip().lower()


class Application:
    def __init__(self, agent):
        self.agent = agent
        settings = agent.settings
        self.max_body = settings.max_body_bytes
        self.verifier = auth.Verifier(settings.token, agent.agent_id)
        self.auth_reads = settings.auth_reads
        self._counts_lock = threading.Lock()
        self.request_counts = {}
        self.get_routes = {
            '/v1/health': self.get_health, '/v1/state': self.get_state, '/v1/containers': self.get_containers,
            '/v1/workflows': self.get_workflows, '/v1/claims': self.get_claims, '/v1/metrics': self.get_metrics,
            '/v1/openapi.yaml': self.get_openapi, '/v1/nonce': self.get_nonce, '/healthy': self.legacy_healthy, '/busy': self.legacy_busy,
            '/workflows': self.legacy_workflows, '/containers': self.legacy_containers,
        }
        self.post_routes = {'/v1/claims': self.post_claim, '/v1/failures/ack': self.post_ack,
                            '/v1/workflows': self.post_workflow}

    # -- WSGI entry ------------------------------------------------------------
    def __call__(self, environ, start_response):
        try:
            response = self.dispatch(environ)
        except payloads.BadRequest as exc:
            response = error(exc.status, exc.code, exc.message)
        except (claims.ClaimError, fenced.Refusal) as exc:
            response = error(exc.status, exc.code, exc.message)
        except auth.Refused as exc:
            response = error(401, exc.code, exc.message, headers=[('WWW-Authenticate', auth.SCHEME)])
        except persist.StoreError as exc:
            LOG.error('state store failed', extra={'fields': {'error': str(exc)}})
            response = error(503, 'storage_error', 'the agent cannot persist its state; see its log')
        except Exception:  # pylint: disable=broad-except  # last line of defence: never leak a traceback
            LOG.exception('request failed', extra={'fields': {'method': environ.get('REQUEST_METHOD'),
                                                              'path': environ.get('PATH_INFO')}})
            response = error(500, 'internal', 'internal error; see the agent log')
        with self._counts_lock:
            self.request_counts[response.status] = self.request_counts.get(response.status, 0) + 1
        headers = [('Content-Type', response.content_type), ('Content-Length', str(len(response.body))),
                   ('Cache-Control', 'no-store')] + response.headers
        start_response('%d %s' % (response.status, STATUS_TEXT.get(response.status, '')), headers)
        return [response.body]

    def dispatch(self, environ):
        method = environ.get('REQUEST_METHOD', 'GET')
        path = environ.get('PATH_INFO', '') or '/'
        claim_match = CLAIM_PATH.match(path)
        if method == 'GET' and path in self.get_routes:
            if self.auth_reads and path not in OPEN_READS:
                self.verifier.check(environ, b'')
            return self.get_routes[path]()
        if method == 'POST' and path in self.post_routes:
            self.authorise_mutation(environ)
            return self.post_routes[path](environ)
        if claim_match and method in ('PUT', 'DELETE'):
            self.authorise_mutation(environ)
            handler = self.put_claim if method == 'PUT' else self.delete_claim
            return handler(environ, claim_match.group(1))
        workflow_match = WORKFLOW_PATH.match(path)
        if workflow_match and method == 'GET':
            if self.auth_reads:
                self.verifier.check(environ, b'')
            return json_response(200, self.agent.workflow(workflow_match.group(1)))
        cancel_match = WORKFLOW_CANCEL_PATH.match(path)
        if cancel_match and method == 'POST':
            self.authorise_mutation(environ)
            return self.post_cancel(environ, cancel_match.group(1))
        allowed = self.allowed_methods(path, claim_match)
        if workflow_match:
            allowed = ['GET']
        elif cancel_match:
            allowed = ['POST']
        if allowed:
            return error(405, 'method_not_allowed', '%s is not allowed on %s' % (method, path),
                         headers=[('Allow', ', '.join(allowed))])
        return error(404, 'not_found', 'no such endpoint: %s' % path)

    @staticmethod
    def answers_inline(environ):
        """Whether the server may answer this request on its event loop: reads of in-memory state only.

        A workflow's status asks Docker (inspect, logs), so it runs on a worker thread like a mutation.
        """
        return environ.get('REQUEST_METHOD') in ('GET', 'HEAD') and not WORKFLOW_PATH.match(environ.get('PATH_INFO', ''))

    def allowed_methods(self, path, claim_match):
        allowed = []
        if path in self.get_routes:
            allowed.append('GET')
        if path in self.post_routes:
            allowed.append('POST')
        if claim_match:
            allowed += ['PUT', 'DELETE']
        return allowed

    # -- auth and bodies -------------------------------------------------------
    def authorise_mutation(self, environ):
        """JSON only, then the signature over the body.

        A web page can make a browser POST a form or text/plain anywhere without asking (a
        "simple" request), so a POST must say application/json, which only a CORS preflight
        the agent never grants would allow. PUT and DELETE are never simple requests; they
        need the type only when they carry a body (DELETE with X-Claim-Secret may have none).
        """
        body = self.read_body(environ)
        if media_type(environ) != JSON_TYPE and (environ.get('REQUEST_METHOD') == 'POST' or body):
            raise payloads.BadRequest('unsupported_media_type', 'mutations need Content-Type: application/json',
                                      status=415)
        environ['orchestra.body'] = body
        self.verifier.check(environ, body)

    def read_body(self, environ):
        """The request body, refusing more than max_body_bytes before reading it when the length is known."""
        length_text = environ.get('CONTENT_LENGTH') or ''
        stream = environ['wsgi.input']
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                raise payloads.BadRequest('bad_request', 'malformed Content-Length')
            if length > self.max_body:
                raise payloads.BadRequest('too_large', 'body exceeds %d bytes' % self.max_body, status=413)
            return stream.read(length) if length > 0 else b''
        if 'chunked' in environ.get('HTTP_TRANSFER_ENCODING', '').lower():
            try:
                raw = stream.read(self.max_body + 1)
            except Exception:  # pylint: disable=broad-except  # cheroot's MaxSizeExceeded and broken chunking
                raise payloads.BadRequest('too_large', 'body exceeds %d bytes or is malformed' % self.max_body, status=413)
            if len(raw) > self.max_body:
                raise payloads.BadRequest('too_large', 'body exceeds %d bytes' % self.max_body, status=413)
            return raw
        return b''

    def json_body(self, environ, required):
        raw = environ['orchestra.body'] if 'orchestra.body' in environ else self.read_body(environ)
        return payloads.parse_json(raw, required)

    # -- reads -----------------------------------------------------------------
    def get_health(self):
        return json_response(200, self.agent.health())

    def get_nonce(self):
        return json_response(200, {'nonce': self.verifier.nonces.issue(), 'agent_id': self.agent.agent_id,
                                   'expires_in': int(auth.NONCE_TTL), 'scheme': auth.SCHEME})

    def get_state(self):
        return json_response(200, self.agent.state())

    def get_containers(self):
        return json_response(200, {'containers': self.agent.containers()})

    def get_workflows(self):
        return json_response(200, {'workflows': self.agent.workflows()})

    def get_claims(self):
        return json_response(200, {'claims': self.agent.claims.list_public()})

    def get_metrics(self):
        with self._counts_lock:
            counts = dict(self.request_counts)
        body = metrics.render(self.agent.state(), counts, self.agent.watcher.events_seen,
                              self.agent.watcher.reconnects)
        return Response(200, body.encode('utf-8'), 'text/plain; version=0.0.4; charset=utf-8')

    @staticmethod
    def get_openapi():
        with open(OPENAPI_FILE, 'rb') as handle:
            return Response(200, handle.read(), 'application/yaml')

    # -- legacy plain-text endpoints of the original tool ----------------------
    @staticmethod
    def legacy_healthy():
        return Response(200, b'TRUE', TEXT_TYPE)

    def legacy_busy(self):
        state = self.agent.state()
        # Unreachable Docker cannot prove the host idle, so old schedulers are told it is busy.
        busy = state['busy'] or state['state'] == 'unknown'
        return Response(200, b'TRUE' if busy else b'FALSE', TEXT_TYPE)

    def legacy_workflows(self):
        return text(item['name'] for item in self.agent.workflows())

    def legacy_containers(self):
        return text(item['name'] for item in self.agent.containers() if item['status'] in ('running', 'paused', 'restarting'))

    # -- mutations -------------------------------------------------------------
    def post_claim(self, environ):
        owner, ttl, note = payloads.claim_create(self.json_body(environ, True), self.agent.settings.max_claim_ttl)
        try:
            claim = self.agent.create_claim(owner, ttl, note)
        except claims.ClaimError as exc:
            return error(exc.status, exc.code, exc.message, state=self.agent.state()['state'])
        return json_response(201, claim)

    def put_claim(self, environ, claim_id):
        secret, ttl, fencing = payloads.claim_update(self.json_body(environ, True), self.agent.settings.max_claim_ttl)
        return json_response(200, self.agent.renew_claim(claim_id, secret, ttl, fencing))

    def delete_claim(self, environ, claim_id):
        header_secret = environ.get('HTTP_X_CLAIM_SECRET')
        secret, fencing = payloads.claim_release(self.json_body(environ, False), header_secret)
        self.agent.release_claim(claim_id, secret, fencing)
        return json_response(200, {'released': True, 'id': claim_id})

    def post_ack(self, environ):
        names = payloads.acknowledge(self.json_body(environ, False))
        return json_response(200, {'acknowledged': self.agent.acknowledge(names)})

    def post_workflow(self, environ):
        return json_response(201, self.agent.start_workflow(payloads.workflow_start(self.json_body(environ, True))))

    def post_cancel(self, environ, workflow_id):
        claim_id, secret = payloads.workflow_cancel(self.json_body(environ, True))
        return json_response(200, self.agent.cancel_workflow(workflow_id, claim_id, secret))
