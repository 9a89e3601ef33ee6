"""The masking_* modules as adapters: options -> one MaskingQueue call -> exit_json / fail_json.

The queue is replaced by an in-memory fake that follows the MaskingQueue contract, so these tests pin
what the modules decide (changed, check mode, errors, outcomes, secrets) without a database or engine.
The real queue, store and simulator are exercised by tests/integration/masking_modules.
"""
import json

import pytest

from tests.support.module_args import patch_module_args  # also on ansible-core < 2.19

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_errors as errors
from ansible_collections.orchestra.fleet.plugins.module_utils import masking_module as mm
from ansible_collections.orchestra.fleet.plugins.modules import (
    masking_engine, masking_job, masking_poll, masking_queue_info, masking_schedule)

TERMINAL = ('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED')


class FakeQueue:
    """Just enough MaskingQueue: engines, jobs by id/request id, scripted outcomes for wait()."""

    instances = []

    def __init__(self, store_url, credentials=None, driver_factory=None, clock=None):
        self.store_url = store_url
        self.credentials = credentials
        self.calls = []
        FakeQueue.instances.append(self)

    # shared state across instances of one test (one "store")
    engines = {}
    jobs = {}
    outcomes = {}
    fail_with = None

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if FakeQueue.fail_with is not None:
            raise FakeQueue.fail_with

    def ensure_engine(self, name, url, slots, memory_mb=None, jobs=None, enabled=True, drained=False, verify=True,
                      dry_run=False):
        self._record('ensure_engine', name, url, slots, memory_mb=memory_mb, jobs=jobs, enabled=enabled,
                     drained=drained, verify=verify, dry_run=dry_run)
        if not url.startswith('http'):
            raise errors.InvalidRequest('engine url must start with http:// or https://, got %r' % url)
        new = dict(name=name, url=url, slots=slots, memory_mb=memory_mb, jobs=jobs, enabled=enabled, drained=drained,
                   verify=verify, slots_used=0, memory_used_mb=0, last_error=None, unreachable_since=None)
        changed = FakeQueue.engines.get(name) != new
        if not dry_run:
            FakeQueue.engines[name] = new
        return changed, dict(new)

    def remove_engine(self, name, force=False):
        self._record('remove_engine', name, force=force)
        if name not in FakeQueue.engines:
            return False
        if FakeQueue.engines[name]['slots_used'] and not force:
            raise errors.EngineBusy('engine %s still has 1 running job' % name)
        del FakeQueue.engines[name]
        return True

    def enqueue(self, job_name, request_id=None, environment=None, priority=0, engine=None, max_memory_mb=None):
        self._record('enqueue', job_name, request_id=request_id)
        for job in FakeQueue.jobs.values():
            if request_id is not None and job['request_id'] == request_id:
                return False, dict(job)
        job_id = len(FakeQueue.jobs) + 1
        job = dict(id=job_id, request_id=request_id or 'auto-%d' % job_id, job_name=job_name, environment=environment,
                   priority=priority, engine_affinity=engine, state='QUEUED', attempt=0, reason=None, engine=None,
                   execution_id=None, rows_masked=None, rows_total=None, submitted_at='2026-11-22T02:00:00Z',
                   scheduled_at=None, started_at=None, finished_at=None, error=None)
        FakeQueue.jobs[job_id] = job
        return True, dict(job)

    def _find(self, key):
        for job in FakeQueue.jobs.values():
            if job['id'] == key or job['request_id'] == key:
                return job
        raise errors.UnknownJob('no queue entry with id or request id %s' % key)

    def job(self, key):
        self._record('job', key)
        return dict(self._find(key))

    def cancel(self, key):
        self._record('cancel', key)
        job = self._find(key)
        job['state'] = 'CANCELLED'
        return dict(job)

    def wait(self, job_ids, timeout, poll_interval=1.0, cancel_on_timeout=False):
        self._record('wait', job_ids, timeout, poll_interval=poll_interval, cancel_on_timeout=cancel_on_timeout)
        done = []
        for job_id in job_ids:
            job = FakeQueue.jobs[job_id]
            outcome = FakeQueue.outcomes.get(job['job_name'], 'SUCCEEDED')
            if job['state'] not in TERMINAL:
                if outcome == 'HANG':
                    job['state'] = 'CANCELLED' if cancel_on_timeout else 'RUNNING'
                else:
                    job.update(state=outcome, engine='e1', execution_id=100 + job_id, rows_masked=10, rows_total=10,
                               started_at='2026-11-22T02:00:01Z', finished_at='2026-11-22T02:00:11Z',
                               error=('execution %d on engine e1 failed: ORA-00942: table or view does not exist'
                                      % (100 + job_id)) if outcome == 'FAILED' else
                               ('execution %d on engine e1 finished with warnings: UNMASKED_DATA in 2 columns'
                                % (100 + job_id) if outcome == 'WARNING' else None))
            done.append(dict(job))
        return done

    def schedule_step(self):
        self._record('schedule_step')
        placed = 0
        for job in FakeQueue.jobs.values():
            if job['state'] == 'QUEUED':
                job['state'] = 'SCHEDULED'
                placed += 1
        return dict(placed=placed, pending=0)

    def poll_step(self):
        self._record('poll_step')
        finished = 0
        for job in FakeQueue.jobs.values():
            if job['state'] == 'SCHEDULED':
                job['state'] = 'SUCCEEDED'
                finished += 1
        return dict(started=finished, finished=finished)

    def info(self, jobs=True, engines=True, history_for=None, states=None, limit=None):
        self._record('info', jobs=jobs, engines=engines, history_for=history_for, states=states, limit=limit)
        result = {'counts': {}}
        for job in FakeQueue.jobs.values():
            result['counts'][job['state']] = result['counts'].get(job['state'], 0) + 1
        if jobs:
            result['jobs'] = [dict(j) for j in FakeQueue.jobs.values() if not states or j['state'] in states][:limit]
        if engines:
            result['engines'] = [dict(e) for e in FakeQueue.engines.values()]
        if history_for:
            result['history'] = dict((str(k), [dict(to_state=self._find(k)['state'])]) for k in history_for)
        return result


