"""masking_engine discover: true and masking_engine_info, by the real ansible-playbook against real simulators."""
import pytest

from tests.integration.engine_discovery.conftest import ENVIRONMENTS, JOBS_PER_ENVIRONMENT, catalogue_config
from tests.integration.masking_modules.helpers import USER
from tests.support.lab.ports import free_port

pytestmark = pytest.mark.timeout(300)


def discover(name, url=None, **explicit):
    args = dict(name=name, discover=True, **explicit)
    if url:
        args['url'] = url
    return args


def test_discovery_reads_three_environments_of_paged_jobs_and_is_idempotent(runner, sims):
    sim = sims(catalogue_config('disc-a'))    # NumSimulJobsAllowed 0 on 5 cores -> 4 slots; 8192 MB for jobs
    task = discover('disc-a', sim.url)
    rc, out, res = runner.play([
        {'name': 'Discover (check mode)', 'orchestra.fleet.masking_engine': task, 'check_mode': True, 'diff': True,
         'register': 'checked'},
        {'name': 'Queue after check mode', 'orchestra.fleet.masking_queue_info': {}, 'register': 'after_check'},
        {'name': 'Discover', 'orchestra.fleet.masking_engine': task, 'register': 'found'},
        {'name': 'Discover again', 'orchestra.fleet.masking_engine': task, 'register': 'again'},
        {'name': 'Discover again (check mode)', 'orchestra.fleet.masking_engine': task, 'check_mode': True,
         'register': 'again_checked'},
    ], register=['checked', 'after_check', 'found', 'again', 'again_checked'])
    assert rc == 0, out
    checked = res['checked']
    assert checked['changed'] and checked['diff']['before'] == {}
    assert checked['diff']['after']['slots'] == 4 and len(checked['diff']['after']['jobs']) == 3 * JOBS_PER_ENVIRONMENT
    assert res['after_check']['engines'] == []          # check mode wrote nothing
    found = res['found']
    assert found['changed']
    engine = found['engine']
    assert engine['slots'] == 4 and engine['memory_mb'] == 8192
    assert engine['discovered'] == ['slots', 'memory_mb', 'jobs'] and engine['jobs_read_at']
    expected = [{'name': 'mask_%s_%03d' % (env, n), 'environment': env}
                for env in ENVIRONMENTS for n in range(JOBS_PER_ENVIRONMENT)]
    assert sorted(engine['jobs'], key=lambda j: (j['name'], j['environment'])) == sorted(
        expected, key=lambda j: (j['name'], j['environment']))
    assert found['sources'] == {
        'slots': 'system-information totalAvailableCores 5 - 1 (NumSimulJobsAllowed is 0)',
        'memory_mb': 'application-settings MaximumMemoryForJobs',
        'jobs': 'the engine: %d jobs in 3 environments' % (3 * JOBS_PER_ENVIRONMENT)}
    assert found['discovered']['version'] == '6.0.17.0'
    assert not res['again']['changed'] and res['again']['engine']['jobs'] == engine['jobs']
    assert not res['again_checked']['changed']


def test_explicit_values_override_and_the_result_says_where_each_came_from(runner, sims):
    sim = sims(catalogue_config('disc-b', slots=6, jobs_per_environment=3))
    override = discover('disc-b', sim.url, slots=2, jobs=['mask_dev_000', {'name': 'mask_prod_001', 'environment': 'prod'}])
    rc, out, res = runner.play([
        {'name': 'Discover', 'orchestra.fleet.masking_engine': discover('disc-b', sim.url), 'register': 'plain'},
        {'name': 'Override slots and jobs', 'orchestra.fleet.masking_engine': override, 'diff': True,
         'register': 'override'},
        {'name': 'Override again', 'orchestra.fleet.masking_engine': override, 'register': 'override_again'},
        {'name': 'Set memory by hand, no discovery', 'orchestra.fleet.masking_engine': {'name': 'disc-b', 'memory_mb': 1000},
         'register': 'by_hand'},
    ], register=['plain', 'override', 'override_again', 'by_hand'])
    assert rc == 0, out
    assert res['plain']['engine']['slots'] == 6
    assert res['plain']['sources']['slots'] == 'application-settings NumSimulJobsAllowed'
    over = res['override']
    assert over['changed'] and over['engine']['slots'] == 2
    assert over['engine']['jobs'] == ['mask_dev_000', {'name': 'mask_prod_001', 'environment': 'prod'}]
    assert over['sources']['slots'] == 'explicit' and over['sources']['jobs'] == 'explicit'
    assert over['sources']['memory_mb'] == 'application-settings MaximumMemoryForJobs'
    assert over['discovered']['slots'] == 6 and len(over['discovered']['jobs']) == 9   # what the engine said
    assert over['engine']['discovered'] == ['memory_mb']
    assert over['diff']['before']['slots'] == 6 and over['diff']['after']['slots'] == 2
    assert not res['override_again']['changed']
    assert res['by_hand']['changed'] and res['by_hand']['engine']['discovered'] == []   # memory is now the operator's


