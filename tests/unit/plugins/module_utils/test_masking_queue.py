"""The queue's state machine with a fake engine driver and a fake clock (no network, no sleeping).

The fake engine is no more lenient than a real one: execution ids only grow, a start's answer can be
lost after the execution exists, and reconcile adopts only by the job's start marker (never by time:
the fake's executions carry the engine's own clock, which the queue never reads for adoption).
"""
import collections
import itertools

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import ExecutionInfo
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineAuthError, EngineConflict, EngineJobAmbiguous, EngineJobNotFound, EngineNotReached, EngineUnavailable, InvalidRequest,
    MissingCredentials, UnknownEngine, UnknownJob)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue, decide, explain
from tests.support.fake_clock import Clock

SECRET = 'pw-that-must-never-be-stored'


class FakeEngine:
    """An engine's executions; the test decides what its next start does and when executions end."""

    ids = itertools.count(1)

    def __init__(self, name, clock, offset=0.0):
        self.name = name
        self.clock = lambda: clock() + offset   # the engine's own clock, skewed from the controller's
        self.offset = offset
        self.executions = {}   # id -> dict(job, status, submitted)
        self.post_markers = []
        self.start_script = []  # next start outcomes: 'ok', 'lost', 'down', 'conflict', 'notfound', 'auth', 'garbled'
        self.down = False
        self.unreached = False   # connection refused: nothing reaches the engine
        self.calls = collections.Counter()

    def add(self, job_name, status='RUNNING'):
        execution_id = next(self.ids)
        self.executions[execution_id] = {'job': job_name, 'status': status, 'submitted': self.clock()}
        return execution_id

    def info(self, execution_id):
        run = self.executions[execution_id]
        done = run['status'] in ('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED')
        return ExecutionInfo(execution_id, 77, run['status'], 10 if done else None, 10 if done else None, run['submitted'],
                             self.clock() if done else None)

    def finish(self, job_name, status='SUCCEEDED'):
        for run in self.executions.values():
            if run['job'] == job_name and run['status'] in ('RUNNING', 'QUEUED'):
                run['status'] = status


class FakeDriver:
    def __init__(self, engine):
        self.engine = engine

    def _check(self, call):
        self.engine.calls[call] += 1
        if self.engine.unreached:
            raise EngineNotReached('connection refused')
        if self.engine.down:
            raise EngineUnavailable('connection reset')

    def start_marker(self, job):
        self._check('start_marker')
        return max([i for i, run in self.engine.executions.items() if run['job'] == job['job_name']] or [0])

    def start(self, job):
        self._check('start')
        assert job['start_marker'] is not None, 'the queue must record the marker before the POST'
        self.engine.post_markers.append(job['start_marker'])
        outcome = self.engine.start_script.pop(0) if self.engine.start_script else 'ok'
        if outcome == 'ok':
            return self.engine.info(self.engine.add(job['job_name']))
        if outcome == 'lost':
            self.engine.add(job['job_name'])
            raise EngineUnavailable('read timed out')
        raise {'down': EngineUnavailable('connection reset'), 'conflict': EngineConflict('HTTP 409 already running'),
               'error500': EngineUnavailable('HTTP 500 internal error'),
               'ambiguous': EngineJobAmbiguous('mask_a exists in environments dev and prod'),
               'notfound': EngineJobNotFound('masking job %r does not exist' % job['job_name']),
               'auth': EngineAuthError('login refused'), 'garbled': DriverError('answer without an execution')}[outcome]

    def reconcile(self, job):
        self._check('reconcile')
        for execution_id, run in sorted(self.engine.executions.items()):
            if run['job'] == job['job_name'] and execution_id > job['start_marker']:
                return self.engine.info(execution_id)
        return None

    def status(self, execution_id):
        self._check('status')
        return self.engine.info(execution_id)

    def statuses(self, last_known):
        self._check('statuses')
        return dict((execution_id, self.engine.info(execution_id)) for execution_id in last_known)

    def cancel(self, execution_id, expected_status=None):
        self._check('cancel')
        run = self.engine.executions[execution_id]
        if expected_status and run['status'] != expected_status:
            raise EngineConflict('not %s' % expected_status)
        run['status'] = 'CANCELLED'
        return self.engine.info(execution_id)

    def probe(self):
        self._check('probe')

    def close(self):
        self.engine.calls['close'] += 1

    def failure_detail(self, execution_id):
        return 'ORA-01017 logon denied' if self.engine.executions[execution_id]['status'] == 'FAILED' else None


