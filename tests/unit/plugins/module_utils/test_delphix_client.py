"""Client decisions with a scripted transport: re-login, safe retries, lost-answer reconcile, errors."""
import json
import time
from datetime import datetime, timezone

import pytest
import requests

from ansible_collections.orchestra.fleet.plugins.module_utils import delphix as dx


def answer(status, body=None):
    response = requests.Response()
    response.status_code = status
    response._content = b'' if body is None else json.dumps(body).encode()  # pylint: disable=protected-access
    return response


class Script:
    """Plays scripted answers per (method, path); records every call made."""

    def __init__(self, client, plan):
        self.plan = {key: list(value) for key, value in plan.items()}
        self.calls = []
        client._send = self.send  # pylint: disable=protected-access

    def send(self, method, url, params, body):
        path = url.split('/masking/api', 1)[1]
        self.calls.append((method, path, params, body))
        steps = self.plan.get((method, path))
        if not steps:
            raise AssertionError('unexpected call %s %s' % (method, path))
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, Exception):
            raise step
        return step

    def count(self, method, path):
        return sum(1 for call in self.calls if call[:2] == (method, path))


LOGIN = answer(200, {'Authorization': 'tok'})
LOST = requests.exceptions.ConnectionError('Connection aborted: RemoteDisconnected')
REFUSED = requests.exceptions.ConnectionError('NewConnectionError: [Errno 111] Connection refused')


def execution(execution_id, status='RUNNING', submit='2026-01-01T12:00:01.000+0000', job_id=7):
    return {'executionId': execution_id, 'jobId': job_id, 'status': status, 'submitTime': submit}


def page(items):
    return {'_pageInfo': {'numberOnPage': len(items), 'total': len(items)}, 'responseList': items}


@pytest.fixture(name='client')
def client_fixture():
    dx._TOKENS.clear()  # pylint: disable=protected-access
    sleeps = []
    client = dx.MaskingEngineClient('http://engine:8282', 'admin', 'secret', retries=3, backoff=0.1,
                                    sleep=sleeps.append)
    client.sleeps = sleeps
    yield client
    dx._TOKENS.clear()  # pylint: disable=protected-access


def test_relogin_once_on_401(client):
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('GET', '/system-information'): [answer(401, {'errorMessage': 'expired'}),
                                                              answer(200, {'version': '6'})]})
    assert client.system_information() == {'version': '6'}
    assert script.count('POST', '/login') == 2


def test_second_401_is_an_auth_error_with_the_engine_message(client):
    Script(client, {('POST', '/login'): [LOGIN],
                    ('GET', '/system-information'): [answer(401, {'errorMessage': 'Provided Authentication has expired.'})]})
    with pytest.raises(dx.DelphixAuthError) as caught:
        client.system_information()
    assert caught.value.status == 401 and caught.value.engine_message == 'Provided Authentication has expired.'


def test_login_refused(client):
    Script(client, {('POST', '/login'): [answer(401, {'errorMessage': 'Invalid username or password.'})]})
    with pytest.raises(dx.DelphixAuthError) as caught:
        client.login()
    assert 'secret' not in str(caught.value)


@pytest.mark.parametrize('status', [200, 201])
def test_any_2xx_login(client, status):
    Script(client, {('POST', '/login'): [answer(status, {'Authorization': 'abc'})]})
    client.login()
    assert client._token == 'abc'  # pylint: disable=protected-access


def test_token_is_shared_by_clients_of_the_same_engine_and_user(client):
    script = Script(client, {('POST', '/login'): [LOGIN], ('GET', '/system-information'): [answer(200, {})]})
    client.system_information()
    other = dx.MaskingEngineClient('http://engine:8282/masking/api', 'admin', 'secret')
    Script(other, {('GET', '/system-information'): [answer(200, {})]})
    other.system_information()  # would fail on an unexpected /login
    assert script.count('POST', '/login') == 1
    different = dx.MaskingEngineClient('http://engine:8282', 'admin', 'other-password')
    assert different._token is None  # pylint: disable=protected-access


