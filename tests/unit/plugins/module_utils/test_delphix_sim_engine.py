"""The simulator's engine model with a fake clock: capacity, memory, progress, cancel, tokens, record."""
import pytest

from tests.support.delphix_sim import SIM_SOURCE  # noqa: F401  # pylint: disable=unused-import  # tools/delphix_sim on sys.path
from delphix_sim.config import ConfigError, normalize, seed_config  # noqa: E402  # pylint: disable=wrong-import-position
from delphix_sim.engine import FILTER_STATUSES, Engine, EngineError  # noqa: E402  # pylint: disable=wrong-import-position
from delphix_sim.faults import FaultError, Faults  # noqa: E402  # pylint: disable=wrong-import-position


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(jobs, slots=2, memory_mb=None, **options):
    clock = Clock()
    engine = Engine(normalize(seed_config('eng', jobs, slots=slots, memory_mb=memory_mb, **options)), clock=clock)
    ids = {job.name + '@' + engine.environments[job.env]['environmentName']: job.id for job in engine.jobs.values()}
    return engine, clock, ids


def test_slots_queue_and_fifo_admission():
    engine, clock, ids = make([{'name': n, 'duration': 10} for n in 'abc'], slots=2)
    runs = [engine.start({'jobId': ids[n + '@env']}) for n in 'abc']
    assert [r.status for r in runs] == ['RUNNING', 'RUNNING', 'QUEUED']
    clock.now += 10.0
    engine.advance()
    assert [r.status for r in runs] == ['SUCCEEDED', 'SUCCEEDED', 'RUNNING']
    assert runs[2].start == 1010.0  # started the instant a slot freed, not when somebody looked
    assert engine.record()['max_concurrency'] == 2


def test_memory_budget_queues_and_lets_a_smaller_job_pass():
    engine, clock, ids = make([{'name': 'big', 'max_memory': 3000, 'duration': 5},
                               {'name': 'huge', 'max_memory': 2000, 'duration': 5},
                               {'name': 'small', 'max_memory': 500, 'duration': 5}], slots=5, memory_mb=4000)
    big, huge, small = (engine.start({'jobId': ids[n + '@env']}) for n in ('big', 'huge', 'small'))
    assert (big.status, huge.status, small.status) == ('RUNNING', 'QUEUED', 'RUNNING')
    clock.now += 5.0
    engine.advance()
    assert huge.status == 'RUNNING'
    assert engine.record()['max_memory_in_use'] <= 4000


def test_zero_simul_jobs_means_cores_minus_one():
    engine, _clock, _ids = make([{'name': 'a'}], slots=0, total_available_cores=4)
    assert engine.slots() == 3


def test_progress_counts_then_masks():
    engine, clock, ids = make([{'name': 'a', 'duration': 10, 'rows': 1000}])
    run = engine.start({'jobId': ids['a@env']})
    assert engine.progress(run) == (0, -1)
    clock.now += 6.0
    masked, total = engine.progress(run)
    assert total == 1000 and 0 < masked < 1000
    clock.now += 4.0
    engine.advance()
    assert engine.progress(run) == (1000, 1000)


@pytest.mark.parametrize('outcome', ['SUCCEEDED', 'WARNING', 'FAILED', 'ODD'])
def test_outcomes_and_events(outcome):
    engine, clock, ids = make([{'name': 'a', 'duration': 1, 'outcome': outcome}])
    run = engine.start({'jobId': ids['a@env']})
    clock.now += 1.0
    engine.advance()
    assert run.status == outcome
    events = engine.events(run)
    assert [e['severity'] for e in events] == {'WARNING': ['WARNING'], 'FAILED': ['ERROR']}.get(outcome, [])