class Lab:
    def __init__(self, tmp_path, credentials=None):
        self.clock = Clock()
        self.engines = {}
        self.seen_credentials = []
        self.url = str(tmp_path / 'queue.db')
        self.queue = self.make_queue(credentials if credentials is not None else {'*': {'username': 'admin', 'password': SECRET}})

    def factory(self, engine, credentials):
        if not credentials:
            raise MissingCredentials('no credentials for engine %s' % engine['name'])
        self.seen_credentials.append(credentials)
        return FakeDriver(self.engines[engine['name']])

    def make_queue(self, credentials, **options):
        settings = dict(credentials=credentials, driver_factory=self.factory, clock=self.clock, sleep=self.clock.sleep,
                        start_lease=60.0, retry_delay=5.0, probe_interval=10.0)
        settings.update(options)
        return MaskingQueue(self.url, **settings)

    def engine(self, name, slots=2, jobs=('mask_a', 'mask_b', 'mask_c'), offset=0.0, **options):
        self.engines[name] = FakeEngine(name, self.clock, offset)
        self.queue.ensure_engine(name, 'https://%s:8282' % name, slots=slots, jobs=list(jobs), **options)
        return self.engines[name]

    def step(self, queue=None):
        queue = queue or self.queue
        self.clock.now += 1.0
        return queue.schedule_step(), queue.poll_step()

    def history(self, job_id):
        return [(h['from_state'], h['to_state']) for h in self.queue.info(jobs=False, engines=False, history_for=[job_id])['history'][job_id]]


@pytest.fixture
def lab(tmp_path):
    return Lab(tmp_path)


def test_happy_path_through_every_state(lab):
    engine = lab.engine('e1')
    created, job = lab.queue.enqueue('mask_a', request_id='t-1', priority=2)
    assert created and job['state'] == 'QUEUED' and job['reason'] == 'waiting for the next scheduler step (free slots on e1)'
    assert lab.queue.enqueue('mask_a', request_id='t-1')[0] is False
    lab.step()
    job = lab.queue.job('t-1')
    assert job['state'] == 'RUNNING' and job['engine'] == 'e1' and job['execution_id'] and job['reason'] is None
    engine.finish('mask_a', 'SUCCEEDED')
    lab.step()
    job = lab.queue.job(job['id'])
    assert job['state'] == 'SUCCEEDED' and job['rows_masked'] == 10 and job['finished_at'].endswith('Z')
    assert lab.history(job['id']) == [(None, 'QUEUED'), ('QUEUED', 'SCHEDULED'), ('SCHEDULED', 'STARTING'),
                                      ('STARTING', 'RUNNING'), ('RUNNING', 'SUCCEEDED')]
    assert lab.queue.engine('e1')['slots_used'] == 0


def test_failed_and_warning_carry_the_engine_words(lab):
    engine = lab.engine('e1')
    bad = lab.queue.enqueue('mask_a')[1]
    warn = lab.queue.enqueue('mask_b')[1]
    lab.step()
    engine.finish('mask_a', 'FAILED')
    engine.finish('mask_b', 'WARNING')
    lab.step()
    assert lab.queue.job(bad['id'])['state'] == 'FAILED'
    assert 'ORA-01017' in lab.queue.job(bad['id'])['error']
    assert lab.queue.job(warn['id'])['state'] == 'WARNING'


def test_engine_side_queue_is_its_own_state(lab):
    engine = lab.engine('e1')
    job = lab.queue.enqueue('mask_a')[1]
    lab.clock.now += 1
    lab.queue.schedule_step()
    real_add = engine.add
    engine.add = lambda name, status='RUNNING': real_add(name, 'QUEUED')
    lab.queue.poll_step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'ENGINE_QUEUED' and 'queued by engine e1' in row['reason']
    engine.executions[row['execution_id']]['status'] = 'RUNNING'
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'RUNNING'


def test_lost_start_is_reconciled_never_posted_twice(lab):
    engine = lab.engine('e1')
    engine.start_script = ['lost']
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'STARTING' and 'reconcile' in row['reason']
    assert lab.queue.engine('e1')['unreachable_since'] is not None
    lab.clock.now += 10   # past the retry delay: the take-over reconciles first and adopts the execution
    lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'RUNNING' and len(engine.executions) == 1 and engine.calls['start'] == 1
    assert lab.queue.engine('e1')['unreachable_since'] is None
    assert row['attempt'] == 2


def test_start_that_never_arrived_is_retried_after_reconcile(lab):
    engine = lab.engine('e1')
    engine.start_script = ['down', 'down']
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'STARTING'
    lab.clock.now += 6
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'STARTING'           # reconciled: nothing there, POSTed again, down again
    lab.clock.now += 11
    lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'RUNNING' and len(engine.executions) == 1
    assert engine.calls['reconcile'] == 2 and engine.calls['start'] == 3


def test_gives_up_cleanly_when_a_start_never_succeeds(tmp_path):
    lab = Lab(tmp_path)
    lab.queue = lab.make_queue({'*': {'username': 'a', 'password': 'b'}}, max_start_attempts=2)
    engine = lab.engine('e1')
    engine.start_script = ['down'] * 10
    job = lab.queue.enqueue('mask_a')[1]
    for _unused in range(10):
        lab.clock.now += 60
        lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'FAILED' and 'gave up after 2 attempts' in row['error'] and not engine.executions