def test_refused_login_and_unreachable_engine_fail_clearly_and_leave_the_queue_as_it_was(runner, sims):
    sim = sims(catalogue_config('disc-c', slots=3, jobs_per_environment=2))
    rc, out, res = runner.play([
        {'name': 'Discover', 'orchestra.fleet.masking_engine': discover('disc-c', sim.url), 'register': 'found'},
        {'name': 'Queue before', 'orchestra.fleet.masking_queue_info': {}, 'register': 'before'},
    ], register=['found', 'before'])
    assert rc == 0, out
    before = res['before']
    sim.set_users([{'username': USER['username'], 'password': 'Changed-34'}])   # the engine starts refusing the login
    sim.add_job('dev', 'mask_new')                                               # and has something new to find
    dead = 'http://127.0.0.1:%d/masking/api' % free_port()
    rc, out, res = runner.play([
        {'name': 'Discover with a refused login', 'orchestra.fleet.masking_engine': discover('disc-c'),
         'register': 'refused', 'ignore_errors': True},
        {'name': 'Discover an engine nobody answers for', 'orchestra.fleet.masking_engine': discover('disc-dead', dead),
         'register': 'dead', 'ignore_errors': True},
        {'name': 'Queue after', 'orchestra.fleet.masking_queue_info': {}, 'register': 'after'},
    ], register=['refused', 'dead', 'after'])
    assert rc == 0, out
    refused = res['refused']
    assert refused['failed'] and refused['error_kind'] == 'engine_auth'
    assert 'disc-c' in refused['msg'] and 'nothing was changed in the queue' in refused['msg']
    assert USER['password'] not in out and 'Changed-34' not in out
    dead_result = res['dead']
    assert dead_result['failed'] and dead_result['error_kind'] == 'engine_unreachable' and 'disc-dead' in dead_result['msg']
    assert res['after']['engines'] == before['engines']


def test_engine_info_reports_jobs_settings_and_executions_ours_and_foreign(runner, sims):
    hostile = "{{ lookup('env', 'HOME') }}"   # a job name on the engine is data, never a template
    sim = sims(catalogue_config('info-a', slots=3, jobs_per_environment=2, extra_jobs=[
        ('dev', {'name': 'hold', 'duration': 60, 'max_memory': 700}), ('test', {'name': hostile, 'duration': 0.1})]))
    outside = sim.start_outside('hold')
    dead = 'http://127.0.0.1:%d/masking/api' % free_port()
    rc, out, res = runner.play([
        {'name': 'Discover', 'orchestra.fleet.masking_engine': discover('info-a', sim.url)},
        {'name': 'Register an engine nobody answers for', 'orchestra.fleet.masking_engine': {
            'name': 'info-dead', 'url': dead, 'slots': 1}},
        {'name': 'Ask the engines', 'orchestra.fleet.masking_engine_info': {}, 'register': 'info', 'check_mode': True},
        {'name': 'Ask one engine', 'orchestra.fleet.masking_engine_info': {'name': 'info-a'}, 'register': 'one'},
        {'name': 'Use a job name in a message', 'ansible.builtin.set_fact': {
            'names': "{{ one.engines[0].jobs | map(attribute='name') | list }}"}},
        {'name': 'Ask without credentials', 'orchestra.fleet.masking_engine_info': {
            'name': 'info-a', 'username': None, 'password': None}, 'register': 'nocreds'},
    ], register=['info', 'one', 'names', 'nocreds'])
    assert rc == 0, out
    by_name = dict((engine['name'], engine) for engine in res['info']['engines'])
    assert not res['info']['changed'] and sorted(by_name) == ['info-a', 'info-dead']
    engine = by_name['info-a']
    assert engine['reachable'] is True and engine['error'] is None and engine['version'] == '6.0.17.0'
    assert engine['settings']['NumSimulJobsAllowed'] == '3'
    assert engine['capacity']['slots'] == {'value': 3, 'source': 'application-settings NumSimulJobsAllowed'}
    jobs = dict(((job['name'], job['environment']), job) for job in engine['jobs'])
    assert jobs[('hold', 'dev')]['max_memory_mb'] == 700 and jobs[('hold', 'dev')]['application'] == 'crm'
    assert jobs[('mask_prod_001', 'prod')]['application'] == 'billing'
    foreign = engine['executions']['foreign']
    assert [(e['execution_id'], e['job_name'], e['status']) for e in foreign] == [(outside['executionId'], 'hold', 'RUNNING')]
    assert engine['executions']['ours'] == []
    assert engine['queue']['slots'] == 3 and engine['queue']['drained'] is False
    dead_engine = by_name['info-dead']
    assert dead_engine['reachable'] is False and dead_engine['error_kind'] == 'engine_unreachable'
    assert 'info-dead' in dead_engine['error']
    assert res['one']['engines'][0]['name'] == 'info-a'
    assert hostile in res['names'] and hostile in [job['name'] for job in engine['jobs']]   # returned as sent, not templated
    nocreds = res['nocreds']['engines'][0]
    assert nocreds['reachable'] is None and nocreds['error_kind'] == 'no_credentials'
