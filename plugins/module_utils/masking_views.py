# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Store rows -> the dicts the queue returns to modules: times as ISO-8601 UTC, reasons of waiting jobs.

Pure functions: no database, no clock of their own (the caller passes `now`).
"""

import datetime

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_placement as placement
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import QUEUED, RUNNING, kind_of

RUNNING_STATES = (RUNNING,)

JOB_KEYS = ('id', 'request_id', 'job_name', 'environment', 'priority', 'engine_affinity', 'max_memory_mb', 'state',
            'attempt', 'reason', 'engine', 'execution_id', 'engine_status', 'rows_masked', 'rows_total', 'error',
            'error_kind', 'start_marker', 'kind', 'workflow_id')
JOB_TIMES = ('submitted_at', 'scheduled_at', 'started_at', 'finished_at')
ENGINE_KEYS = ('name', 'url', 'slots', 'memory_mb', 'enabled', 'drained', 'jobs', 'verify', 'slots_used',
               'memory_used_mb', 'last_error', 'kind', 'discovered')


def iso(epoch):
    """Epoch seconds -> ISO-8601 UTC string (None stays None)."""
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(float(epoch), tz=datetime.timezone.utc)
    return moment.strftime('%Y-%m-%dT%H:%M:%S.') + '%03dZ' % (moment.microsecond // 1000)


def job_dict(row, now=None):
    """A job row -> the dict the modules return (times as ISO-8601 UTC); `now` (our clock) dates a running job's elapsed time."""
    job = dict((key, row.get(key)) for key in JOB_KEYS)
    job['kind'] = kind_of(row)
    job['cancel_requested'] = bool(row['cancel_requested'])
    job.update((key, iso(row[key])) for key in JOB_TIMES)
    job['progress'] = progress(row, now)
    return job


def progress(row, now=None):
    """How far a job is, from the rows the poll step last recorded (pure; epoch times as stored).

    percent: rows_masked / rows_total (None while unknown or while the engine counts: rowsTotal -1);
    rows_per_second: the observed rate from the start to the last recorded update; eta_at: when the rest
    would be done at that rate (ISO-8601 UTC). An ended job is 100 % when it masked anything.
    elapsed_seconds: how long it has run (to its end, or to `now` while it runs; our clock at both ends), the one
    progress a fleet workflow has, since an agent reports no rows.
    """
    masked, total = row.get('rows_masked'), row.get('rows_total')
    started, updated = row.get('started_at'), row.get('updated_at')
    counting = total is not None and total < 0
    percent = rate = eta = None
    if masked is not None and total and total > 0:
        percent = round(min(100.0, 100.0 * masked / total), 1)
    if masked and started is not None and updated is not None and updated > started:
        rate = masked / float(updated - started)
        if row.get('state') in RUNNING_STATES and percent is not None and rate > 0:
            eta = iso(updated + max(0, total - masked) / rate)
    end = row.get('finished_at') or (now if row.get('state') in RUNNING_STATES else None)
    elapsed = round(max(0.0, end - started), 1) if started is not None and end is not None else None
    return {'percent': percent, 'counting': counting, 'rows_per_second': round(rate, 1) if rate else None, 'eta_at': eta,
            'elapsed_seconds': elapsed}


def engine_dict(engine):
    view = dict((key, engine.get(key)) for key in ENGINE_KEYS)
    view['unreachable_since'] = iso(engine.get('unreachable_since'))
    view['jobs_read_at'] = iso(engine.get('catalogue_at'))
    view['foreign'] = foreign_dict(engine)
    return view


def foreign_dict(engine):
    """The load on an engine that the queue did not start, as last listed: executions, slots and memory it takes."""
    state = placement.engine_state(dict(engine, slots_used=engine.get('slots_used') or 0,
                                        memory_used_mb=engine.get('memory_used_mb') or 0,
                                        active_jobs=engine.get('active_jobs') or ()))
    return {'executions': list(state.foreign), 'slots': len(state.foreign), 'memory_mb': placement.foreign_memory(state),
            'note': placement.foreign_note(state) or None, 'checked_at': iso(engine.get('foreign_checked_at'))}


def history_dict(entry):
    return {'at': iso(entry['at']), 'from_state': entry['from_state'], 'to_state': entry['to_state'],
            'attempt': entry['attempt'], 'engine': entry['engine'], 'execution_id': entry['execution_id'],
            'detail': entry['detail'], 'actor': entry['actor']}


def explain(rows, engines, now, policy=None):
    """Fill in the reason of every waiting job from the engines' state now (pure; rows are copied).

    Reasons of QUEUED jobs are derived when read instead of stored by every scheduler step: always
    current, and a step over 10,000 waiting jobs writes only the ones it places. A stored reason
    stands while its job is held back on purpose (next_try_at in the future, e.g. after an HTTP 409).
    """
    states = {}   # kind of capacity -> its engines' states: a job waits only for its own kind
    by_kind = {}
    result = []
    for row in rows:
        if row['state'] == QUEUED and (row['next_try_at'] is None or row['next_try_at'] <= now or not row['reason']):
            capacity = kind_of(row)
            if capacity not in states:
                states[capacity] = [placement.engine_state(e) for e in engines if kind_of(e) == capacity]
            job = placement.queued_job(row)
            kind = (capacity, job.job_name, job.environment, job.engine_affinity, job.max_memory_mb)
            if kind not in by_kind:
                by_kind[kind] = placement.pending_reason(job, states[capacity], policy)
            row = dict(row, reason=by_kind[kind])
        result.append(row)
    return result
