"""The masking queue's core against real parts: SQLite and a real PostgreSQL server, real simulator
processes (one per engine), real worker processes (tests/support/queue_worker.py).

What must hold whatever happens: every job ends terminal, every started job has exactly one execution
on the engines (the simulators' own record), no engine ever has more executions alive than its slots.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixDriverFactory
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import StoreUnavailable
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_schema import MIGRATIONS

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(FLEET_ROOT)))
CREDENTIALS = {'*': {'username': 'admin', 'password': 'Admin-12'}}

TERMINAL = ('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED')
WORKER_ARGS = ['--start-lease', '10', '--retry-delay', '0.3', '--client-timeout', '1.5', '--client-retries', '1']


def make_queue(store_url, **options):
    settings = dict(credentials=CREDENTIALS, driver_factory=DelphixDriverFactory(timeout=1.5, retries=1, backoff=0.05),
                    start_lease=10.0, retry_delay=0.3, probe_interval=0.3, refresh_interval=0.2, dead_holder_grace=3.0)
    settings.update(options)
    return MaskingQueue(store_url, **settings)


def catalogue(count, outcome_every=None):
    """count short job names; with outcome_every, every Nth fails and the one after it warns."""
    jobs = []
    for index in range(count):
        outcome = 'SUCCEEDED'
        if outcome_every and index % outcome_every == 0:
            outcome = 'FAILED'
        elif outcome_every and index % outcome_every == 1:
            outcome = 'WARNING'
        jobs.append({'name': 'mask_%03d' % index, 'outcome': outcome, 'duration': 0.01 + 0.01 * (index % 4), 'rows': 100})
    return jobs


def register(queue, simulators, jobs, engines, slots, faults_by_engine=None):
    """Start one simulator per engine (engine slots == queue slots) and register it; returns {name: sim}."""
    sims = {}
    for name in engines:
        faults = (faults_by_engine or {}).get(name)
        sims[name] = simulators(name, jobs, slots=slots, faults=faults)
        queue.ensure_engine(name, sims[name].url, slots=slots, jobs=[job['name'] for job in jobs])
    return sims


def enqueue_all(queue, jobs, count, seed=1):
    rng = random.Random(seed)
    ids = []
    for index in range(count):
        job = jobs[index % len(jobs)]
        ids.append(queue.enqueue(job['name'], request_id='req-%05d' % index, priority=rng.choice((0, 0, 0, 5)))[1]['id'])
    return ids


def expected_outcomes(jobs):
    return dict((job['name'], job['outcome']) for job in jobs)


@pytest.mark.slow
def test_eight_workers_two_thousand_jobs_exactly_once(store_url, simulators, workers, checks):
    queue = make_queue(store_url)
    jobs = catalogue(40, outcome_every=20)
    engines = ['eng%d' % i for i in range(5)]
    sims = register(queue, simulators, jobs, engines, slots=6)
    enqueue_all(queue, jobs, 2000)
    for _unused in range(8):
        workers.start('--until-drained', '--max-seconds', '400', *WORKER_ARGS)
    codes = workers.wait_all(timeout=450)
    assert codes == [0] * 8, [workers.output(p)[-2000:] for p in workers.procs]
    result = checks.exactly_once(queue, sims, dict((name, 6) for name in engines))
    assert len(result) == 2000
    outcome = expected_outcomes(jobs)
    wrong = [j for j in result if j['state'] != outcome[j['job_name']]]
    assert not wrong, wrong[:3]
    assert sum(len(sim.record()['executions']) for sim in sims.values()) == 2000
    # every engine did its share: the placement spreads the load
    assert all(len(sim.record()['executions']) > 200 for sim in sims.values())


@pytest.mark.slow
def test_sigkill_workers_at_random_points(store_url, simulators, workers, checks):
    queue = make_queue(store_url)
    jobs = catalogue(24)
    engines = ['eng%d' % i for i in range(3)]
    sims = register(queue, simulators, jobs, engines, slots=4, faults_by_engine=dict(
        (name, {'latency_ms': 300, 'match': '^POST /executions$'}) for name in engines))   # slow starts: kills land mid-POST
    enqueue_all(queue, jobs, 400, seed=2)
    rng = random.Random(7)
    live = [workers.start('--max-seconds', '300', *WORKER_ARGS) for _unused in range(4)]
    kills = targeted = 0
    # kill only once starts are under way (a worker that is still importing or logging in proves nothing)
    _wait_for(lambda: queue.store.jobs(states=['STARTING']), timeout=120)
    deadline = time.monotonic() + 240
    while kills < 25 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.6))
        ready = [proc for proc in live if '"ready"' in workers.output(proc)]   # killing an importing process proves nothing
        if not ready:
            continue
        # Half the kills hit a worker in the middle of a start (it owns a STARTING job: claimed, POST unanswered),
        # the others hit anywhere.
        starting = set(int(job['owner'].split(':')[1]) for job in queue.store.jobs(states=['STARTING']) if job['owner'])
        in_start = [proc for proc in ready if proc.pid in starting]
        pool = in_start if in_start and rng.random() < 0.6 else ready
        victim = pool[rng.randrange(len(pool))]
        targeted += victim in in_start
        live.remove(victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        kills += 1
        live.append(workers.start('--max-seconds', '300', *WORKER_ARGS))
    finishers = [workers.start('--until-drained', '--max-seconds', '200', *WORKER_ARGS) for _unused in range(2)]
    for proc in finishers:
        proc.wait(timeout=260)
        assert proc.returncode == 0, workers.output(proc)[-2000:]
    workers.stop()
    result = checks.exactly_once(queue, sims, dict((name, 4) for name in engines))
    assert [j['state'] for j in result] == ['SUCCEEDED'] * 400
    recovered = [entry for entry in queue.info(jobs=False, engines=False, history_for=[j['id'] for j in result])['history'].values()
                 if any('taking over' in (step['detail'] or '') for step in entry)]
    assert kills == 25 and targeted and recovered, (
        'the test proved nothing: %d kills, %d of them mid-start, %d take-overs' % (kills, targeted, len(recovered)))


@pytest.mark.slow
def test_engine_faults_no_duplicates_retries_where_safe(store_url, simulators, workers, checks):
    queue = make_queue(store_url)
    jobs = catalogue(24)
    faults = {
        'flaky': {'error_rate': 0.08, 'lost_response_rate': 0.08, 'seed': 11},
        'hangs': {'lost_response_rate': 0.1, 'lost_mode': 'hang', 'lost_hold_s': 0.4, 'token_expiry_calls': 15, 'seed': 12},
        'outage': {},
    }
    sims = register(queue, simulators, jobs, list(faults), slots=4, faults_by_engine=faults)
    enqueue_all(queue, jobs, 300, seed=3)
    for _unused in range(4):
        workers.start('--until-drained', '--max-seconds', '300', *WORKER_ARGS)
    # the outage starts once work is under way on that engine (workers take a while to start on a busy machine)
    _wait_for(lambda: queue.store.counts().get('SUCCEEDED', 0) >= 20, timeout=120)
    sims['outage'].set_faults({'down_after': 0.1, 'down_for': 3.0})
    outage_end = time.time() + 3.1
    codes = workers.wait_all(timeout=360)
    assert codes == [0] * 4, [workers.output(p)[-2000:] for p in workers.procs]
    result = checks.exactly_once(queue, sims, dict((name, 4) for name in faults))
    assert [j['state'] for j in result] == ['SUCCEEDED'] * 300, [j for j in result if j['state'] != 'SUCCEEDED'][:3]
    record = dict((name, sim.record()) for name, sim in sims.items())
    assert record['flaky']['faults']['errors'] > 0 and record['flaky']['faults']['lost'] > 0
    assert record['hangs']['faults']['lost'] > 0 and record['hangs']['logins'] > 1   # tokens expired and were renewed
    assert record['outage']['faults']['down'] > 0     # calls were refused during the outage ...
    assert max(e['submitted'] for e in record['outage']['executions']) > outage_end   # ... and it took work again after it


def test_clear_failures_where_a_retry_cannot_help(store_url, simulators, checks):
    queue = make_queue(store_url)
    jobs = catalogue(2)
    good = simulators('good', jobs, slots=2)
    queue.ensure_engine('good', good.url, slots=2, jobs=['mask_000', 'ghost_job'])
    locked = simulators('locked', jobs, slots=2, users=[{'username': 'admin', 'password': 'other-password'}])
    queue.ensure_engine('locked', locked.url, slots=2, jobs=['mask_001'])
    ghost = queue.enqueue('ghost_job')[1]
    refused = queue.enqueue('mask_001')[1]
    fine = queue.enqueue('mask_000')[1]
    done = dict((j['id'], j) for j in queue.wait([ghost['id'], refused['id'], fine['id']], timeout=60, poll_interval=0.1))
    assert done[fine['id']]['state'] == 'SUCCEEDED'
    assert done[ghost['id']]['state'] == 'FAILED' and 'ghost_job' in done[ghost['id']]['error']
    assert 'does not exist' in done[ghost['id']]['error']
    assert done[refused['id']]['state'] == 'FAILED' and 'credentials' in done[refused['id']]['error']
    assert 'Admin-12' not in json.dumps(queue.info(history_for=[refused['id']]))
    checks.exactly_once(queue, {'good': good, 'locked': locked}, {'good': 2, 'locked': 2})


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError('condition not reached in %.0f s' % timeout)


def test_cancel_at_every_stage(store_url, simulators, checks):
    queue = make_queue(store_url)
    jobs = [{'name': 'long_%d' % i, 'duration': 30.0} for i in range(3)]
    sim = simulators('eng', jobs, slots=1)   # the engine runs one at a time, the queue offers it two
    queue.ensure_engine('eng', sim.url, slots=2, jobs=[j['name'] for j in jobs])
    queued = queue.enqueue('long_0', priority=-1)[1]     # stays QUEUED: the others take both slots
    running = queue.enqueue('long_1', priority=5)[1]
    engine_queued = queue.enqueue('long_2', priority=5)[1]
    assert queue.schedule_step()['placed'] == 2
    assert queue.job(queued['id'])['state'] == 'QUEUED'
    assert queue.cancel(queued['id'])['state'] == 'CANCELLED'
    queue.poll_step()
    states = dict((j, queue.job(j)['state']) for j in (running['id'], engine_queued['id']))
    assert sorted(states.values()) == ['ENGINE_QUEUED', 'RUNNING'], states
    for job_id in states:
        assert queue.cancel(job_id)['state'] == 'CANCELLED'
    record = sim.record()
    assert sorted(e['status'] for e in record['executions']) == ['CANCELLED', 'CANCELLED']
    scheduled = queue.enqueue('long_0', request_id='again')[1]
    queue.schedule_step()
    assert queue.job(scheduled['id'])['state'] == 'SCHEDULED'
    assert queue.cancel(scheduled['id'])['state'] == 'CANCELLED'
    queue.poll_step()
    assert len(sim.record()['executions']) == 2   # the cancelled SCHEDULED job never reached the engine
    checks.exactly_once(queue, {'eng': sim}, {'eng': 2})


def test_unreachable_database_is_a_clear_error(tmp_path):
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        MaskingQueue('postgresql://queue:s3cret-pw@127.0.0.1:1/queue', outage_timeout=2.0)
    assert '127.0.0.1:1' in str(caught.value) and 's3cret-pw' not in str(caught.value)
    assert 'unreachable for' in str(caught.value) and time.monotonic() - started >= 2.0   # rode it out first
    with pytest.raises(StoreUnavailable) as caught:
        MaskingQueue(str(tmp_path / 'missing-dir' / 'queue.db'))
    assert 'does not exist' in str(caught.value)
    # a server that goes away under an open queue: the next step says so, it does not hang or pass
    from tests.support.lab.postgres import PostgresServer
    server = PostgresServer().start()
    try:
        queue = MaskingQueue(server.dsn, outage_timeout=2.0)
        queue.ensure_engine('eng', 'http://127.0.0.1:9/masking/api', slots=1)
    finally:
        server.stop()
    with pytest.raises(StoreUnavailable):
        queue.schedule_step()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([COLLECTIONS_ROOT, FLEET_ROOT]))
    proc = subprocess.run([sys.executable, '-m', 'tests.support.queue_worker', '--store', 'postgresql://127.0.0.1:1/x',
                           '--max-seconds', '5', '--outage-timeout', '1'], cwd=FLEET_ROOT, env=env, stdout=subprocess.PIPE, check=False, timeout=60)
    assert proc.returncode == 2 and b'cannot connect' in proc.stdout


def _spawn_python(code, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([COLLECTIONS_ROOT, FLEET_ROOT]))
    return subprocess.Popen([sys.executable, '-c', code] + list(args), cwd=FLEET_ROOT, env=env,  # pylint: disable=consider-using-with
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_schema_migrates_once_under_concurrent_opens(store_url):
    code = ('import sys\n'
            'from ansible_collections.orchestra.fleet.plugins.module_utils.masking_store import open_store\n'
            'print(open_store(sys.argv[1]).schema_version())\n')
    procs = [_spawn_python(code, store_url) for _unused in range(8)]
    outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8, outputs
    assert [out.strip() for out in outputs] == [str(MIGRATIONS[-1][0])] * 8
    store = make_queue(store_url).store
    rows = store.read(lambda tx: tx.rows('SELECT version FROM schema_version ORDER BY version'))
    assert [row['version'] for row in rows] == [version for version, _what, _sql in MIGRATIONS]


def test_eight_concurrent_schedulers_never_overbook(store_url):
    queue = make_queue(store_url)
    slots = {'a': 3, 'b': 5, 'c': 1, 'd': 7}
    for name, count in slots.items():
        queue.ensure_engine(name, 'http://127.0.0.1:9/%s' % name, slots=count, jobs=['job_%d' % i for i in range(40)])
    for index in range(600):
        queue.enqueue('job_%d' % (index % 40), request_id='r%d' % index)
    code = ('import sys\n'
            'from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue\n'
            'q = MaskingQueue(sys.argv[1])\n'
            'print(sum(q.schedule_step()["placed"] for _unused in range(20)))\n')
    procs = [_spawn_python(code, store_url) for _unused in range(8)]
    outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8, outputs
    engines = dict((e['name'], e) for e in queue.info(jobs=False)['engines'])
    assert dict((name, e['slots_used']) for name, e in engines.items()) == slots
    assert sum(int(out.strip()) for out in outputs) == sum(slots.values())


@pytest.mark.slow
def test_waiter_takes_over_when_the_leader_dies(store_url, simulators, checks):
    queue = make_queue(store_url)
    jobs = catalogue(6)
    sims = register(queue, simulators, jobs, ['eng'], slots=3)
    ids = enqueue_all(queue, jobs, 60, seed=4)
    code = ('import sys, json\n'
            'from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue\n'
            'q = MaskingQueue(sys.argv[1], credentials={"*": {"username": "admin", "password": "Admin-12"}})\n'
            'print("leading", flush=True)\n'
            'q.wait(json.loads(sys.argv[2]), timeout=300, poll_interval=0.2)\n')
    leader = _spawn_python(code, store_url, json.dumps(ids))
    try:
        _wait_for(lambda: queue.store.lease('driver') and queue.store.counts().get('SUCCEEDED', 0) >= 5)
        first_owner = queue.store.lease('driver')['owner']
        leader.send_signal(signal.SIGKILL)
        leader.wait(timeout=10)
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait(timeout=10)
        leader.stdout.close()
    assert queue.store.counts().get('SUCCEEDED', 0) < 60, 'the leader finished before it could be killed'
    done = queue.wait(ids, timeout=120, poll_interval=0.2)
    assert [j['state'] for j in done] == ['SUCCEEDED'] * 60
    lease = queue.store.lease('driver')
    assert lease['fence'] >= 2 and first_owner != queue.owner
    checks.exactly_once(queue, sims, {'eng': 3})


WAITER = (
    'import json, sys\n'
    'from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue\n'
    'q = MaskingQueue(sys.argv[1], credentials={"*": {"username": "admin", "password": "Admin-12"}}, outage_timeout=60)\n'
    'print("waiting", flush=True)\n'
    'done = q.wait(json.loads(sys.argv[2]), timeout=180, poll_interval=0.2)\n'
    'print(json.dumps([[j["job_name"], j["state"]] for j in done]), flush=True)\n')


@pytest.mark.slow
def test_database_restart_under_waiting_callers_and_workers(own_postgres, simulators, worker_pool, checks):
    """issue 10 item 3: a 4 s crash restart of PostgreSQL (pg_ctl -m immediate) under three waiting callers and two
    workers: every caller ends with its jobs' real outcome, every worker survives, one execution per job."""
    dsn = own_postgres.dsn
    queue = make_queue(dsn)
    jobs = [{'name': 'mask_%02d' % i, 'outcome': 'FAILED' if i == 4 else 'SUCCEEDED', 'duration': 6.0, 'rows': 10}
            for i in range(9)]
    sim = simulators('eng', jobs, slots=6)
    queue.ensure_engine('eng', sim.url, slots=6, jobs=[job['name'] for job in jobs])
    ids = [queue.enqueue(job['name'], request_id='r-' + job['name'])[1]['id'] for job in jobs]
    queue.close()
    callers = [_spawn_python(WAITER, dsn, json.dumps(ids[i::3])) for i in range(3)]
    pool = worker_pool(dsn)
    for _unused in range(2):
        pool.start('--until-drained', '--max-seconds', '200', '--outage-timeout', '60', *WORKER_ARGS)
    try:
        watcher = make_queue(dsn)
        _wait_for(lambda: watcher.store.counts().get('RUNNING', 0) >= 3, timeout=90)
        watcher.close()
        own_postgres.restart(down_for=4.0)
        outputs = [proc.communicate(timeout=200)[0].decode() for proc in callers]
    finally:
        for proc in callers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert [proc.returncode for proc in callers] == [0] * 3, outputs
    expected = dict((job['name'], job['outcome']) for job in jobs)
    for out in outputs:
        for name, state in json.loads(out.strip().splitlines()[-1]):
            assert state == expected[name], (name, state, out)
    assert pool.wait_all(timeout=200) == [0, 0], [pool.output(proc)[-2000:] for proc in pool.procs]
    checks.exactly_once(make_queue(dsn), {'eng': sim}, {'eng': 6})


