"""The masking_* modules as adapters: options -> one MaskingQueue call -> exit_json / fail_json.

The modules run their main() against the real queue on a temporary SQLite file; only the engine is a
scripted driver (an outcome per job name), so these tests pin what the modules decide (changed, check
mode, errors, outcomes, secrets) without a network. The real simulator is exercised by
tests/integration/masking_modules.
"""
import functools
import json
import os

import pytest

from tests.support.module_args import patch_module_args  # also on ansible-core < 2.19

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_errors as errors
from ansible_collections.orchestra.fleet.plugins.module_utils import masking_module as mm
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import ExecutionInfo
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue
from ansible_collections.orchestra.fleet.plugins.modules import (
    masking_engine, masking_job, masking_poll, masking_prune, masking_queue_info, masking_schedule)

TERMINAL = ('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED')
DETAILS = {'FAILED': 'ORA-00942: table or view does not exist', 'WARNING': 'UNMASKED_DATA in 2 columns'}


class ScriptedEngines:
    """Every engine at once: executions by id (ids only grow), an outcome per job name (HANG never ends)."""

    def __init__(self):
        self.outcomes = {}
        self.executions = {}
        self.credentials = []
        self.refuse = {}   # job name -> driver error raised by start

    def factory(self, engine, credentials):
        if not credentials:
            raise errors.MissingCredentials('no credentials for engine %s' % engine['name'])
        self.credentials.append(credentials)
        return ScriptedDriver(self, engine['name'])


class ScriptedDriver:
    def __init__(self, engines, name):
        self.engines = engines
        self.name = name

    def _info(self, execution_id):
        run = self.engines.executions[execution_id]
        done = run['status'] in TERMINAL
        return ExecutionInfo(execution_id, 7, run['status'], 10 if done else None, 10 if done else None,
                             run['start'], run['start'] + 10 if done else None)

    def start_marker(self, job):
        return max([i for i, run in self.engines.executions.items() if run['job'] == job['job_name']] or [0])

    def start(self, job):
        if job['job_name'] in self.engines.refuse:
            raise self.engines.refuse[job['job_name']]
        execution_id = 100 + len(self.engines.executions) + 1
        self.engines.executions[execution_id] = {'job': job['job_name'], 'status': 'RUNNING', 'start': job['not_before'] + 1}
        return self._info(execution_id)

    def reconcile(self, job):
        return None

    def status(self, execution_id):
        run = self.engines.executions[execution_id]
        outcome = self.engines.outcomes.get(run['job'], 'SUCCEEDED')
        if run['status'] == 'RUNNING' and outcome != 'HANG':
            run['status'] = outcome
        return self._info(execution_id)

    def statuses(self, last_known):
        return dict((execution_id, self.status(execution_id)) for execution_id in last_known)

    def cancel(self, execution_id, expected_status=None):
        self.engines.executions[execution_id]['status'] = 'CANCELLED'
        return self._info(execution_id)

    def probe(self):
        return None

    def failure_detail(self, execution_id):
        return DETAILS.get(self.engines.executions[execution_id]['status'])

    def close(self):
        return None


@pytest.fixture(autouse=True)
def engines(monkeypatch, tmp_path):
    scripted = ScriptedEngines()
    monkeypatch.setattr(mm, 'MaskingQueue', functools.partial(MaskingQueue, driver_factory=scripted.factory,
                                                              credentials_grace=0.5))
    monkeypatch.setattr(mm, 'QUEUE_IMPORT_ERROR', None)
    for var in ('ORCHESTRA_QUEUE_STORE', 'ORCHESTRA_MASKING_USERNAME', 'ORCHESTRA_MASKING_PASSWORD',
                'ORCHESTRA_MASKING_ENGINE_CREDENTIALS'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))
    scripted.store = str(tmp_path / 'queue.db')
    return scripted


def queue_of(engines_):
    return MaskingQueue(engines_.store)


STORE = ['']


@pytest.fixture(autouse=True)
def store_path(engines):
    STORE[0] = engines.store