@pytest.fixture(autouse=True)
def fake_queue(monkeypatch, tmp_path):
    FakeQueue.instances = []
    FakeQueue.engines = {}
    FakeQueue.jobs = {}
    FakeQueue.outcomes = {}
    FakeQueue.fail_with = None
    monkeypatch.setattr(mm, 'MaskingQueue', FakeQueue)
    monkeypatch.setattr(mm, 'QUEUE_IMPORT_ERROR', None)
    for var in ('ORCHESTRA_QUEUE_STORE', 'ORCHESTRA_MASKING_USERNAME', 'ORCHESTRA_MASKING_PASSWORD',
                'ORCHESTRA_MASKING_ENGINE_CREDENTIALS'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))
    return FakeQueue


def run(module, args, capsys, check_mode=False, diff=False):
    """Run a module's main() with args; return (result, failed, raw stdout)."""
    args = dict(args)
    args.setdefault('store', '/tmp/unit-fake-queue.db')
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    return result, bool(result.get('failed')), out


def engine(name='e1', **extra):
    args = dict(name=name, url='http://127.0.0.1:1/masking/api', slots=2, jobs=['mask_a', 'mask_b'])
    args.update(extra)
    return args


# ---- masking_engine

def test_engine_register_is_idempotent(capsys):
    result, failed, _out = run(masking_engine, engine(), capsys)
    assert not failed and result['changed'] and result['engine']['slots'] == 2
    result, failed, _out = run(masking_engine, engine(), capsys)
    assert not failed and not result['changed']
    assert [c[0] for c in FakeQueue.instances[-1].calls] == ['info']  # nothing written the second time


def test_engine_check_mode_writes_nothing_and_shows_the_diff(capsys):
    result, failed, _out = run(masking_engine, engine(), capsys, check_mode=True, diff=True)
    assert not failed and result['changed'] and FakeQueue.engines == {}
    assert result['diff']['after']['slots'] == 2 and result['diff']['before'] == {}
    result, failed, _out = run(masking_engine, engine(url='ftp://nope'), capsys, check_mode=True)
    assert failed and result['error_kind'] == 'bad_parameter' and 'http' in result['msg']


