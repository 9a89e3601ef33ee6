"""The Delphix driver: batched refresh (fewer API calls, never a wrong state), job catalogue, error mapping."""
import collections
import datetime

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import delphix
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixDriverFactory, DelphixEngineDriver
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineAuthError, EngineConflict, EngineJobNotFound, EngineUnavailable, MissingCredentials)

UTC = datetime.timezone.utc


def execution(execution_id, status):
    return delphix.Execution(execution_id=execution_id, job_id=5, status=status, rows_masked=None, rows_total=None,
                             submit_time=datetime.datetime(2026, 1, 1, tzinfo=UTC), start_time=None, end_time=None, raw={})


class FakeClient:
    def __init__(self, statuses, fail=None):
        self.statuses = statuses          # execution id -> status
        self.calls = collections.Counter()
        self.fail = fail

    def list_executions(self, job_id=None, status=None):
        self.calls['list'] += 1
        if self.fail == 'list':
            raise delphix.DelphixError('HTTP 400: unknown execution_status', status=400)
        return [execution(i, s) for i, s in sorted(self.statuses.items()) if s == status]

    def get_execution(self, execution_id):
        self.calls['get'] += 1
        return execution(execution_id, self.statuses[execution_id])

    def list_jobs(self):
        self.calls['list_jobs'] += 1
        return [{'jobName': 'a', 'maskingJobId': 11}, {'jobName': 'dup', 'maskingJobId': 12}, {'jobName': 'dup', 'maskingJobId': 13}]

    def resolve_job(self, name, environment=None):
        self.calls['resolve'] += 1
        if name == 'missing':
            raise delphix.DelphixNotFound('masking job %r does not exist' % name)
        return 99

    def start_execution(self, job_id, not_before=None):
        self.calls['start'] += 1
        assert not_before.tzinfo is not None
        raise {'unavailable': delphix.DelphixUnavailable('reset'), 'conflict': delphix.DelphixConflict('409'),
               'auth': delphix.DelphixAuthError('401'), 'other': delphix.DelphixError('HTTP 400', status=400)}[self.fail]


def test_refresh_lists_once_and_reads_only_what_the_lists_miss():
    client = FakeClient({1: 'RUNNING', 2: 'RUNNING', 3: 'QUEUED', 4: 'SUCCEEDED', 5: 'RUNNING'})
    driver = DelphixEngineDriver('e', client, delphix)
    found = driver.statuses({1: 'RUNNING', 2: 'RUNNING', 3: 'QUEUED', 4: 'RUNNING', 5: 'QUEUED'})
    assert dict((i, info.status) for i, info in found.items()) == {1: 'RUNNING', 2: 'RUNNING', 3: 'QUEUED', 4: 'SUCCEEDED', 5: 'RUNNING'}
    assert client.calls == {'list': 2, 'get': 1}    # RUNNING and QUEUED lists, one GET for the finished one


def test_few_jobs_are_read_one_by_one():
    client = FakeClient({1: 'RUNNING', 2: 'FAILED'})
    found = DelphixEngineDriver('e', client, delphix).statuses({1: 'RUNNING', 2: 'RUNNING'})
    assert [found[1].status, found[2].status] == ['RUNNING', 'FAILED'] and client.calls == {'get': 2}


def test_an_api_without_the_status_filter_falls_back_for_good():
    client = FakeClient({1: 'RUNNING', 2: 'RUNNING', 3: 'RUNNING'}, fail='list')
    driver = DelphixEngineDriver('e', client, delphix)
    assert len(driver.statuses({1: 'RUNNING', 2: 'RUNNING', 3: 'RUNNING'})) == 3
    assert len(driver.statuses({1: 'RUNNING', 2: 'RUNNING', 3: 'RUNNING'})) == 3
    assert client.calls == {'list': 1, 'get': 6}


def test_job_ids_come_from_one_catalogue_list():
    client = FakeClient({})
    driver = DelphixEngineDriver('e', client, delphix)
    assert driver._job_id({'job_name': 'a'}) == 11                       # pylint: disable=protected-access
    assert driver._job_id({'job_name': 'a'}) == 11                       # pylint: disable=protected-access
    assert driver._job_id({'job_name': 'dup'}) == 99                     # ambiguous: the client's resolver decides
    assert driver._job_id({'job_name': 'a', 'environment': 'prod'}) == 99  # pylint: disable=protected-access
    assert client.calls == {'list_jobs': 1, 'resolve': 2}


@pytest.mark.parametrize('fail, error', [('unavailable', EngineUnavailable), ('conflict', EngineConflict),
                                         ('auth', EngineAuthError), ('other', DriverError)])
def test_client_errors_map_to_what_is_safe_next(fail, error):
    driver = DelphixEngineDriver('e', FakeClient({}, fail=fail), delphix)
    with pytest.raises(error):
        driver.start({'job_name': 'a', 'not_before': 1000.0})
    with pytest.raises(EngineJobNotFound):
        driver.start({'job_name': 'missing', 'environment': 'x', 'not_before': 1000.0})


def test_factory_needs_credentials_and_keeps_them_out_of_sight():
    factory = DelphixDriverFactory(timeout=1)
    with pytest.raises(MissingCredentials):
        factory({'name': 'e', 'url': 'http://127.0.0.1:9'}, None)
    driver = factory({'name': 'e', 'url': 'http://127.0.0.1:9', 'verify': True}, {'username': 'u', 'password': 'hunter2'})
    assert 'hunter2' not in repr(driver.client)
