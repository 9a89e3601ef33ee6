"""The Delphix driver: start markers, batched refresh (fewer API calls, never a wrong state), job catalogue,
error mapping, logout."""
import collections
import datetime

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import delphix
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixDriverFactory, DelphixEngineDriver
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineAuthError, EngineConflict, EngineJobAmbiguous, EngineJobNotFound, EngineNotReached, EngineUnavailable,
    MissingCredentials)

UTC = datetime.timezone.utc


def execution(execution_id, status):
    return delphix.Execution(execution_id=execution_id, job_id=5, status=status, rows_masked=None, rows_total=None,
                             submit_time=datetime.datetime(2026, 1, 1, tzinfo=UTC), start_time=None, end_time=None, raw={})


class FakeClient:
    base = 'http://fake/masking/api'

    def __init__(self, statuses, fail=None, history=()):
        self.statuses = statuses          # execution id -> status
        self.calls = collections.Counter()
        self.fail = fail
        self.history = list(history)      # execution ids of the job on the engine
        self.markers = []

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
        if name == 'dup' and environment is None:
            raise delphix.DelphixAmbiguous('masking job dup exists in several environments')
        return 99

    def execution_marker(self, job_id):
        self.calls['marker'] += 1
        if self.fail == 'marker':
            raise delphix.DelphixUnavailable('connection reset', outcome_unknown=True)
        return max(self.history or [0])

    def find_execution_after(self, job_id, marker):
        self.calls['find'] += 1
        if self.fail == 'find':
            raise delphix.DelphixNotReached('connection refused')
        newer = [i for i in self.history if i > marker]
        return execution(min(newer), 'RUNNING') if newer else None

    def start_execution(self, job_id, marker=None):
        self.calls['start'] += 1
        self.markers.append(marker)
        if self.fail in (None, 'find'):
            self.history.append(max(self.history or [0]) + 1)
            return execution(self.history[-1], 'RUNNING')
        raise {'unavailable': delphix.DelphixUnavailable('reset'), 'conflict': delphix.DelphixConflict('409'),
               'auth': delphix.DelphixAuthError('401'), 'other': delphix.DelphixError('HTTP 400', status=400),
               'refused': delphix.DelphixNotReached('refused')}[self.fail]

    def logout(self):
        self.calls['logout'] += 1
        if self.fail == 'logout':
            raise RuntimeError('anything at all')


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
    with pytest.raises(delphix.DelphixAmbiguous):
        driver._job_id({'job_name': 'dup'})                              # pylint: disable=protected-access
    assert driver._job_id({'job_name': 'a', 'environment': 'prod'}) == 99  # pylint: disable=protected-access
    assert client.calls == {'list_jobs': 1, 'resolve': 2}


@pytest.mark.parametrize('fail, error', [('unavailable', EngineUnavailable), ('conflict', EngineConflict),
                                         ('auth', EngineAuthError), ('other', DriverError), ('refused', EngineNotReached),
                                         ('marker', EngineNotReached)])
def test_client_errors_map_to_what_is_safe_next(fail, error):
    driver = DelphixEngineDriver('e', FakeClient({}, fail=fail), delphix)
    with pytest.raises(error) as caught:
        driver.start({'id': 1, 'job_name': 'a'})
    assert type(caught.value) is error   # pylint: disable=unidiomatic-typecheck  # EngineNotReached is an EngineUnavailable
    with pytest.raises(EngineJobNotFound):
        driver.start({'id': 2, 'job_name': 'missing', 'environment': 'x'})
    with pytest.raises(EngineJobAmbiguous):
        driver.start({'id': 3, 'job_name': 'dup'})


def test_start_uses_the_recorded_marker_or_takes_one_right_before_the_post():
    client = FakeClient({}, history=[40, 41])
    driver = DelphixEngineDriver('e', client, delphix)
    assert driver.start_marker({'job_name': 'a'}) == 41
    assert driver.start({'id': 1, 'job_name': 'a', 'start_marker': 41}).execution_id == 42
    assert client.markers == [41] and client.calls['marker'] == 1
    assert driver.start({'id': 2, 'job_name': 'a'}).execution_id == 43
    assert client.markers == [41, 42] and client.calls['marker'] == 2


def test_reconcile_adopts_only_above_the_marker():
    client = FakeClient({}, history=[7, 9, 12])
    driver = DelphixEngineDriver('e', client, delphix)
    assert driver.reconcile({'id': 1, 'job_name': 'a', 'start_marker': 9}).execution_id == 12
    assert driver.reconcile({'id': 1, 'job_name': 'a', 'start_marker': 12}) is None


def test_reconcile_without_a_marker_refuses_to_guess_unless_this_process_took_it():
    client = FakeClient({}, history=[7])
    driver = DelphixEngineDriver('e', client, delphix)
    with pytest.raises(DriverError) as caught:
        driver.reconcile({'id': 77, 'job_name': 'a'})
    assert 'no start marker' in str(caught.value) and type(caught.value) is DriverError  # pylint: disable=unidiomatic-typecheck
    started = driver.start({'id': 77, 'job_name': 'a'})
    assert driver.reconcile({'id': 77, 'job_name': 'a'}).execution_id == started.execution_id


def test_reconcile_after_a_start_that_never_posted_finds_nothing_to_adopt():
    client = FakeClient({}, fail='marker', history=[7])
    driver = DelphixEngineDriver('e', client, delphix)
    with pytest.raises(EngineNotReached):
        driver.start({'id': 78, 'job_name': 'a'})
    assert driver.reconcile({'id': 78, 'job_name': 'a'}) is None and client.calls['find'] == 0


def test_a_reconcile_that_cannot_reach_the_engine_proves_nothing():
    driver = DelphixEngineDriver('e', FakeClient({}, fail='find', history=[3]), delphix)
    with pytest.raises(EngineUnavailable) as caught:
        driver.reconcile({'id': 1, 'job_name': 'a', 'start_marker': 3})
    assert not isinstance(caught.value, EngineNotReached)


@pytest.mark.parametrize('fail', [None, 'logout'])
def test_close_logs_out_and_never_raises(fail):
    client = FakeClient({}, fail=fail)
    DelphixEngineDriver('e', client, delphix).close()
    assert client.calls['logout'] == 1


def test_translated_methods_keep_their_names():
    assert DelphixEngineDriver.start.__name__ == 'start' and 'marker' in DelphixEngineDriver.start.__doc__


def test_factory_needs_credentials_and_keeps_them_out_of_sight():
    factory = DelphixDriverFactory(timeout=1)
    with pytest.raises(MissingCredentials):
        factory({'name': 'e', 'url': 'http://127.0.0.1:9'}, None)
    driver = factory({'name': 'e', 'url': 'http://127.0.0.1:9', 'verify': True}, {'username': 'u', 'password': 'hunter2'})
    assert 'hunter2' not in repr(driver.client)


@pytest.mark.parametrize('offset, shift', [(-300.0, -300.0), (30.0, 30.0), (0.8, 0.0), (None, 0.0)])
def test_engine_times_are_shown_on_our_clock(offset, shift):
    client = FakeClient({})
    client.clock_offset = offset
    started = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    info = DelphixEngineDriver('e', client, delphix)._info(delphix.Execution(  # pylint: disable=protected-access
        execution_id=1, job_id=5, status='SUCCEEDED', start_time=started, end_time=started + datetime.timedelta(seconds=9)))
    assert info.start_time == started.timestamp() - shift and info.end_time - info.start_time == 9.0
