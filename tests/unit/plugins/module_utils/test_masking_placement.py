"""The placement function: properties over random queues and engines, and the reasons it gives."""
import collections

from hypothesis import given, settings, strategies as st

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_placement import (
    QueuedJob, foreign_memory, make_engine, pending_reason, place, plan)

JOB_NAMES = ['mask_a', 'mask_b', 'mask_c', 'mask_d']


def job(job_id, name='mask_a', priority=0, env=None, affinity=None, memory=None):
    return QueuedJob(job_id, name, env, priority, affinity, memory, 0)


@st.composite
def scenarios(draw):
    engine_count = draw(st.integers(1, 6))
    engines = []
    for index in range(engine_count):
        carries = draw(st.one_of(st.none(), st.lists(st.sampled_from(JOB_NAMES), unique=True, max_size=4)))
        slots = draw(st.integers(0, 5))
        memory = draw(st.one_of(st.none(), st.integers(1, 8000)))
        # executions started outside the queue: they take slots and memory like the queue's own (may overfill)
        foreign = [{'execution_id': 900 + n, 'job_name': 'x', 'status': 'RUNNING', 'max_memory_mb': draw(st.integers(0, 3000))}
                   for n in range(draw(st.integers(0, 2)))]
        engines.append(make_engine('e%d' % index, slots, slots_used=draw(st.integers(0, slots)), memory_mb=memory, foreign=foreign,
                                   enabled=draw(st.booleans()) or True, drained=draw(st.integers(0, 5)) == 0,
                                   jobs=carries, unreachable_since=1.0 if draw(st.integers(0, 6)) == 0 else None))
    names = ['e%d' % i for i in range(engine_count)] + ['ghost']
    jobs = []
    for job_id in range(1, draw(st.integers(0, 40)) + 1):
        jobs.append(QueuedJob(job_id, draw(st.sampled_from(JOB_NAMES)), None, draw(st.integers(-1, 2)),
                              draw(st.one_of(st.none(), st.none(), st.sampled_from(names))),
                              draw(st.one_of(st.none(), st.integers(0, 4000))), 0))
    draw(st.randoms()).shuffle(jobs)
    return jobs, engines


def _carries(engine, name):
    return engine.carries is None or any(n == name for n, _env in engine.carries)


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_placement_never_breaks_a_rule(scenario):
    jobs, engines = scenario
    assignments = place(jobs, engines)
    by_engine = dict((e.name, e) for e in engines)
    by_job = dict((j.id, j) for j in jobs)
    assert len(set(a.job_id for a in assignments)) == len(assignments), 'a job placed twice'
    load = collections.Counter(a.engine for a in assignments)
    for name, count in load.items():
        engine = by_engine[name]
        assert engine.slots_used + len(engine.foreign) + count <= engine.slots, 'over slots'
        assert engine.enabled and not engine.drained and engine.unreachable_since is None
        if engine.memory_mb is not None:
            memory = sum(by_job[a.job_id].max_memory_mb or 0 for a in assignments if a.engine == name)
            assert engine.memory_used_mb + foreign_memory(engine) + memory <= engine.memory_mb, 'over the memory budget'
    seen = set()
    for a in assignments:
        placed = by_job[a.job_id]
        assert _carries(by_engine[a.engine], placed.job_name), 'placed on an engine that does not carry it'
        assert placed.engine_affinity in (None, a.engine), 'affinity ignored'
        assert (a.engine, placed.job_name) not in seen, 'one job name twice at once on one engine'
        seen.add((a.engine, placed.job_name))


@settings(max_examples=80, deadline=None)
@given(scenarios())
def test_placement_is_deterministic_and_order_free(scenario):
    jobs, engines = scenario
    first = place(jobs, engines)
    assert place(list(reversed(jobs)), list(reversed(engines))) == first
    assert place(jobs, engines) == first


@settings(max_examples=80, deadline=None)
@given(scenarios())
def test_priority_then_fifo_among_interchangeable_jobs(scenario):
    """Among jobs that could go to exactly the same places, a later or lower one never goes before an earlier one."""
    jobs, engines = scenario
    placed_order = [a.job_id for a in place(jobs, engines)]
    placed = set(placed_order)
    by_kind = collections.defaultdict(list)
    for j in jobs:
        by_kind[(j.job_name, j.engine_affinity, j.max_memory_mb)].append(j)
    for group in by_kind.values():
        group.sort(key=lambda j: (-j.priority, j.id))
        flags = [j.id in placed for j in group]
        assert flags == sorted(flags, reverse=True), 'a job was placed while an identical one ahead of it waits'
        positions = [placed_order.index(j.id) for j in group if j.id in placed]
        assert positions == sorted(positions)


