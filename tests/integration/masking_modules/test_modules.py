"""The masking_* modules run by the real ansible-playbook against real simulator processes."""

import pytest

from tests.integration.masking_modules.helpers import USER, Runner, all_executions, register_engines_tasks
from tests.support.lab.ports import free_port

pytestmark = pytest.mark.timeout(300)


def test_engine_lifecycle_check_mode_idempotence_and_diff(runner, engines):
    url = engines['sim-a'].url
    engine = {'name': 'sim-a', 'url': url, 'slots': 2, 'jobs': ['ok_job', {'name': 'warn_job', 'environment': 'env'}]}
    rc, out, res = runner.play([
        {'name': 'Add in check mode', 'orchestra.fleet.masking_engine': engine, 'check_mode': True, 'register': 'checked'},
        {'name': 'Read after check mode', 'orchestra.fleet.masking_queue_info': {}, 'register': 'after_check'},
        {'name': 'Add', 'orchestra.fleet.masking_engine': engine, 'register': 'added'},
        {'name': 'Add again', 'orchestra.fleet.masking_engine': engine, 'register': 'again'},
        {'name': 'More slots', 'orchestra.fleet.masking_engine': {'name': 'sim-a', 'slots': 3}, 'diff': True,
         'register': 'resized'},
        {'name': 'Drain (check mode)', 'orchestra.fleet.masking_engine': {'name': 'sim-a', 'state': 'drained'},
         'check_mode': True, 'register': 'drain_checked'},
        {'name': 'Drain', 'orchestra.fleet.masking_engine': {'name': 'sim-a', 'state': 'drained'}, 'register': 'drained'},
        {'name': 'Drain again', 'orchestra.fleet.masking_engine': {'name': 'sim-a', 'state': 'drained'},
         'register': 'drained_again'},
        {'name': 'Remove', 'orchestra.fleet.masking_engine': {'name': 'sim-a', 'state': 'absent'}, 'register': 'removed'},
        {'name': 'Remove again', 'orchestra.fleet.masking_engine': {'name': 'sim-a', 'state': 'absent'},
         'register': 'removed_again'},
    ], register=['checked', 'after_check', 'added', 'again', 'resized', 'drain_checked', 'drained', 'drained_again',
                 'removed', 'removed_again'])
    assert rc == 0, out
    assert res['checked']['changed'] and res['after_check']['engines'] == []
    assert res['added']['changed'] and res['added']['engine']['slots'] == 2
    assert res['added']['engine']['jobs'] == ['ok_job', {'name': 'warn_job', 'environment': 'env'}]
    assert not res['again']['changed']
    assert res['resized']['changed'] and res['resized']['engine']['slots'] == 3 and res['resized']['engine']['url'] == url
    assert res['resized']['diff'] == {'before': {'slots': 2}, 'after': {'slots': 3}}
    assert res['drain_checked']['changed'] and res['drain_checked']['engine']['drained'] is True
    assert res['drained']['changed'] and res['drained']['engine']['drained'] is True
    assert not res['drained_again']['changed']
    assert res['removed']['changed'] and not res['removed_again']['changed']


@pytest.mark.slow
def test_jobs_succeed_warn_and_fail_with_the_engines_words_and_no_secret_shows(runner, engines):
    before = {name: len(all_executions(engines, name)) for name in ('ok_job', 'warn_job', 'fail_job')}
    # per-engine credentials only, and -vvv: no password may appear anywhere in the output or the results
    credentials = dict((name, dict(USER)) for name in engines)
    tasks = register_engines_tasks(engines) + [
        {'name': 'Succeeds', 'orchestra.fleet.masking_job': {'job_name': 'ok_job', 'timeout': 60, 'poll_interval': 0.2},
         'register': 'ok'},
        {'name': 'Warns', 'orchestra.fleet.masking_job': {'job_name': 'warn_job', 'timeout': 60, 'poll_interval': 0.2},
         'register': 'warned'},
        {'name': 'Warns, and warnings fail', 'orchestra.fleet.masking_job': {
            'job_name': 'warn_job', 'timeout': 60, 'poll_interval': 0.2, 'warning_is_failure': True},
         'register': 'warn_failed', 'ignore_errors': True},
        {'name': 'Fails', 'orchestra.fleet.masking_job': {'job_name': 'fail_job', 'timeout': 60, 'poll_interval': 0.2},
         'register': 'failed', 'ignore_errors': True},
    ]
    rc, out, res = runner.play(tasks, register=['ok', 'warned', 'warn_failed', 'failed'], extra_args=['-vvv'],
                               defaults={'username': None, 'password': None, 'engine_credentials': credentials})
    assert rc == 0, out
    assert USER['password'] not in out and USER['password'] not in str(res)
    ok = res['ok']
    assert ok['changed'] and ok['state'] == 'SUCCEEDED' and ok['engine'] in engines
    assert ok['execution_id'] and ok['rows_masked'] == 1200
    assert ok['timings']['run_seconds'] is not None and ok['timings']['total_seconds'] >= ok['timings']['run_seconds']
    assert (ok['execution_id'], 'SUCCEEDED') in all_executions(engines, 'ok_job')
    warned = res['warned']
    assert not warned.get('failed') and warned['state'] == 'WARNING' and 'finished with warnings' in out
    assert res['warn_failed']['failed'] and res['warn_failed']['error_kind'] == 'job_warning'
    failed = res['failed']
    assert failed['failed'] and failed['error_kind'] == 'job_failed' and failed['state'] == 'FAILED'
    assert 'ORA-01017' in failed['msg'] and failed['engine'] in failed['msg']  # the engine's own message
    # exactly one execution per request on the engines
    after = {name: len(all_executions(engines, name)) for name in before}
    assert after == {'ok_job': before['ok_job'] + 1, 'warn_job': before['warn_job'] + 2, 'fail_job': before['fail_job'] + 1}