def test_engine_update_keeps_unset_options(capsys):
    run(masking_engine, engine(), capsys)
    result, failed, _out = run(masking_engine, dict(name='e1', slots=5), capsys, diff=True)
    assert not failed and result['changed']
    assert FakeQueue.engines['e1']['url'] == 'http://127.0.0.1:1/masking/api'
    assert FakeQueue.engines['e1']['jobs'] == ['mask_a', 'mask_b']
    assert result['diff'] == {'before': {'slots': 2}, 'after': {'slots': 5}}


def test_engine_drain_and_undrain(capsys):
    run(masking_engine, engine(), capsys)
    result, _failed, _out = run(masking_engine, dict(name='e1', state='drained'), capsys)
    assert result['changed'] and FakeQueue.engines['e1']['drained'] is True
    result, _failed, _out = run(masking_engine, dict(name='e1', state='drained'), capsys)
    assert not result['changed']
    result, _failed, _out = run(masking_engine, dict(name='e1'), capsys)
    assert result['changed'] and FakeQueue.engines['e1']['drained'] is False


def test_engine_absent(capsys):
    result, failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys)
    assert not failed and not result['changed']
    run(masking_engine, engine(), capsys)
    result, _failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys, check_mode=True)
    assert result['changed'] and 'e1' in FakeQueue.engines
    result, _failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys)
    assert result['changed'] and 'e1' not in FakeQueue.engines


def test_engine_busy_removal_fails_clearly_unless_forced(capsys):
    run(masking_engine, engine(), capsys)
    FakeQueue.engines['e1']['slots_used'] = 1
    result, failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys, check_mode=True)
    assert failed and result['error_kind'] == 'engine_busy' and 'e1' in FakeQueue.engines
    result, failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys)
    assert failed and result['error_kind'] == 'engine_busy' and 'running' in result['msg']
    result, failed, _out = run(masking_engine, dict(name='e1', state='absent', force=True), capsys)
    assert not failed and result['changed']


@pytest.mark.parametrize('args, words', [
    (dict(name='new', slots=2), 'url and slots'),
    (engine(slots=0), 'slots must be 1 or more'),
    (engine(memory_mb=0), 'memory_mb'),
    (engine(jobs=[{'environment': 'dev'}]), 'jobs entry'),
    (engine(slots='many'), 'slots'),
])
def test_engine_bad_input(capsys, args, words):
    result, failed, _out = run(masking_engine, args, capsys)
    assert failed and words in result['msg']
    assert FakeQueue.engines == {}


# ---- masking_job

def test_job_enqueue_without_wait_then_same_request_is_not_queued_twice(capsys):
    run(masking_engine, engine(), capsys)
    args = dict(job_name='mask_a', request_id='r1', wait=False)
    result, failed, _out = run(masking_job, args, capsys)
    assert not failed and result['changed'] and result['created'] and result['state'] == 'QUEUED'
    result, failed, _out = run(masking_job, args, capsys)
    assert not failed and not result['changed'] and not result['created'] and len(FakeQueue.jobs) == 1