def run(module, args, capsys, check_mode=False, diff=False):
    """Run a module's main() with args; return (result, failed, raw stdout)."""
    args = dict(args)
    args.setdefault('store', STORE[0])
    if args['store'] is None:
        del args['store']   # left out: the environment variable applies
    args.setdefault('username', 'admin')
    args.setdefault('password', 'Pw-shared-xyz')
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

def engines_in(engines_):
    return dict((e['name'], e) for e in queue_of(engines_).engines())


def test_engine_register_is_idempotent(capsys, engines):
    result, failed, _out = run(masking_engine, engine(), capsys)
    assert not failed and result['changed'] and result['engine']['slots'] == 2
    result, failed, _out = run(masking_engine, engine(), capsys)
    assert not failed and not result['changed']


def test_engine_check_mode_writes_nothing_and_shows_the_diff(capsys, engines):
    result, failed, _out = run(masking_engine, engine(), capsys, check_mode=True, diff=True)
    assert not failed and result['changed'] and engines_in(engines) == {}
    assert result['diff']['after']['slots'] == 2 and result['diff']['before'] == {}
    result, failed, _out = run(masking_engine, engine(url='ftp://nope'), capsys, check_mode=True)
    assert failed and result['error_kind'] == 'bad_parameter' and 'http' in result['msg']


def test_engine_update_keeps_unset_options(capsys, engines):
    run(masking_engine, engine(), capsys)
    result, failed, _out = run(masking_engine, dict(name='e1', slots=5), capsys, diff=True)
    assert not failed and result['changed']
    assert engines_in(engines)['e1']['url'] == 'http://127.0.0.1:1/masking/api'
    assert engines_in(engines)['e1']['jobs'] == ['mask_a', 'mask_b']
    assert result['diff'] == {'before': {'slots': 2}, 'after': {'slots': 5}}


def test_engine_drain_and_undrain(capsys, engines):
    run(masking_engine, engine(), capsys)
    result, _failed, _out = run(masking_engine, dict(name='e1', state='drained'), capsys)
    assert result['changed'] and engines_in(engines)['e1']['drained'] is True
    result, _failed, _out = run(masking_engine, dict(name='e1', state='drained'), capsys)
    assert not result['changed']
    result, _failed, _out = run(masking_engine, dict(name='e1'), capsys)
    assert result['changed'] and engines_in(engines)['e1']['drained'] is False


def test_engine_absent(capsys, engines):
    result, failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys)
    assert not failed and not result['changed']
    run(masking_engine, engine(), capsys)
    result, _failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys, check_mode=True)
    assert result['changed'] and 'e1' in engines_in(engines)
    result, _failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys)
    assert result['changed'] and 'e1' not in engines_in(engines)


def test_engine_busy_removal_fails_clearly_unless_forced(capsys, engines):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', wait=False), capsys)
    run(masking_schedule, {}, capsys)
    result, failed, _out = run(masking_engine, dict(name='e1', state='absent'), capsys, check_mode=True)
    assert failed and result['error_kind'] == 'engine_busy' and 'e1' in engines_in(engines)
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
def test_engine_bad_input(capsys, engines, args, words):
    result, failed, _out = run(masking_engine, args, capsys)
    assert failed and words in result['msg']
    assert not os.path.exists(engines.store) or engines_in(engines) == {}


# ---- masking_job

def test_job_enqueue_without_wait_then_same_request_is_not_queued_twice(capsys, engines):
    run(masking_engine, engine(), capsys)
    args = dict(job_name='mask_a', request_id='r1', wait=False)
    result, failed, _out = run(masking_job, args, capsys)
    assert not failed and result['changed'] and result['created'] and result['state'] == 'QUEUED'
    result, failed, _out = run(masking_job, args, capsys)
    assert not failed and not result['changed'] and not result['created']
    assert len(queue_of(engines).info()['jobs']) == 1


