"""Adoption after a lost or failed start never trusts a clock (issue 10, finding 1).

The real queue (its facade), real simulator processes whose clocks run ahead of or behind this host's,
real HTTP with lost answers and 500s. Every verdict is counted from the simulators' own record
(/_sim/record), never from what the queue believes.
"""
import threading
import time
from datetime import datetime

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixDriverFactory
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue

CREDENTIALS = {'*': {'username': 'admin', 'password': 'Admin-12'}}
POST_EXECUTIONS = '^POST /executions$'

pytestmark = pytest.mark.timeout(400)


def make_queue(store_url, **options):
    settings = dict(credentials=CREDENTIALS, driver_factory=DelphixDriverFactory(timeout=2.0, retries=2, backoff=0.05),
                    start_lease=10.0, retry_delay=0.3, probe_interval=0.3, refresh_interval=0.1, dead_holder_grace=3.0)
    settings.update(options)
    return MaskingQueue(store_url, **settings)


def executions_by_name(sims):
    """job name -> [(engine, executionId, status)] from every simulator's own record."""
    found = {}
    for name, sim in sims.items():
        for run in sim.record()['executions']:
            found.setdefault(run['jobName'], []).append((name, run['executionId'], run['status']))
    return found


def _epoch(text):
    """The queue's ISO-8601 UTC time ('...Z') -> epoch seconds."""
    return datetime.strptime(text.replace('Z', '+0000'), '%Y-%m-%dT%H:%M:%S.%f%z').timestamp()


def start_direct(sim, job_name):
    """Run the job once outside the queue (an earlier run in the engine's history); returns its execution."""
    from ansible_collections.orchestra.fleet.plugins.module_utils import delphix  # pylint: disable=import-outside-toplevel
    client = delphix.MaskingEngineClient(sim.url, 'admin', 'Admin-12', timeout=5.0)
    started = client.start_execution(client.resolve_job(job_name))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        run = client.get_execution(started.execution_id)
        if run.terminal:
            return run
        time.sleep(0.05)
    raise AssertionError('the earlier run never finished')


def test_engine_30s_behind_and_a_lost_answer_start_once(store_url, simulators):
    """Issue 10: the engine's clock 30 s behind ours, the POST's answer lost -> the job ran twice."""
    sim = simulators('behind', [{'name': 'mask_a', 'duration': 0.2}], slots=2, clock_offset_s=-30.0)
    queue = make_queue(store_url)
    queue.ensure_engine('behind', sim.url, slots=2, jobs=['mask_a'])
    sim.set_faults({'lost_response_rate': 1.0, 'budget': 1, 'match': POST_EXECUTIONS})
    _created, job = queue.enqueue('mask_a', request_id='behind-1')
    [done] = queue.wait([job['id']], timeout=60, poll_interval=0.1)
    record = sim.record()
    assert record['faults']['lost'] == 1
    runs = record['per_job_name'].get('mask_a', [])
    assert len(runs) == 1, 'started %d times: %r' % (len(runs), runs)
    assert done['state'] == 'SUCCEEDED' and done['execution_id'] == runs[0]


def test_engine_30s_ahead_a_500_and_an_older_finished_run_is_not_adopted(store_url, simulators):
    """Issue 10: engine 30 s ahead, 500 on POST, an earlier run that ended 10 s before -> the old run was
    adopted and reported 'succeeded' while nothing was masked."""
    sim = simulators('ahead', [{'name': 'mask_b', 'duration': 0.2}], slots=2, clock_offset_s=30.0)
    earlier = start_direct(sim, 'mask_b')
    queue = make_queue(store_url)
    queue.ensure_engine('ahead', sim.url, slots=2, jobs=['mask_b'])
    time.sleep(10.0)   # the earlier run ended 10 s ago (by anyone's clock)
    sim.set_faults({'error_rate': 1.0, 'budget': 1, 'match': POST_EXECUTIONS})
    _created, job = queue.enqueue('mask_b', request_id='ahead-1')
    [done] = queue.wait([job['id']], timeout=60, poll_interval=0.1)
    record = sim.record()
    assert record['faults']['errors'] == 1
    runs = record['per_job_name']['mask_b']
    assert done['execution_id'] != earlier.execution_id, 'adopted the earlier run %d: false success' % earlier.execution_id
    assert len(runs) == 2 and runs[0] == earlier.execution_id, runs
    assert done['state'] == 'SUCCEEDED' and done['execution_id'] == runs[1]


def test_engines_minutes_apart_with_lost_answers_and_500s(store_url, simulators):
    """Issue 10: +-5 min, 30% lost answers -> 15 double starts in 30 jobs, executions shared by two queue
    jobs, an engine running 6 jobs against 3 slots. Now: one execution per job, each its own, slots kept."""
    jobs = [{'name': 'mask_%02d' % n, 'duration': 0.3 + 0.1 * (n % 4)} for n in range(30)]
    names = [job['name'] for job in jobs]
    faults = {'lost_response_rate': 0.3, 'error_rate': 0.1, 'match': POST_EXECUTIONS}
    sims = {}
    for name, offset, seed in (('ahead5', 300.0, 21), ('behind5', -300.0, 22), ('behind2', -120.0, 23)):
        sims[name] = simulators(name, jobs, slots=3, clock_offset_s=offset, faults=dict(faults, seed=seed))
    setup = make_queue(store_url)
    for name, sim in sims.items():
        setup.ensure_engine(name, sim.url, slots=3, jobs=names)
    began = time.time()
    ids = [setup.enqueue(name, request_id='skew-%s' % name)[1]['id'] for name in names]
    results, errors = {}, []

    def caller(part):   # several waiting callers, each its own queue object, as several ansible tasks would be
        try:
            queue = make_queue(store_url)
            for row in queue.wait(part, timeout=240, poll_interval=0.1):
                results[row['id']] = row
        except Exception as exc:  # pylint: disable=broad-except  # reported by the assertion below
            errors.append(repr(exc))

    threads = [threading.Thread(target=caller, args=(ids[k::3],)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    seen = executions_by_name(sims)
    lost = sum(sim.record()['faults']['lost'] for sim in sims.values())
    failed_posts = sum(sim.record()['faults']['errors'] for sim in sims.values())
    assert lost >= 3 and failed_posts >= 1, 'the faults never fired: %d lost, %d 500s' % (lost, failed_posts)
    doubles = {name: runs for name, runs in seen.items() if len(runs) != 1}
    assert not doubles, '%d jobs started more than once: %r' % (len(doubles), doubles)
    assert sorted(seen) == sorted(names)   # every job ran
    adopted = [(row['engine'], row['execution_id']) for row in results.values()]
    assert len(set(adopted)) == len(adopted) == 30, 'an execution is shared by two queue jobs'
    for row in results.values():
        [(engine, execution_id, status)] = seen[row['job_name']]
        assert (row['engine'], row['execution_id']) == (engine, execution_id), (row['job_name'], row, seen[row['job_name']])
        assert row['state'] == status == 'SUCCEEDED', (row['job_name'], row['state'], status)
    for name, sim in sims.items():
        record = sim.record()
        assert record['max_concurrency'] <= 3 and not record['overlaps'], (name, record['max_concurrency'], record['overlaps'])
    # The engines' times are shown on our clock (moved by the offset their Date header showed), not minutes off.
    ended = time.time()
    for row in results.values():
        submitted, started, finished = (_epoch(row[key]) for key in ('submitted_at', 'started_at', 'finished_at'))
        assert began - 3 <= submitted <= started + 3 and started <= finished + 3 and finished <= ended + 3, row