def test_get_is_retried_with_backoff_on_5xx_and_resets(client):
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('GET', '/executions/5'): [answer(500, {'errorMessage': 'boom'}), LOST,
                                                        answer(200, execution(5))]})
    assert client.get_execution(5).execution_id == 5
    assert script.count('GET', '/executions/5') == 3
    assert client.sleeps == [0.1, 0.2]


def test_get_gives_up_after_retries(client):
    Script(client, {('POST', '/login'): [LOGIN], ('GET', '/executions/5'): [answer(503, {'errorMessage': 'down'})]})
    with pytest.raises(dx.DelphixUnavailable) as caught:
        client.get_execution(5)
    assert caught.value.status == 503 and caught.value.engine_message == 'down'
    assert len(client.sleeps) == 3


@pytest.mark.parametrize('status, error', [(400, dx.DelphixError), (403, dx.DelphixError), (404, dx.DelphixNotFound),
                                           (409, dx.DelphixConflict)])
def test_errors_carry_the_engine_message_and_are_not_retried(client, status, error):
    script = Script(client, {('POST', '/login'): [LOGIN], ('GET', '/executions/5'): [answer(status, {'errorMessage': 'why'})]})
    with pytest.raises(error) as caught:
        client.get_execution(5)
    assert caught.value.engine_message == 'why' and caught.value.status == status
    assert caught.value.url.endswith('/executions/5') and 'why' in str(caught.value)
    assert script.count('GET', '/executions/5') == 1


def test_start_returns_the_execution(client):
    script = Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions'): [answer(201, execution(9))]})
    assert client.start_execution(7, marker=3).execution_id == 9
    assert script.calls[-1][3] == {'jobId': 7}
    assert script.count('GET', '/executions') == 0   # the caller's marker is used as it is


def test_start_takes_the_marker_right_before_the_post(client):
    script = Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions'): [LOST],
                             ('GET', '/executions'): [answer(200, page([execution(3, 'SUCCEEDED')])),
                                                      answer(200, page([execution(3, 'SUCCEEDED'), execution(9)]))]})
    assert client.start_execution(7).execution_id == 9
    assert [call[:2] for call in script.calls] == [('POST', '/login'), ('GET', '/executions'), ('POST', '/executions'),
                                                   ('GET', '/executions')]


def test_execution_marker_is_the_highest_id_over_every_page(client):
    client.page_size = 2
    Script(client, {('POST', '/login'): [LOGIN],
                    ('GET', '/executions'): [answer(200, {'_pageInfo': {'numberOnPage': 2, 'total': 3},
                                                          'responseList': [execution(4), execution(17)]}),
                                             answer(200, {'_pageInfo': {'numberOnPage': 1, 'total': 3},
                                                          'responseList': [execution(9)]})]})
    assert client.execution_marker(7) == 17


def test_execution_marker_of_a_job_that_never_ran_is_zero(client):
    Script(client, {('POST', '/login'): [LOGIN], ('GET', '/executions'): [answer(200, page([]))]})
    assert client.execution_marker(7) == 0


def test_start_lost_answer_adopts_without_posting_again(client):
    script = Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions'): [LOST],
                             ('GET', '/executions'): [answer(200, page([execution(3, 'SUCCEEDED'), execution(9, 'SUCCEEDED')]))]})
    adopted = client.start_execution(7, marker=3)
    assert adopted.execution_id == 9
    assert script.count('POST', '/executions') == 1
    assert script.calls[-1][2]['job_id'] == 7


@pytest.mark.parametrize('submit', ['2026-01-01T12:00:20.000+0000', '2025-12-31T12:00:00.000+0000'])
def test_an_execution_at_or_below_the_marker_is_never_adopted_whatever_its_dates(client, submit):
    # Engine clock ahead (a finished run that reads as newer than our attempt) or behind: dates decide nothing.
    posts = [answer(500, {'errorMessage': 'boom'}), answer(201, execution(12))]
    script = Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions'): posts,
                             ('GET', '/executions'): [answer(200, page([execution(11, 'SUCCEEDED', submit)]))]})
    assert client.start_execution(7, marker=11).execution_id == 12
    assert script.count('POST', '/executions') == 2