def test_dead_starter_is_taken_over_by_another_process(lab):
    """A process claimed the job (STARTING, not_before recorded) and died before or after its POST."""
    engine = lab.engine('e1')
    lab.queue.enqueue('mask_a')
    lab.queue.enqueue('mask_b')
    lab.clock.now += 1
    lab.queue.schedule_step()
    rows = lab.queue.store.jobs(states=['SCHEDULED'])
    for row in rows:   # both claimed by a process that then died; only the first POST reached the engine
        lab.queue.store.transition(row['id'], 'SCHEDULED', row['attempt'], 'STARTING', lab.clock(), attempt=row['attempt'] + 1,
                                   owner='otherhost:1:dead', not_before=lab.clock(), lease_until=lab.clock() + 60,
                                   start_marker=0)
    engine.add('mask_a')
    lab.step()
    assert sorted(j['state'] for j in lab.queue.info()['jobs']) == ['STARTING', 'STARTING']   # lease still runs
    lab.clock.now += 61
    lab.step()
    jobs = lab.queue.info()['jobs']
    assert [j['state'] for j in jobs] == ['RUNNING', 'RUNNING']
    assert len(engine.executions) == 2 and engine.calls['start'] == 1   # mask_a adopted, mask_b started once


def test_conflict_is_reconciled_then_requeued(lab):
    engine = lab.engine('e1')
    engine.start_script = ['conflict']
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'QUEUED' and '409' in row['reason'] and row['engine'] is None
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'QUEUED'     # not before the retry delay
    lab.clock.now += 5
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'RUNNING'


@pytest.mark.parametrize('outcome, words', [('notfound', 'does not exist'), ('auth', 'login refused')])
def test_refusals_fail_clearly(lab, outcome, words):
    engine = lab.engine('e1')
    engine.start_script = [outcome]
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'FAILED' and words in row['error'] and 'e1' in row['error']
    assert not engine.executions


def test_garbled_answer_is_settled_through_the_engine(lab):
    engine = lab.engine('e1')
    engine.start_script = ['garbled']
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'FAILED' and not engine.executions


def test_cancel_at_every_stage(lab):
    engine = lab.engine('e1', slots=1)
    queued = lab.queue.enqueue('mask_a', priority=-1)[1]
    scheduled = lab.queue.enqueue('mask_b', priority=5)[1]
    lab.clock.now += 1
    lab.queue.schedule_step()
    assert lab.queue.cancel(queued['id'])['state'] == 'CANCELLED'
    assert lab.queue.cancel(scheduled['id'])['state'] == 'CANCELLED'
    running = lab.queue.enqueue('mask_c')[1]
    lab.step()
    assert lab.queue.job(running['id'])['state'] == 'RUNNING'
    assert lab.queue.cancel(running['id'])['state'] == 'CANCELLED'
    assert [r['status'] for r in engine.executions.values()] == ['CANCELLED']
    # STARTING: the start is in doubt; the cancel waits for it to settle, then cancels what it finds
    engine.start_script = ['lost']
    starting = lab.queue.enqueue('mask_a', request_id='again')[1]
    lab.step()
    assert lab.queue.job(starting['id'])['state'] == 'STARTING'
    assert lab.queue.cancel(starting['id'])['state'] == 'STARTING'
    lab.clock.now += 10
    lab.step()
    lab.step()
    assert lab.queue.job(starting['id'])['state'] == 'CANCELLED'
    assert [r['status'] for r in engine.executions.values()] == ['CANCELLED', 'CANCELLED']
    assert lab.queue.cancel(starting['id'])['state'] == 'CANCELLED'   # cancelling a finished job is a no-op


def test_cancel_while_starting_with_nothing_started(lab):
    engine = lab.engine('e1')
    engine.start_script = ['down']
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    lab.queue.cancel(job['id'])
    lab.clock.now += 10
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'CANCELLED' and not engine.executions


def test_unreachable_engine_sends_scheduled_jobs_elsewhere_and_is_probed_back(lab):
    down = lab.engine('a', slots=4)
    lab.engine('b', slots=4)
    down.down = True
    ids = [lab.queue.enqueue('mask_%s' % n)[1]['id'] for n in 'abc']
    lab.step()
    states = dict((j['id'], (j['state'], j['engine'])) for j in lab.queue.info()['jobs'])
    assert lab.queue.engine('a')['unreachable_since'] is not None
    # one start was tried on a (outcome unknown: stays STARTING), the others went back to the queue and then to b
    lab.step()
    lab.step()
    states = dict((j['id'], (j['state'], j['engine'])) for j in lab.queue.info()['jobs'])
    on_b = [i for i in ids if states[i] == ('RUNNING', 'b')]
    on_a = [i for i in ids if states[i][1] == 'a']
    assert len(on_b) >= 2 and all(states[i][0] == 'STARTING' for i in on_a)
    for i in on_a:
        assert 'unreachable' in lab.queue.job(i)['reason']
    down.down = False
    lab.clock.now += 30
    lab.step()
    assert lab.queue.engine('a')['unreachable_since'] is None
    assert all(lab.queue.job(i)['state'] == 'RUNNING' for i in ids)


