"""The WSGI app driven in-process (no server) over a real Agent with a stand-in Docker snapshot."""
import io
import json

import pytest

from orchestra_agent import app, auth, config, core, dockerwatch, workload

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


OPEN = object()


def environ_for(method, path, data, headers, content_type):
    environ = {'REQUEST_METHOD': method, 'PATH_INFO': path, 'REQUEST_URI': path, 'wsgi.input': io.BytesIO(data),
               'CONTENT_LENGTH': str(len(data)) if data else ''}
    if content_type:
        environ['CONTENT_TYPE'] = content_type
    environ.update(headers or {})
    return environ


def invoke(application, environ):
    captured = {}

    def start_response(status, response_headers):
        captured['status'] = int(status.split()[0])
        captured['headers'] = dict(response_headers)

    payload = b''.join(application(environ, start_response))
    if captured['headers']['Content-Type'] == 'application/json':
        return captured['status'], json.loads(payload), captured['headers']
    return captured['status'], payload.decode(), captured['headers']


def signed_headers(application, token, method, path, data):
    nonce_doc = invoke(application, environ_for('GET', '/v1/nonce', b'', None, None))[1]
    return {'HTTP_X_ORCHESTRA_NONCE': nonce_doc['nonce'],
            'HTTP_X_ORCHESTRA_SIGNATURE': auth.sign(token, method, path, nonce_doc['agent_id'], nonce_doc['nonce'], data)}