def test_job_wait_success_returns_engine_execution_rows_timings(capsys, engines):
    run(masking_engine, engine(), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_a', timeout=30, poll_interval=0.1), capsys)
    assert not failed and result['state'] == 'SUCCEEDED'
    assert result['engine'] == 'e1' and result['execution_id'] == 101 and result['rows_masked'] == 10
    assert result['timings']['run_seconds'] == 10.0


def test_job_failure_fails_the_task_with_the_engine_message(capsys, engines):
    run(masking_engine, engine(), capsys)
    engines.outcomes['mask_b'] = 'FAILED'
    result, failed, _out = run(masking_job, dict(job_name='mask_b', poll_interval=0.1), capsys)
    assert failed and result['error_kind'] == 'job_failed'
    assert 'ORA-00942' in result['msg'] and 'e1' in result['msg'] and result['execution_id'] == 101


@pytest.mark.parametrize('error, kind', [
    (errors.EngineAuthError('engine e1 refused the credentials'), 'engine_auth'),
    (errors.EngineJobAmbiguous('mask_a exists in environments dev, prod'), 'job_ambiguous'),
    (errors.EngineJobNotFound('no masking job mask_a'), 'job_not_found'),
])
def test_refusals_before_anything_ran_have_their_own_kind(capsys, engines, error, kind):
    run(masking_engine, engine(), capsys)
    engines.refuse['mask_a'] = error
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='k1', poll_interval=0.1), capsys)
    assert failed and result['error_kind'] == kind and result['state'] == 'FAILED' and not engines.executions
    # the rerun rule: the same request id runs again once the cause is fixed
    del engines.refuse['mask_a']
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='k1', poll_interval=0.1), capsys)
    assert failed and result['error_kind'] == kind and not result['changed']    # without rerun: reported as it ended
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='k1', rerun=True, poll_interval=0.1), capsys)
    assert not failed and result['changed'] and result['state'] == 'SUCCEEDED' and result['job']['id'] == 1


def test_rerun_never_repeats_a_success(capsys, engines):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', request_id='s1', poll_interval=0.1), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='s1', rerun=True, poll_interval=0.1), capsys)
    assert not failed and not result['changed'] and len(engines.executions) == 1


def test_job_warning_is_success_with_warning_or_failure_by_option(capsys, engines):
    run(masking_engine, engine(), capsys)
    engines.outcomes['mask_b'] = 'WARNING'
    result, failed, _out = run(masking_job, dict(job_name='mask_b', request_id='w1', poll_interval=0.1), capsys)
    assert not failed and result['state'] == 'WARNING' and 'UNMASKED_DATA' in json.dumps(result['warnings'])
    result, failed, _out = run(masking_job, dict(job_name='mask_b', request_id='w2', warning_is_failure=True,
                                                 poll_interval=0.1), capsys)
    assert failed and result['error_kind'] == 'job_warning'


def test_job_timeout_fails_and_can_cancel(capsys, engines):
    run(masking_engine, engine(), capsys)
    engines.outcomes['mask_a'] = 'HANG'
    run(masking_job, dict(job_name='mask_a', request_id='t0', wait=False), capsys)
    run(masking_schedule, {}, capsys)
    run(masking_poll, {}, capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='t0', timeout=0), capsys)
    assert failed and result['error_kind'] == 'timeout' and 'still RUNNING' in result['msg']
    args = dict(job_name='mask_a', request_id='t0', timeout=0, cancel_on_timeout=True, poll_interval=0.1)
    result, failed, _out = run(masking_job, args, capsys)
    assert failed and result['error_kind'] == 'timeout' and result['state'] == 'CANCELLED'


def test_job_without_credentials_fails_fast(capsys, engines):
    run(masking_engine, engine(), capsys)
    args = dict(job_name='mask_a', username=None, password=None, timeout=600, poll_interval=0.1)
    result, failed, _out = run(masking_job, args, capsys)
    assert failed and result['error_kind'] == 'no_credentials' and 'e1' in result['msg']
    assert result['job']['job_name'] == 'mask_a'   # every failure carries the entry (mask.yml reports it)
    result, failed, _out = run(masking_poll, dict(username=None, password=None), capsys)
    assert failed and result['error_kind'] == 'no_credentials'     # not green while nothing can move


