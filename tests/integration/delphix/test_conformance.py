"""The simulator's raw HTTP answers against the documented shapes (no client in the loop)."""
import re
import time
import urllib.error
from datetime import datetime
from email.utils import parsedate_to_datetime

import jsonschema
import pytest
import requests

from tests.integration.delphix import shapes
from tests.integration.delphix.helpers import PASSWORD, USER
from tests.support.delphix_sim.launcher import seed_config, start_simulator

JOBS = [{'name': 'hold', 'duration': 60, 'rows': 5000}, {'name': 'queued', 'duration': 0.05},
        {'name': 'ok', 'duration': 0.05}, {'name': 'warn', 'duration': 0.05, 'outcome': 'WARNING'},
        {'name': 'fail', 'duration': 0.05, 'outcome': 'FAILED'}, {'name': 'ok', 'environment': 'prod', 'duration': 0.05}]


def check(body, schema):
    jsonschema.validate(body, schema)
    assert_no_nulls(body)


def assert_no_nulls(value, where='$'):
    """Null fields are omitted by the engine."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert item is not None, '%s.%s is null' % (where, key)
            assert_no_nulls(item, '%s.%s' % (where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_no_nulls(item, '%s[%d]' % (where, index))


class Raw:
    """Plain HTTP calls to one simulated engine."""

    def __init__(self, sim):
        self.base = sim.url
        self.http = requests.Session()
        answer = self.http.post(self.base + '/login', json={'username': USER, 'password': PASSWORD}, timeout=5)
        self.login_answer = answer
        self.token = answer.json()['Authorization']

    def call(self, method, path, token=True, header='Authorization', **kwargs):
        headers = {header: self.token} if token else {}
        return self.http.request(method, self.base + path, headers=headers, timeout=5, **kwargs)

    def ok(self, method, path, status=200, **kwargs):
        answer = self.call(method, path, **kwargs)
        assert answer.status_code == status, answer.text
        return answer.json() if answer.content else None


@pytest.fixture(scope='module', name='raw')
def raw_fixture():
    sim = start_simulator(seed_config('conform', JOBS, slots=1))
    yield Raw(sim)
    sim.stop()


def job_ids(raw):
    listed = raw.ok('GET', '/masking-jobs')['responseList']
    return {job['jobName']: job['maskingJobId'] for job in listed}


def test_login_shape_and_status(raw):
    assert raw.login_answer.status_code == 201   # the spec's code; 200 is selectable (post_status)
    check(raw.login_answer.json(), shapes.LOGIN)


def test_catalogue_shapes(raw):
    apps = raw.ok('GET', '/applications')
    check(apps, shapes.page_of(shapes.APPLICATION))
    app_id = apps['responseList'][0]['applicationId']
    envs = raw.ok('GET', '/environments', params={'application_id': app_id})
    check(envs, shapes.page_of(shapes.ENVIRONMENT))
    assert {e['environmentName'] for e in envs['responseList']} == {'env', 'prod'}
    for env in envs['responseList']:
        jobs = raw.ok('GET', '/masking-jobs', params={'environment_id': env['environmentId']})
        check(jobs, shapes.page_of(shapes.MASKING_JOB))
        for job in jobs['responseList']:
            check(raw.ok('GET', '/masking-jobs/%d' % job['maskingJobId']), shapes.MASKING_JOB)
    check(raw.ok('GET', '/system-information'), shapes.SYSTEM_INFORMATION)
    settings = raw.ok('GET', '/application-settings', params={'setting_group': 'general'})
    check(settings, shapes.page_of(shapes.SETTING))
    assert 'NumSimulJobsAllowed' in {s['settingName'] for s in settings['responseList']}


def test_execution_shapes_through_a_life(raw):
    ids = job_ids(raw)
    running = raw.ok('POST', '/executions', 201, json={'jobId': ids['hold']})
    check(running, shapes.EXECUTION_RUNNING)
    assert running['rowsTotal'] == -1  # counting rows
    queued = raw.ok('POST', '/executions', 201, json={'jobId': ids['queued']})
    check(queued, shapes.EXECUTION_QUEUED)
    conflict = raw.call('POST', '/executions', json={'jobId': ids['hold']})
    assert conflict.status_code == 409
    check(conflict.json(), shapes.ERROR)
    # A guard in the BODY is ignored, as a real engine ignores it: this QUEUED guard does not stop the cancel...
    body_guarded = raw.call('POST', '/executions/%d/cancel' % queued['executionId'], json={'expectedStatus': 'RUNNING'})
    assert body_guarded.status_code == 200 and body_guarded.json()['status'] == 'CANCELLED'
    queued = raw.ok('POST', '/executions', 201, json={'jobId': ids['queued']})
    # ...while the same guard in the QUERY is honoured: a QUEUED execution is not RUNNING.
    refused = raw.call('POST', '/executions/%d/cancel' % queued['executionId'], params={'expectedStatus': 'RUNNING'})
    assert refused.status_code == 409
    check(refused.json(), shapes.ERROR)
    cancelled = raw.ok('POST', '/executions/%d/cancel' % running['executionId'],
                       params={'expectedStatus': 'RUNNING', 'graceful': 'false'})
    check(cancelled, shapes.EXECUTION_DONE)
    assert cancelled['status'] == 'CANCELLED'
    done = {}
    for name in ('warn', 'fail'):
        done[name] = raw.ok('POST', '/executions', 201, json={'jobId': ids[name]})['executionId']
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answers = [raw.ok('GET', '/executions/%d' % i) for i in [queued['executionId']] + list(done.values())]
        if all(a['status'] in ('SUCCEEDED', 'WARNING', 'FAILED') for a in answers):
            break
        time.sleep(0.02)
    for answer in answers:
        check(answer, shapes.EXECUTION_DONE)
    assert [a['status'] for a in answers] == ['SUCCEEDED', 'WARNING', 'FAILED']
    listed = raw.ok('GET', '/executions', params={'job_id': ids['warn']})
    check(listed, shapes.page_of(shapes.EXECUTION_DONE))
    events = raw.ok('GET', '/execution-events', params={'execution_id': done['warn']})
    check(events, shapes.page_of(shapes.EVENT))
    assert events['responseList'][0]['eventType'] == 'UNMASKED_DATA'
    assert re.match(shapes.DATE, events['responseList'][0]['timeStamp'])   # camelCase S, as the engine spells it
    components = raw.ok('GET', '/execution-components', params={'execution_id': done['warn']})
    check(components, shapes.page_of(shapes.COMPONENT))


def test_paging_and_the_out_of_range_error(raw):
    everything = raw.ok('GET', '/masking-jobs')
    total = everything['_pageInfo']['total']
    assert total == len(everything['responseList']) == 6
    seen = []
    for number in (1, 2, 3):
        chunk = raw.ok('GET', '/masking-jobs', params={'page_number': number, 'page_size': 2})
        check(chunk, shapes.page_of(shapes.MASKING_JOB))
        assert chunk['_pageInfo'] == {'numberOnPage': 2, 'total': total}
        seen += chunk['responseList']
    assert seen == everything['responseList']
    beyond = raw.call('GET', '/masking-jobs', params={'page_number': 4, 'page_size': 2})
    assert beyond.status_code == 400
    check(beyond.json(), shapes.ERROR)
    assert 'is outside of the acceptable range. The last page is 3' in beyond.json()['errorMessage']


@pytest.mark.parametrize('method, path, kwargs, status', [
    ('GET', '/executions/987654', {}, 404),
    ('GET', '/masking-jobs/987654', {}, 404),
    ('POST', '/executions', {'json': {'jobId': 987654}}, 404),
    ('POST', '/executions', {'json': {}}, 400),
    ('GET', '/executions', {'params': {'page_number': 0}}, 400),
    ('GET', '/executions', {'params': {'execution_status': 'DONE'}}, 400),
    ('GET', '/executions', {'params': {'execution_status': 'WARNING'}}, 400),   # API 5.1.47's filter has no WARNING
    ('POST', '/executions/1/cancel', {'params': {'expectedStatus': 'FINISHED'}}, 400),
    ('POST', '/executions/1/cancel', {'params': {'graceful': 'maybe'}}, 400),
    ('DELETE', '/executions', {}, 405),
    ('GET', '/no-such-thing', {}, 404),
])
def test_error_shapes_and_codes(raw, method, path, kwargs, status):
    answer = raw.call(method, path, **kwargs)
    assert answer.status_code == status
    check(answer.json(), shapes.ERROR)


def test_auth_rules(raw):
    assert raw.call('GET', '/executions', token=False).status_code == 401
    assert raw.call('GET', '/executions', header='authorization').status_code == 200  # case-insensitive name
    bearer = raw.http.get(raw.base + '/executions', headers={'Authorization': 'Bearer ' + raw.token}, timeout=5)
    assert bearer.status_code == 401  # the raw token, no "Bearer"
    check(bearer.json(), shapes.ERROR)
    refused = raw.http.post(raw.base + '/login', json={'username': USER, 'password': 'wrong'}, timeout=5)
    assert refused.status_code == 401
    check(refused.json(), shapes.ERROR)
    other = Raw.__new__(Raw)
    other.base, other.http = raw.base, requests.Session()
    other.token = other.http.post(raw.base + '/login', json={'username': USER, 'password': PASSWORD},
                                  timeout=5).json()['Authorization']
    assert other.call('PUT', '/logout').status_code == 204
    again = other.call('PUT', '/logout')
    assert again.status_code == 401
    assert 'expired' in again.json()['errorMessage']


def test_versioned_prefix(raw):
    assert raw.call('GET', '/v5.1.44/system-information').status_code == 200
    base = raw.base[:-len('/masking/api')]
    pinned = raw.http.get(base + '/masking/api/v5.1.8/masking-jobs', headers={'Authorization': raw.token}, timeout=5)
    check(pinned.json(), shapes.page_of(shapes.MASKING_JOB))


def test_post_status_200_when_configured(sims):
    sim = sims(seed_config('created', [{'name': 'a', 'duration': 0.05}], post_status=200))
    http = requests.Session()
    login = http.post(sim.url + '/login', json={'username': USER, 'password': PASSWORD}, timeout=5)
    assert login.status_code == 200
    token = login.json()['Authorization']
    job = http.get(sim.url + '/masking-jobs', headers={'Authorization': token}, timeout=5).json()['responseList'][0]
    started = http.post(sim.url + '/executions', json={'jobId': job['maskingJobId']}, headers={'Authorization': token},
                        timeout=5)
    assert started.status_code == 200
    check(started.json(), shapes.EXECUTION)


@pytest.mark.parametrize('style, suffix', [('iso-z', 'Z'), ('iso-colon', '+00:00')])
def test_other_date_styles_are_configurable(sims, style, suffix):
    sim = sims(seed_config('dates', [{'name': 'a', 'duration': 0.05}], date_style=style))
    raw = Raw(sim)
    started = raw.ok('POST', '/executions', 201, json={'jobId': job_ids(raw)['a']})
    assert started['submitTime'].endswith(suffix)


@pytest.mark.parametrize('offset', [-300.0, 30.0])
def test_the_engine_keeps_its_own_clock(sims, offset):
    # A double that shared the client's clock could never show a skew bug (issue 10, finding 1).
    sim = sims(seed_config('skewed', [{'name': 'a', 'duration': 0.05}], clock_offset_s=offset))
    raw = Raw(sim)
    before = time.time()
    started = raw.ok('POST', '/executions', 201, json={'jobId': job_ids(raw)['a']})
    after = time.time()
    submitted = datetime.strptime(started['submitTime'], '%Y-%m-%dT%H:%M:%S.%f%z').timestamp()
    assert before + offset - 0.01 <= submitted <= after + offset + 0.01
    date = parsedate_to_datetime(raw.call('GET', '/system-information').headers['Date']).timestamp()
    assert before + offset - 1.5 <= date <= time.time() + offset + 1.5   # the Date header too (1 s resolution)


def test_execution_ids_only_grow(sims):
    sim = sims(seed_config('ids', [{'name': 'a', 'duration': 0.01}, {'name': 'b', 'duration': 0.01}]))
    raw = Raw(sim)
    ids = job_ids(raw)
    seen = []
    for name in 'abab':
        seen.append(raw.ok('POST', '/executions', 201, json={'jobId': ids[name]})['executionId'])
        time.sleep(0.05)
    assert seen == sorted(seen) and len(set(seen)) == 4


def test_capacity_settings_system_information_and_executions_started_outside(sims):
    """What discovery reads: NumSimulJobsAllowed 0 means cores - 1; MaximumMemoryForJobs absent from the settings
    when unset, and then totalAllocatedMemoryForJobs is the budget the engine enforces; every settings group pages;
    an execution started outside (its UI) lists like any other, and changes made on the engine show at once."""
    sim = sims(seed_config('capacity', [{'name': 'a', 'duration': 60, 'max_memory': 600},
                                        {'name': 'b', 'duration': 60, 'max_memory': 600},
                                        {'name': 'c', 'duration': 60, 'max_memory': 600, 'environment': 'prod'}],
                           slots=0, total_available_cores=3, total_allocated_memory_mb=1000))
    raw = Raw(sim)
    settings = raw.ok('GET', '/application-settings')
    check(settings, shapes.page_of(shapes.SETTING))
    names = {s['settingName']: s['settingValue'] for s in settings['responseList']}
    assert names['NumSimulJobsAllowed'] == '0' and 'MaximumMemoryForJobs' not in names
    system = raw.ok('GET', '/system-information')
    check(system, shapes.SYSTEM_INFORMATION)
    assert (system['totalAvailableCores'], system['totalAllocatedMemoryForJobs']) == (3, 1000)
    beyond = raw.call('GET', '/application-settings', params={'page_number': 3, 'page_size': 1})
    assert beyond.status_code == 400 and 'The last page is 2' in beyond.json()['errorMessage']
    outside = sim.start_outside('a')
    check(outside, shapes.EXECUTION_RUNNING)
    ours = raw.ok('POST', '/executions', 201, json={'jobId': raw.ok('GET', '/masking-jobs')['responseList'][1]['maskingJobId']})
    assert ours['status'] == 'QUEUED'            # 2 slots (3 cores - 1), but 600 + 600 MB > 1000 MB
    running = raw.ok('GET', '/executions', params={'execution_status': 'RUNNING'})['responseList']
    assert [e['executionId'] for e in running] == [outside['executionId']]
    sim.set_settings({'max_memory_for_jobs': 2000})
    names = {s['settingName']: s['settingValue'] for s in raw.ok('GET', '/application-settings')['responseList']}
    assert names['MaximumMemoryForJobs'] == '2000'
    assert raw.ok('GET', '/executions/%d' % ours['executionId'])['status'] == 'RUNNING'
    with pytest.raises(urllib.error.HTTPError):
        sim.start_outside('no_such_job')
    record = sim.record()
    assert [e['origin'] for e in record['executions']] == ['outside', 'api']