def test_refresh_of_a_down_engine_keeps_jobs_and_says_why(lab):
    engine = lab.engine('e1')
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    engine.down = True
    lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'RUNNING' and 'unreachable' in row['reason']
    engine.down = False
    engine.finish('mask_a')
    lab.clock.now += 20
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'SUCCEEDED'


def test_process_without_credentials_leaves_the_start_to_one_that_has_them(lab):
    engine = lab.engine('e1')
    blind = lab.make_queue({})
    job = lab.queue.enqueue('mask_a')[1]
    lab.step(blind)
    row = lab.queue.job(job['id'])
    assert row['state'] == 'SCHEDULED' and 'credentials' in row['reason'] and not engine.executions
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'RUNNING'


def test_credentials_are_never_stored(lab, tmp_path):
    engine = lab.engine('e1')
    lab.queue.enqueue('mask_a')
    lab.step()
    engine.finish('mask_a')
    lab.step()
    assert lab.seen_credentials and lab.seen_credentials[0]['password'] == SECRET
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in repr(lab.queue)


def test_wait_drives_the_queue_and_returns_in_order(lab):
    engine = lab.engine('e1', slots=1)
    first = lab.queue.enqueue('mask_a')[1]
    second = lab.queue.enqueue('mask_b')[1]
    original = lab.clock.sleep

    def sleep(seconds):   # the engine finishes whatever runs while the waiter sleeps
        original(seconds)
        for run in engine.executions.values():
            if run['status'] == 'RUNNING':
                run['status'] = 'SUCCEEDED'
    lab.queue._sleep = sleep   # pylint: disable=protected-access
    done = lab.queue.wait([second['id'], first['request_id']], timeout=120, poll_interval=1.0)
    assert [(j['id'], j['state']) for j in done] == [(second['id'], 'SUCCEEDED'), (first['id'], 'SUCCEEDED')]
    assert lab.queue.store.lease('driver')['owner'] is None     # released for the next waiter


def test_wait_follows_when_another_process_leads(lab):
    engine = lab.engine('e1')
    job = lab.queue.enqueue('mask_a')[1]
    lab.queue.store.acquire_lease('driver', 'someone-else', 30.0, lab.clock())
    lab.queue.wait([job['id']], timeout=10, poll_interval=1.0)
    assert not engine.executions                          # the leader drives, not us
    done = lab.queue.wait([job['id']], timeout=60, poll_interval=1.0)   # ... until its lease runs out
    assert done[0]['state'] == 'RUNNING' and engine.executions


def test_wait_timeout_with_cancel(lab):
    engine = lab.engine('e1')
    job = lab.queue.enqueue('mask_a')[1]
    done = lab.queue.wait([job['id']], timeout=5, poll_interval=1.0, cancel_on_timeout=True)
    assert done[0]['state'] == 'CANCELLED'
    assert [r['status'] for r in engine.executions.values()] == ['CANCELLED']


def test_bad_input_is_refused_clearly(lab):
    lab.engine('e1', jobs=['mask_a'])
    with pytest.raises(InvalidRequest, match='no engine carries job nope'):
        lab.queue.enqueue('nope')
    with pytest.raises(UnknownEngine, match='no engine named e9'):
        lab.queue.enqueue('mask_a', engine='e9')
    with pytest.raises(InvalidRequest, match='priority'):
        lab.queue.enqueue('mask_a', priority='high')
    with pytest.raises(InvalidRequest, match='at most 50'):
        lab.queue.enqueue('x' * 51)
    with pytest.raises(InvalidRequest, match='slots'):
        lab.queue.ensure_engine('e2', 'https://e2', slots=-1)
    with pytest.raises(InvalidRequest, match='url'):
        lab.queue.ensure_engine('e2', 'ftp://e2', slots=1)
    with pytest.raises(UnknownJob):
        lab.queue.job(4242)
    with pytest.raises(InvalidRequest, match='unknown job states'):
        lab.queue.info(states=['DONE'])
    assert lab.queue.info()['counts'] == {}


def test_ensure_engine_is_idempotent_and_has_a_dry_run(lab):
    lab.engine('e1', slots=2)
    assert lab.queue.ensure_engine('e1', 'https://e1:8282', slots=2)[0] == {}
    changed, preview = lab.queue.ensure_engine('e1', 'https://e1:8282', slots=5, dry_run=True)
    assert changed == {'slots': (2, 5)} and preview['slots'] == 5 and lab.queue.engine('e1')['slots'] == 2
    changed, engine = lab.queue.ensure_engine('e1', 'https://e1:8282', slots=5, drained=True)
    assert changed and engine['slots'] == 5 and engine['drained'] and engine['jobs'] == ['mask_a', 'mask_b', 'mask_c']


def test_drained_engine_finishes_running_jobs_but_takes_no_new_ones(lab):
    engine = lab.engine('e1')
    running = lab.queue.enqueue('mask_a')[1]
    lab.step()
    lab.queue.ensure_engine('e1', 'https://e1:8282', slots=2, drained=True)
    waiting = lab.queue.enqueue('mask_b')[1]
    engine.finish('mask_a')
    lab.step()
    assert lab.queue.job(running['id'])['state'] == 'SUCCEEDED'
    row = lab.queue.job(waiting['id'])
    assert row['state'] == 'QUEUED' and row['reason'] == 'engine e1 is drained'