def test_the_lowest_id_above_the_marker_is_ours(client):
    Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions'): [LOST],
                    ('GET', '/executions'): [answer(200, page([execution(15, 'RUNNING', '2020-01-01T00:00:00.000+0000'),
                                                               execution(12, 'SUCCEEDED', '2030-01-01T00:00:00.000+0000'),
                                                               execution(10, 'SUCCEEDED')]))]})
    assert client.start_execution(7, marker=10).execution_id == 12


def test_start_lost_answer_with_no_execution_is_never_posted_again(client):
    # No answer: the POST may still be in flight, so "not found yet" proves nothing.
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('POST', '/executions'): [requests.exceptions.ReadTimeout('read timed out')],
                             ('GET', '/executions'): [answer(200, page([execution(3, 'SUCCEEDED')]))]})
    with pytest.raises(dx.DelphixUnavailable) as caught:
        client.start_execution(7, marker=3)
    assert caught.value.outcome_unknown and not isinstance(caught.value, dx.DelphixNotReached)
    assert 'find_execution_after(7, 3)' in str(caught.value)
    assert script.count('POST', '/executions') == 1 and script.count('GET', '/executions') == 4
    assert client.sleeps == [0.1, 0.2, 0.4]


def test_start_lost_answer_adopts_an_execution_that_shows_up_late(client):
    script = Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions'): [LOST],
                             ('GET', '/executions'): [answer(200, page([])), answer(200, page([execution(13)]))]})
    assert client.start_execution(7, marker=0).execution_id == 13
    assert script.count('POST', '/executions') == 1


def test_start_5xx_with_no_execution_posts_again(client):
    # The engine answered: the request is over, so nothing above the marker proves nothing was started.
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('POST', '/executions'): [answer(500, {'errorMessage': 'boom'}), answer(200, execution(10))],
                             ('GET', '/executions'): [answer(200, page([]))]})
    assert client.start_execution(7, marker=0).execution_id == 10
    assert script.count('POST', '/executions') == 2 and script.count('GET', '/executions') == 1


def test_start_5xx_then_409_adopts_the_execution_found_then(client):
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('POST', '/executions'): [answer(502, {'errorMessage': 'proxy'}),
                                                       answer(409, {'errorMessage': 'already running'})],
                             ('GET', '/executions'): [answer(200, page([])), answer(200, page([execution(11)]))]})
    assert client.start_execution(7, marker=0).execution_id == 11
    assert script.count('POST', '/executions') == 2


def test_start_409_is_a_conflict(client):
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('POST', '/executions'): [answer(409, {'errorMessage': 'Job is already running'})]})
    with pytest.raises(dx.DelphixConflict) as caught:
        client.start_execution(7, marker=4)
    assert caught.value.engine_message == 'Job is already running'
    assert script.count('GET', '/executions') == 0   # a first attempt's 409: someone else's run, never adopted


def test_start_409_after_an_attempt_that_never_left_is_someone_elses(client):
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('POST', '/executions'): [REFUSED, answer(409, {'errorMessage': 'already running'})]})
    with pytest.raises(dx.DelphixConflict):
        client.start_execution(7, marker=4)
    assert script.count('GET', '/executions') == 0


def test_start_refused_connection_retries_without_reconcile(client):
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('POST', '/executions'): [REFUSED, answer(200, execution(12))]})
    assert client.start_execution(7, marker=0).execution_id == 12
    assert script.count('GET', '/executions') == 0


@pytest.mark.parametrize('failure', [REFUSED, requests.exceptions.ConnectTimeout('connect timeout'),
                                     requests.exceptions.SSLError('certificate verify failed'),
                                     requests.exceptions.ConnectionError("NameResolutionError: Failed to resolve 'engine'")])
