# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Placement of queued masking jobs onto engine slots: a pure function.

`place(queued_jobs, engines, policy)` decides, `pending_reason(job, engines)`
explains; neither touches a database, a clock or the network, so both are
tested exhaustively and the store applies the result atomically.

Rules, in order:
- higher priority first, FIFO (by queue id) within a priority;
- a job goes only to an engine that carries its job name (and environment),
  matches its engine affinity, is enabled, not drained and not unreachable;
- an engine never holds more jobs than its slots, nor (with a memory budget)
  more summed job memory than its budget; executions started outside the queue
  (the engine's UI, another tool) count against both;
- one active execution per job on an engine (a Delphix engine refuses to start
  a job that is already running or queued there, HTTP 409);
- among the engines that fit, the least loaded wins: lowest fraction of slots
  in use, then most free memory, then fewest jobs, then the name (deterministic).
A job that cannot be placed does not block jobs behind it that fit elsewhere.
"""

import bisect
import collections
import datetime

ANY_JOB = '*'

QueuedJob = collections.namedtuple(
    'QueuedJob', 'id job_name environment priority engine_affinity max_memory_mb attempt')

# foreign: executions RUNNING or QUEUED on the engine that no queue job owns (dicts with execution_id, job_name,
# status, max_memory_mb): they use slots and memory like the queue's own. listed: the job list was read from the engine.
EngineState = collections.namedtuple(
    'EngineState', 'name slots slots_used memory_mb memory_used_mb enabled drained carries unreachable_since active_jobs '
    'foreign listed', defaults=((), False))

Assignment = collections.namedtuple('Assignment', 'job_id attempt engine')

DEFAULT_POLICY = {
    # memory assumed for a job that gives no max_memory_mb, on engines with a budget
    'default_memory_mb': 0,
    # the engine refuses a second concurrent execution of the same job
    'one_execution_per_job': True,
}


def carries_from_list(jobs):
    """Normalise an engine's job list to a frozenset of (name, environment-or-None), or None for any job.

    Entries are job names, `{name: ..., environment: ...}` mappings, or '*' (any job).
    """
    if jobs is None:
        return None
    result = set()
    for entry in jobs:
        if isinstance(entry, dict):
            name, env = entry.get('name'), entry.get('environment')
        else:
            name, env = entry, None
        if name == ANY_JOB:
            return None
        result.add((name, env or None))
    return frozenset(result)


def make_engine(name, slots, slots_used=0, memory_mb=None, memory_used_mb=0, enabled=True, drained=False,
                jobs=None, unreachable_since=None, active_jobs=(), foreign=(), listed=False):
    """Build an EngineState; `jobs` as in carries_from_list, `active_jobs` as (name, env) pairs running there,
    `foreign` the executions no queue job owns, `listed` whether the job list was read from the engine."""
    return EngineState(name, int(slots), int(slots_used), memory_mb, int(memory_used_mb or 0), bool(enabled),
                       bool(drained), carries_from_list(jobs), unreachable_since, frozenset(active_jobs),
                       tuple(foreign or ()), bool(listed))


def foreign_memory(engine):
    """MB the foreign executions of an EngineState take (a job without maxMemory counts 0)."""
    return sum(int(entry.get('max_memory_mb') or 0) for entry in engine.foreign)


def _taken(engine):
    """(slots, memory MB) in use on an EngineState: the queue's jobs plus executions started outside it."""
    return engine.slots_used + len(engine.foreign), engine.memory_used_mb + foreign_memory(engine)


def foreign_note(engine):
    """'1 of 4 slots used by an execution started outside the queue (execution 31 of mask_x, RUNNING)', or ''."""
    count = len(engine.foreign)
    if not count:
        return ''
    named = ', '.join('execution %s of %s, %s' % (e.get('execution_id'), e.get('job_name') or '?', e.get('status'))
                      for e in engine.foreign[:3])
    more = ' and %d more' % (count - 3) if count > 3 else ''
    return '%d of %d slots used by %s started outside the queue (%s%s)' % (
        count, engine.slots, 'an execution' if count == 1 else '%d executions' % count, named, more)


def overbooked(engine, scheduled_ids):
    """Scheduled jobs an engine can no longer take now that it shows foreign load -> the ids to put back in the queue.

    engine: an EngineState whose slots_used / memory_used_mb count the scheduled jobs too; scheduled_ids: its
    SCHEDULED jobs in the queue's order (highest priority first) with their memory, as (id, memory MB) pairs.
    The last in queue order go back first.
    """
    used, memory = _taken(engine)
    back = []
    for job_id, job_memory in reversed(list(scheduled_ids)):
        over_slots = used > engine.slots
        over_memory = engine.memory_mb is not None and memory > engine.memory_mb and engine.foreign
        if not (over_slots or over_memory):
            break
        back.append(job_id)
        used -= 1
        memory -= int(job_memory or 0)
    return back


def _carries(engine, job_name, environment):
    if engine.carries is None:
        return True
    if (job_name, None) in engine.carries:
        return True
    if environment is None:
        return any(name == job_name for name, _env in engine.carries)
    return (job_name, environment) in engine.carries


def same_job(one, other):
    """Two (job name, environment) pairs may name the same masking job (an environment left out matches any)."""
    return one[0] == other[0] and (one[1] == other[1] or one[1] is None or other[1] is None)


def _same_job_active(active_jobs, job_name, environment):
    return any(same_job(pair, (job_name, environment)) for pair in active_jobs)


def _job_memory(job, policy):
    if job.max_memory_mb is not None:
        return int(job.max_memory_mb)
    return int(policy['default_memory_mb'] or 0)


def _eligible(engine, job_name, environment, affinity):
    return (affinity is None or engine.name == affinity) and _carries(engine, job_name, environment)


def carriers(engines, job_name, environment=None, affinity=None):
    """Names of the engines that carry the job at all, whatever their load or state: "can any engine run it".

    The one answer to that question for enqueue and the modules (a typo fails at once, not in an hour).
    """
    return [e.name for e in engines if _eligible(e, job_name, environment, affinity)]


def queued_job(row):
    """A job row (dict) -> QueuedJob."""
    return QueuedJob(row['id'], row['job_name'], row['environment'], row['priority'], row['engine_affinity'],
                     row['max_memory_mb'], row['attempt'])


def engine_state(engine):
    """An engine dict with its use (as the store returns it) -> EngineState."""
    return make_engine(engine['name'], engine['slots'], engine['slots_used'], engine['memory_mb'], engine['memory_used_mb'],
                       engine['enabled'], engine['drained'], engine['jobs'], engine['unreachable_since'],
                       engine['active_jobs'], engine.get('foreign_executions') or (),
                       'jobs' in (engine.get('discovered') or ()))


def decide(queued_rows, engines, policy=None):
    """The scheduler's decision for one step: assignments [(job_id, engine)].

    Rows are the store's tuples (in QueuedJob's field order) or dicts; engines are engine dicts with their use.
    """
    jobs = [queued_job(row) if isinstance(row, dict) else QueuedJob._make(row) for row in queued_rows]
    return [(a.job_id, a.engine) for a in place(jobs, [engine_state(e) for e in engines], policy)]


def has_room(engine):
    """An engine dict that can take a job now (the scheduler step is skipped when none can)."""
    usable = engine['enabled'] and not engine['drained'] and engine['unreachable_since'] is None
    return usable and engine['slots_used'] + len(engine.get('foreign_executions') or ()) < engine['slots']


def _usable(engine):
    return engine.enabled and not engine.drained and engine.unreachable_since is None and engine.slots > 0


def place(queued_jobs, engines, policy=None):
    """Return the assignments for this step, in placement order."""
    return plan(queued_jobs, engines, policy)[0]


def _load_key(engine, used, memory_used):
    free_memory = engine.memory_mb - memory_used if engine.memory_mb is not None else float('inf')
    return (used / float(engine.slots), -free_memory, used, engine.name)


def _conflicts(active_names, job_name, environment):
    """Same rule as _same_job_active, on a {name: set(environments)} index."""
    envs = active_names.get(job_name)
    return bool(envs) and (environment is None or None in envs or environment in envs)


def _queue_order(job):
    return (-job.priority, job.id)


def _carriers(engines, open_engines, carried_by, job):
    """Indices of the open engines that carry `job` (same rule as _eligible, through the name index)."""
    found = set(i for i, _env in carried_by.get(ANY_JOB, ()))
    for i, env in carried_by.get(job.job_name, ()):
        if env is None or job.environment is None or env == job.environment:
            found.add(i)
    if job.engine_affinity is not None:
        found = set(i for i in found if engines[i].name == job.engine_affinity)
    return found


def plan(queued_jobs, engines, policy=None):
    """Return (assignments, engines_after): engines_after is the engine state once the assignments hold.

    Engines are kept sorted by load; a job takes the first engine in that order that fits it, which is
    the least loaded fitting engine (the load key is the engine's own, whatever the job), so a step
    costs about one short scan per job instead of a pass over every engine.
    """
    policy = dict(DEFAULT_POLICY, **(policy or {}))
    engines = sorted(engines, key=lambda e: e.name)
    used = [_taken(e)[0] for e in engines]
    mem_used = [_taken(e)[1] for e in engines]
    active = [set(e.active_jobs) for e in engines]
    active_names = []
    for pairs in active:
        index = {}
        for name, env in pairs:
            index.setdefault(name, set()).add(env)
        active_names.append(index)
    open_engines = [i for i, e in enumerate(engines) if _usable(e) and used[i] < e.slots]
    order = sorted((_load_key(engines[i], used[i], mem_used[i]), i) for i in open_engines)
    free_total = sum(engines[i].slots - used[i] for i in open_engines)
    carried_by = {}   # job name -> [(engine index, environment or None)], from the engines' job lists
    for i in open_engines:
        for name, env in engines[i].carries if engines[i].carries is not None else ((ANY_JOB, None),):
            carried_by.setdefault(name, []).append((i, env))
    candidates = {}   # (name, env, affinity) -> set of engine indices that carry it
    no_fit = set()    # (name, env, affinity, memory): capacity only shrinks within a step, so no-fit stays no-fit
    one_per_job = policy['one_execution_per_job']
    assignments = []
    for job in sorted(queued_jobs, key=_queue_order):
        if free_total <= 0:
            break
        group = (job.job_name, job.environment, job.engine_affinity)
        memory = _job_memory(job, policy)
        if group + (memory,) in no_fit:
            continue
        if group not in candidates:
            candidates[group] = _carriers(engines, open_engines, carried_by, job)
        carrying = candidates[group]
        best = None
        for position, (_key, i) in enumerate(order):
            if i not in carrying:
                continue
            engine = engines[i]
            if engine.memory_mb is not None and mem_used[i] + memory > engine.memory_mb:
                continue
            if one_per_job and _conflicts(active_names[i], job.job_name, job.environment):
                continue
            best = position
            break
        if best is None:
            no_fit.add(group + (memory,))
            continue
        _key, i = order.pop(best)
        used[i] += 1
        mem_used[i] += memory
        active[i].add((job.job_name, job.environment))
        active_names[i].setdefault(job.job_name, set()).add(job.environment)
        free_total -= 1
        if used[i] < engines[i].slots:
            bisect.insort(order, (_load_key(engines[i], used[i], mem_used[i]), i))
        assignments.append(Assignment(job.id, job.attempt, engines[i].name))
    # engines_after keeps the queue's own use apart from the foreign load (which stays in .foreign)
    after = [e._replace(slots_used=used[i] - len(e.foreign), memory_used_mb=mem_used[i] - foreign_memory(e),
                        active_jobs=frozenset(active[i])) for i, e in enumerate(engines)]
    return assignments, after


def reason_time(timestamp):
    """Epoch seconds -> the whole-second UTC time that reasons show (None stays None)."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(float(timestamp), tz=datetime.timezone.utc)
    return moment.strftime('%Y-%m-%dT%H:%M:%SZ')


def _names(engines, limit=5):
    names = [e.name for e in engines]
    if len(names) > limit:
        return ', '.join(names[:limit]) + ' and %d more' % (len(names) - limit)
    return ', '.join(names)


def pending_reason(job, engines, policy=None):
    """Say, for a human, why `job` is not placed on any of `engines` (their state after this step's placement)."""
    policy = dict(DEFAULT_POLICY, **(policy or {}))
    what = 'job %s' % job.job_name + (' in environment %s' % job.environment if job.environment else '')
    if job.engine_affinity is not None and not any(e.name == job.engine_affinity for e in engines):
        return 'engine %s (requested for %s) is not registered' % (job.engine_affinity, what)
    carrying = sorted((e for e in engines if _eligible(e, job.job_name, job.environment, job.engine_affinity)),
                      key=lambda e: e.name)
    if not carrying:
        listed = [e for e in engines if e.listed and (job.engine_affinity is None or e.name == job.engine_affinity)]
        gone = (' (not in the job lists read from engines %s: deleted or renamed there?)' % _names(listed)) if listed else ''
        return 'no engine carries %s' % what + (' (engine %s requested)' % job.engine_affinity if job.engine_affinity else '') + gone
    usable = [e for e in carrying if _usable(e)]
    if not usable:
        parts = []
        for engine in carrying:
            if not engine.enabled:
                parts.append('engine %s is disabled' % engine.name)
            elif engine.drained:
                parts.append('engine %s is drained' % engine.name)
            elif engine.unreachable_since is not None:
                parts.append('engine %s unreachable since %s' % (engine.name, reason_time(engine.unreachable_since)))
            else:
                parts.append('engine %s has no slots' % engine.name)
        return '; '.join(parts[:5]) + ('; and %d more' % (len(parts) - 5) if len(parts) > 5 else '')
    free = [e for e in usable if _taken(e)[0] < e.slots]
    if not free:
        notes = ['engine %s: %s' % (e.name, foreign_note(e)) for e in usable if e.foreign]
        return 'all %d slots full on engines %s' % (sum(e.slots for e in usable), _names(usable)) + (
            '; ' + '; '.join(notes[:3]) if notes else '')
    if policy['one_execution_per_job']:
        not_busy = [e for e in free if not _same_job_active(e.active_jobs, job.job_name, job.environment)]
        if not not_busy:
            return '%s already running on engines %s (one execution per job per engine)' % (what, _names(free))
        free = not_busy
    memory = _job_memory(job, policy)
    short = [e for e in free if e.memory_mb is not None and _taken(e)[1] + memory > e.memory_mb]
    if short and len(short) == len(free):
        detail = ', '.join('%s (%d of %d MB free%s)' % (
            e.name, e.memory_mb - _taken(e)[1], e.memory_mb,
            '; %d MB used by executions started outside the queue' % foreign_memory(e) if e.foreign else '') for e in short[:5])
        return 'waiting for memory on %s: the job needs %d MB' % (detail, memory)
    return 'waiting for the next scheduler step (free slots on %s)' % _names(free)