def test_job_wait_success_returns_engine_execution_rows_timings(capsys):
    run(masking_engine, engine(), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_a', timeout=30, poll_interval=0.5), capsys)
    assert not failed and result['state'] == 'SUCCEEDED'
    assert result['engine'] == 'e1' and result['execution_id'] == 101 and result['rows_masked'] == 10
    assert result['timings'] == dict(queued_seconds=1.0, run_seconds=10.0, total_seconds=11.0)
    wait_call = [c for c in FakeQueue.instances[-1].calls if c[0] == 'wait'][0]
    assert wait_call[1] == ([1], 30) and wait_call[2] == dict(poll_interval=0.5, cancel_on_timeout=False)


def test_job_failure_fails_the_task_with_the_engine_message(capsys):
    run(masking_engine, engine(), capsys)
    FakeQueue.outcomes['mask_b'] = 'FAILED'
    result, failed, _out = run(masking_job, dict(job_name='mask_b'), capsys)
    assert failed and result['error_kind'] == 'job_failed'
    assert 'ORA-00942' in result['msg'] and 'e1' in result['msg'] and result['execution_id'] == 101


def test_job_warning_is_success_with_warning_or_failure_by_option(capsys):
    run(masking_engine, engine(), capsys)
    FakeQueue.outcomes['mask_b'] = 'WARNING'
    result, failed, _out = run(masking_job, dict(job_name='mask_b', request_id='w1'), capsys)
    assert not failed and result['state'] == 'WARNING' and 'UNMASKED_DATA' in json.dumps(result['warnings'])
    result, failed, _out = run(masking_job, dict(job_name='mask_b', request_id='w2', warning_is_failure=True), capsys)
    assert failed and result['error_kind'] == 'job_warning'


def test_job_timeout_fails_and_can_cancel(capsys):
    run(masking_engine, engine(), capsys)
    FakeQueue.outcomes['mask_a'] = 'HANG'
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='t1', timeout=0), capsys)
    assert failed and result['error_kind'] == 'timeout' and 'still RUNNING' in result['msg']
    args = dict(job_name='mask_a', request_id='t2', timeout=0, cancel_on_timeout=True)
    result, failed, _out = run(masking_job, args, capsys)
    assert failed and result['error_kind'] == 'timeout' and result['state'] == 'CANCELLED'


def test_job_unknown_name_or_engine_fails_before_queueing(capsys):
    run(masking_engine, engine(), capsys)
    result, failed, _out = run(masking_job, dict(job_name='no_such_job', wait=False), capsys)
    assert failed and result['error_kind'] == 'unknown_job' and 'no_such_job' in result['msg']
    result, failed, _out = run(masking_job, dict(job_name='mask_a', engine='nowhere', wait=False), capsys)
    assert failed and result['error_kind'] == 'unknown_engine' and 'nowhere' in result['msg']
    assert FakeQueue.jobs == {}


def test_job_request_id_reused_for_another_job_is_refused(capsys):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', request_id='r1', wait=False), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_b', request_id='r1', wait=False), capsys)
    assert failed and 'already belongs' in result['msg'] and len(FakeQueue.jobs) == 1


def test_job_check_mode_queues_nothing(capsys):
    run(masking_engine, engine(), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='c1'), capsys, check_mode=True)
    assert not failed and result['changed'] and FakeQueue.jobs == {}
    run(masking_job, dict(job_name='mask_a', request_id='c1', wait=False), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='c1'), capsys, check_mode=True)
    assert not failed and not result['changed'] and result['state'] == 'QUEUED'
    assert 'wait' not in [c[0] for c in FakeQueue.instances[-1].calls]


def test_job_cancel(capsys):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', request_id='x1', wait=False), capsys)
    result, failed, _out = run(masking_job, dict(request_id='x1', state='cancelled', wait=False), capsys, check_mode=True)
    assert result['changed'] and FakeQueue.jobs[1]['state'] == 'QUEUED'
    result, failed, _out = run(masking_job, dict(request_id='x1', state='cancelled', wait=False), capsys)
    assert not failed and result['changed'] and result['state'] == 'CANCELLED'
    result, failed, _out = run(masking_job, dict(job_id=1, state='cancelled'), capsys)
    assert not failed and not result['changed']
    result, failed, _out = run(masking_job, dict(request_id='nope', state='cancelled'), capsys)
    assert failed and result['error_kind'] == 'unknown_job'


@pytest.mark.parametrize('args, words', [
    (dict(wait=False), 'job_name'),
    (dict(state='cancelled'), 'request_id'),
    (dict(job_name='mask_a', timeout=-1), 'timeout'),
    (dict(job_name='mask_a', priority='high'), 'priority'),
    (dict(job_name='mask_a', job_id=3), 'job_id'),
])
def test_job_malformed_parameters(capsys, args, words):
    result, failed, _out = run(masking_job, args, capsys)
    assert failed and words in result['msg'] and FakeQueue.jobs == {}