def test_a_start_that_never_left_is_not_reached(client, failure):
    script = Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions'): [failure]})
    with pytest.raises(dx.DelphixNotReached) as caught:
        client.start_execution(7, marker=0)
    assert caught.value.outcome_unknown is False and 'nothing was started' in str(caught.value)
    assert script.count('POST', '/executions') == 4   # tried, and retried: sending again is safe


def test_a_login_that_fails_before_the_start_is_not_reached(client):
    script = Script(client, {('POST', '/login'): [answer(503, {'errorMessage': 'starting up'})]})
    with pytest.raises(dx.DelphixNotReached):
        client.start_execution(7)
    assert script.count('POST', '/executions') == 0


def test_a_refused_login_before_the_start_is_an_auth_error(client):
    Script(client, {('POST', '/login'): [answer(401, {'errorMessage': 'Invalid username or password.'})]})
    with pytest.raises(dx.DelphixAuthError):
        client.start_execution(7)


def test_a_relogin_that_fails_after_a_401_on_the_post_started_nothing(client):
    script = Script(client, {('POST', '/login'): [LOGIN, REFUSED],
                             ('POST', '/executions'): [answer(401, {'errorMessage': 'expired'})]})
    client.retries = 0
    with pytest.raises(dx.DelphixNotReached):
        client.start_execution(7, marker=0)
    assert script.count('POST', '/executions') == 1


def test_start_when_reconcile_is_impossible_raises_unavailable(client):
    script = Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions'): [LOST], ('GET', '/executions'): [LOST]})
    with pytest.raises(dx.DelphixUnavailable) as caught:
        client.start_execution(7, marker=5)
    assert caught.value.outcome_unknown and 'find_execution_after(7, 5)' in str(caught.value)
    assert script.count('POST', '/executions') == 1
    assert script.count('GET', '/executions') == 4  # one reconcile with its safe retries, then it gives up


def test_the_engine_date_header_measures_skew_for_reporting_only(client):
    dated = answer(201, execution(9))
    dated.headers['Date'] = 'Thu, 01 Jan 2026 12:05:00 GMT'
    real_send = dx.requests.Session.request
    try:
        dx.requests.Session.request = lambda *_args, **_kwargs: dated
        assert client._send('POST', client.base + '/executions', None, {'jobId': 7}) is dated  # pylint: disable=protected-access
    finally:
        dx.requests.Session.request = real_send
    expected = datetime(2026, 1, 1, 12, 5, tzinfo=timezone.utc).timestamp() - time.time()
    assert client.clock_offset is not None and abs(client.clock_offset - expected) < 5


def test_pagination_follows_pages_and_stops_on_out_of_range(client):
    client.page_size = 2
    first = {'_pageInfo': {'numberOnPage': 2, 'total': 5}, 'responseList': [execution(1), execution(2)]}
    second = {'_pageInfo': {'numberOnPage': 2, 'total': 5}, 'responseList': [execution(3), execution(4)]}
    gone = answer(400, {'errorMessage': 'The page number 3 is outside of the acceptable range. The last page is 2.'})
    script = Script(client, {('POST', '/login'): [LOGIN], ('GET', '/executions'): [answer(200, first), answer(200, second), gone]})
    assert [e.execution_id for e in client.list_executions(job_id=7, status='RUNNING')] == [1, 2, 3, 4]
    params = [call[2] for call in script.calls if call[1] == '/executions']
    assert [p['page_number'] for p in params] == [1, 2, 3]
    assert params[0] == {'job_id': 7, 'execution_status': 'RUNNING', 'page_number': 1, 'page_size': 2}