def test_double_start_conflict_or_allowed():
    engine, _clock, ids = make([{'name': 'a', 'duration': 5}])
    engine.start({'jobId': ids['a@env']})
    with pytest.raises(EngineError) as caught:
        engine.start({'jobId': ids['a@env']})
    assert caught.value.status == 409
    lenient, _clock, ids = make([{'name': 'a', 'duration': 5}], double_start='allow')
    lenient.start({'jobId': ids['a@env']})
    lenient.start({'jobId': ids['a@env']})
    assert lenient.record()['overlaps']  # the record shows the double run


def test_cancel_with_expected_status():
    engine, _clock, ids = make([{'name': 'a', 'duration': 5}, {'name': 'b', 'duration': 5}], slots=1)
    running = engine.start({'jobId': ids['a@env']})
    queued = engine.start({'jobId': ids['b@env']})
    with pytest.raises(EngineError) as caught:
        engine.cancel(queued.id, expected='RUNNING')
    assert caught.value.status == 409
    assert engine.cancel(queued.id, expected='QUEUED').status == 'CANCELLED'
    assert engine.cancel(running.id).status == 'CANCELLED'
    with pytest.raises(EngineError):
        engine.cancel(running.id)


def test_unknown_job_and_multi_tenant():
    engine, _clock, ids = make([{'name': 'mt', 'multi_tenant': True}])
    with pytest.raises(EngineError) as caught:
        engine.start({'jobId': 999999})
    assert caught.value.status == 404
    with pytest.raises(EngineError) as caught:
        engine.start({'jobId': ids['mt@env']})
    assert caught.value.status == 400
    assert engine.start({'jobId': ids['mt@env'], 'targetConnectorId': 3}).target_connector == 3


def test_tokens_expire_by_calls_and_time():
    engine, clock, _ids = make([{'name': 'a'}], token_timeout_s=60)
    token = engine.login('admin', 'Admin-12')
    engine.check_token(token, expiry_calls=2)
    engine.check_token(token, expiry_calls=2)
    with pytest.raises(EngineError):
        engine.check_token(token, expiry_calls=2)
    token = engine.login('admin', 'Admin-12')
    clock.now += 61
    with pytest.raises(EngineError) as caught:
        engine.check_token(token)
    assert caught.value.status == 401 and 'expired' in caught.value.message
    with pytest.raises(EngineError):
        engine.login('admin', 'wrong')


def test_status_generations():
    older, clock, ids = make([{'name': 'w', 'outcome': 'WARNING', 'duration': 1}, {'name': 'q'}], slots=1,
                             status_set='older')
    warn = older.start({'jobId': ids['w@env']})
    queued = older.start({'jobId': ids['q@env']})
    assert older.public_status(queued) == 'RUNNING'
    clock.now += 1
    older.advance()
    assert older.public_status(warn) == 'SUCCEEDED'
    waiting, _clock, ids = make([{'name': 'a'}, {'name': 'b'}], slots=1, queued_status='WAITING')
    waiting.start({'jobId': ids['a@env']})
    assert waiting.public_status(waiting.start({'jobId': ids['b@env']})) == 'WAITING'


def test_job_ids_differ_per_engine():
    one = Engine(normalize(seed_config('engine-one', [{'name': 'a'}])))
    two = Engine(normalize(seed_config('engine-two', [{'name': 'a'}])))
    assert [j.id for j in one.jobs.values()] != [j.id for j in two.jobs.values()]


def test_bad_configs_are_refused():
    for bad in ({'engine': {'nope': 1}}, {'engine': {'status_set': 'x'}}, {'engine': {'post_status': 202}},
                {'applications': [{'name': 'a', 'environments': [{'name': 'e', 'jobs': [{'name': 'x' * 51}]}]}]}):
        with pytest.raises(ConfigError):
            normalize(bad)


def test_fault_knobs_budget_and_match():
    faults = Faults({'error_rate': 1.0, 'budget': 2, 'match': '^POST '})
    assert faults.draw('GET /executions') is None
    assert [faults.draw('POST /executions') for _call in range(3)] == ['error', 'error', None]
    with pytest.raises(FaultError):
        faults.update({'error_rate': 2})
    with pytest.raises(FaultError):
        faults.update({'bogus': 1})


