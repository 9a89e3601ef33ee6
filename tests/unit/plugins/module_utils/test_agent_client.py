"""agent_client against real sockets on loopback: good answers, protocol errors and misbehaving peers."""

import hashlib
import hmac
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client as ac
from tests.support.lab.ports import free_port
from tests.support.misbehaving import MisbehavingServer

STATE = {'hostname': 'w1', 'version': '0.1.0', 'state': 'lazy', 'reason': 'no workload running', 'busy': False,
         'failed': False, 'claimed': False, 'running': 0, 'failed_workflows': 0, 'claim': None, 'fencing': 3}


def client_for(server, **kwargs):
    kwargs.setdefault('timeout', 1.0)
    return ac.AgentClient(ac.agent_url('127.0.0.1', server.port), **kwargs)


def test_agent_url_brackets_ipv6():
    assert ac.agent_url('10.0.0.1') == 'http://10.0.0.1:9009'
    assert ac.agent_url('fd00::1', 9100, 'https') == 'https://[fd00::1]:9100'


def test_verify_setting():
    assert ac.verify_setting(True, None) is True
    assert ac.verify_setting(True, '/ca.pem') == '/ca.pem'
    assert ac.verify_setting(False, '/ca.pem') is False


def test_state_ok_and_nothing_else_asked():
    with MisbehavingServer('json', routes={'/v1/state': (200, STATE)}) as server:
        doc = client_for(server, token='s3cret').state()
    assert doc['state'] == 'lazy'
    assert [(method, path) for method, path, _body in server.requests] == [('GET', '/v1/state')]


class CaptureServer:
    """Answers like an agent (a nonce, a state, 200 to mutations) and keeps every request's headers.

    `bad_nonces` first answers to signed requests are 401 bad_nonce, as an agent whose nonce expired.
    """

    def __init__(self, bad_nonces=0):
        self.seen = []
        self.bad_nonces = bad_nonces
        self.nonces = 0
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _answer(self, status, doc):
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length) if length else b''
                capture.seen.append((self.command, self.path, dict(self.headers), body))
                if self.path == '/v1/nonce':
                    capture.nonces += 1
                    return self._answer(200, {'nonce': 'n%d' % capture.nonces, 'agent_id': 'agent-7',
                                              'expires_in': 60, 'scheme': ac.SIGNING_SCHEME})
                if 'X-Orchestra-Signature' in self.headers and capture.bad_nonces:
                    capture.bad_nonces -= 1
                    return self._answer(401, {'error': 'bad_nonce', 'message': 'spent'})
                if self.path == '/v1/state':
                    return self._answer(200, STATE)
                return self._answer(200, {'acknowledged': []})

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_exc):
        self.server.shutdown()
        self.server.server_close()


def expected_signature(token, method, path, agent_id, nonce, body):
    # Written out from docs/agent-openapi.yaml, independently of agent_client.sign.
    text = '\n'.join(['orchestra-hmac-sha256-v1', method, path, agent_id, nonce, hashlib.sha256(body).hexdigest()])
    return hmac.new(token.encode(), text.encode(), hashlib.sha256).hexdigest()


CREDENTIAL_HEADERS = ('Authorization', 'X-Orchestra-Nonce', 'X-Orchestra-Signature')


def test_probes_carry_no_credential_at_all():
    with CaptureServer() as server:
        client = client_for(server, token='s3cret')
        client.state()
        client.health()
    assert [(method, path) for method, path, _headers, _body in server.seen] == [('GET', '/v1/state'), ('GET', '/v1/health')]
    for _method, _path, headers, _body in server.seen:
        assert not set(headers) & set(CREDENTIAL_HEADERS), headers
    assert all('s3cret' not in repr(item) for item in server.seen)


def test_mutations_are_signed_over_a_fresh_nonce_and_never_carry_the_token():
    with CaptureServer() as server:
        client = client_for(server, token='s3cret')
        client.ack_failures(['bad'])
        client.ack_failures()
    paths = [(method, path) for method, path, _headers, _body in server.seen]
    assert paths == [('GET', '/v1/nonce'), ('POST', '/v1/failures/ack')] * 2
    for index, (method, path, headers, body) in enumerate(server.seen[1::2]):
        assert headers['Content-Type'] == 'application/json'
        assert json.loads(body) == ({'containers': ['bad']} if index == 0 else {})
        nonce = 'n%d' % (index + 1)
        assert headers['X-Orchestra-Nonce'] == nonce
        assert headers['X-Orchestra-Signature'] == expected_signature('s3cret', method, path, 'agent-7', nonce, body)
        assert 'Authorization' not in headers
    assert all('s3cret' not in repr(item) for item in server.seen)


