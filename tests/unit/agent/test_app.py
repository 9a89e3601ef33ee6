"""The WSGI app driven in-process (no server) over a real Agent with a stand-in Docker snapshot."""
import io
import json

import pytest

from orchestra_agent import app, config, core, dockerwatch, workload

TOKEN = 'unit-token'


class StillWatcher:
    """A watcher whose snapshot the test sets directly."""

    def __init__(self, up=True, records=(), error=None):
        self.events_seen = self.reconnects = 0
        self.snapshot = dockerwatch.Snapshot(up, error, 1.0, {rec['id']: rec for rec in records})


def container(name, status='running', exit_code=0):
    return workload.record_from_inspect({'Id': name + '0' * 20, 'Name': '/' + name, 'Config': {'Image': 'img', 'Labels': {}},
                                         'State': {'Status': status, 'ExitCode': exit_code, 'FinishedAt': '2026-01-01T00:00:00Z'}})


def make_app(tmp_path, watcher=None, **values):
    values.setdefault('token', TOKEN)
    values.setdefault('state_dir', str(tmp_path))
    settings = config.validate(config.merge(values, {}, {}))
    return app.Application(core.Agent(settings, watcher or StillWatcher(), hostname='unit'))


def call(application, method, path, body=None, token=TOKEN, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b'')
    environ = {'REQUEST_METHOD': method, 'PATH_INFO': path, 'wsgi.input': io.BytesIO(data),
               'CONTENT_LENGTH': str(len(data)) if data else ''}
    if token:
        environ['HTTP_AUTHORIZATION'] = 'Bearer ' + token
    environ.update(headers or {})
    captured = {}

    def start_response(status, response_headers):
        captured['status'] = int(status.split()[0])
        captured['headers'] = dict(response_headers)

    payload = b''.join(application(environ, start_response))
    if captured['headers']['Content-Type'] == 'application/json':
        return captured['status'], json.loads(payload), captured['headers']
    return captured['status'], payload.decode(), captured['headers']


def test_state_and_health(tmp_path):
    application = make_app(tmp_path, StillWatcher(records=[container('job')]))
    status, body, _headers = call(application, 'GET', '/v1/state', token=None)
    assert status == 200
    assert (body['state'], body['hostname'], body['running'], body['claim']) == ('busy', 'unit', 1, None)
    assert call(application, 'GET', '/v1/health')[1] == {'status': 'ok', 'version': '0.1.0', 'docker': 'up'}


def test_mutations_need_the_token(tmp_path):
    application = make_app(tmp_path)
    for token in (None, 'wrong'):
        status, body, headers = call(application, 'POST', '/v1/claims', {'owner': 'a', 'ttl': 5}, token=token)
        assert (status, body['error']) == (401, 'unauthorized')
        assert headers['WWW-Authenticate'] == 'Bearer'
    assert call(application, 'POST', '/v1/claims', {'owner': 'a', 'ttl': 5})[0] == 201


def test_auth_reads(tmp_path):
    application = make_app(tmp_path, auth_reads=True)
    assert call(application, 'GET', '/v1/state', token=None)[0] == 401
    assert call(application, 'GET', '/busy', token=None)[0] == 401
    assert call(application, 'GET', '/v1/state')[0] == 200


def test_token_compare_needs_bearer_scheme():
    digest = __import__('hashlib').sha256(b'tok').digest()
    assert app.token_matches('Bearer tok', digest)
    assert app.token_matches('bearer tok', digest)
    assert not app.token_matches('Basic tok', digest)
    assert not app.token_matches('Bearer', digest)
    assert not app.token_matches(None, digest)


@pytest.mark.parametrize('raw, code', [
    (b'{nope', 'bad_json'), (b'[1]', 'bad_request'), (b'\xff\xfe', 'bad_json'), (b'[' * 50000, 'bad_json'),
    (b'{"owner": "a", "ttl": true}', 'bad_request'), (b'{"owner": "", "ttl": 5}', 'bad_request'),
    (b'{"owner": "a", "ttl": 999999999}', 'bad_request'), (b'{"owner": "a", "ttl": 5, "x": 1}', 'bad_request'),
    (b'{"owner": "a"}', 'bad_request'), (b'', 'bad_request'),
])
def test_bad_bodies_are_400(tmp_path, raw, code):
    status, body, _headers = call(make_app(tmp_path), 'POST', '/v1/claims', raw=raw)
    assert (status, body['error']) == (400, code)


def test_oversized_body_is_413_without_reading_it(tmp_path):
    application = make_app(tmp_path, max_body_bytes=1024)
    status, body, _headers = call(application, 'POST', '/v1/claims', raw=b'{"owner": "' + b'a' * 2000 + b'", "ttl": 5}')
    assert (status, body['error']) == (413, 'too_large')