@pytest.mark.slow
def test_request_id_makes_a_rerun_wait_for_the_same_execution(runner, engines):
    before = len(all_executions(engines, 'ok_job_2'))
    job = {'job_name': 'ok_job_2', 'request_id': 'ticket-4711', 'timeout': 60, 'poll_interval': 0.2}
    tasks = register_engines_tasks(engines) + [
        {'name': 'Queue (check mode)', 'orchestra.fleet.masking_job': dict(job, wait=False), 'check_mode': True,
         'register': 'checked'},
        {'name': 'Queue', 'orchestra.fleet.masking_job': dict(job, wait=False), 'register': 'queued'},
        {'name': 'Queue again and wait', 'orchestra.fleet.masking_job': job, 'register': 'first'},
        {'name': 'Once more', 'orchestra.fleet.masking_job': job, 'register': 'second'},
        {'name': 'Once more in check mode', 'orchestra.fleet.masking_job': job, 'check_mode': True, 'register': 'third'},
    ]
    rc, out, res = runner.play(tasks, register=['checked', 'queued', 'first', 'second', 'third'])
    assert rc == 0, out
    assert res['checked']['changed'] and res['checked'].get('job') is None
    assert res['queued']['changed'] and res['queued']['created'] and res['queued']['state'] == 'QUEUED'
    assert not res['first']['changed'] and res['first']['state'] == 'SUCCEEDED'
    assert not res['second']['changed'] and res['second']['execution_id'] == res['first']['execution_id']
    assert not res['third']['changed'] and res['third']['state'] == 'SUCCEEDED'
    assert len(all_executions(engines, 'ok_job_2')) == before + 1