def test_a_spent_nonce_is_retried_once_with_a_fresh_one():
    with CaptureServer(bad_nonces=1) as server:
        assert client_for(server, token='t').ack_failures() == {'acknowledged': []}
    assert [path for _method, path, _headers, _body in server.seen] == ['/v1/nonce', '/v1/failures/ack'] * 2
    with CaptureServer(bad_nonces=2) as server:
        with pytest.raises(ac.AgentAuthError, match='bad_nonce'):
            client_for(server, token='t').ack_failures()
    assert len(server.seen) == 4


def test_auth_reads_signs_reads_but_not_health_or_nonce():
    with CaptureServer() as server:
        client = client_for(server, token=ac.AgentAuth('t', auth_reads=True))
        client.state()
        client.health()
    assert [path for _method, path, _headers, _body in server.seen] == ['/v1/nonce', '/v1/state', '/v1/health']
    assert 'X-Orchestra-Signature' in server.seen[1][2]
    assert 'X-Orchestra-Signature' not in server.seen[2][2]


def test_without_a_token_mutations_go_unsigned_but_as_json():
    with CaptureServer() as server:
        client_for(server).ack_failures()
    (method, path, headers, body), = server.seen
    assert (method, path, headers['Content-Type'], body) == ('POST', '/v1/failures/ack', 'application/json', b'{}')


def test_token_resolution_order(tmp_path, monkeypatch):
    default = tmp_path / 'default-token'
    named = tmp_path / 'named-token'
    named.write_text('from-file\n')
    assert ac.resolve_token(None, None, default_file=str(default)) is None
    default.write_text('provisioned\n')
    assert ac.resolve_token(None, None, default_file=str(default)) == 'provisioned'
    assert ac.resolve_token(None, str(named), default_file=str(default)) == 'from-file'
    assert ac.resolve_token('option', str(named), default_file=str(default)) == 'option'
    with pytest.raises(ac.TokenFileError, match='cannot read'):
        ac.resolve_token(None, str(tmp_path / 'missing'), default_file=str(default))
    (tmp_path / 'empty').write_text('\n')
    with pytest.raises(ac.TokenFileError, match='empty'):
        ac.resolve_token(None, str(tmp_path / 'empty'))
    monkeypatch.setenv('HOME', str(tmp_path))
    os.makedirs(str(tmp_path / '.config' / 'orchestra-fleet'))
    (tmp_path / '.config' / 'orchestra-fleet' / 'agent-token').write_text('home-default')
    assert ac.client_auth().token == 'home-default'
    assert ac.client_auth(auth_reads=True).auth_reads is True
    assert ac.client_auth(default_file=None) is None


def test_error_carries_agent_message():
    conflict = {'error': 'conflict', 'message': 'host already claimed by sched-a', 'state': 'claimed'}
    with MisbehavingServer('json', routes={('POST', '/v1/claims'): (409, conflict)}) as server:
        with pytest.raises(ac.AgentConflict) as info:
            client_for(server).create_claim('me', 60)
    assert 'host already claimed by sched-a' in str(info.value)
    assert info.value.status == 409 and info.value.code == 'conflict'
    assert info.value.body['state'] == 'claimed'


@pytest.mark.parametrize('status, error_class', [(401, ac.AgentAuthError), (403, ac.AgentAuthError),
                                                 (404, ac.AgentNotFound), (400, ac.AgentHTTPError)])
def test_status_maps_to_error_class(status, error_class):
    with MisbehavingServer('json', routes={'/v1/health': (status, {'error': 'x', 'message': 'because'})}) as server:
        with pytest.raises(error_class, match='because'):
            client_for(server).health()


def test_create_claim_requires_secret_in_answer():
    with MisbehavingServer('json', routes={('POST', '/v1/claims'): (201, {'id': 'c1', 'fencing': 1})}) as server:
        with pytest.raises(ac.AgentProtocolError, match='secret'):
            client_for(server).create_claim('me', 60)


def test_release_sends_secret_and_fencing():
    with MisbehavingServer('json', routes={('DELETE', '/v1/claims/c%201'): (200, {'released': True, 'id': 'c 1'})}) as server:
        assert client_for(server).release_claim('c 1', 'sec', fencing=4)['released'] is True
    assert json.loads(server.requests[0][2]) == {'secret': 'sec', 'fencing': 4}