def test_decide_and_explain():
    engines = [{'name': 'e1', 'slots': 1, 'slots_used': 0, 'memory_mb': None, 'memory_used_mb': 0, 'enabled': True,
                'drained': False, 'jobs': ['a'], 'unreachable_since': None, 'active_jobs': set()}]
    rows = [{'id': i, 'job_name': 'a', 'environment': None, 'priority': 0, 'engine_affinity': None, 'max_memory_mb': None,
             'attempt': 0, 'state': 'QUEUED', 'reason': None, 'next_try_at': None} for i in (1, 2, 3)]
    assert decide(rows, engines) == [(1, 'e1')]
    full = [dict(engines[0], slots_used=1, active_jobs={('a', None)})]
    held = dict(rows[2], reason='engine e1 refused (409); will place it again', next_try_at=50.0)
    explained = explain(rows[1:2] + [held, dict(rows[0], state='RUNNING')], full, now=10.0)
    assert [r['reason'] for r in explained] == ['all 1 slots full on engines e1', 'engine e1 refused (409); will place it again', None]
    assert explain([held], full, now=60.0)[0]['reason'] == 'all 1 slots full on engines e1'
    assert rows[1]['reason'] is None   # the input rows are not changed


def test_dead_holder_on_this_host_is_taken_over_after_the_grace_not_the_lease(tmp_path):
    import socket
    import subprocess
    lab = Lab(tmp_path)
    lab.queue = lab.make_queue({'*': {'username': 'a', 'password': 'b'}}, dead_holder_grace=5.0)
    engine = lab.engine('e1')
    job = lab.queue.enqueue('mask_a')[1]
    lab.clock.now += 1
    lab.queue.schedule_step()
    dead = subprocess.Popen(['true'])   # a pid that certainly ended
    dead.wait()
    row = lab.queue.store.jobs(states=['SCHEDULED'])[0]
    lab.queue.store.transition(row['id'], 'SCHEDULED', row['attempt'], 'STARTING', lab.clock(), attempt=row['attempt'] + 1,
                               owner='%s:%d:nonce:1' % (socket.gethostname(), dead.pid), not_before=lab.clock(),
                               lease_until=lab.clock() + 60, start_marker=0)
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'STARTING'   # its POST may still be on the way to the engine
    lab.clock.now += 5
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'RUNNING' and engine.calls['reconcile'] == 1


# ---- issue 10: adoption without clocks, dead engines, one owner per execution, the rerun rule

def test_engine_clock_ahead_an_older_run_is_never_adopted(lab):
    """Engine 30 s ahead, an earlier run of the same job ended 10 s ago (engine time), the POST gets a 500:
    the queue must not adopt the old run (that reported success with nothing masked)."""
    engine = lab.engine('e1', offset=30.0)
    old = engine.add('mask_a', status='SUCCEEDED')
    engine.executions[old]['submitted'] = engine.clock() - 10.0
    engine.start_script = ['error500']
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    assert lab.queue.job(job['id'])['state'] == 'STARTING' and lab.queue.job(job['id'])['start_marker'] == old
    lab.clock.now += 10
    lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'RUNNING' and row['execution_id'] != old and row['execution_id'] > old
    assert engine.calls['start'] == 2 and len(engine.executions) == 2


def test_engine_clock_behind_a_lost_answer_is_adopted_not_restarted(lab):
    engine = lab.engine('e1', offset=-30.0)
    engine.start_script = ['lost']
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    lab.clock.now += 10
    lab.step()
    row = lab.queue.job(job['id'])
    assert row['state'] == 'RUNNING' and engine.calls['start'] == 1 and len(engine.executions) == 1


@pytest.mark.parametrize('offset', [-300.0, 300.0])
def test_skewed_engines_lost_answers_and_500s_start_every_job_exactly_once(tmp_path, offset):
    import random
    rng = random.Random(int(offset))
    lab = Lab(tmp_path)
    engines = [lab.engine('e%d' % i, slots=3, offset=offset * (i + 1) / 3.0, jobs=['mask_%d' % n for n in range(6)])
               for i in range(3)]
    for engine in engines:
        engine.start_script = [rng.choice(['ok', 'ok', 'lost', 'error500', 'ok']) for _unused in range(60)]
    ids = [lab.queue.enqueue('mask_%d' % (n % 6))[1]['id'] for n in range(30)]
    peak = dict((e.name, 0) for e in engines)
    for _round in range(400):
        lab.clock.now += 7
        lab.step()
        for engine in engines:
            alive = sum(1 for run in engine.executions.values() if run['status'] in ('RUNNING', 'QUEUED'))
            peak[engine.name] = max(peak[engine.name], alive)
            for run in engine.executions.values():
                if run['status'] == 'RUNNING' and rng.random() < 0.3:
                    run['status'] = 'SUCCEEDED'
        if all(lab.queue.job(i)['state'] in ('SUCCEEDED', 'FAILED') for i in ids):
            break
    jobs = [lab.queue.job(i) for i in ids]
    assert [j['state'] for j in jobs] == ['SUCCEEDED'] * 30, [(j['state'], j['reason'], j['error']) for j in jobs]
    owners = [(j['engine'], j['execution_id']) for j in jobs]
    assert len(set(owners)) == 30                                   # no execution shared by two jobs
    executions = sum(len(e.executions) for e in engines)
    assert executions == 30                                         # exactly one execution per job, counted by the engines
    assert all(peak[e.name] <= 3 for e in engines), peak            # never above the slots


