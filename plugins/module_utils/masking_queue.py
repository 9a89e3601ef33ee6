# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The masking queue facade: what the modules, playbooks and workers call.

    queue = MaskingQueue('sqlite:////var/lib/orchestra/masking.db', credentials={'*': {...}})
    queue.ensure_engine('eng1', 'https://eng1:8282', slots=6, jobs=['mask_customers'])
    created, job = queue.enqueue('mask_customers', request_id='ticket-42')
    queue.wait([job['id']], timeout=3600)      # drives schedule/poll itself under a leader lease

Where each decision lives: states and legal moves in masking_states, placement (and "can any engine
carry this job") in masking_placement, the SQL in masking_store / masking_sql, one poll step (every
driver call) in masking_lifecycle, the returned dicts in masking_views. This facade validates
requests, answers the questions modules ask (with a dry run where check mode needs a prediction),
and waits. Credentials live only in this object's memory: never in the store, never in a message.
"""

import os
import socket
import time
import uuid

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_discovery as discovery
from ansible_collections.orchestra.fleet.plugins.module_utils import masking_placement as placement
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixDriverFactory
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineUnavailable, InvalidRequest, MaskingQueueError, MissingCredentials, NoCarrier, NoCredentials, StoreUnavailable,
    UnknownEngine, UnknownJob, WaitInterrupted)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_lifecycle import PollStep, foreign_on, new_stats
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_placement import decide, has_room
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_sql import DEFAULT_OUTAGE_TIMEOUT
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import (
    CANCELLED, ENGINE_QUEUED, FAILED, MASKING, QUEUED, RUNNING, SCHEDULED, STATES, TERMINAL_STATES, kind_of)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_store import open_store, same_request
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_views import (
    engine_dict, explain, history_dict, iso, job_dict)

__all__ = ['MaskingQueue', 'MaskingQueueError', 'UnknownJob', 'UnknownEngine', 'StoreUnavailable', 'InvalidRequest',
           'NoCarrier', 'TERMINAL_STATES', 'STATES', 'WaitInterrupted', 'NoCredentials', 'decide', 'explain', 'iso',
           'job_dict', 'engine_dict']

LEADER_LEASE = 'driver'
MAX_JOB_NAME = 50   # Delphix's own limit on jobName
DEFAULT_INFO_LIMIT = 100


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


def _validate_url(url):
    if url is not None and (not isinstance(url, str) or not url.startswith(('http://', 'https://'))):
        raise InvalidRequest('engine url must start with http:// or https://, got %r' % (url,))
    return url


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

    # The kinds of capacity this object drives in its poll steps, and the leader lease its waiters share
    # (fleet_queue.FleetQueue drives the fleet under a lease of its own, so neither kind waits on the other).
    kinds = (MASKING,)
    leader_lease = LEADER_LEASE

    def __init__(self, store_url, credentials=None, driver_factory=None, clock=time.time, sleep=time.sleep,
                 start_lease=300.0, retry_delay=5.0, max_start_attempts=10, probe_interval=15.0, refresh_interval=0.5,
                 dead_holder_grace=60.0, policy=None, owner=None, read_only=False, outage_timeout=DEFAULT_OUTAGE_TIMEOUT,
                 credentials_grace=15.0, catalogue_interval=discovery.CATALOGUE_INTERVAL):
        """start_lease must exceed the longest a driver's start call can take (client timeout x tries):
        a STARTING job whose lease ran out is taken over by another process. dead_holder_grace: when the holder
        is a dead process of this host, the take-over waits only this long after its claim instead of the whole
        lease (long enough for a POST the dead process sent to reach the engine: at least the client timeout).
        refresh_interval: at most one process asks an engine for the status of its running jobs per interval
        (the others skip it). read_only: open an existing store without creating or migrating it (queue_info).
        outage_timeout: how long every store call rides out an unreachable database (seconds).
        credentials_grace: how long a waiter without credentials for its job's engine waits for another process
        to start it before it fails with NoCredentials. catalogue_interval: how often (seconds) a poll step reads the
        job list and capacity of an engine registered with discovery again (also at once when a job is not found)."""
        self._store = open_store(store_url, create=not read_only, outage_timeout=outage_timeout)
        self._credentials = dict(credentials or {})   # memory only
        self._factories = {MASKING: driver_factory or DelphixDriverFactory()}   # kind of capacity -> driver factory
        self.clock = clock
        self._sleep = sleep
        self.start_lease = float(start_lease)
        self.retry_delay = float(retry_delay)
        self.max_start_attempts = int(max_start_attempts)
        self.probe_interval = float(probe_interval)
        self.refresh_interval = float(refresh_interval)
        self.dead_holder_grace = min(float(dead_holder_grace), self.start_lease)
        self.credentials_grace = float(credentials_grace)
        self.catalogue_interval = float(catalogue_interval)
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
        """Log out of every engine this queue logged in to, then close the store."""
        self.close_drivers()
        self._store.close()

    def close_drivers(self):
        """driver.close() once per driver (best effort: a driver's close never raises)."""
        drivers, self._drivers = self._drivers, {}
        for _key, driver in drivers.values():
            close = getattr(driver, 'close', None)
            if driver is not None and close is not None:
                close()

    # ---- engines -------------------------------------------------------------------------------
    def ensure_engine(self, name, url=None, slots=None, memory_mb=None, jobs=None, enabled=None, drained=None, verify=None,
                      dry_run=False):
        """Register or update an engine -> (changes {setting: (before, after)}, engine_dict); changes is empty (falsy)
        when nothing changed. Settings left None keep their value (url and slots are required for a new engine).
        dry_run computes the same answer and writes nothing (check mode)."""
        _validate_name(name, 'engine name')
        wanted = dict(url=_validate_url(url), slots=_validate_int(slots, 'slots', minimum=0, allow_none=True),
                      memory_mb=_validate_int(memory_mb, 'memory_mb', minimum=1, allow_none=True),
                      jobs=_validate_jobs(jobs), enabled=_bool_or_none(enabled), drained=_bool_or_none(drained),
                      verify=_bool_or_none(verify))
        current = self._current_engine(name)
        if current is not None and current.get('discovered'):
            # A value given explicitly is no longer the engine's to refresh.
            kept = [field for field in current['discovered'] if wanted.get(field) is None]
            if kept != current['discovered']:
                wanted['discovered'] = kept
        return self._upsert(name, wanted, dry_run)

    def _upsert(self, name, wanted, dry_run):
        changes, engine = self._store.upsert_engine(name, self.clock(), dry_run=dry_run, **wanted)
        if not dry_run:
            self._drivers.pop(name, None)
        return changes, engine_dict(engine)

    def _current_engine(self, name):
        try:
            return self._store.engine(name)
        except UnknownEngine:
            return None

    def _engine_driver(self, name, url, verify):
        """A driver for an engine that may not be registered yet (discovery) -> (driver, where) ; raises clearly."""
        credentials = self._credentials.get(name) or self._credentials.get('*')
        where = 'engine %s (%s)' % (name, url)
        try:
            return self._factories[MASKING]({'name': name, 'url': url, 'verify': True if verify is None else verify}, credentials), where
        except MissingCredentials:
            raise MissingCredentials('cannot discover %s: no credentials for it (username and password, or '
                                     'engine_credentials); nothing was changed in the queue' % where)

    def describe_engine(self, name, url=None, verify=None):
        """Ask an engine what it carries and can run -> (facts {field: (value, source)}, system-information).

        Reads only. An unreachable engine or a refused login raises the driver's error naming the engine.
        """
        current = self._current_engine(name)
        url = url or (current or {}).get('url')
        if verify is None and current is not None:
            verify = current['verify']
        if not url:
            raise InvalidRequest('engine %s is not registered yet: url is required to discover it' % name)
        driver, where = self._engine_driver(name, url, verify)
        try:
            settings, system, catalogue = driver.describe()
        except DriverError as exc:
            raise exc.__class__('cannot discover %s: %s; nothing was changed in the queue' % (where, exc), status=exc.status)
        finally:
            close = getattr(driver, 'close', None)
            if close is not None:
                close()
        return discovery.facts(settings, system, catalogue), system

    def discover_engine(self, name, url=None, slots=None, memory_mb=None, jobs=None, enabled=None, drained=None,
                        verify=None, dry_run=False):
        """Register or update an engine from what it says about itself -> (changes, engine_dict, report).

        slots, memory_mb and jobs given here override what the engine says; report['sources'] says where each value
        came from, report['discovered'] what the engine said. Nothing is written when the engine cannot be read.
        """
        _validate_name(name, 'engine name')
        url = _validate_url(url)
        explicit = dict(slots=_validate_int(slots, 'slots', minimum=1, allow_none=True),
                        memory_mb=_validate_int(memory_mb, 'memory_mb', minimum=1, allow_none=True),
                        jobs=_validate_jobs(jobs))
        found, system = self.describe_engine(name, url, verify)
        try:
            wanted, sources, discovered = discovery.merge(found, explicit, name)
        except discovery.DiscoveryError as exc:
            raise InvalidRequest(str(exc))
        wanted.update(discovered=discovered, url=url, enabled=_bool_or_none(enabled), drained=_bool_or_none(drained),
                      verify=_bool_or_none(verify))
        if wanted['memory_mb'] is None and 'memory_mb' in discovered:
            wanted.pop('memory_mb')   # the engine gave none: keep what the queue has
        changes, engine = self._upsert(name, wanted, dry_run)
        if not dry_run:
            now = self.clock()
            self._store.note_catalogue(name, now)
            # just read: the poll step's next read of this engine's job list is one interval away
            self._store.claim_turn('catalogue:' + name, self.owner, self.catalogue_interval, now)
            engine = self.engine(name)
        report = {'sources': sources,
                  'discovered': dict((field, found[field][0]) for field in discovery.DISCOVERABLE),
                  'version': system.get('version')}
        return changes, engine, report

    def remove_engine(self, name, force=False, dry_run=False):
        """Unregister an engine -> changed. Refuses (EngineBusy) while it holds active jobs, unless force."""
        changed = self._store.delete_engine(name, self.clock(), force=force, dry_run=dry_run)
        if not dry_run:
            self._drivers.pop(name, None)
        return changed

    def engine(self, name):
        return engine_dict(self._store.engine(name))

    def engine_reports(self, name=None):
        """What each registered engine (or the one named) says now, beside the queue's own view of it. Reads only."""
        # Masking engines only: fleet hosts share the engines table but are described by their agents, not here.
        engines = [self._store.engine(name)] if name is not None else [
            engine for engine in self._store.engines() if kind_of(engine) == MASKING]
        try:
            return [self._engine_report(engine) for engine in engines]
        finally:
            self.close_drivers()

    def _engine_report(self, engine):
        report = {'name': engine['name'], 'url': engine['url'], 'queue': engine_dict(engine), 'reachable': None,
                  'error': None, 'error_kind': None, 'version': None, 'build': None, 'settings': {}, 'capacity': {},
                  'jobs': [], 'executions': {'ours': [], 'foreign': []}}
        driver = self.driver(engine)
        if driver is None or not hasattr(driver, 'describe'):
            report['error'] = ('no credentials for engine %s in this task (username and password, or engine_credentials)'
                               % engine['name'] if driver is None else 'this kind of engine does not describe itself')
            report['error_kind'] = 'no_credentials' if driver is None else 'engine_error'
            return report
        try:
            settings, system, catalogue = driver.describe()
            active = driver.active_executions()
        except DriverError as exc:
            report.update(reachable=not isinstance(exc, EngineUnavailable), error='engine %s: %s' % (engine['name'], exc),
                          error_kind=exc.error_kind)
            return report
        found = discovery.facts(settings, system, catalogue)
        foreign, owners = foreign_on(self._store, engine['name'], active)
        foreign_ids = set(entry['execution_id'] for entry in foreign)
        ours = [dict(entry, queue_id=owners[entry['execution_id']]['id'],
                     request_id=owners[entry['execution_id']]['request_id'])
                for entry in active if entry['execution_id'] in owners]
        starting = [entry for entry in active if entry['execution_id'] not in owners and entry['execution_id'] not in foreign_ids]
        report.update(reachable=True, version=system.get('version'), build=system.get('build'), settings=settings,
                      system=system,
                      capacity=dict((field, {'value': found[field][0], 'source': found[field][1]})
                                    for field in ('slots', 'memory_mb')),
                      jobs=[{'name': job.get('jobName'), 'environment': job.get('environmentName'),
                             'application': job.get('applicationName'), 'job_id': job.get('maskingJobId'),
                             'max_memory_mb': job.get('maxMemory')} for job in catalogue],
                      executions={'ours': ours + starting, 'foreign': foreign})
        return report

    def engines(self):
        return [engine_dict(e) for e in self._store.engines()]

    # ---- jobs ----------------------------------------------------------------------------------
    def enqueue(self, job_name, request_id=None, environment=None, priority=0, engine=None, max_memory_mb=None,
                require_carrier=True, rerun=False, dry_run=False):
        """Queue a masking job -> (created, job_dict).

        The same request_id returns the same entry (created False), whatever state it is in, unless rerun is
        set and the entry FAILED or was CANCELLED: then that entry (same id and request id, history kept) is
        queued again and created is True. A SUCCEEDED or WARNING entry is never run again under its request id.
        require_carrier: refuse a job that no registered engine carries (a typo fails now, not in an hour).
        dry_run: validate and answer as for real, write nothing (check mode).
        """
        _validate_name(job_name, 'job name', MAX_JOB_NAME)
        if environment is not None:
            _validate_name(environment, 'environment')
        if engine is not None:
            _validate_name(engine, 'engine')
        priority = _validate_int(priority, 'priority')
        max_memory_mb = _validate_int(max_memory_mb, 'max_memory_mb', minimum=0, allow_none=True)
        existing = None
        if request_id is not None:
            request_id = _validate_name(str(request_id), 'request id', 200)
            existing = self._store.find_request(request_id)
        if existing is not None:
            same_request(existing, job_name, environment)
            if not (rerun and existing['state'] in (FAILED, CANCELLED)):
                return False, self._job_out(existing)
        if require_carrier:
            self.check_carrier(job_name, environment, engine, max_memory_mb)
        now = self.clock()
        if dry_run:
            preview = dict(existing or {}, id=existing['id'] if existing else None, request_id=request_id, job_name=job_name,
                           environment=environment, priority=priority, engine_affinity=engine, max_memory_mb=max_memory_mb,
                           state=QUEUED, attempt=(existing or {}).get('attempt', 0), reason=None, engine=None, execution_id=None,
                           engine_status=None, rows_masked=None, rows_total=None, error=None, error_kind=None,
                           start_marker=None, cancel_requested=0, submitted_at=now, scheduled_at=None, started_at=None,
                           finished_at=None, next_try_at=None)
            return True, self._job_out(preview)
        if existing is not None:
            row = self._store.rerun(existing['id'], existing['attempt'], now, actor=self.owner, priority=priority,
                                    engine_affinity=engine, max_memory_mb=max_memory_mb)
            return row is not None, self._job_out(row if row is not None else self._store.job(existing['id']))
        created, row = self._store.enqueue(request_id if request_id is not None else uuid.uuid4().hex, job_name,
                                           environment, priority, engine, max_memory_mb, now, actor=self.owner)
        return created, self._job_out(row)

    def check_carrier(self, job_name, environment=None, engine=None, max_memory_mb=None):
        """Raise UnknownEngine / NoCarrier unless a registered engine carries the job (whatever its load now)."""
        engines = [e for e in self._store.engines() if kind_of(e) == MASKING]
        if engine is not None and not any(e['name'] == engine for e in engines):
            raise UnknownEngine('no engine named %s is registered in the queue (known: %s); nothing was queued'
                                % (engine, ', '.join(e['name'] for e in engines) or 'none'))
        states = [placement.engine_state(e) for e in engines]
        if not placement.carriers(states, job_name, environment, engine):
            probe = placement.QueuedJob(0, job_name, environment, 0, engine, max_memory_mb, 0)
            raise NoCarrier('cannot queue %s: %s (add it to the jobs of an engine with orchestra.fleet.masking_engine; '
                            'nothing was queued)' % (job_name, placement.pending_reason(probe, states, self.policy)))

    def _jobs_out(self, rows):
        engines = self._store.engines() if any(row['state'] == QUEUED for row in rows) else []
        now = self.clock()
        return [job_dict(row, now) for row in explain(rows, engines, now, self.policy)]

    def _job_out(self, row):
        return self._jobs_out([row])[0]

    def job(self, job_id_or_request_id):
        return self._job_out(self._store.job(job_id_or_request_id))

    def cancel(self, job_id_or_request_id, dry_run=False):
        """Request cancellation; honoured at once where the job has not started, on the engine where it has.

        Returns the entry as it is then (a STARTING job ends once its start settles, at the next poll step).
        """
        row = self._store.job(job_id_or_request_id)
        if row['state'] in TERMINAL_STATES or dry_run:
            return self._job_out(row)
        self._store.request_cancel(row['id'], self.clock())
        step = PollStep(self)
        for _round in range(10):
            row = self._store.job(row['id'])
            if row['state'] in (QUEUED, SCHEDULED):
                if step.cancel_unstarted(row, self.clock()):
                    break
                continue
            if row['state'] in (RUNNING, ENGINE_QUEUED):
                engine = dict((e['name'], e) for e in self._store.engines([row['engine']])).get(row['engine'])
                driver = self.driver(engine)
                if driver is not None:
                    step.cancel_on_engine(row, driver, engine)
            break   # STARTING: the process that starts it cancels it once the start settles
        return self._job_out(self._store.job(row['id']))

    # ---- drivers -------------------------------------------------------------------------------
    def driver(self, engine):
        """The engine's driver, or None when this process cannot drive it (no credentials)."""
        if engine is None:
            return None
        key = (engine['name'], engine['url'], engine['verify'])
        cached = self._drivers.get(engine['name'])
        if cached is not None and cached[0] == key:
            return cached[1]
        credentials = self._credentials.get(engine['name']) or self._credentials.get('*')
        factory = self._factories.get(kind_of(engine))
        if factory is None:
            return None   # a kind of capacity this process does not drive
        try:
            driver = factory(engine, credentials)
        except MissingCredentials:
            driver = None
        self._drivers[engine['name']] = (key, driver)
        return driver

    def claim_token(self):
        self._claims += 1
        return '%s:%d' % (self.owner, self._claims)

    # ---- steps ---------------------------------------------------------------------------------
    def schedule_step(self):
        """Place queued jobs on free slots, atomically -> {'placed': n, 'pending': n}."""
        now = self.clock()
        queued = self._store.queued_count()
        if queued == 0:
            return {'placed': 0, 'pending': 0}
        if not any(has_room(e) for e in self._store.engines()):
            return {'placed': 0, 'pending': queued}   # nothing can be placed: skip the locked step
        placed, queued = self._store.schedule(lambda rows, engines: decide(rows, engines, self.policy),
                                              now, owner='schedule:%s' % uuid.uuid4().hex, actor=self.owner)
        return {'placed': placed, 'pending': queued - placed}

    def poll_step(self, close_drivers=True):
        """Start scheduled jobs, recover interrupted starts, refresh running ones, finalise, honour cancels.

        close_drivers: log out of the engines afterwards (a worker that loops keeps its sessions and closes at the end).
        """
        try:
            stats = PollStep(self, new_stats()).run()
            self._store.compact_counts()   # cheap check; folds the state counters once they pile up
            return stats
        finally:
            if close_drivers:
                self.close_drivers()

    def drive_once(self):
        """One scheduler step and one poll step -> both results (the engine sessions stay open)."""
        return {'schedule': self.schedule_step(), 'poll': self.poll_step(close_drivers=False)}

    # ---- waiting -------------------------------------------------------------------------------
    def wait(self, job_ids, timeout, poll_interval=1.0, cancel_on_timeout=False, cancel_grace=30.0,
             cancel_on_interrupt=False):
        """Block until every job is terminal, or timeout (seconds) -> the jobs' dicts, in the order asked.

        Whoever holds the leader lease drives the steps (no cron needed); when the leader dies its lease
        runs out and another waiter takes over. On timeout the jobs are returned as they are (check
        'state'); with cancel_on_timeout they are cancelled first and given cancel_grace seconds to settle.
        An interrupt (KeyboardInterrupt, or SystemExit from a SIGTERM handler) raises WaitInterrupted with the
        jobs; with cancel_on_interrupt their unfinished jobs are cancelled first. A job waiting on an engine
        no process can start (no credentials here, none started it within credentials_grace) raises NoCredentials.
        """
        ids = [self._store.job(key)['id'] for key in job_ids]
        ttl = max(5.0, 3.0 * float(poll_interval))
        deadline = self.clock() + float(timeout)
        try:
            rows = self._wait_until(ids, deadline, poll_interval, ttl)
            if any(row['state'] not in TERMINAL_STATES for row in rows) and cancel_on_timeout:
                rows = self._cancel_and_settle(ids, rows, cancel_grace, poll_interval, ttl)
        except (KeyboardInterrupt, SystemExit) as interrupt:
            rows = self._store.jobs(ids=sorted(set(ids)))
            what = 'left running'
            if cancel_on_interrupt:
                rows = self._cancel_and_settle(ids, rows, min(cancel_grace, 10.0), poll_interval, ttl)
                what = 'cancelled'
            by_id = dict((row['id'], row) for row in rows)
            raise WaitInterrupted('the wait was interrupted (%s); unfinished jobs were %s' % (
                interrupt.__class__.__name__, what), self._jobs_out([by_id[job_id] for job_id in ids]))
        finally:
            try:
                self._store.release_lease(self.leader_lease, self.owner)
            except StoreUnavailable:
                pass
            self.close_drivers()
        by_id = dict((row['id'], row) for row in rows)
        return self._jobs_out([by_id[job_id] for job_id in ids])

    def _cancel_and_settle(self, ids, rows, grace, poll_interval, ttl):
        for row in rows:
            if row['state'] not in TERMINAL_STATES:
                self.cancel(row['id'])
        return self._wait_until(ids, self.clock() + float(grace), poll_interval, ttl)

    def _wait_until(self, ids, deadline, poll_interval, ttl):
        while True:
            rows = self._store.jobs(ids=sorted(set(ids)))
            if all(row['state'] in TERMINAL_STATES for row in rows) or self.clock() >= deadline:
                return rows
            busy = False
            if self._store.acquire_lease(self.leader_lease, self.owner, ttl, self.clock()) is not None:
                result = self.drive_once()
                busy = result['schedule']['placed'] > 0 or result['poll']['finished'] > 0
                rows = self._store.jobs(ids=sorted(set(ids)))
                if all(row['state'] in TERMINAL_STATES for row in rows):
                    return rows
            self._check_startable(rows)
            if not busy:
                self._sleep(max(0.0, min(float(poll_interval), deadline - self.clock())))

    def _check_startable(self, rows):
        """Fail fast when a job waits on an engine nobody with credentials starts (instead of waiting out the timeout)."""
        now = self.clock()
        for row in rows:
            if row['state'] != SCHEDULED or row['scheduled_at'] is None or now - row['scheduled_at'] < self.credentials_grace:
                continue
            engine = dict((e['name'], e) for e in self._store.engines([row['engine']])).get(row['engine'])
            if engine is not None and self.driver(engine) is None:
                raise NoCredentials('masking job %s (queue id %d) is placed on engine %s, this task has no credentials for '
                                    'it (username/password or engine_credentials) and no other process started it within '
                                    '%.0f s' % (row['job_name'], row['id'], row['engine'], self.credentials_grace))

    # ---- info and retention --------------------------------------------------------------------
    def info(self, jobs=True, engines=True, history_for=None, states=None, limit=None, newest_first=False):
        """Jobs (oldest first, or newest first; with limit, the newest `limit`), engines with slot use, counts per
        state for the whole queue, and the history of the given jobs."""
        result = {'store': self._store.describe(), 'schema_version': self._store.schema_version(),
                  'counts': self._store.counts()}
        if states:
            unknown = set(states) - set(STATES)
            if unknown:
                raise InvalidRequest('unknown job states: %s (known: %s)' % (', '.join(sorted(unknown)), ', '.join(STATES)))
        if jobs:
            result['jobs'] = self._jobs_out(self._store.jobs(states=states or None, limit=limit, newest_first=newest_first))
        if engines:
            result['engines'] = self.engines()
        if history_for:
            ids = [self._store.job(key)['id'] for key in history_for]
            history = dict((job_id, []) for job_id in ids)
            for entry in self._store.history(ids):
                history[entry['job_id']].append(history_dict(entry))
            result['history'] = history
        return result

    def prune(self, older_than_days, dry_run=False):
        """Delete finished jobs and their history that ended more than older_than_days ago -> counts deleted."""
        days = _validate_int(older_than_days, 'older_than_days', minimum=0)
        before = self.clock() - days * 86400.0
        result = self._store.prune(before, dry_run=dry_run)
        if not dry_run:
            self._store.compact_counts(force=True)
        result['before'] = iso(before)
        return result


def _bool_or_none(value):
    return None if value is None else bool(value)