def test_job_unknown_name_or_engine_fails_before_queueing(capsys, engines):
    run(masking_engine, engine(), capsys)
    result, failed, _out = run(masking_job, dict(job_name='no_such_job', wait=False), capsys)
    assert failed and result['error_kind'] == 'unknown_job' and 'no_such_job' in result['msg']
    result, failed, _out = run(masking_job, dict(job_name='mask_a', engine='nowhere', wait=False), capsys)
    assert failed and result['error_kind'] == 'unknown_engine' and 'nowhere' in result['msg']
    assert queue_of(engines).info()['jobs'] == []


def test_job_request_id_reused_for_another_job_is_refused(capsys, engines):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', request_id='r1', wait=False), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_b', request_id='r1', wait=False), capsys)
    assert failed and 'already belongs' in result['msg'] and len(queue_of(engines).info()['jobs']) == 1


def test_job_check_mode_queues_nothing(capsys, engines):
    run(masking_engine, engine(), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='c1'), capsys, check_mode=True)
    assert not failed and result['changed'] and queue_of(engines).info()['jobs'] == []
    result, failed, _out = run(masking_job, dict(job_name='nope', request_id='c2'), capsys, check_mode=True)
    assert failed and result['error_kind'] == 'unknown_job'         # the same answer as for real
    run(masking_job, dict(job_name='mask_a', request_id='c1', wait=False), capsys)
    result, failed, _out = run(masking_job, dict(job_name='mask_a', request_id='c1'), capsys, check_mode=True)
    assert not failed and not result['changed'] and result['state'] == 'QUEUED'


def test_job_cancel(capsys, engines):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', request_id='x1', wait=False), capsys)
    result, failed, _out = run(masking_job, dict(request_id='x1', state='cancelled', wait=False), capsys, check_mode=True)
    assert result['changed'] and queue_of(engines).job('x1')['state'] == 'QUEUED'
    result, failed, _out = run(masking_job, dict(request_id='x1', state='cancelled'), capsys)
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
def test_job_malformed_parameters(capsys, engines, args, words):
    result, failed, _out = run(masking_job, args, capsys)
    assert failed and words in result['msg']
    assert not os.path.exists(engines.store) or queue_of(engines).info()['jobs'] == []


def test_secrets_never_appear_in_output_and_usernames_do(capsys, engines, monkeypatch):
    run(masking_engine, engine(name='admin_customers'), capsys)
    monkeypatch.setenv('ORCHESTRA_MASKING_ENGINE_CREDENTIALS',
                       json.dumps({'admin_customers': {'username': 'admin', 'password': 'Pw-e1-xyz'}}))
    args = dict(job_name='mask_a', username='admin', password='Pw-shared-xyz', poll_interval=0.1)
    result, failed, out = run(masking_job, args, capsys)
    assert not failed and result['engine'] == 'admin_customers'    # a user name is no secret: not masked
    for secret in ('Pw-e1-xyz', 'Pw-shared-xyz'):
        assert secret not in out
    assert engines.credentials[-1] == {'username': 'admin', 'password': 'Pw-e1-xyz'}


def test_store_password_is_masked(capsys):
    result, failed, out = run(masking_queue_info, dict(store='postgresql://q:Pw-db-xyz@127.0.0.1:1/q'), capsys)
    assert failed and result['error_kind'] == 'store_unavailable' and 'Pw-db-xyz' not in out