def test_secrets_never_appear_in_output_and_reach_the_queue(capsys, monkeypatch):
    run(masking_engine, engine(), capsys)
    monkeypatch.setenv('ORCHESTRA_MASKING_ENGINE_CREDENTIALS', json.dumps({'e1': {'username': 'u1', 'password': 'Pw-e1-xyz'}}))
    args = dict(job_name='mask_a', username='admin', password='Pw-shared-xyz', store='postgresql://q:Pw-db-xyz@127.0.0.1:1/q')
    result, failed, out = run(masking_job, args, capsys)
    assert not failed
    for secret in ('Pw-e1-xyz', 'Pw-shared-xyz', 'Pw-db-xyz'):
        assert secret not in out
    assert FakeQueue.instances[-1].credentials == {'*': {'username': 'admin', 'password': 'Pw-shared-xyz'},
                                                   'e1': {'username': 'u1', 'password': 'Pw-e1-xyz'}}


def test_store_errors_become_clear_failures(capsys):
    FakeQueue.fail_with = errors.StoreUnavailable('could not connect: Connection refused')
    result, failed, out = run(masking_queue_info, dict(store='postgresql://q:Pw-db-xyz@127.0.0.1:1/q'), capsys)
    assert failed and result['error_kind'] == 'store_unavailable'
    assert 'Connection refused' in result['msg'] and '127.0.0.1:1' in result['msg'] and 'Pw-db-xyz' not in out


def test_store_env_fallback_and_bad_scheme(capsys, monkeypatch):
    monkeypatch.setenv('ORCHESTRA_QUEUE_STORE', '/tmp/from-env.db')
    with patch_module_args({}):
        with pytest.raises(SystemExit):
            masking_queue_info.main()
    capsys.readouterr()
    assert FakeQueue.instances[-1].store_url == '/tmp/from-env.db'
    result, failed, _out = run(masking_queue_info, dict(store='mysql://h/db'), capsys)
    assert failed and result['error_kind'] == 'bad_parameter'


# ---- steps and info

def test_schedule_and_poll_steps(capsys):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', wait=False), capsys)
    result, failed, _out = run(masking_schedule, {}, capsys)
    assert not failed and result['changed'] and result['placed'] == 1
    result, failed, _out = run(masking_schedule, {}, capsys)
    assert not result['changed'] and result['placed'] == 0
    result, failed, _out = run(masking_poll, {}, capsys)
    assert not failed and result['changed'] and result['steps'] == 1 and result['active'] == 0


def test_poll_follow_waits_for_every_active_job(capsys):
    run(masking_engine, engine(), capsys)
    FakeQueue.outcomes['mask_b'] = 'FAILED'
    run(masking_job, dict(job_name='mask_a', wait=False), capsys)
    run(masking_job, dict(job_name='mask_b', wait=False), capsys)
    result, failed, _out = run(masking_poll, dict(follow=True, timeout=60), capsys)
    assert not failed and result['active'] == 0  # a failed job does not fail the follower
    assert [job['state'] for job in FakeQueue.jobs.values()] == ['SUCCEEDED', 'FAILED']


def test_poll_follow_times_out(capsys):
    run(masking_engine, engine(), capsys)
    FakeQueue.outcomes['mask_a'] = 'HANG'
    run(masking_job, dict(job_name='mask_a', wait=False), capsys)
    result, failed, _out = run(masking_poll, dict(follow=True, timeout=0), capsys)
    assert failed and result['error_kind'] == 'timeout' and result['active'] == 1


def test_queue_info(capsys):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', request_id='r1', wait=False), capsys)
    args = dict(history_for=['r1', '1'], states=['QUEUED'])
    result, failed, _out = run(masking_queue_info, args, capsys, check_mode=True)
    assert not failed and not result['changed']
    assert [job['request_id'] for job in result['jobs']] == ['r1'] and result['engines'][0]['name'] == 'e1'
    assert set(result['history']) == {'r1', '1'}
    assert result['summary']['states']['QUEUED'] == 1
    info_call = [c for c in FakeQueue.instances[-1].calls if c[0] == 'info'][0]
    assert info_call[2]['history_for'] == ['r1', 1]
    result, failed, _out = run(masking_queue_info, dict(states=['BOGUS']), capsys)
    assert failed and 'states' in result['msg']
