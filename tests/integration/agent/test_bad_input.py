"""Bad input against the real agent process: 401s, malformed and oversized bodies, unknown routes, TLS, config."""
import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import requests

from tests.support.agent_proc import AGENT_SOURCE, agent_env, signature, start_agent

CLAIM = {'owner': 'sched-a', 'ttl': 60}


def raw_request(handle, data, read_timeout=10):
    """Send raw bytes to the agent; return the status code of its answer (None if it only closed)."""
    with socket.create_connection((handle.host, handle.port), timeout=read_timeout) as conn:
        conn.sendall(data)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = b''
        try:
            while b'\r\n' not in answer:  # the status line is all we need; keep-alive would hold the rest
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    if not answer.startswith(b'HTTP/1.'):
        return None
    return int(answer.split(b' ', 2)[1])


def wrong_signatures(agent, method, path, body):
    """Headers a client without the right token could send: none, the old bearer token, a signature made
    with another token, one over another body, one for another method."""
    data = json.dumps(body).encode()
    return [{}, {'Authorization': 'Bearer ' + agent.token},
            dict(agent.signed_headers(method, path, data), **{'X-Orchestra-Signature': '0' * 64}),
            AgentHandleWithToken(agent, 'not-' + agent.token).signed_headers(method, path, data),
            agent.signed_headers(method, path, data + b' '),
            agent.signed_headers('GET' if method != 'GET' else 'POST', path, data)]


class AgentHandleWithToken:
    def __init__(self, handle, token):
        self.handle, self.token = handle, token

    def signed_headers(self, method, path, body):
        issued = self.handle.get_json('/v1/nonce')
        return {'X-Orchestra-Nonce': issued['nonce'],
                'X-Orchestra-Signature': signature(self.token, method, path, issued['agent_id'], issued['nonce'], body)}


def test_unsigned_or_badly_signed_mutations_are_401(agent):
    for method, path, body in (('POST', '/v1/claims', CLAIM), ('POST', '/v1/failures/ack', {}),
                               ('PUT', '/v1/claims/abc', {'secret': 'x'}), ('DELETE', '/v1/claims/abc', {'secret': 'x'})):
        for headers in wrong_signatures(agent, method, path, body):
            response = agent.request(method, path, body, headers=headers, sign=False)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()['error'] == 'unauthorized'
            assert response.headers['WWW-Authenticate'] == 'orchestra-hmac-sha256-v1'
    # Reads stay open unless auth_reads is set.
    assert requests.get(agent.url + '/v1/state', timeout=5).status_code == 200


def test_a_captured_signed_request_cannot_be_replayed(agent, busybox_image, selector):
    data = json.dumps({'containers': []}).encode()
    captured = dict(agent.signed_headers('POST', '/v1/failures/ack', data), **{'Content-Type': 'application/json'})
    first = requests.post(agent.url + '/v1/failures/ack', data=data, headers=captured, timeout=5)
    assert first.status_code == 200
    again = requests.post(agent.url + '/v1/failures/ack', data=data, headers=captured, timeout=5)
    assert (again.status_code, again.json()['error']) == (401, 'bad_nonce')
    # A second agent with the same token (the fleet shares one) refuses what was signed for the first.
    other = start_agent(labels=[selector], token=agent.token)
    try:
        fresh = dict(agent.signed_headers('POST', '/v1/failures/ack', data), **{'Content-Type': 'application/json'})
        moved = requests.post(other.url + '/v1/failures/ack', data=data, headers=fresh, timeout=5)
        assert (moved.status_code, moved.json()['error']) == (401, 'unauthorized')
    finally:
        other.close()
    # After a restart the agent has forgotten every nonce it issued before.
    stale = dict(agent.signed_headers('POST', '/v1/failures/ack', data), **{'Content-Type': 'application/json'})
    agent.restart()
    later = requests.post(agent.url + '/v1/failures/ack', data=data, headers=stale, timeout=5)
    assert (later.status_code, later.json()['error']) == (401, 'bad_nonce')


@pytest.mark.parametrize('path', ['/v1/failures/ack', '/v1/claims'])
@pytest.mark.parametrize('content_type, data', [
    ('text/plain', b'{"owner": "page", "ttl": 60}'),
    ('application/x-www-form-urlencoded', b'owner=page&ttl=60'),
])
def test_browser_style_posts_are_415(busybox_image, selector, path, content_type, data):
    """What a web page can make a browser send without a preflight, to an agent with no token at all."""
    handle = start_agent(labels=[selector])
    try:
        handle.wait_state(lambda s: s['docker']['reachable'])
        response = requests.post(handle.url + path, data=data, headers={'Content-Type': content_type}, timeout=5)
        assert (response.status_code, response.json()['error']) == (415, 'unsupported_media_type')
        assert handle.state()['claim'] is None
        assert '"unguarded"' in handle.logs()  # and the agent warned at startup that mutations are open
    finally:
        handle.close()


def test_auth_reads_guards_every_read(busybox_image, selector):
    handle = start_agent(labels=[selector], token='read-token', config={'auth_reads': True})
    try:
        for path in ('/v1/state', '/v1/containers', '/v1/claims', '/v1/metrics', '/busy', '/workflows'):
            assert requests.get(handle.url + path, timeout=5).status_code == 401, path
            assert handle.request('GET', path).status_code == 200, path
        for path in ('/v1/health', '/healthy', '/v1/nonce'):
            assert requests.get(handle.url + path, timeout=5).status_code == 200, path
    finally:
        handle.close()