def test_store_env_fallback_bad_scheme_and_relative_path(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv('ORCHESTRA_QUEUE_STORE', str(tmp_path / 'from-env.db'))
    run(masking_engine, engine(store=None), capsys)
    assert os.path.exists(str(tmp_path / 'from-env.db'))
    result, failed, _out = run(masking_queue_info, dict(store='mysql://h/db'), capsys)
    assert failed and result['error_kind'] == 'bad_parameter'
    monkeypatch.chdir(tmp_path)
    result, failed, _out = run(masking_engine, engine(store='relative.db'), capsys)
    assert failed and result['error_kind'] == 'bad_parameter' and 'relative' in result['msg']
    assert not os.path.exists(str(tmp_path / 'relative.db'))


# ---- steps, info and retention

def test_schedule_and_poll_steps(capsys, engines):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', wait=False), capsys)
    result, failed, _out = run(masking_schedule, {}, capsys)
    assert not failed and result['changed'] and result['placed'] == 1
    result, failed, _out = run(masking_schedule, {}, capsys)
    assert not result['changed'] and result['placed'] == 0
    result, failed, _out = run(masking_poll, {}, capsys)
    assert not failed and result['changed'] and result['steps'] == 1 and result['active'] == 0


def test_poll_follow_waits_for_every_active_job(capsys, engines):
    run(masking_engine, engine(), capsys)
    engines.outcomes['mask_b'] = 'FAILED'
    run(masking_job, dict(job_name='mask_a', wait=False), capsys)
    run(masking_job, dict(job_name='mask_b', wait=False), capsys)
    result, failed, _out = run(masking_poll, dict(follow=True, timeout=60, poll_interval=0.1), capsys)
    assert not failed and result['active'] == 0  # a failed job does not fail the follower
    assert [job['state'] for job in queue_of(engines).info()['jobs']] == ['SUCCEEDED', 'FAILED']


def test_poll_follow_times_out(capsys, engines):
    run(masking_engine, engine(), capsys)
    engines.outcomes['mask_a'] = 'HANG'
    run(masking_job, dict(job_name='mask_a', wait=False), capsys)
    result, failed, _out = run(masking_poll, dict(follow=True, timeout=0), capsys)
    assert failed and result['error_kind'] == 'timeout' and result['active'] == 1


def test_queue_info(capsys, engines):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', request_id='r1', wait=False), capsys)
    run(masking_job, dict(job_name='mask_b', request_id='r2', wait=False), capsys)
    args = dict(history_for=['r1', '1'])
    result, failed, _out = run(masking_queue_info, args, capsys, check_mode=True)
    assert not failed and not result['changed']
    assert [job['request_id'] for job in result['jobs']] == ['r2', 'r1']       # newest first
    assert result['engines'][0]['name'] == 'e1' and set(result['history']) == {'1'}
    assert result['summary']['states']['QUEUED'] == 2
    result, failed, _out = run(masking_queue_info, dict(limit=1, states=['QUEUED']), capsys)
    assert [job['request_id'] for job in result['jobs']] == ['r2'] and result['summary']['states']['QUEUED'] == 2
    result, failed, _out = run(masking_queue_info, dict(states=['BOGUS']), capsys)
    assert failed and 'states' in result['msg']


@pytest.mark.parametrize('check_mode', [False, True])
def test_queue_info_never_creates_a_store(capsys, tmp_path, check_mode):
    missing = tmp_path / 'typo' / 'queue.db'
    result, failed, _out = run(masking_queue_info, dict(store=str(missing)), capsys, check_mode=check_mode)
    assert failed and result['error_kind'] == 'store_unavailable' and 'does not exist' in result['msg']
    assert not (tmp_path / 'typo').exists()
    (tmp_path / 'typo').mkdir()
    result, failed, _out = run(masking_queue_info, dict(store=str(missing)), capsys, check_mode=check_mode)
    assert failed and 'no queue database' in result['msg'] and not missing.exists()


def test_prune_deletes_only_old_finished_jobs(capsys, engines):
    run(masking_engine, engine(), capsys)
    run(masking_job, dict(job_name='mask_a', request_id='old', poll_interval=0.1), capsys)
    run(masking_job, dict(job_name='mask_b', request_id='waiting', wait=False), capsys)
    result, failed, _out = run(masking_prune, dict(older_than_days=0), capsys, check_mode=True)
    assert not failed and result['jobs'] == 1 and result['changed']
    assert len(queue_of(engines).info()['jobs']) == 2
    result, failed, _out = run(masking_prune, dict(older_than_days=1), capsys)
    assert not failed and result['jobs'] == 0 and not result['changed']
    result, failed, _out = run(masking_prune, dict(older_than_days=0), capsys)
    assert not failed and result['jobs'] == 1 and result['history'] >= 5
    assert [job['request_id'] for job in queue_of(engines).info()['jobs']] == ['waiting']