@settings(max_examples=80, deadline=None)
@given(scenarios())
def test_a_job_waits_only_when_no_engine_can_take_it(scenario):
    jobs, engines = scenario
    assignments, after = plan(jobs, engines)
    placed = set(a.job_id for a in assignments)
    for j in jobs:
        if j.id in placed:
            continue
        reason = pending_reason(j, after)
        assert reason, 'every waiting job has a reason'
        for engine in after:
            fits = (engine.enabled and not engine.drained and engine.unreachable_since is None
                    and engine.slots_used + len(engine.foreign) < engine.slots and _carries(engine, j.job_name)
                    and j.engine_affinity in (None, engine.name)
                    and (engine.memory_mb is None
                         or engine.memory_used_mb + foreign_memory(engine) + (j.max_memory_mb or 0) <= engine.memory_mb)
                    and not any(n == j.job_name for n, _e in engine.active_jobs))
            assert not fits, 'job %d waits although %s could take it' % (j.id, engine.name)


def test_least_loaded_engine_wins_with_a_name_tie_break():
    engines = [make_engine('b', 4, slots_used=1), make_engine('a', 4, slots_used=1), make_engine('c', 8, slots_used=1)]
    assert [a.engine for a in place([job(1)], engines)] == ['c']          # 1/8 used beats 1/4
    engines = [make_engine('b', 4), make_engine('a', 4)]
    assert [a.engine for a in place([job(1), job(2, 'mask_b')], engines)] == ['a', 'b']


def test_more_free_memory_breaks_a_slot_tie():
    engines = [make_engine('a', 4, memory_mb=4000, memory_used_mb=0), make_engine('b', 4, memory_mb=8000)]
    assert place([job(1, memory=1000)], engines)[0].engine == 'b'


def test_priority_and_fifo():
    engines = [make_engine('a', 2, jobs=None)]
    jobs = [job(1, 'mask_a'), job(2, 'mask_b', priority=9), job(3, 'mask_c'), job(4, 'mask_d')]
    assert [a.job_id for a in place(jobs, engines)] == [2, 1]


def test_environment_qualified_job_lists():
    engines = [make_engine('prod', 2, jobs=[{'name': 'mask_a', 'environment': 'prod'}]),
               make_engine('dev', 2, jobs=[{'name': 'mask_a', 'environment': 'dev'}])]
    assert place([job(1, env='dev')], engines)[0].engine == 'dev'
    assert place([job(1, env='prod')], engines)[0].engine == 'prod'
    assert place([job(1, env='qa')], engines) == []


def test_reasons_say_what_blocks():
    full = [make_engine('a', 2, slots_used=2, jobs=['mask_a']), make_engine('b', 1, slots_used=1, jobs=['mask_a'])]
    assert pending_reason(job(1), full) == 'all 3 slots full on engines a, b'
    assert pending_reason(job(1, 'other'), full) == 'no engine carries job other'
    assert pending_reason(job(1, env='qa'), full) == 'all 3 slots full on engines a, b'
    assert pending_reason(job(1, affinity='zz'), full) == 'engine zz (requested for job mask_a) is not registered'
    drained = [make_engine('a', 2, drained=True), make_engine('b', 2, unreachable_since=0.0), make_engine('c', 2, enabled=False)]
    assert pending_reason(job(1), drained) == ('engine a is drained; engine b unreachable since 1970-01-01T00:00:00Z; '
                                               'engine c is disabled')
    memory = [make_engine('a', 4, memory_mb=2048, memory_used_mb=1024)]
    assert pending_reason(job(1, memory=2000), memory) == 'waiting for memory on a (1024 of 2048 MB free): the job needs 2000 MB'
    busy = [make_engine('a', 4, active_jobs=[('mask_a', None)])]
    assert pending_reason(job(1), busy) == 'job mask_a already running on engines a (one execution per job per engine)'


def test_ten_thousand_jobs_fill_every_slot_and_stop():
    engines = [make_engine('e%03d' % i, 8) for i in range(100)]
    jobs = [job(i, 'job_%03d' % (i % 200)) for i in range(1, 10001)]
    assignments = place(jobs, engines)
    assert len(assignments) == 800
    assert collections.Counter(a.engine for a in assignments) == dict(('e%03d' % i, 8) for i in range(100))
    assert [a.job_id for a in assignments] == list(range(1, 801))