def test_start_that_never_reached_the_engine_is_placed_elsewhere_at_once(lab):
    dead = lab.engine('a', slots=2)
    lab.engine('b', slots=2)
    dead.unreached = True
    jobs = [lab.queue.enqueue('mask_%s' % n)[1] for n in 'ab']
    lab.clock.now += 1
    lab.queue.schedule_step()
    on_a = [j for j in lab.queue.info()['jobs'] if j['engine'] == 'a']
    assert on_a, 'the least loaded placement puts one job on each engine'
    lab.queue.poll_step()
    row = lab.queue.job(on_a[0]['id'])
    assert row['state'] == 'QUEUED' and row['engine'] is None
    last = lab.queue.info(jobs=False, engines=False, history_for=[row['id']])['history'][row['id']][-1]
    assert (last['from_state'], last['to_state']) == ('STARTING', 'QUEUED') and 'nothing was started' in last['detail']
    assert 'connection refused' in last['detail']
    engine = lab.queue.engine('a')
    assert engine['unreachable_since'] is not None and 'connection refused' in engine['last_error']
    lab.step()
    assert [lab.queue.job(j['id'])['engine'] for j in jobs] == ['b', 'b']
    assert all(lab.queue.job(j['id'])['state'] == 'RUNNING' for j in jobs) and not dead.executions


def test_an_execution_belongs_to_one_queue_job(lab):
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import ExecutionOwned
    lab.engine('e1')
    store = lab.queue.store
    rows = [lab.queue.enqueue('mask_%s' % n)[1] for n in 'ab']
    for row in rows:
        store.transition(row['id'], 'QUEUED', 0, 'SCHEDULED', 1.0, engine='e1')
        store.transition(row['id'], 'SCHEDULED', 0, 'STARTING', 2.0, attempt=1, start_marker=0)
    store.transition(rows[0]['id'], 'STARTING', 1, 'RUNNING', 3.0, execution_id=77)
    with pytest.raises(ExecutionOwned, match='already belongs to queue job'):
        store.transition(rows[1]['id'], 'STARTING', 1, 'RUNNING', 3.0, execution_id=77)


def test_one_unresolved_start_per_masking_job_and_engine(tmp_path):
    """Without the one-execution-per-job placement rule two entries of one job can sit on one engine; the second
    must not be POSTed while the first's start is unresolved (a reconcile could not tell their executions apart)."""
    lab = Lab(tmp_path)
    lab.queue = lab.make_queue({'*': {'username': 'a', 'password': 'b'}}, policy={'one_execution_per_job': False})
    engine = lab.engine('e1', slots=2)
    engine.start_script = ['lost']
    first = lab.queue.enqueue('mask_a')[1]
    second = lab.queue.enqueue('mask_a')[1]
    lab.step()
    assert lab.queue.job(first['id'])['state'] == 'STARTING' and lab.queue.job(second['id'])['state'] == 'SCHEDULED'
    assert engine.calls['start'] == 1
    lab.clock.now += 10
    lab.step()
    lab.step()
    rows = [lab.queue.job(j['id']) for j in (first, second)]
    assert [r['state'] for r in rows] == ['RUNNING', 'RUNNING'] and len(engine.executions) == 2
    assert rows[0]['execution_id'] != rows[1]['execution_id']


@pytest.mark.parametrize('outcome, kind', [('auth', 'engine_auth'), ('notfound', 'job_not_found'),
                                           ('ambiguous', 'job_ambiguous')])
def test_refusals_have_their_own_kind_and_rerun_runs_them_again(lab, outcome, kind):
    engine = lab.engine('e1')
    engine.start_script = [outcome]
    job = lab.queue.enqueue('mask_a', request_id='nightly')[1]
    lab.step()
    row = lab.queue.job('nightly')
    assert row['state'] == 'FAILED' and row['error_kind'] == kind
    assert lab.queue.enqueue('mask_a', request_id='nightly') == (False, row)          # reported as it ended
    created, again = lab.queue.enqueue('mask_a', request_id='nightly', rerun=True)
    assert created and again['id'] == job['id'] and again['state'] == 'QUEUED' and again['error'] is None
    lab.step()
    assert lab.queue.job('nightly')['state'] == 'RUNNING'
    engine.finish('mask_a')
    lab.step()
    assert lab.queue.enqueue('mask_a', request_id='nightly', rerun=True)[0] is False     # a success never reruns