def test_resolve_job_per_environment_and_cached(client):
    jobs_all = page([{'maskingJobId': 11, 'jobName': 'a'}, {'maskingJobId': 21, 'jobName': 'a'}, {'maskingJobId': 12, 'jobName': 'b'}])
    envs = page([{'environmentId': 1, 'environmentName': 'dev'}, {'environmentId': 2, 'environmentName': 'prod'}])

    def jobs(method, url, params, body):
        script.calls.append((method, url.split('/masking/api', 1)[1], params, body))
        env = (params or {}).get('environment_id')
        lists = {None: jobs_all, 1: page([{'maskingJobId': 11, 'jobName': 'a'}, {'maskingJobId': 12, 'jobName': 'b'}]),
                 2: page([{'maskingJobId': 21, 'jobName': 'a'}])}
        return answer(200, lists[env])

    script = Script(client, {('POST', '/login'): [LOGIN], ('GET', '/environments'): [answer(200, envs)]})
    original = script.send
    client._send = lambda m, u, p, b: jobs(m, u, p, b) if u.endswith('/masking-jobs') else original(m, u, p, b)  # pylint: disable=protected-access
    assert client.resolve_job('b') == 12
    assert client.resolve_job('a', 'prod') == 21
    assert client.resolve_job('a', '1') == 11  # environment id works too
    with pytest.raises(dx.DelphixAmbiguous) as caught:
        client.resolve_job('a')
    assert 'dev' in str(caught.value) and 'prod' in str(caught.value)
    with pytest.raises(dx.DelphixNotFound):
        client.resolve_job('zzz')
    before = len(script.calls)
    assert client.resolve_job('a', 'prod') == 21
    assert len(script.calls) == before  # cached


def test_cancel_sends_expected_status_and_graceful_in_the_query(client):
    script = Script(client, {('POST', '/login'): [LOGIN],
                             ('POST', '/executions/4/cancel'): [answer(200, execution(4, 'CANCELLED'))]})
    assert client.cancel_execution(4, expected_status='RUNNING').status == 'CANCELLED'
    assert script.calls[-1][2:] == ({'expectedStatus': 'RUNNING'}, None)   # query, no body: an engine ignores a body
    client.cancel_execution(4, expected_status='QUEUED', graceful=True)
    assert script.calls[-1][2:] == ({'expectedStatus': 'QUEUED', 'graceful': 'true'}, None)


def test_cancel_lost_answer_is_settled_by_reading_back(client):
    Script(client, {('POST', '/login'): [LOGIN], ('POST', '/executions/4/cancel'): [LOST],
                    ('GET', '/executions/4'): [answer(200, execution(4, 'CANCELLED'))]})
    assert client.cancel_execution(4).status == 'CANCELLED'


def test_cancel_of_a_finished_execution_is_a_conflict(client):
    Script(client, {('POST', '/login'): [LOGIN],
                    ('POST', '/executions/4/cancel'): [answer(409, {'errorMessage': 'already finished'})],
                    ('GET', '/executions/4'): [answer(200, execution(4, 'SUCCEEDED'))]})
    with pytest.raises(dx.DelphixConflict):
        client.cancel_execution(4)


def test_logout_forgets_the_token(client):
    script = Script(client, {('POST', '/login'): [LOGIN], ('PUT', '/logout'): [answer(204)]})
    client.login()
    client.logout()
    assert client._token is None  # pylint: disable=protected-access
    client.logout()   # nothing to end: no call
    assert script.count('PUT', '/logout') == 1


@pytest.mark.parametrize('failure', [answer(401, {'errorMessage': 'Invalid authorization'}), REFUSED,
                                     answer(500, {'errorMessage': 'boom'})])
def test_logout_never_raises(client, failure):
    Script(client, {('POST', '/login'): [LOGIN], ('PUT', '/logout'): [failure]})
    client.login()
    client.logout()
    assert client._token is None  # pylint: disable=protected-access


def test_non_json_2xx_is_an_error(client):
    bad = requests.Response()
    bad.status_code, bad._content = 200, b'<html>'  # pylint: disable=protected-access
    Script(client, {('POST', '/login'): [LOGIN], ('GET', '/system-information'): [bad]})
    with pytest.raises(dx.DelphixError):
        client.system_information()