@pytest.mark.slow
def test_bad_input_fails_clearly_loses_nothing_and_check_mode_changes_nothing(runner, engines):
    tasks = register_engines_tasks(engines) + [
        {'name': 'A job that stays queued', 'orchestra.fleet.masking_job': {
            'job_name': 'ok_job', 'request_id': 'keep-me', 'wait': False}, 'register': 'kept'},
        {'name': 'Unknown job name', 'orchestra.fleet.masking_job': {'job_name': 'no_such_job', 'wait': False},
         'register': 'unknown_job', 'ignore_errors': True},
        {'name': 'Unknown engine', 'orchestra.fleet.masking_job': {'job_name': 'ok_job', 'engine': 'sim-z', 'wait': False},
         'register': 'unknown_engine', 'ignore_errors': True},
        {'name': 'Cancel an unknown request', 'orchestra.fleet.masking_job': {'request_id': 'nope', 'state': 'cancelled'},
         'register': 'unknown_request', 'ignore_errors': True},
        {'name': 'Malformed slots', 'orchestra.fleet.masking_engine': {'name': 'sim-a', 'slots': 'many'},
         'register': 'bad_slots', 'ignore_errors': True},
        {'name': 'Malformed url', 'orchestra.fleet.masking_engine': {'name': 'sim-c', 'url': 'sim-c:8282', 'slots': 2},
         'register': 'bad_url', 'ignore_errors': True},
        {'name': 'Malformed jobs entry', 'orchestra.fleet.masking_engine': {'name': 'sim-a', 'jobs': [{'env': 'x'}]},
         'register': 'bad_jobs', 'ignore_errors': True},
        {'name': 'Malformed priority', 'orchestra.fleet.masking_job': {'job_name': 'ok_job', 'priority': 'urgent'},
         'register': 'bad_priority', 'ignore_errors': True},
        {'name': 'Malformed credentials', 'orchestra.fleet.masking_queue_info': {
            'engine_credentials': {'sim-a': {'username': 'admin'}}}, 'register': 'bad_credentials', 'ignore_errors': True},
        {'name': 'Unreachable database', 'orchestra.fleet.masking_queue_info': {
            'store': 'postgresql://orchestra:Db-Secret-1@127.0.0.1:%d/queue' % free_port()},  # nothing listens there
         'register': 'no_database', 'ignore_errors': True},
        {'name': 'Unsupported store', 'orchestra.fleet.masking_queue_info': {'store': 'mysql://127.0.0.1/queue'},
         'register': 'bad_store', 'ignore_errors': True},
        {'name': 'Schedule in check mode', 'orchestra.fleet.masking_schedule': {}, 'check_mode': True,
         'register': 'check_schedule'},
        {'name': 'Poll in check mode', 'orchestra.fleet.masking_poll': {}, 'check_mode': True, 'register': 'check_poll'},
        {'name': 'Cancel in check mode', 'orchestra.fleet.masking_job': {'request_id': 'keep-me', 'state': 'cancelled'},
         'check_mode': True, 'register': 'check_cancel'},
        {'name': 'Read the queue afterwards', 'orchestra.fleet.masking_queue_info': {}, 'register': 'after'},
    ]
    names = ['check_schedule', 'check_poll', 'check_cancel', 'kept', 'unknown_job', 'unknown_engine', 'unknown_request', 'bad_slots', 'bad_url', 'bad_jobs',
             'bad_priority', 'bad_credentials', 'no_database', 'bad_store', 'after']
    rc, out, res = runner.play(tasks, register=names)
    assert rc == 0, out
    expectations = {
        'unknown_job': ('unknown_job', 'no_such_job'),
        'unknown_engine': ('unknown_engine', 'sim-z'),
        'unknown_request': ('unknown_job', 'nope'),
        'bad_url': ('bad_parameter', 'http'),
        'bad_jobs': ('bad_parameter', 'jobs entry'),
        'bad_credentials': ('bad_parameter', 'engine_credentials[sim-a]'),
        'no_database': ('store_unavailable', '127.0.0.1'),
        'bad_store': ('bad_parameter', 'unsupported queue store'),
    }
    for name, (kind, words) in expectations.items():
        assert res[name]['failed'], name
        assert res[name]['error_kind'] == kind, (name, res[name])
        assert words in res[name]['msg'], (name, res[name]['msg'])
    for name in ('bad_slots', 'bad_priority'):  # caught by Ansible's own type checks
        assert res[name]['failed'] and ('slots' in res[name]['msg'] or 'priority' in res[name]['msg'])
    assert 'Db-Secret-1' not in out
    # check mode: steps that act on engines are skipped, a cancel only says it would change
    assert res['check_schedule'].get('skipped') and res['check_poll'].get('skipped')
    assert res['check_cancel']['changed'] and res['check_cancel']['state'] == 'QUEUED'
    after = res['after']
    assert [(job['request_id'], job['state']) for job in after['jobs']] == [('keep-me', 'QUEUED')]
    assert sorted(engine['name'] for engine in after['engines']) == ['sim-a', 'sim-b']
    assert all(engine['slots'] == 2 for engine in after['engines'])


@pytest.mark.slow
def test_cancel_a_running_job_and_cancel_on_timeout(runner, engines):
    before = len(all_executions(engines, 'long_job'))
    tasks = register_engines_tasks(engines) + [
        {'name': 'Queue a long job', 'orchestra.fleet.masking_job': {
            'job_name': 'long_job', 'request_id': 'long-1', 'wait': False}},
        {'name': 'Place it', 'orchestra.fleet.masking_schedule': {}, 'register': 'placed'},
        {'name': 'Start it', 'orchestra.fleet.masking_poll': {}, 'register': 'started'},
        {'name': 'Cancel it and wait', 'orchestra.fleet.masking_job': {
            'request_id': 'long-1', 'state': 'cancelled', 'timeout': 60, 'poll_interval': 0.2}, 'register': 'cancelled'},
        {'name': 'Cancel again', 'orchestra.fleet.masking_job': {'request_id': 'long-1', 'state': 'cancelled'},
         'register': 'cancelled_again'},
        {'name': 'Wait too briefly, cancel on timeout', 'orchestra.fleet.masking_job': {
            'job_name': 'long_job', 'request_id': 'long-2', 'timeout': 2, 'poll_interval': 0.2, 'cancel_on_timeout': True},
         'register': 'timed_out', 'ignore_errors': True},
        {'name': 'History of the first', 'orchestra.fleet.masking_queue_info': {
            'jobs': False, 'engines': False, 'history_for': ['long-1']}, 'register': 'story'},
    ]
    rc, out, res = runner.play(tasks, register=['placed', 'started', 'cancelled', 'cancelled_again', 'timed_out', 'story'])
    assert rc == 0, out
    assert res['placed']['placed'] == 1 and res['placed']['changed']
    assert res['started']['step']['started'] == 1 and res['started']['changed']
    assert res['cancelled']['changed'] and res['cancelled']['state'] == 'CANCELLED'
    assert not res['cancelled_again']['changed']
    timed_out = res['timed_out']
    assert timed_out['failed'] and timed_out['error_kind'] == 'timeout' and timed_out['state'] == 'CANCELLED'
    runs = all_executions(engines, 'long_job')
    assert len(runs) == before + 2
    assert [status for _id, status in runs[-2:]] == ['CANCELLED', 'CANCELLED'] or \
        sorted(status for _id, status in runs[before:]) == ['CANCELLED', 'CANCELLED']
    story = list(res['story']['history'].values())[0]
    assert [step['to_state'] for step in story][-1] == 'CANCELLED'
    assert 'RUNNING' in [step['to_state'] for step in story]