@pytest.mark.parametrize('mode, error_class, text', [
    ('html', ac.AgentProtocolError, 'text/html, not JSON'),
    ('garbage', ac.AgentProtocolError, 'not with HTTP'),
    ('wrong_json', ac.AgentProtocolError, 'wrong shape'),
    ('reset', ac.AgentUnreachable, 'reset'),
])
def test_misbehaving_peers_raise_clear_errors(mode, error_class, text):
    with MisbehavingServer(mode) as server:
        with pytest.raises(error_class, match=text):
            client_for(server).state()


def test_tarpit_times_out_within_deadline():
    with MisbehavingServer('tarpit') as server:
        # The reason names the configured deadline: the call ended through it, not through the server.
        with pytest.raises(ac.AgentTimeout, match='no answer within 0.5 s'):
            client_for(server, timeout=0.5).state()


def test_connection_refused():
    port = free_port()
    with pytest.raises(ac.AgentUnreachable, match='refused'):
        ac.AgentClient(ac.agent_url('127.0.0.1', port), timeout=1).health()


def test_oversized_answer_rejected():
    big = b'{"a": "' + b'x' * (ac.MAX_BODY_BYTES + 10) + b'"}'
    with MisbehavingServer('json', routes={'/v1/state': (200, big)}) as server:
        with pytest.raises(ac.AgentProtocolError, match='larger than'):
            client_for(server, timeout=5).state()


@pytest.mark.parametrize('doc, text', [
    ({'state': 'sleepy'}, 'unknown state'),
    ({'reason': 'x'}, '"state" missing'),
    ({'state': 'lazy', 'running': 'two'}, '"running" is not an integer'),
    ({'state': 'lazy', 'running': True}, '"running" is not an integer'),
    ({'state': 'claimed', 'claim': 'yes'}, '"claim" is not an object'),
])
def test_validate_state_names_the_problem(doc, text):
    with pytest.raises(ac.AgentProtocolError, match=text):
        ac.validate_state(doc)


def test_legacy_busy():
    routes = {'/busy': (200, b'TRUE\n', 'text/plain')}
    with MisbehavingServer('json', routes=routes) as server:
        assert client_for(server).legacy_busy() is True


@pytest.fixture
def role_token_file(tmp_path, monkeypatch):
    """The file the agent role provisions, under a HOME of the test's own."""
    monkeypatch.setenv('HOME', str(tmp_path))
    for name in ('ORCHESTRA_FLEET_TOKEN', 'ORCHESTRA_AGENT_TOKEN', 'ORCHESTRA_FLEET_TOKEN_FILE'):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / '.config' / 'orchestra-fleet' / 'agent-token'
    path.parent.mkdir(parents=True)
    path.write_text('provisioned-by-the-role\n')
    return path


def test_inventory_and_lookup_options_read_the_role_token_file_by_default(role_token_file):
    from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_discovery
    options = {'port': 9009, 'scheme': 'http', 'token': None, 'token_file': None, 'auth_reads': False,
               'validate_certs': True, 'ca_path': None, 'timeout': 2.0, 'connect_timeout': 0.3, 'concurrency': 4,
               'connect_concurrency': 16, 'ssh_port': 22}
    credentials = fleet_discovery.probe_options(options.get)['token']
    assert (credentials.token, credentials.auth_reads) == ('provisioned-by-the-role', False)
    options.update(token='given', auth_reads=True)
    credentials = fleet_discovery.probe_options(options.get)['token']
    assert (credentials.token, credentials.auth_reads) == ('given', True)
    options.update(token=None, token_file=str(role_token_file.parent / 'missing'))
    with pytest.raises(fleet_discovery.FleetConfigError, match='cannot read the agent token file'):
        fleet_discovery.probe_options(options.get)


def test_claim_module_reads_the_role_token_file_by_default(role_token_file):
    from ansible_collections.orchestra.fleet.plugins.modules import claim
    params = {'port': None, 'scheme': None, 'validate_certs': True, 'ca_path': None, 'token': None, 'token_file': None,
              'auth_reads': False, 'timeout': 5.0, 'concurrency': 2}
    client = claim.client_factory(params)('10.0.0.1')
    assert client.needs_signature('POST', '/v1/claims') and not client.needs_signature('GET', '/v1/state')
    assert client._token == 'provisioned-by-the-role'  # pylint: disable=protected-access