def call(application, method, path, body=None, token=TOKEN, headers=None, raw=None, content_type=OPEN):
    """One request; signed with `token` unless it is None; mutations are JSON unless content_type says otherwise."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b'')
    if content_type is OPEN:
        content_type = 'application/json' if method in ('POST', 'PUT', 'DELETE') else None
    all_headers = dict(headers or {})
    if token:
        all_headers.update(signed_headers(application, token, method, path, data))
    return invoke(application, environ_for(method, path, data, all_headers, content_type))


def test_state_and_health(tmp_path):
    application = make_app(tmp_path, StillWatcher(records=[container('job')]))
    status, body, _headers = call(application, 'GET', '/v1/state', token=None)
    assert status == 200
    assert (body['state'], body['hostname'], body['running'], body['claim']) == ('busy', 'unit', 1, None)
    health = call(application, 'GET', '/v1/health')[1]
    assert (health['status'], health['version'], health['docker']) == ('ok', '0.1.0', 'up')
    assert health['agent_id'] == application.agent.agent_id


def test_mutations_need_a_signature_with_the_token(tmp_path):
    application = make_app(tmp_path)
    for token in (None, 'wrong'):
        status, body, headers = call(application, 'POST', '/v1/claims', {'owner': 'a', 'ttl': 5}, token=token)
        assert (status, body['error']) == (401, 'unauthorized')
        assert headers['WWW-Authenticate'] == auth.SCHEME
    # The old bearer token is no credential any more: it would be sent to whoever answers.
    bearer = {'HTTP_AUTHORIZATION': 'Bearer ' + TOKEN}
    assert call(application, 'POST', '/v1/claims', {'owner': 'a', 'ttl': 5}, token=None, headers=bearer)[0] == 401
    assert call(application, 'POST', '/v1/claims', {'owner': 'a', 'ttl': 5})[0] == 201


def test_a_signed_request_cannot_be_replayed_altered_or_moved(tmp_path):
    first = make_app(tmp_path / 'one')
    second = make_app(tmp_path / 'two')
    data = b'{"containers": []}'
    headers = signed_headers(first, TOKEN, 'POST', '/v1/failures/ack', data)

    def send(application, body=data, path='/v1/failures/ack', method='POST'):
        return invoke(application, environ_for(method, path, body, headers, 'application/json'))

    assert send(second)[1]['error'] == 'unauthorized'     # another agent: its id is in the signature
    assert send(first, body=b'{}')[1]['error'] == 'unauthorized'   # body altered
    assert send(first, path='/v1/claims')[1]['error'] == 'unauthorized'   # path altered
    assert send(first)[0] == 200
    status, body, _headers = send(first)                   # the same request again: its nonce is spent
    assert (status, body['error']) == (401, 'bad_nonce')


def test_an_unsigned_attempt_does_not_spend_the_nonce(tmp_path):
    application = make_app(tmp_path)
    data = b'{}'
    headers = signed_headers(application, TOKEN, 'POST', '/v1/failures/ack', data)
    forged = dict(headers, HTTP_X_ORCHESTRA_SIGNATURE='0' * 64)
    assert invoke(application, environ_for('POST', '/v1/failures/ack', data, forged, 'application/json'))[0] == 401
    assert invoke(application, environ_for('POST', '/v1/failures/ack', data, headers, 'application/json'))[0] == 200


def test_nonces_expire_on_the_agents_own_clock_and_are_bounded():
    now = [100.0]
    store = auth.NonceStore(ttl=60, limit=3, clock=lambda: now[0])
    old = store.issue()
    now[0] += 61
    assert not store.spend(old)
    nonces = [store.issue() for _index in range(4)]
    assert len(store) == 3 and not store.spend(nonces[0])
    assert store.spend(nonces[3]) and not store.spend(nonces[3])


@pytest.mark.parametrize('content_type', ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', None])
@pytest.mark.parametrize('path', ['/v1/failures/ack', '/v1/claims', '/v1/workflows', '/v1/workflows/wf-1/cancel'])
def test_mutations_that_are_not_json_are_415_even_without_a_token(tmp_path, content_type, path):
    for application in (make_app(tmp_path / 'open', token=None), make_app(tmp_path / 'guarded')):
        status, body, _headers = call(application, 'POST', path, raw=b'{"owner": "page", "ttl": 60}',
                                      content_type=content_type)
        assert (status, body['error']) == (415, 'unsupported_media_type')


def test_json_with_a_charset_is_json(tmp_path):
    application = make_app(tmp_path)
    assert call(application, 'POST', '/v1/claims', {'owner': 'a', 'ttl': 5},
                content_type='application/json; charset=utf-8')[0] == 201


def test_auth_reads(tmp_path):
    application = make_app(tmp_path, auth_reads=True)
    assert call(application, 'GET', '/v1/state', token=None)[0] == 401
    assert call(application, 'GET', '/busy', token=None)[0] == 401
    assert call(application, 'GET', '/v1/state')[0] == 200
    for path in ('/v1/health', '/healthy', '/v1/nonce'):
        assert call(application, 'GET', path, token=None)[0] == 200


def test_agent_id_survives_a_restart(tmp_path):
    assert make_app(tmp_path).agent.agent_id == make_app(tmp_path).agent.agent_id
    assert make_app(tmp_path / 'other').agent.agent_id != make_app(tmp_path).agent.agent_id


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


def workflow_body(claim, **extra):
    body = {'claim_id': claim['id'], 'secret': claim['secret'], 'fencing': claim['fencing'], 'image': 'allowed:1'}
    body.update(extra)
    return body


def test_fenced_start_refusals_come_before_docker(tmp_path):
    """Every refusal is decided before Docker is asked (this agent has no Docker at all)."""
    closed = make_app(tmp_path / 'closed')
    claim = call(closed, 'POST', '/v1/claims', {'owner': 'sched', 'ttl': 60})[1]
    status, body, _headers = call(closed, 'POST', '/v1/workflows', workflow_body(claim))
    assert (status, body['error']) == (403, 'image_not_allowed') and 'disabled' in body['message']

    application = make_app(tmp_path / 'open', workflow_images=['allowed:1'])
    nobody = {'id': 'a' * 32, 'secret': 'x', 'fencing': 1}
    assert call(application, 'POST', '/v1/workflows', workflow_body(nobody))[1]['error'] == 'no_claim'
    claim = call(application, 'POST', '/v1/claims', {'owner': 'sched', 'ttl': 60})[1]
    status, body, _headers = call(application, 'POST', '/v1/workflows', workflow_body(claim, fencing=claim['fencing'] + 1))
    assert (status, body['error']) == (409, 'stale_claim')
    status, body, _headers = call(application, 'POST', '/v1/workflows', workflow_body(claim, image='other:1'))
    assert (status, body['error']) == (403, 'image_not_allowed')
    status, body, _headers = call(application, 'POST', '/v1/workflows',
                                  workflow_body(claim, labels={'orchestra.claim.fence': '99'}))
    assert (status, body['error']) == (400, 'reserved_label')
    assert call(application, 'POST', '/v1/workflows', workflow_body(claim), token=None)[0] == 401
    assert call(application, 'POST', '/v1/workflows', raw=b'{}')[1]['error'] == 'bad_request'


def test_fenced_start_on_a_busy_failed_or_blind_host_is_409(tmp_path):
    for records, up, code in (([container('by-hand')], True, 'busy'), ([container('x', 'exited', 3)], True, 'failed'),
                              ([], False, 'docker_down')):
        watcher = StillWatcher(up=True, records=[])
        application = make_app(tmp_path / code, watcher, workflow_images=['allowed:1'])
        claim = call(application, 'POST', '/v1/claims', {'owner': 'sched', 'ttl': 60})[1]
        watcher.snapshot = dockerwatch.Snapshot(up, None if up else 'gone', 1.0, {rec['id']: rec for rec in records})
        status, body, _headers = call(application, 'POST', '/v1/workflows', workflow_body(claim))
        assert (status, body['error']) == (409, code)


def test_workflow_routes(tmp_path):
    application = make_app(tmp_path, auth_reads=True)
    unknown = '/v1/workflows/wf-' + '0' * 32
    assert call(application, 'GET', unknown, token=None)[0] == 401
    status, body, _headers = call(application, 'GET', unknown)
    assert (status, body['error']) == (404, 'not_found')
    status, body, _headers = call(application, 'POST', unknown + '/cancel', {'claim_id': 'a', 'secret': 'b'})
    assert (status, body['error']) == (404, 'not_found')
    assert call(application, 'DELETE', unknown)[2]['Allow'] == 'GET'
    assert call(application, 'GET', unknown + '/cancel')[2]['Allow'] == 'POST'
    assert call(application, 'GET', '/v1/workflows/bad.id')[0] == 404
    # A status asks Docker: never on the server's event loop; the other reads are in-memory.
    assert not application.answers_inline({'REQUEST_METHOD': 'GET', 'PATH_INFO': unknown})
    assert application.answers_inline({'REQUEST_METHOD': 'GET', 'PATH_INFO': '/v1/state'})
    assert not application.answers_inline({'REQUEST_METHOD': 'POST', 'PATH_INFO': '/v1/claims'})
