# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The masking queue facade: what the modules, playbooks and workers call.

    queue = MaskingQueue('sqlite:////var/lib/orchestra/masking.db', credentials={'*': {...}})
    queue.ensure_engine('eng1', 'https://eng1:8282', slots=6, jobs=['mask_customers'])
    created, job = queue.enqueue('mask_customers', request_id='ticket-42')
    queue.wait([job['id']], timeout=3600)      # drives schedule/poll itself under a leader lease

State machine (every change a compare-and-set on (state, attempt), with a history row):

    QUEUED -> SCHEDULED -> STARTING -> RUNNING | ENGINE_QUEUED -> SUCCEEDED | WARNING | FAILED | CANCELLED

- SCHEDULED holds a slot on an engine; only the scheduler step (under the engine lock) enters it.
- STARTING is entered, with `attempt` + 1 and `not_before` (the first start's time) committed, BEFORE
  the POST; a STARTING job whose lease ran out belongs to a process that died or lost the answer, and
  is taken over (attempt + 1 again) and reconciled through the engine's executions since `not_before`
  before anything is POSTed again, so a job never starts twice.
- A cancel request is a flag honoured at every stage: QUEUED/SCHEDULED end at once, STARTING after the
  start settles, RUNNING/ENGINE_QUEUED on the engine with expectedStatus.
Credentials live only in this object's memory: never in the store, never in a message.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import datetime
import os
import random
import socket
import time
import uuid

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_placement as placement
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import (
    ENGINE_TERMINAL, ENGINE_WAITING, DelphixDriverFactory)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineAuthError, EngineConflict, EngineJobNotFound, EngineUnavailable, InvalidRequest, MaskingQueueError,
    MissingCredentials, StoreUnavailable, UnknownEngine, UnknownJob)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_store import (
    ACTIVE_STATES, CANCELLED, ENGINE_QUEUED, FAILED, QUEUED, RUNNING, SCHEDULED, STARTING, STATES, TERMINAL_STATES,
    open_store)

__all__ = ['MaskingQueue', 'MaskingQueueError', 'UnknownJob', 'UnknownEngine', 'StoreUnavailable', 'InvalidRequest',
           'TERMINAL_STATES', 'STATES']

LEADER_LEASE = 'driver'
MAX_JOB_NAME = 50   # Delphix's own limit on jobName