@pytest.mark.parametrize('body', [b'{not json', b'[]', b'"owner"', b'\xff\xfe\x00', b'{"owner": "a", "ttl": "60"}',
                                  b'{"owner": "a", "ttl": 0}', b'{"owner": "a", "ttl": 1e400}', b'[' * 20000,
                                  b'{"owner": "a", "ttl": 60, "extra": 1}', b''])
def test_malformed_claim_bodies_are_400(agent, body):
    response = agent.request('POST', '/v1/claims', data=body)
    assert response.status_code == 400
    assert response.json()['error'] in ('bad_json', 'bad_request')


def test_oversized_bodies_are_413(agent):
    big = json.dumps({'owner': 'a' * 70000, 'ttl': 60}).encode()
    response = agent.request('POST', '/v1/claims', data=big, sign=False, timeout=10)
    assert (response.status_code, response.json()['error']) == (413, 'too_large')

    def chunks():
        for _index in range(80):
            yield b'x' * 1024

    response = agent.request('POST', '/v1/failures/ack', data=chunks(), sign=False, timeout=10)
    assert response.status_code == 413
    # Refused from Content-Length alone, before authentication and without reading the body.
    status = raw_request(agent, b'POST /v1/claims HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n{')
    assert status == 413
    # The agent still answers afterwards.
    assert requests.get(agent.url + '/v1/health', timeout=5).status_code == 200


@pytest.mark.parametrize('method, path', [('GET', '/'), ('GET', '/v2/state'), ('GET', '/v1/state/'), ('GET', '/v1/claims/x/y'),
                                          ('POST', '/v1/nope'), ('GET', '/etc/passwd'), ('GET', '/v1/%00'), ('PATCH', '/v1/claims')])
def test_unknown_routes_are_404_or_405(agent, method, path):
    response = agent.request(method, path, content_type=None)
    assert response.status_code in (404, 405)
    assert response.json()['error'] in ('not_found', 'method_not_allowed')


@pytest.mark.parametrize('data', [
    b'GARBAGE\r\n\r\n',
    b'GET /v1/state HTTP/9.9\r\n\r\n',
    b'GET /v1/state HTTP/1.1\r\nHost: x\r\nX-Big: ' + b'a' * 40000 + b'\r\n\r\n',
    b'POST /v1/claims HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
    b'POST /v1/claims HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n',
    b'\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03' + b'\x00' * 40,
])
def test_protocol_garbage_never_gets_a_5xx(agent, data):
    status = raw_request(agent, data)
    assert status is None or 400 <= status < 500, status
    assert requests.get(agent.url + '/v1/health', timeout=5).status_code == 200


def self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'orchestra-agent-test')])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / 'agent.crt', tmp_path / 'agent.key'
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_with_cert_and_key(busybox_image, selector, tmp_path):
    cert, key = self_signed(tmp_path)
    handle = start_agent(labels=[selector], token='tls-token', config={'tls_cert': cert, 'tls_key': key})
    try:
        assert handle.url.startswith('https://')
        response = requests.get(handle.url + '/v1/health', verify=cert, timeout=5)
        assert (response.status_code, response.json()['status']) == (200, 'ok')
        response = requests.post(handle.url + '/v1/claims', json=CLAIM, verify=cert, timeout=5)
        assert response.status_code == 401
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(handle.url + '/v1/health', timeout=5)  # not trusted without the cert
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(handle.url.replace('https://', 'http://') + '/v1/health', timeout=5)
    finally:
        handle.close()


def run_cli(*args, env_token=None):
    return subprocess.run([sys.executable, '-m', 'orchestra_agent'] + list(args), env=agent_env(token=env_token),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False, text=True,
                          cwd=AGENT_SOURCE)


@pytest.mark.parametrize('config, fragment', [
    ('{"port": "x"}', 'port must be'), ('{"nope": 1}', 'unknown config key'), ('{bad', 'not valid JSON'),
    ('{"tls_cert": "/nonexistent"}', 'tls_cert and tls_key'),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, config, fragment):
    path = tmp_path / 'agent.json'
    path.write_text(config)
    result = run_cli('--config', str(path), '--state-dir', str(tmp_path / 'state'))
    assert result.returncode == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sigterm_stops_cleanly_with_exit_0_and_logs_no_secrets(busybox_image, selector):
    token = 'never-log-this-token-%s' % os.getpid()
    handle = start_agent(labels=[selector], token=token, extra_args=['--log-level', 'debug'])
    try:
        handle.wait_state(lambda s: s['state'] == 'lazy')
        created = handle.request('POST', '/v1/claims', CLAIM).json()
        requests.post(handle.url + '/v1/claims', json=CLAIM, headers={'Authorization': 'Bearer wrong-' + token}, timeout=5)
        proc = handle.proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        logs = handle.logs()
        events = [json.loads(line) for line in logs.splitlines()]  # every line is one JSON object
        assert [entry['message'] for entry in events if entry['message'] in ('claim created', 'stopped')] == ['claim created', 'stopped']
        assert token not in logs
        assert created['secret'] not in logs
    finally:
        handle.close()
