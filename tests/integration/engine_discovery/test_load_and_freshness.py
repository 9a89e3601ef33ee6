"""Load the queue did not start, and job lists that change on the engine: the real queue, real simulators."""
import time

import pytest
import requests

from tests.integration.engine_discovery.conftest import catalogue_config

pytestmark = pytest.mark.timeout(300)

FOREIGN_REASON = '1 of 1 slots used by an execution started outside the queue'


def test_a_foreign_execution_delays_placement_and_is_named_in_the_reason(runner, sims):
    sim = sims(catalogue_config('load-a', slots=1, jobs_per_environment=1, extra_jobs=[
        ('dev', {'name': 'outside_run', 'duration': 120.0, 'max_memory': 256}),
        ('dev', {'name': 'ours', 'duration': 0.2, 'max_memory': 256})]))
    rc, out, _res = runner.play([{'name': 'Discover', 'orchestra.fleet.masking_engine': {
        'name': 'load-a', 'url': sim.url, 'discover': True}}])
    assert rc == 0, out
    outside = sim.start_outside('outside_run')        # someone starts a job in the engine's UI
    rc, out, res = runner.play([
        {'name': 'Queue ours', 'orchestra.fleet.masking_job': {'job_name': 'ours', 'request_id': 'r-ours', 'wait': False}},
        # the scheduler has not seen the foreign run yet: it places ours on the engine ...
        {'name': 'Schedule', 'orchestra.fleet.masking_schedule': {}, 'register': 'placed'},
        # ... the poll step lists the engine's executions first and gives the slot back instead of POSTing
        {'name': 'Poll', 'orchestra.fleet.masking_poll': {}, 'register': 'polled'},
        {'name': 'Schedule again', 'orchestra.fleet.masking_schedule': {}, 'register': 'held'},
        {'name': 'Why does it wait?', 'orchestra.fleet.masking_queue_info': {}, 'register': 'info'},
        {'name': 'Engine info', 'orchestra.fleet.masking_engine_info': {}, 'register': 'engine_info'},
    ], register=['placed', 'polled', 'held', 'info', 'engine_info'])
    assert rc == 0, out
    assert res['placed']['placed'] == 1, res['placed']
    assert res['polled']['step']['requeued'] == 1, res['polled'] and res['polled']['step']['started'] == 0
    assert res['held']['placed'] == 0
    job = res['info']['jobs'][0]
    assert job['state'] == 'QUEUED' and FOREIGN_REASON in job['reason']
    assert 'execution %d of outside_run' % outside['executionId'] in job['reason']
    engine = res['info']['engines'][0]
    assert engine['foreign']['slots'] == 1 and engine['foreign']['memory_mb'] == 256
    assert res['info']['summary']['engines']['load-a']['foreign_slots'] == 1
    assert [e['execution_id'] for e in res['engine_info']['engines'][0]['executions']['foreign']] == [outside['executionId']], res['engine_info']
    _api(sim, 'POST', '/executions/%d/cancel' % outside['executionId'])   # ... and stops it there
    rc, out, res = runner.play([{'name': 'Wait for ours', 'orchestra.fleet.masking_job': {
        'job_name': 'ours', 'request_id': 'r-ours', 'timeout': 60, 'poll_interval': 0.2}, 'register': 'done'}],
        register=['done'])
    assert rc == 0, out
    assert res['done']['state'] == 'SUCCEEDED'
    record = sim.record()
    runs = dict((run['jobName'], run) for run in record['executions'])
    assert runs['ours']['started'] >= runs['outside_run']['ended']   # never POSTed into the full engine
    assert record['max_concurrency'] == 1 and runs['outside_run']['origin'] == 'outside'


def test_a_job_renamed_or_deleted_on_the_engine_waits_with_a_reason_instead_of_failing(runner, sims):
    sim = sims(catalogue_config('fresh-a', slots=2, jobs_per_environment=1, extra_jobs=[
        ('dev', {'name': 'renamed_later', 'duration': 0.2}), ('dev', {'name': 'deleted_later', 'duration': 0.2})]))
    rc, out, res = runner.play([
        {'name': 'Discover', 'orchestra.fleet.masking_engine': {'name': 'fresh-a', 'url': sim.url, 'discover': True},
         'register': 'found'},
        {'name': 'Queue two', 'orchestra.fleet.masking_job': {'job_name': '{{ item }}', 'request_id': 'r-{{ item }}',
                                                              'wait': False},
         'loop': ['renamed_later', 'deleted_later']},
        {'name': 'Schedule', 'orchestra.fleet.masking_schedule': {}, 'register': 'placed'},
    ], register=['found', 'placed'])
    assert rc == 0, out
    assert res['placed']['placed'] == 2
    ids = dict((job['jobName'], job['maskingJobId']) for job in _jobs(sim))
    sim.rename_job(ids['renamed_later'], 'renamed_now')
    sim.delete_job(ids['deleted_later'])
    rc, out, res = runner.play([
        {'name': 'Poll', 'orchestra.fleet.masking_poll': {}, 'register': 'polled'},
        {'name': 'Queue', 'orchestra.fleet.masking_queue_info': {}, 'register': 'info'},
    ], register=['polled', 'info'])
    assert rc == 0, out
    assert res['polled']['step']['requeued'] == 2 and res['polled']['step']['start_errors'] == 0
    jobs = dict((job['job_name'], job) for job in res['info']['jobs'])
    for name in ('renamed_later', 'deleted_later'):
        assert jobs[name]['state'] == 'QUEUED', jobs[name]
        assert jobs[name]['reason'].startswith('no engine carries job %s' % name)
        assert 'not in the job lists read from engines fresh-a' in jobs[name]['reason']
    engine = res['info']['engines'][0]
    names = [entry['name'] if isinstance(entry, dict) else entry for entry in engine['jobs']]
    assert 'renamed_now' in names and 'renamed_later' not in names and 'deleted_later' not in names
    assert [run for run in sim.record()['executions'] if run['jobName'] != 'mask_dev_000'] == []


def test_the_poll_step_reads_a_discovered_job_list_again_at_its_interval(tmp_path, sims):
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue
    sim = sims(catalogue_config('fresh-b', slots=2, jobs_per_environment=1))
    clock = [time.time()]
    queue = MaskingQueue('sqlite:///' + str(tmp_path / 'q.db'), credentials={'*': {'username': 'admin', 'password': 'Admin-12'}},
                         clock=lambda: clock[0], catalogue_interval=300.0)
    try:
        queue.discover_engine('fresh-b', sim.url)
        sim.add_job('prod', 'added_on_the_engine')
        queue.poll_step()
        assert 'added_on_the_engine' not in str(queue.engine('fresh-b')['jobs'])   # read just now: not due yet
        clock[0] += 301.0
        stats = queue.poll_step()
        assert stats['described'] == 1
        assert {'name': 'added_on_the_engine', 'environment': 'prod'} in queue.engine('fresh-b')['jobs']
        created, _job = queue.enqueue('added_on_the_engine', request_id='r-new')
        assert created
    finally:
        queue.close()


def _api(sim, method, path):
    """One call to the engine's API as another tool would make it."""
    session = requests.Session()
    token = session.post(sim.url + '/login', json={'username': 'admin', 'password': 'Admin-12'}, timeout=5).json()
    answer = session.request(method, sim.url + path, headers={'Authorization': token['Authorization']}, timeout=5)
    assert answer.status_code < 300, answer.text
    return answer.json()


def _jobs(sim):
    return _api(sim, 'GET', '/masking-jobs')['responseList']