@pytest.mark.slow
def test_shared_postgresql_store(tmp_path, engines):
    from tests.support.lab.postgres import PostgresServer  # pylint: disable=import-outside-toplevel
    server = PostgresServer().start()
    try:
        runner = Runner(tmp_path, server.dsn)
        tasks = register_engines_tasks(engines) + [
            {'name': 'Run a job on the shared store', 'orchestra.fleet.masking_job': {
                'job_name': 'ok_job', 'request_id': 'pg-1', 'timeout': 60, 'poll_interval': 0.2}, 'register': 'ran'},
            {'name': 'Read it back', 'orchestra.fleet.masking_queue_info': {}, 'register': 'info'},
        ]
        rc, out, res = runner.play(tasks, register=['ran', 'info'])
        assert rc == 0, out
        assert res['ran']['state'] == 'SUCCEEDED'
        assert res['info']['store'].startswith('postgresql://')
        assert [job['request_id'] for job in res['info']['jobs']] == ['pg-1']
    finally:
        server.stop()


def _wait_until(predicate, timeout=60.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError('condition not reached in %.0f s' % timeout)


@pytest.mark.slow
@pytest.mark.parametrize('signal_name', ['SIGINT', 'SIGTERM'])
def test_interrupted_wait_cancels_its_job_when_asked(runner, engines, signal_name):
    """issue 10 item 6: Ctrl-C (SIGINT) or an AWX cancel (SIGTERM) of a waiting ansible-playbook, with
    cancel_on_interrupt, cancels the job on the engine; without it the job runs on (and says so)."""
    import json
    import os
    import signal
    import time
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue
    rc, out, _res = runner.play(register_engines_tasks(engines))
    assert rc == 0, out
    for cancel in (True, False):
        request = 'interrupt-%s-%s' % (signal_name, cancel)
        before = set(run_id for run_id, _status in all_executions(engines, 'long_job'))
        proc, _path = runner.start_play([{'name': 'Wait for a long job', 'orchestra.fleet.masking_job': {
            'job_name': 'long_job', 'request_id': request, 'timeout': 300, 'poll_interval': 0.2,
            'cancel_on_interrupt': cancel}}])
        try:
            new = _wait_until(lambda: [r for r in all_executions(engines, 'long_job') if r[0] not in before and r[1] == 'RUNNING'])
            time.sleep(0.5)
            os.killpg(proc.pid, getattr(signal, signal_name))
            output = proc.communicate(timeout=90)[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=10)
        assert proc.returncode != 0, output
        queue = MaskingQueue(runner.store)
        job = queue.job(request)
        execution = [r for r in all_executions(engines, 'long_job') if r[0] == new[0][0]][0]
        if cancel:
            _wait_until(lambda: queue.job(request)['state'] == 'CANCELLED', timeout=30)
            assert [r for r in all_executions(engines, 'long_job') if r[0] == new[0][0]][0][1] == 'CANCELLED', output
        else:
            assert job['state'] in ('RUNNING', 'STARTING'), json.dumps(job)
            assert execution[1] == 'RUNNING'
            # tidy up: the engines are shared with the other tests (cancel on the engine needs the login)
            with_login = MaskingQueue(runner.store, credentials={'*': dict(USER)})
            with_login.cancel(request)
            with_login.wait([request], timeout=30, poll_interval=0.2)
            with_login.close()
        queue.close()