def iso(epoch):
    """Epoch seconds -> ISO-8601 UTC string (None stays None)."""
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(float(epoch), tz=datetime.timezone.utc)
    return moment.strftime('%Y-%m-%dT%H:%M:%S.') + '%03dZ' % (moment.microsecond // 1000)


def job_dict(row):
    """A job row -> the dict the modules return (times as ISO-8601 UTC)."""
    return {
        'id': row['id'], 'request_id': row['request_id'], 'job_name': row['job_name'], 'environment': row['environment'],
        'priority': row['priority'], 'engine_affinity': row['engine_affinity'], 'max_memory_mb': row['max_memory_mb'],
        'state': row['state'], 'attempt': row['attempt'], 'reason': row['reason'], 'engine': row['engine'],
        'execution_id': row['execution_id'], 'engine_status': row['engine_status'],
        'rows_masked': row['rows_masked'], 'rows_total': row['rows_total'],
        'cancel_requested': bool(row['cancel_requested']),
        'submitted_at': iso(row['submitted_at']), 'scheduled_at': iso(row['scheduled_at']),
        'started_at': iso(row['started_at']), 'finished_at': iso(row['finished_at']), 'error': row['error'],
    }


def engine_dict(engine):
    return {
        'name': engine['name'], 'url': engine['url'], 'slots': engine['slots'], 'memory_mb': engine['memory_mb'],
        'enabled': engine['enabled'], 'drained': engine['drained'], 'jobs': engine['jobs'], 'verify': engine['verify'],
        'slots_used': engine['slots_used'], 'memory_used_mb': engine['memory_used_mb'],
        'last_error': engine['last_error'], 'unreachable_since': iso(engine['unreachable_since']),
    }


def _holder_gone(owner):
    """True when `owner` (host:pid:nonce) is a process of this host that no longer exists.

    Lets a take-over of an interrupted start happen at once after a crash on this host instead of
    after the lease; a reused pid only delays the take-over until the lease ends (the safe side).
    """
    parts = (owner or '').split(':')
    if len(parts) < 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _has_room(engine):
    return (engine['enabled'] and not engine['drained'] and engine['unreachable_since'] is None
            and engine['slots_used'] < engine['slots'])


def _queued_job(row):
    return placement.QueuedJob(row['id'], row['job_name'], row['environment'], row['priority'], row['engine_affinity'],
                               row['max_memory_mb'], row['attempt'])


def _engine_state(engine):
    return placement.make_engine(engine['name'], engine['slots'], engine['slots_used'], engine['memory_mb'],
                                 engine['memory_used_mb'], engine['enabled'], engine['drained'], engine['jobs'],
                                 engine['unreachable_since'], engine['active_jobs'])


def decide(queued_rows, engines, policy=None):
    """The scheduler's decision for one step: assignments [(job_id, engine)]. Pure."""
    # Rows are the store's tuples (QUEUED_COLUMNS order, the order of QueuedJob's fields) or dicts.
    jobs = [_queued_job(row) if isinstance(row, dict) else placement.QueuedJob._make(row) for row in queued_rows]
    return [(a.job_id, a.engine) for a in placement.place(jobs, [_engine_state(e) for e in engines], policy)]


def explain(rows, engines, now, policy=None):
    """Fill in the reason of every waiting job from the engines' state now (pure; rows are copied).

    Reasons of QUEUED jobs are derived when read instead of stored by every scheduler step: always
    current, and a step over 10,000 waiting jobs writes only the ones it places. A stored reason
    stands while its job is held back on purpose (next_try_at in the future, e.g. after an HTTP 409).
    """
    states = None
    by_kind = {}
    result = []
    for row in rows:
        if row['state'] == QUEUED and (row['next_try_at'] is None or row['next_try_at'] <= now or not row['reason']):
            if states is None:
                states = [_engine_state(e) for e in engines]
            job = _queued_job(row)
            kind = (job.job_name, job.environment, job.engine_affinity, job.max_memory_mb)
            if kind not in by_kind:
                by_kind[kind] = placement.pending_reason(job, states, policy)
            row = dict(row, reason=by_kind[kind])
        result.append(row)
    return result


def _validate_name(value, what, limit=None):
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest('%s must be a non-empty string, got %r' % (what, value))
    if limit and len(value) > limit:
        raise InvalidRequest('%s is at most %d characters: %r' % (what, limit, value))
    return value


def _validate_int(value, what, minimum=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise InvalidRequest('%s must be an integer, got %r' % (what, value))
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidRequest('%s must be an integer, got %r' % (what, value))
    if minimum is not None and number < minimum:
        raise InvalidRequest('%s must be at least %d, got %d' % (what, minimum, number))
    return number


def _validate_jobs(jobs):
    if jobs is None:
        return None
    if not isinstance(jobs, (list, tuple)):
        raise InvalidRequest('jobs must be a list of job names (or {name, environment} mappings), got %r' % (jobs,))
    result = []
    for entry in jobs:
        if isinstance(entry, dict):
            unknown = set(entry) - set(['name', 'environment'])
            if unknown or not entry.get('name'):
                raise InvalidRequest('a jobs entry mapping needs name (and optionally environment), got %r' % (entry,))
            result.append(dict((k, v) for k, v in entry.items() if v is not None))
        else:
            result.append(_validate_name(entry, 'a job name in jobs', MAX_JOB_NAME))
    return result


class MaskingQueue:
    """The queue: engines, jobs, the scheduler and poll steps, waiting, info. Safe to use from many processes."""

    def __init__(self, store_url, credentials=None, driver_factory=None, clock=time.time, sleep=time.sleep,
                 start_lease=300.0, retry_delay=5.0, max_start_attempts=10, probe_interval=15.0, refresh_interval=0.5,
                 dead_holder_grace=60.0, policy=None, owner=None):
        """start_lease must exceed the longest a driver's start call can take (client timeout x tries):
        a STARTING job whose lease ran out is taken over by another process. dead_holder_grace: when the holder
        is a dead process of this host, the take-over waits only this long after its claim instead of the whole
        lease (long enough for a POST the dead process sent to reach the engine: at least the client timeout).
        refresh_interval: at most one process asks an engine for the status of its running jobs per interval
        (the others skip it)."""
        self._store = open_store(store_url)
        self._credentials = dict(credentials or {})   # memory only
        self._factory = driver_factory or DelphixDriverFactory()
        self._clock = clock
        self._sleep = sleep
        self.start_lease = float(start_lease)
        self.retry_delay = float(retry_delay)
        self.max_start_attempts = int(max_start_attempts)
        self.probe_interval = float(probe_interval)
        self.refresh_interval = float(refresh_interval)
        self.dead_holder_grace = min(float(dead_holder_grace), self.start_lease)
        self.start_batch = 8   # jobs claimed per engine per transaction
        self._claims = 0
        self.policy = policy
        self.owner = owner or '%s:%d:%s' % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])
        self._drivers = {}

    def __repr__(self):
        return 'MaskingQueue(%r, engines with credentials=%r)' % (self._store.describe(), sorted(self._credentials))

    @property
    def store(self):
        return self._store

    def close(self):
        self._store.close()

    # ---- engines -------------------------------------------------------------------------------
    def ensure_engine(self, name, url, slots, memory_mb=None, jobs=None, enabled=True, drained=False, verify=True,
                      dry_run=False):
        """Register or update an engine -> (changed, engine_dict). jobs=None keeps the current list ('any job' when new)."""
        _validate_name(name, 'engine name')
        if not isinstance(url, str) or not url.startswith(('http://', 'https://')):
            raise InvalidRequest('engine url must start with http:// or https://, got %r' % (url,))
        slots = _validate_int(slots, 'slots', minimum=0)
        memory_mb = _validate_int(memory_mb, 'memory_mb', minimum=1, allow_none=True)
        jobs = _validate_jobs(jobs)
        if dry_run:
            current = dict((e['name'], e) for e in self._store.engines()).get(name)
            wanted = {'url': url, 'slots': slots, 'memory_mb': memory_mb, 'enabled': bool(enabled), 'drained': bool(drained),
                      'verify': bool(verify)}
            if jobs is not None or current is None:
                wanted['jobs'] = jobs
            if current is None:
                merged = dict(wanted, name=name, slots_used=0, memory_used_mb=0, last_error=None, unreachable_since=None)
                return True, engine_dict(merged)
            changed = any(current.get(k) != v for k, v in wanted.items())
            return changed, engine_dict(dict(current, **wanted))
        changed, engine = self._store.upsert_engine(name, url, slots, memory_mb, jobs, enabled, drained, verify, now=self._clock())
        self._drivers.pop(name, None)
        return changed, engine_dict(engine)

    def remove_engine(self, name, force=False):
        """Unregister an engine -> changed. Refuses (EngineBusy) while it holds active jobs, unless force."""
        changed = self._store.delete_engine(name, force=force)
        self._drivers.pop(name, None)
        return changed

    def engine(self, name):
        return engine_dict(self._store.engine(name))

    # ---- jobs ----------------------------------------------------------------------------------
    def enqueue(self, job_name, request_id=None, environment=None, priority=0, engine=None, max_memory_mb=None,
                require_carrier=True):
        """Queue a masking job -> (created, job_dict). The same request_id returns the same entry (created False).

        require_carrier: refuse a job name that no registered engine carries (a typo fails now, not in an hour).
        """
        _validate_name(job_name, 'job name', MAX_JOB_NAME)
        if request_id is not None:
            _validate_name(str(request_id), 'request id', 200)
            try:
                existing = self._store.job(str(request_id))
            except UnknownJob:
                existing = None
            if existing is not None and existing['request_id'] == str(request_id):
                if (existing['job_name'], existing['environment']) != (job_name, environment):
                    raise InvalidRequest('request id %s already names job %s (queue id %d), not %s'
                                         % (request_id, existing['job_name'], existing['id'], job_name))
                return False, self._job_out(existing)
        if environment is not None:
            _validate_name(environment, 'environment')
        priority = _validate_int(priority, 'priority')
        max_memory_mb = _validate_int(max_memory_mb, 'max_memory_mb', minimum=0, allow_none=True)
        engines = self._store.engines()
        if engine is not None:
            _validate_name(engine, 'engine')
            if not any(e['name'] == engine for e in engines):
                raise UnknownEngine('no engine named %s is registered in the queue (known: %s)'
                                    % (engine, ', '.join(e['name'] for e in engines) or 'none'))
        if require_carrier:
            states = [_engine_state(e) for e in engines]
            if not any(placement._eligible(e, job_name, environment, engine) for e in states):  # pylint: disable=protected-access
                probe = placement.QueuedJob(0, job_name, environment, 0, engine, max_memory_mb, 0)
                raise InvalidRequest('cannot queue %s: %s' % (job_name, placement.pending_reason(probe, states)))
        created, row = self._store.enqueue(str(request_id) if request_id is not None else uuid.uuid4().hex, job_name,
                                           environment, priority, engine, max_memory_mb, self._clock(), actor=self.owner)
        return created, self._job_out(row)

    def _jobs_out(self, rows):
        engines = self._store.engines() if any(row['state'] == QUEUED for row in rows) else []
        return [job_dict(row) for row in explain(rows, engines, self._clock(), self.policy)]

    def _job_out(self, row):
        return self._jobs_out([row])[0]

    def job(self, job_id_or_request_id):
        return self._job_out(self._store.job(job_id_or_request_id))

    def cancel(self, job_id_or_request_id):
        """Request cancellation; honoured at once where the job has not started, on the engine where it has."""
        row = self._store.job(job_id_or_request_id)
        if row['state'] in TERMINAL_STATES:
            return self._job_out(row)
        now = self._clock()
        self._store.request_cancel(row['id'], now)
        for _round in range(10):
            row = self._store.job(row['id'])
            if row['state'] in (QUEUED, SCHEDULED):
                if self._store.transition(row['id'], row['state'], row['attempt'], CANCELLED, now, detail='cancelled before start',
                                          actor=self.owner, finished_at=now, reason='cancelled before it started', owner=None):
                    break
                continue
            if row['state'] in (RUNNING, ENGINE_QUEUED):
                engines = dict((e['name'], e) for e in self._store.engines([row['engine']]))
                driver = self._driver(engines.get(row['engine']))
                if driver is not None:
                    self._cancel_on_engine(row, driver, engines[row['engine']], collections.Counter())
            break   # STARTING: the process that starts it cancels it once the start settles
        return self._job_out(self._store.job(row['id']))

    # ---- drivers -------------------------------------------------------------------------------
    def _credentials_for(self, name):
        return self._credentials.get(name) or self._credentials.get('*')

    def _driver(self, engine):
        """The engine's driver, or None when this process cannot drive it (no credentials)."""
        if engine is None:
            return None
        key = (engine['name'], engine['url'], engine['verify'])
        cached = self._drivers.get(engine['name'])
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            driver = self._factory(engine, self._credentials_for(engine['name']))
        except MissingCredentials:
            driver = None
        self._drivers[engine['name']] = (key, driver)
        return driver

    # ---- scheduler step ------------------------------------------------------------------------
    def schedule_step(self):
        """Place queued jobs on free slots, atomically -> {'placed': n, 'pending': n}."""
        now = self._clock()
        queued = self._store.queued_count()
        if queued == 0:
            return {'placed': 0, 'pending': 0}
        if not any(_has_room(e) for e in self._store.engines()):
            return {'placed': 0, 'pending': queued}   # nothing can be placed: skip the locked step
        placed, queued = self._store.schedule(lambda rows, engines: decide(rows, engines, self.policy),
                                              now, owner='schedule:%s' % uuid.uuid4().hex, actor=self.owner)
        return {'placed': placed, 'pending': queued - placed}

    # ---- poll step -----------------------------------------------------------------------------
    def poll_step(self):
        """Start scheduled jobs, recover interrupted starts, refresh running ones, finalise, honour cancels."""
        stats = collections.Counter(dict((key, 0) for key in ('started', 'recovered', 'refreshed', 'finished', 'requeued',
                                                              'cancelled', 'start_errors', 'unreachable')))
        engines = dict((e['name'], e) for e in self._store.engines())
        self._recover_starting(engines, stats)
        self._start_scheduled(engines, stats)
        self._refresh_active(engines, stats)
        self._probe_engines(engines, stats)
        return dict(stats)

    def _engine_down(self, engine, exc, stats):
        now = self._clock()
        message = 'engine %s unreachable: %s' % (engine['name'], str(exc)[:300])
        self._store.mark_engine_unreachable(engine['name'], message, now)
        if engine.get('unreachable_since') is None:
            engine['unreachable_since'] = now
        engine['last_error'] = message
        engine['last_probe_at'] = now
        stats['unreachable'] += 1
        return message

    def _engine_up(self, engine):
        if engine.get('unreachable_since') is not None or engine.get('last_error') is not None:
            self._store.mark_engine_reachable(engine['name'], self._clock())
            engine['unreachable_since'] = None
            engine['last_error'] = None

    def _claim_token(self):
        self._claims += 1
        return '%s:%d' % (self.owner, self._claims)

    def _start_scheduled(self, engines, stats):
        """Claim scheduled jobs per engine in batches and start them; engines in random order so that
        concurrent pollers spread over the engines instead of racing for the same jobs."""
        by_engine = {}
        now = self._clock()
        for row in self._store.jobs(states=[SCHEDULED]):
            engine = engines.get(row['engine'])
            if row['cancel_requested']:
                if self._store.transition(row['id'], SCHEDULED, row['attempt'], CANCELLED, now, detail='cancelled before start',
                                          actor=self.owner, finished_at=now, reason='cancelled before it started', owner=None):
                    stats['cancelled'] += 1
                continue
            why = None
            if engine is None:
                why = 'engine %s was removed; placed again' % row['engine']
            elif not engine['enabled'] or engine['drained']:
                why = 'engine %s was %s before the job started; placed again' % (
                    engine['name'], 'drained' if engine['drained'] else 'disabled')
            elif engine['unreachable_since'] is not None:
                why = 'engine %s unreachable since %s; placed again' % (engine['name'], placement.reason_time(engine['unreachable_since']))
            if why is not None:
                if self._store.transition(row['id'], SCHEDULED, row['attempt'], QUEUED, now, detail=why, actor=self.owner,
                                          engine=None, owner=None, reason=why, scheduled_at=None, next_try_at=None):
                    stats['requeued'] += 1
                continue
            if row['next_try_at'] is None or row['next_try_at'] <= now:
                by_engine.setdefault(engine['name'], []).append(row)
        names = sorted(by_engine)
        random.shuffle(names)
        for name in names:
            engine = engines[name]
            driver = self._driver(engine)
            if driver is None:
                reason = 'waiting for a process with credentials for engine %s to start it' % name
                for row in by_engine[name]:
                    if row['reason'] != reason:
                        self._store.update_fields(row['id'], SCHEDULED, row['attempt'], now, reason=reason)
                continue
            claimed = self._store.claim_scheduled(name, self._claim_token(), self._clock(), self.start_lease, self.start_batch,
                                                  'starting on engine %s' % name, actor=self.owner)
            for index, row in enumerate(claimed):
                if not self._start(row, driver, engine, stats):
                    self._unclaim(claimed[index + 1:], engine)
                    break

    def _unclaim(self, rows, engine):
        """Give back claimed jobs that were never POSTed (the engine just failed us): provably not started."""
        why = 'engine %s failed a start just before; will try again' % engine['name']
        self._store.transition_many([(row['id'], STARTING, row['attempt'], SCHEDULED, why,
                                      {'not_before': None, 'lease_until': None, 'owner': None, 'reason': why,
                                       'next_try_at': self._clock() + self.retry_delay}) for row in rows],
                                    self._clock(), actor=self.owner)

    def _start(self, row, driver, engine, stats):
        """POST the start of a claimed STARTING job and record the outcome. False when the engine should be left alone."""
        try:
            info = driver.start(row)
        except EngineConflict as exc:
            return self._after_conflict(row, driver, engine, exc, stats)
        except EngineUnavailable as exc:
            self._start_unknown(row, engine, exc, stats)
            return False
        except (EngineJobNotFound, EngineAuthError) as exc:
            # Refused before anything ran: a clear failure, not something a retry fixes.
            self._fail_start(row, engine, exc, stats)
            return True
        except DriverError as exc:
            # An answer we cannot read: settle it through the engine's executions, never by guessing.
            try:
                info = driver.reconcile(row)
            except DriverError:
                info = None
            if info is None:
                self._fail_start(row, engine, exc, stats)
                return True
        self._engine_up(engine)
        stats['started'] += 1
        self._adopt(row, info, engine, driver, stats)
        return True

    def _after_conflict(self, row, driver, engine, exc, stats):
        now = self._clock()
        try:
            info = driver.reconcile(row)   # the execution that holds the job may be ours (an earlier lost start)
        except EngineUnavailable as again:
            self._start_unknown(row, engine, again, stats)
            return False
        except DriverError:
            info = None
        if info is not None:
            stats['started'] += 1
            self._adopt(row, info, engine, driver, stats)
            return True
        why = 'engine %s refused to start %s: it is already running or queued there (HTTP 409); will place it again' % (
            engine['name'], row['job_name'])
        if self._store.transition(row['id'], STARTING, row['attempt'], QUEUED, now, detail=str(exc)[:300], actor=self.owner,
                                  engine=None, owner=None, not_before=None, lease_until=None, scheduled_at=None, reason=why,
                                  next_try_at=now + self.retry_delay, start_failures=row['start_failures'] + 1):
            stats['requeued'] += 1
        return True

    def _start_unknown(self, row, engine, exc, stats):
        """The start may or may not have reached the engine: stay STARTING; a later take-over reconciles first."""
        message = self._engine_down(engine, exc, stats)
        failures = row['start_failures'] + 1
        now = self._clock()
        delay = min(self.retry_delay * (2 ** min(failures - 1, 6)), 300.0)
        self._store.transition(row['id'], STARTING, row['attempt'], STARTING, now, detail=message, actor=self.owner,
                               start_failures=failures, lease_until=now + delay,
                               reason='%s; start outcome unknown, will reconcile with the engine before any retry' % message)
        stats['start_errors'] += 1

    def _fail_start(self, row, engine, exc, stats):
        now = self._clock()
        message = 'could not start %s on engine %s: %s' % (row['job_name'], engine['name'], str(exc)[:400])
        if isinstance(exc, EngineAuthError):
            self._store.note_engine_error(engine['name'], str(exc)[:300], now)
        if self._store.transition(row['id'], STARTING, row['attempt'], FAILED, now, detail=message, actor=self.owner,
                                  finished_at=now, error=message, reason=None, lease_until=None, owner=None):
            stats['finished'] += 1
        stats['start_errors'] += 1

    def _recover_starting(self, engines, stats):
        for row in self._store.jobs(states=[STARTING]):
            now = self._clock()
            if row['lease_until'] is not None and row['lease_until'] > now and not (
                    _holder_gone(row['owner']) and now >= row['updated_at'] + self.dead_holder_grace):
                continue   # its holder is at work (or died so recently that its last POST may still be in flight)
            engine = engines.get(row['engine'])
            driver = self._driver(engine)
            if driver is None:
                continue
            claimed = self._store.transition(row['id'], STARTING, row['attempt'], STARTING, now,
                                             detail='taking over an interrupted start: reconciling first', actor=self.owner,
                                             attempt=row['attempt'] + 1, owner=self.owner, lease_until=now + self.start_lease)
            if claimed is None:
                continue
            stats['recovered'] += 1
            try:
                info = driver.reconcile(claimed)
            except EngineUnavailable as exc:
                self._start_unknown(claimed, engine, exc, stats)
                continue
            except EngineJobNotFound as exc:
                self._fail_start(claimed, engine, exc, stats)   # the job does not exist there: nothing can have started
                continue
            except DriverError as exc:
                self._store.transition(claimed['id'], STARTING, claimed['attempt'], STARTING, now, detail=str(exc)[:300],
                                       actor=self.owner, lease_until=now + self.retry_delay,
                                       reason='cannot check whether the start reached engine %s: %s' % (engine['name'], str(exc)[:300]))
                continue
            self._engine_up(engine)
            if info is not None:
                self._adopt(claimed, info, engine, driver, stats)
            elif claimed['cancel_requested']:
                if self._store.transition(claimed['id'], STARTING, claimed['attempt'], CANCELLED, now, detail='cancelled before start',
                                          actor=self.owner, finished_at=now, reason='cancelled before it started',
                                          lease_until=None, owner=None):
                    stats['cancelled'] += 1
            elif claimed['start_failures'] >= self.max_start_attempts:
                self._fail_start(claimed, engine, MaskingQueueError(
                    'gave up after %d attempts; the engine has no execution of it (last: %s)' % (claimed['start_failures'], claimed['reason'])),
                    stats)
            else:
                self._start(claimed, driver, engine, stats)   # provably not started: safe to POST again

    # ---- execution outcomes --------------------------------------------------------------------
    def _adopt(self, row, info, engine, driver, stats):
        """Record the execution a start created (or a reconcile found)."""
        now = self._clock()
        fields = {'execution_id': info.execution_id, 'engine_job_id': info.engine_job_id, 'engine_status': info.status,
                  'started_at': info.start_time or now, 'lease_until': None, 'next_try_at': None}
        if info.status in ENGINE_TERMINAL:
            self._finish(row, info, engine, driver, stats, extra=fields)
            return
        if info.status in ENGINE_WAITING:
            state, fields['reason'] = ENGINE_QUEUED, 'queued by engine %s until it has capacity' % engine['name']
        elif info.status == 'RUNNING':
            state, fields['reason'] = RUNNING, None
        else:
            state, fields['reason'] = RUNNING, 'engine %s reports an unknown status %s: treated as not finished' % (engine['name'], info.status)
        adopted = self._store.transition(row['id'], row['state'], row['attempt'], state, now,
                                         detail='execution %s %s' % (info.execution_id, info.status), actor=self.owner, **fields)
        if adopted is not None and adopted['cancel_requested']:
            self._cancel_on_engine(adopted, driver, engine, stats)

    def _final_change(self, row, info, engine, driver, extra=None):
        """The transition that records a finished execution: (job_id, from, attempt, to, detail, fields)."""
        now = self._clock()
        detail = None
        if info.status in ('FAILED', 'WARNING'):
            detail = driver.failure_detail(info.execution_id)
        error = None
        if info.status == 'FAILED':
            error = 'execution %s on engine %s failed%s' % (info.execution_id, engine['name'], ': ' + detail if detail else '')
        elif info.status == 'WARNING':
            error = 'execution %s on engine %s finished with warnings%s' % (
                info.execution_id, engine['name'], ': ' + detail if detail else '')
        fields = dict(extra or {})
        fields.update({'engine_status': info.status, 'rows_masked': info.rows_masked, 'rows_total': info.rows_total,
                       'finished_at': info.end_time or now, 'error': error, 'reason': None, 'owner': None, 'lease_until': None})
        if info.start_time and row.get('started_at') is None:
            fields.setdefault('started_at', info.start_time)
        return (row['id'], row['state'], row['attempt'], info.status,
                'execution %s %s' % (info.execution_id, info.status), fields)

    def _finish(self, row, info, engine, driver, stats, extra=None):
        moved = self._store.transition_many([self._final_change(row, info, engine, driver, extra)], self._clock(), actor=self.owner)
        stats['finished'] += len(moved)

    def _apply_status(self, row, info, engine, driver, stats):
        if info.status in ENGINE_TERMINAL:
            self._finish(row, info, engine, driver, stats)
            return
        state = ENGINE_QUEUED if info.status in ENGINE_WAITING else RUNNING
        if state == row['state'] and info.status == row['engine_status']:
            return   # nothing changed: no write
        reason = None
        if state == ENGINE_QUEUED:
            reason = 'queued by engine %s until it has capacity' % engine['name']
        elif info.status != 'RUNNING':
            reason = 'engine %s reports an unknown status %s: treated as not finished' % (engine['name'], info.status)
        fields = {'engine_status': info.status, 'reason': reason}
        if state == RUNNING and row['state'] == ENGINE_QUEUED and info.start_time:
            fields['started_at'] = info.start_time
        self._store.transition(row['id'], row['state'], row['attempt'], state, self._clock(),
                               detail='engine status %s' % info.status, actor=self.owner, **fields)

    def _cancel_on_engine(self, row, driver, engine, stats):
        """Cancel on the engine, guarded by the status we believe it has (expectedStatus), then settle."""
        expected = row['engine_status'] if row['engine_status'] in ('QUEUED', 'RUNNING') else (
            'QUEUED' if row['state'] == ENGINE_QUEUED else 'RUNNING')
        info = None
        for _try in range(3):
            try:
                info = driver.cancel(row['execution_id'], expected_status=expected)
                break
            except EngineConflict:
                # Its status moved on (admitted, or finished): read it, and cancel again if it still runs.
                try:
                    info = driver.status(row['execution_id'])
                except DriverError:
                    return
                if info.status in ENGINE_TERMINAL:
                    break
                expected = info.status
            except DriverError:
                return   # retried by the next poll step
        if info is None:
            return
        stats['cancelled'] += 1
        fresh = self._store.job(row['id'])
        if fresh['state'] == row['state'] and fresh['attempt'] == row['attempt']:
            self._apply_status(fresh, info, engine, driver, stats)

    # ---- refresh -------------------------------------------------------------------------------
    def _refresh_active(self, engines, stats):
        by_engine = {}
        for row in self._store.jobs(states=[RUNNING, ENGINE_QUEUED]):
            by_engine.setdefault(row['engine'], []).append(row)
        for name, rows in sorted(by_engine.items()):
            engine = engines.get(name)
            driver = self._driver(engine)
            if driver is None:
                continue
            cancels = [row for row in rows if row['cancel_requested']]
            if not cancels and self.refresh_interval > 0 and not self._store.claim_turn(
                    'refresh:' + name, self.owner, self.refresh_interval, self._clock()):
                continue   # another process asked this engine a moment ago
            try:
                infos = driver.statuses(dict((row['execution_id'], row['engine_status']) for row in rows))
            except EngineUnavailable as exc:
                message = self._engine_down(engine, exc, stats)
                for row in rows:
                    reason = '%s; status unknown, will check again' % message.split(':')[0]
                    if row['reason'] != reason:
                        self._store.update_fields(row['id'], row['state'], row['attempt'], self._clock(), reason=reason)
                continue
            except DriverError:
                infos = self._statuses_one_by_one(rows, driver, engine, stats)
            self._engine_up(engine)
            finished = []
            for row in rows:
                info = infos.get(row['execution_id'])
                if info is None:
                    continue
                stats['refreshed'] += 1
                if row['cancel_requested'] and info.status not in ENGINE_TERMINAL:
                    self._cancel_on_engine(dict(row, engine_status=info.status), driver, engine, stats)
                elif info.status in ENGINE_TERMINAL:
                    finished.append(self._final_change(row, info, engine, driver))
                else:
                    self._apply_status(row, info, engine, driver, stats)
            if finished:   # every job this engine finished, in one transaction
                stats['finished'] += len(self._store.transition_many(finished, self._clock(), actor=self.owner))

    def _statuses_one_by_one(self, rows, driver, engine, stats):
        infos = {}
        for row in rows:
            try:
                infos[row['execution_id']] = driver.status(row['execution_id'])
            except EngineJobNotFound:
                now = self._clock()
                message = 'execution %s no longer exists on engine %s' % (row['execution_id'], engine['name'])
                if self._store.transition(row['id'], row['state'], row['attempt'], FAILED, now, detail=message, actor=self.owner,
                                          finished_at=now, error=message, reason=None):
                    stats['finished'] += 1
            except DriverError:
                continue
        return infos

    def _probe_engines(self, engines, stats):
        now = self._clock()
        for engine in engines.values():
            if engine['unreachable_since'] is None:
                continue
            if engine['last_probe_at'] is not None and now - engine['last_probe_at'] < self.probe_interval:
                continue
            driver = self._driver(engine)
            if driver is None:
                continue
            try:
                driver.probe()
            except EngineUnavailable as exc:
                self._engine_down(engine, exc, stats)
                continue
            except DriverError as exc:
                self._store.note_engine_error(engine['name'], str(exc)[:300], now)
                continue
            self._engine_up(engine)

    # ---- waiting -------------------------------------------------------------------------------
    def drive_once(self):
        """One scheduler step and one poll step -> both results."""
        return {'schedule': self.schedule_step(), 'poll': self.poll_step()}

    def wait(self, job_ids, timeout, poll_interval=1.0, cancel_on_timeout=False, cancel_grace=30.0):
        """Block until every job is terminal, or timeout (seconds) -> the jobs' dicts, in the order asked.

        Whoever holds the leader lease drives the steps (no cron needed); when the leader dies its lease
        runs out and another waiter takes over. On timeout the jobs are returned as they are (check
        'state'); with cancel_on_timeout they are cancelled first and given cancel_grace seconds to settle.
        """
        ids = [self._store.job(key)['id'] for key in job_ids]
        ttl = max(5.0, 3.0 * float(poll_interval))
        deadline = self._clock() + float(timeout)
        try:
            rows = self._wait_until(ids, deadline, poll_interval, ttl)
            if any(row['state'] not in TERMINAL_STATES for row in rows) and cancel_on_timeout:
                for row in rows:
                    if row['state'] not in TERMINAL_STATES:
                        self.cancel(row['id'])
                rows = self._wait_until(ids, self._clock() + float(cancel_grace), poll_interval, ttl)
        finally:
            try:
                self._store.release_lease(LEADER_LEASE, self.owner)
            except StoreUnavailable:
                pass
        by_id = dict((row['id'], row) for row in rows)
        return self._jobs_out([by_id[job_id] for job_id in ids])

    def _wait_until(self, ids, deadline, poll_interval, ttl):
        while True:
            rows = self._store.jobs(ids=sorted(set(ids)))
            if all(row['state'] in TERMINAL_STATES for row in rows) or self._clock() >= deadline:
                return rows
            busy = False
            if self._store.acquire_lease(LEADER_LEASE, self.owner, ttl, self._clock()) is not None:
                result = self.drive_once()
                busy = result['schedule']['placed'] > 0 or result['poll']['finished'] > 0
                rows = self._store.jobs(ids=sorted(set(ids)))
                if all(row['state'] in TERMINAL_STATES for row in rows):
                    return rows
            if not busy:
                self._sleep(max(0.0, min(float(poll_interval), deadline - self._clock())))

    # ---- info ----------------------------------------------------------------------------------
    def info(self, jobs=True, engines=True, history_for=None, states=None, limit=None):
        """Jobs (oldest first; with limit, the newest `limit`), engines with slot use, counts per state, and the history of the given jobs."""
        result = {'store': self._store.describe(), 'schema_version': self._store.schema_version(),
                  'counts': self._store.counts()}
        if states:
            unknown = set(states) - set(STATES)
            if unknown:
                raise InvalidRequest('unknown job states: %s (known: %s)' % (', '.join(sorted(unknown)), ', '.join(STATES)))
        if jobs:
            result['jobs'] = self._jobs_out(self._store.jobs(states=states or None, limit=limit))
        if engines:
            result['engines'] = [engine_dict(e) for e in self._store.engines()]
        if history_for:
            ids = [self._store.job(key)['id'] for key in history_for]
            history = dict((job_id, []) for job_id in ids)
            for entry in self._store.history(ids):
                history[entry['job_id']].append({
                    'at': iso(entry['at']), 'from_state': entry['from_state'], 'to_state': entry['to_state'],
                    'attempt': entry['attempt'], 'engine': entry['engine'], 'execution_id': entry['execution_id'],
                    'detail': entry['detail'], 'actor': entry['actor']})
            result['history'] = history
        return result


ACTIVE = ACTIVE_STATES