def test_job_failed_only_when_the_engine_ran_it(lab):
    engine = lab.engine('e1')
    lab.queue.enqueue('mask_a', request_id='r')
    lab.step()
    engine.finish('mask_a', 'FAILED')
    lab.step()
    assert lab.queue.job('r')['error_kind'] == 'job_failed'


def test_sessions_are_closed_after_a_step_and_a_wait(lab):
    engine = lab.engine('e1')
    job = lab.queue.enqueue('mask_a')[1]
    lab.step()
    assert engine.calls['close'] == 1
    engine.finish('mask_a')
    lab.queue.wait([job['id']], timeout=30, poll_interval=1.0)
    assert engine.calls['close'] == 2


def test_a_reconcile_never_hands_one_execution_to_a_second_job(lab):
    """Should a driver ever offer an execution another job owns, the job fails loudly instead of sharing it."""
    engine = lab.engine('e1')
    first = lab.queue.enqueue('mask_a')[1]
    lab.step()
    owned = lab.queue.job(first['id'])['execution_id']
    second = lab.queue.enqueue('mask_b')[1]
    real = engine.add
    engine.add = lambda name, status='RUNNING': owned    # a confused engine answers with the first job's execution
    lab.step()
    engine.add = real
    row = lab.queue.job(second['id'])
    assert row['state'] == 'FAILED' and 'already belongs to queue job %d' % first['id'] in row['error']
    assert lab.queue.job(first['id'])['execution_id'] == owned


# ---- engines that describe themselves (fake engine, fake clock) ----------------------------------------------

class DescribingDriver(FakeDriver):
    """A fake driver that also describes its engine: settings, system-information, catalogue, active executions."""

    def describe(self):
        self._check('describe')
        if self.engine.refuse:
            raise EngineAuthError('engine %s refused the credentials: HTTP 401' % self.engine.name)
        catalogue = [{'jobName': name, 'maskingJobId': index + 1, 'environmentName': env, 'maxMemory': 100}
                     for index, (name, env) in enumerate(self.engine.catalogue)]
        system = {'totalAllocatedMemoryForJobs': 4096, 'totalAvailableCores': 4}
        return {'NumSimulJobsAllowed': str(self.engine.slots)}, system, catalogue

    def start_marker(self, job):
        if (job['job_name'], job['environment'] or 'dev') not in self.engine.catalogue:
            raise EngineJobNotFound('masking job %r does not exist' % job['job_name'])
        return super().start_marker(job)

    def active_executions(self):
        self._check('active')
        return [{'execution_id': i, 'job_id': 1, 'job_name': run['job'], 'status': run['status'], 'max_memory_mb': 100}
                for i, run in sorted(self.engine.executions.items()) if run['status'] in ('RUNNING', 'QUEUED')]


class DescribingLab(Lab):
    def factory(self, engine, credentials):
        if not credentials:
            raise MissingCredentials('no credentials for engine %s' % engine['name'])
        return DescribingDriver(self.engines[engine['name']])

    def describing(self, name, slots=2, jobs=(('mask_a', 'dev'), ('mask_b', 'dev'))):
        engine = FakeEngine(name, self.clock)
        engine.slots, engine.catalogue, engine.refuse = slots, list(jobs), False
        self.engines[name] = engine
        return engine


@pytest.fixture
def dlab(tmp_path):
    return DescribingLab(tmp_path)


def test_discover_engine_dry_run_then_registers_then_is_idempotent(dlab):
    dlab.describing('e1', slots=3)
    changes, engine, report = dlab.queue.discover_engine('e1', 'https://e1:8282', dry_run=True)
    assert changes and engine['slots'] == 3 and dlab.queue.engines() == []
    changes, engine, report = dlab.queue.discover_engine('e1', 'https://e1:8282')
    assert engine['slots'] == 3 and engine['memory_mb'] == 4096 and engine['discovered'] == ['slots', 'memory_mb', 'jobs']
    assert engine['jobs'] == [{'name': 'mask_a', 'environment': 'dev'}, {'name': 'mask_b', 'environment': 'dev'}]
    assert report['sources']['memory_mb'] == 'system-information totalAllocatedMemoryForJobs'
    assert not dlab.queue.discover_engine('e1')[0]                       # url and everything else as registered
    changes, engine, report = dlab.queue.discover_engine('e1', slots=1)
    assert changes['slots'] == (3, 1) and report['sources']['slots'] == 'explicit' and engine['discovered'] == ['memory_mb', 'jobs']