def test_unknown_route_404_and_wrong_method_405(tmp_path):
    application = make_app(tmp_path)
    assert call(application, 'GET', '/nope')[0] == 404
    status, _body, headers = call(application, 'DELETE', '/v1/state')
    assert status == 405
    assert headers['Allow'] == 'GET'
    assert call(application, 'GET', '/v1/claims/abc')[0] == 405


def test_claim_life_cycle_over_http(tmp_path):
    application = make_app(tmp_path)
    status, claim, _headers = call(application, 'POST', '/v1/claims', {'owner': 'sched', 'ttl': 60})
    assert status == 201
    assert call(application, 'GET', '/v1/state')[1]['state'] == 'claimed'
    status, body, _headers = call(application, 'POST', '/v1/claims', {'owner': 'other', 'ttl': 60})
    assert (status, body['message'], body['state']) == (409, 'host already claimed by sched', 'claimed')
    path = '/v1/claims/' + claim['id']
    assert call(application, 'PUT', path, {'secret': 'x'})[0] == 403
    status, body, _headers = call(application, 'PUT', path, {'secret': claim['secret'], 'fencing': 99})
    assert (status, body['error']) == (409, 'stale_fencing')
    assert call(application, 'PUT', path, {'secret': claim['secret'], 'ttl': 30})[1]['ttl'] == 30
    listed = call(application, 'GET', '/v1/claims')[1]['claims']
    assert [item['id'] for item in listed] == [claim['id']]
    assert 'secret' not in listed[0]
    status, body, _headers = call(application, 'DELETE', path, headers={'HTTP_X_CLAIM_SECRET': claim['secret']})
    assert (status, body) == (200, {'released': True, 'id': claim['id']})
    assert call(application, 'DELETE', path, {'secret': claim['secret']})[0] == 404


def test_busy_or_unknown_host_cannot_be_claimed(tmp_path):
    busy = make_app(tmp_path, StillWatcher(records=[container('job')]))
    status, body, _headers = call(busy, 'POST', '/v1/claims', {'owner': 'a', 'ttl': 5})
    assert (status, body['message'], body['state']) == (409, 'host is busy', 'busy')
    down = make_app(tmp_path, StillWatcher(up=False, error='refused'))
    assert call(down, 'POST', '/v1/claims', {'owner': 'a', 'ttl': 5})[1]['message'] == 'docker unreachable'


def test_ack_turns_failed_into_lazy_and_is_persisted(tmp_path):
    watcher = StillWatcher(records=[container('bad', 'exited', 3), container('good', 'exited', 0)])
    application = make_app(tmp_path, watcher)
    assert call(application, 'GET', '/v1/state')[1]['state'] == 'failed'
    status, body, _headers = call(application, 'POST', '/v1/failures/ack', {'containers': ['bad']})
    assert (status, body['acknowledged']) == (200, ['bad' + '0' * 20])
    assert call(application, 'GET', '/v1/state')[1]['state'] == 'lazy'
    assert call(make_app(tmp_path, watcher), 'GET', '/v1/state')[1]['state'] == 'lazy'


def test_legacy_endpoints(tmp_path):
    workflows_dir = tmp_path / 'workflows'
    (workflows_dir / 'wf-dir-entry').mkdir(parents=True)
    (workflows_dir / '.hidden').mkdir()
    application = make_app(tmp_path, StillWatcher(records=[container('run'), container('old', 'exited', 0)]),
                           workflows_dir=str(workflows_dir))
    assert call(application, 'GET', '/healthy')[1] == 'TRUE'
    assert call(application, 'GET', '/busy')[1] == 'TRUE'
    assert call(application, 'GET', '/containers')[1] == 'run\n'
    assert call(application, 'GET', '/workflows')[1].splitlines() == ['old', 'run', 'wf-dir-entry']
    assert call(make_app(tmp_path, StillWatcher()), 'GET', '/busy')[1] == 'FALSE'
    assert call(make_app(tmp_path, StillWatcher(up=False)), 'GET', '/busy')[1] == 'TRUE'


def test_metrics_and_openapi(tmp_path):
    application = make_app(tmp_path)
    status, text, _headers = call(application, 'GET', '/v1/metrics')
    assert status == 200
    assert 'orchestra_agent_state{state="lazy"} 1' in text
    status, text, headers = call(application, 'GET', '/v1/openapi.yaml')
    assert status == 200 and headers['Content-Type'] == 'application/yaml'
    assert text.startswith('openapi: 3')


def test_unexpected_error_is_a_bare_500(tmp_path, monkeypatch):
    application = make_app(tmp_path)
    monkeypatch.setattr(application.agent, 'state', lambda: 1 / 0)
    status, body, _headers = call(application, 'GET', '/v1/state')
    assert (status, body['error']) == (500, 'internal')
    assert 'ZeroDivision' not in body['message']