def _driver_has_markers():
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixEngineDriver
    return hasattr(DelphixEngineDriver, 'start_marker')


@pytest.mark.skipif(not _driver_has_markers(), reason='needs the Delphix driver of the marker contract (engineer mdelphix: '
                    'start_marker, EngineNotReached on a refused connection)')
def test_dead_engine_releases_its_jobs_to_a_live_one(store_url, simulators, checks):
    """issue 10 item 4: an engine that refuses connections holds no job; its jobs run on the engine that answers."""
    from tests.support.lab.ports import free_port
    queue = make_queue(store_url)
    jobs = catalogue(4)
    live = simulators('live', jobs, slots=2)
    queue.ensure_engine('live', live.url, slots=2, jobs=[job['name'] for job in jobs])
    queue.ensure_engine('dead', 'http://127.0.0.1:%d/masking/api' % free_port(), slots=2, jobs=[job['name'] for job in jobs])
    ids = [queue.enqueue(job['name'])[1]['id'] for job in jobs]
    done = queue.wait(ids, timeout=120, poll_interval=0.1)
    assert [(j['state'], j['engine']) for j in done] == [('SUCCEEDED', 'live')] * 4
    dead = queue.engine('dead')
    assert dead['unreachable_since'] is not None and dead['last_error']
    checks.exactly_once(queue, {'live': live}, {'live': 2})