def test_discovery_failures_name_the_engine_and_change_nothing(dlab):
    engine = dlab.describing('e1')
    dlab.queue.discover_engine('e1', 'https://e1:8282')
    before = dlab.queue.engines()
    engine.refuse = True
    with pytest.raises(EngineAuthError, match=r'cannot discover engine e1 \(https://e1:8282\).*nothing was changed'):
        dlab.queue.discover_engine('e1', slots=5)
    engine.refuse, engine.down = False, True
    with pytest.raises(EngineUnavailable, match='cannot discover engine e1'):
        dlab.queue.discover_engine('e1')
    assert dlab.queue.engines() == before
    bare = dlab.make_queue(credentials={})
    with pytest.raises(MissingCredentials, match='no credentials for it'):
        bare.discover_engine('e1')
    with pytest.raises(InvalidRequest, match='url is required'):
        dlab.queue.discover_engine('e2')


def test_foreign_executions_give_back_a_placed_job_and_show_in_the_reason(dlab):
    engine = dlab.describing('e1', slots=1)
    dlab.queue.discover_engine('e1', 'https://e1:8282')
    outside = engine.add('mask_b')                                       # started in the engine's UI
    job = dlab.queue.enqueue('mask_a')[1]
    assert dlab.queue.schedule_step()['placed'] == 1                    # the scheduler has not seen it yet
    stats = dlab.queue.poll_step()
    assert stats['requeued'] == 1 and stats['started'] == 0 and engine.calls['start'] == 0
    reason = dlab.queue.job(job['id'])['reason']
    assert '1 of 1 slots used by an execution started outside the queue (execution %d of mask_b, RUNNING)' % outside in reason
    assert dlab.queue.schedule_step()['placed'] == 0
    assert dlab.queue.engine('e1')['foreign']['slots'] == 1
    engine.finish('mask_b')
    dlab.clock.now += 1.0
    dlab.queue.poll_step()                                               # sees the slot free again
    dlab.step()
    assert dlab.queue.job(job['id'])['state'] == 'RUNNING' and dlab.queue.engine('e1')['foreign']['slots'] == 0


def test_a_job_gone_from_a_discovered_engine_is_queued_again_with_a_reason(dlab):
    engine = dlab.describing('e1')
    dlab.queue.discover_engine('e1', 'https://e1:8282')
    job = dlab.queue.enqueue('mask_b')[1]
    dlab.queue.schedule_step()
    engine.catalogue = [('mask_a', 'dev'), ('mask_b_renamed', 'dev')]
    stats = dlab.queue.poll_step()
    assert stats['requeued'] == 1 and stats['described'] == 1 and stats['finished'] == 0
    row = dlab.queue.job(job['id'])
    assert row['state'] == 'QUEUED'
    assert row['reason'] == ('no engine carries job mask_b (not in the job lists read from engines e1: deleted or '
                             'renamed there?)')


def test_a_job_missing_on_an_engine_registered_by_hand_still_fails_its_start(dlab):
    engine = dlab.describing('e1', jobs=[('mask_a', 'dev')])
    dlab.queue.ensure_engine('e1', 'https://e1:8282', slots=2, jobs=['mask_a', 'mask_b'])
    job = dlab.queue.enqueue('mask_b')[1]
    dlab.step()
    row = dlab.queue.job(job['id'])
    assert row['state'] == 'FAILED' and row['error_kind'] == 'job_not_found' and engine.calls['describe'] == 0


def test_the_job_list_is_read_again_at_the_interval_only(dlab):
    engine = dlab.describing('e1')
    dlab.queue.discover_engine('e1', 'https://e1:8282')
    engine.catalogue.append(('mask_c', 'prod'))
    assert dlab.queue.poll_step()['described'] == 0
    dlab.clock.now += dlab.queue.catalogue_interval + 1.0
    assert dlab.queue.poll_step()['described'] == 1
    assert {'name': 'mask_c', 'environment': 'prod'} in dlab.queue.engine('e1')['jobs']
    assert dlab.queue.poll_step()['described'] == 0


def test_engine_reports_split_ours_and_foreign(dlab):
    engine = dlab.describing('e1')
    dlab.queue.discover_engine('e1', 'https://e1:8282')
    job = dlab.queue.enqueue('mask_a', request_id='r-a')[1]
    dlab.step()
    outside = engine.add('mask_b')
    report = dlab.queue.engine_reports('e1')[0]
    assert report['reachable'] and [e['execution_id'] for e in report['executions']['foreign']] == [outside]
    assert [(e['queue_id'], e['request_id']) for e in report['executions']['ours']] == [(job['id'], 'r-a')]
    assert report['capacity']['slots'] == {'value': 2, 'source': 'application-settings NumSimulJobsAllowed'}
    engine.down = True
    down = dlab.queue.engine_reports()[0]
    assert down['reachable'] is False and down['error_kind'] == 'engine_unreachable' and 'e1' in down['error']


def test_engine_reports_leave_fleet_hosts_to_their_agents(dlab):
    # Fleet hosts share the engines table; before, engine_info asked them for a Delphix description.
    dlab.describing('e1')
    dlab.queue.discover_engine('e1', 'https://e1:8282')
    dlab.queue._store.upsert_engine('10.9.0.5', dlab.clock(), kind='fleet', url='http://10.9.0.5:9009', slots=1)
    assert [report['name'] for report in dlab.queue.engine_reports()] == ['e1']