def test_down_window():
    clock = Clock()
    faults = Faults({'down_after': 1.0, 'down_for': 2.0}, clock=clock)
    assert not faults.is_down()
    clock.now += 1.5
    assert faults.is_down()
    clock.now += 2.0
    assert not faults.is_down()


def test_the_engine_keeps_its_own_clock():
    engine, clock, ids = make([{'name': 'a', 'duration': 2}], clock_offset_s=-300)
    run = engine.start({'jobId': ids['a@env']})
    assert run.submit == run.start == clock.now - 300 == engine.now()
    clock.now += 2.0
    engine.advance()
    assert run.end == clock.now - 300 and run.status == 'SUCCEEDED'
    assert engine.record()['clock_offset_s'] == -300.0


def test_execution_ids_only_grow_across_jobs_cancels_and_conflicts():
    engine, clock, ids = make([{'name': 'a', 'duration': 1}, {'name': 'b', 'duration': 1}], slots=1)
    seen = [engine.start({'jobId': ids['a@env']}).id, engine.start({'jobId': ids['b@env']}).id]
    with pytest.raises(EngineError):
        engine.start({'jobId': ids['a@env']})   # 409: no id used up or reused
    engine.cancel(seen[1])
    clock.now += 5
    seen.append(engine.start({'jobId': ids['b@env']}).id)
    assert seen == sorted(seen) and len(set(seen)) == 3


def test_the_status_filter_has_no_warning_as_on_a_real_engine():
    assert 'WARNING' not in FILTER_STATUSES and 'WAITING' in FILTER_STATUSES


def test_events_carry_timestamp_with_a_capital_s():
    engine, clock, ids = make([{'name': 'w', 'duration': 1, 'outcome': 'WARNING'}])
    run = engine.start({'jobId': ids['w@env']})
    clock.now += 2
    engine.advance()
    [event] = engine.events(run)
    assert event['timeStamp'] == run.end and 'timestamp' not in event


def test_posts_answer_201_by_default():
    assert normalize(seed_config('eng', []))['engine']['post_status'] == 201
    with pytest.raises(ConfigError):
        normalize(seed_config('eng', [], clock_offset_s='soon'))


def test_outside_starts_job_changes_users_and_settings():
    engine, clock, ids = make([{'name': 'a', 'duration': 10}, {'name': 'b', 'duration': 10}], slots=1)
    outside = engine.start({'jobId': ids['a@env']}, origin='outside')
    ours = engine.start({'jobId': ids['b@env']})
    assert (outside.status, ours.status) == ('RUNNING', 'QUEUED')
    assert [e['origin'] for e in engine.record()['executions']] == ['outside', 'api']
    engine.update_settings({'num_simul_jobs_allowed': 2})
    assert ours.status == 'RUNNING'                       # more room admits at once
    with pytest.raises(EngineError):
        engine.update_settings({'num_simul_jobs_allowed': -1})
    with pytest.raises(EngineError):
        engine.update_settings({'unknown': 1})
    added = engine.add_job('env', dict(outside.job.spec, name='c'))
    assert added.id > max(ids.values())                   # ids keep growing
    engine.rename_job(added.id, 'c2')
    assert engine.find_job(name='c2').id == added.id
    engine.delete_job(added.id)
    with pytest.raises(EngineError):
        engine.find_job(added.id)
    engine.set_users([{'username': 'admin', 'password': 'New-1'}])
    with pytest.raises(EngineError):
        engine.login('admin', 'Admin-12')
    assert engine.login('admin', 'New-1')


def test_memory_budget_is_the_setting_else_the_allocated_memory_it_reports():
    engine, _clock, _ids = make([{'name': 'a'}], memory_mb=None)
    assert engine.memory_budget() == 65536
    engine.update_settings({'max_memory_for_jobs': 2048})
    assert engine.memory_budget() == 2048 and engine.record()['memory_budget'] == 2048
