# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One poll step of the masking queue: every call to an engine driver, and what its answer means.

    start     SCHEDULED -> STARTING (claimed in a batch) -> marker recorded -> POST -> RUNNING | ENGINE_QUEUED
    recover   a STARTING job whose holder's lease ran out: reconcile by its marker before anything is POSTed again
    refresh   RUNNING / ENGINE_QUEUED: status from the engine -> the queue state (masking_states.from_engine_status)
    cancel    on the engine with expectedStatus, then settle
    probe     an unreachable engine, until it answers again
    describe  an engine registered with discovery: its job list and capacity read again at catalogue_interval, and at
              once when a job it should carry is not found there (the job goes back to the queue with a reason);
              RUNNING/QUEUED executions no queue job owns (started outside the queue) recorded as its foreign load

Adoption never uses a clock. Before the POST the job's start marker (the highest execution id of its
masking job on the engine, driver.start_marker) is committed to the job row; after a lost or failed
answer only an execution with a larger id can be the job's own (driver.reconcile), and the store
refuses to give one execution to two jobs. At most one unresolved start per masking job and engine
exists at a time (the store's claim), so "the newest execution above my marker" is never another
job's. The not_before time stays in the row for people to read; no decision uses it.

A start that provably reached nothing (EngineNotReached: connection refused, DNS, TLS, login refused
before the POST) gives its slot back at once and the job is placed again, on another engine when one
carries it; a refused login or unknown or ambiguous job fails the job with its own error_kind.
"""

import collections
import os
import random
import socket

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_discovery as discovery
from ansible_collections.orchestra.fleet.plugins.module_utils import masking_placement as placement
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineAuthError, EngineConflict, EngineJobAmbiguous, EngineJobNotFound, EngineNotReached,
    EngineUnavailable, ExecutionOwned, InvalidRequest, MaskingQueueError, MissingCredentials)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import (
    CANCELLED, ENGINE_QUEUED, ENGINE_TERMINAL, FAILED, MASKING, QUEUED, RUNNING, SCHEDULED, STARTED_STATES, STARTING,
    from_engine_status, kind_of)

STAT_KEYS = ('started', 'recovered', 'refreshed', 'finished', 'requeued', 'cancelled', 'start_errors', 'unreachable',
             'waiting_for_credentials', 'described', 'foreign')
# Refusals before anything ran: a retry with the same job and credentials cannot help.
REFUSALS = (EngineJobNotFound, EngineAuthError, EngineJobAmbiguous, MissingCredentials)


def follow(driver, rows):
    """Tell a driver which queue rows it is about to be asked about (the fleet driver learns their host claims
    from them, to renew, cancel or release them); drivers without the hook ignore it."""
    hook = getattr(driver, 'following', None)
    if hook is not None:
        hook(rows)


def new_stats():
    return collections.Counter(dict((key, 0) for key in STAT_KEYS))


def holder_gone(owner):
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


def foreign_on(store, engine_name, active):
    """Split an engine's active executions -> (foreign ones, {execution id: the queue job row that owns it})."""
    mine = store.jobs(states=list(STARTED_STATES), engine=engine_name)
    owners = dict((row['execution_id'], row) for row in mine if row['execution_id'] is not None)
    starting = [row['job_name'] for row in mine if row['state'] == STARTING and row['execution_id'] is None]
    return discovery.foreign_executions(active, owners, starting), owners


class PollStep:
    """One poll step for a MaskingQueue (its store, drivers, clock, owner and settings)."""

    def __init__(self, queue, stats=None):
        self.queue = queue
        self.store = queue.store
        self.clock = queue.clock
        self.owner = queue.owner
        self.stats = stats if stats is not None else new_stats()
        # The kinds of capacity this process drives (a masking waiter leaves workflow jobs to a fleet waiter).
        self.kinds = tuple(getattr(queue, 'kinds', (MASKING,)))

    def mine(self, rows):
        """The engine or job rows of this step: its kinds, and its engines when the queue drives only some of them
        (FleetQueue's per-host workers: `only_engines`)."""
        names = getattr(self.queue, 'only_engines', None)

        def wanted(row):
            return names is None or (row['engine'] if 'engine' in row else row['name']) in names
        return [row for row in rows if kind_of(row) in self.kinds and wanted(row)]

    def run(self):
        engines = dict((e['name'], e) for e in self.mine(self.store.engines()))
        self.describe_engines(engines)
        self.recover_starting(engines)
        self.start_scheduled(engines)
        self.refresh_active(engines)
        self.probe_engines(engines)
        return dict(self.stats)

    # ---- engine health -------------------------------------------------------------------------
    def engine_down(self, engine, exc):
        now = self.clock()
        message = 'engine %s unreachable: %s' % (engine['name'], str(exc)[:300])
        self.store.mark_engine_unreachable(engine['name'], message, now)
        if engine.get('unreachable_since') is None:
            engine['unreachable_since'] = now
        engine['last_error'] = message
        engine['last_probe_at'] = now
        self.stats['unreachable'] += 1
        return message

    def engine_up(self, engine):
        if engine.get('unreachable_since') is not None or engine.get('last_error') is not None:
            self.store.mark_engine_reachable(engine['name'], self.clock())
            engine['unreachable_since'] = None
            engine['last_error'] = None

    # ---- start ---------------------------------------------------------------------------------
    def start_scheduled(self, engines):
        """Claim scheduled jobs per engine in batches and start them; engines in random order so that
        concurrent pollers spread over the engines instead of racing for the same jobs."""
        by_engine = {}
        now = self.clock()
        for row in self.mine(self.store.jobs(states=[SCHEDULED])):
            engine = engines.get(row['engine'])
            if row['cancel_requested']:
                self.cancel_unstarted(row, now)
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
                if self.store.transition(row['id'], SCHEDULED, row['attempt'], QUEUED, now, detail=why, actor=self.owner,
                                         engine=None, owner=None, reason=why, scheduled_at=None, next_try_at=None):
                    self.stats['requeued'] += 1
                continue
            if row['next_try_at'] is None or row['next_try_at'] <= now:
                by_engine.setdefault(engine['name'], []).append(row)
        for name in sorted(by_engine):
            by_engine[name] = self.give_back_overbooked(engines[name], by_engine[name], now)
        names = sorted(name for name in by_engine if by_engine[name])
        random.shuffle(names)
        for name in names:
            engine = engines[name]
            driver = self.queue.driver(engine)
            if driver is None:
                reason = 'waiting for a process with credentials for engine %s to start it' % name
                self.stats['waiting_for_credentials'] += len(by_engine[name])
                for row in by_engine[name]:
                    if row['reason'] != reason:
                        self.store.update_fields(row['id'], SCHEDULED, row['attempt'], now, reason=reason)
                continue
            claimed = self.store.claim_scheduled(name, self.queue.claim_token(), self.clock(), self.queue.start_lease,
                                                 self.queue.start_batch, 'starting on engine %s' % name, actor=self.owner)
            for index, row in enumerate(claimed):
                if not self.start(row, driver, engine):
                    self.unclaim(claimed[index + 1:], engine)
                    break

    def cancel_unstarted(self, row, now):
        if self.store.transition(row['id'], row['state'], row['attempt'], CANCELLED, now, detail='cancelled before start',
                                 actor=self.owner, finished_at=now, reason='cancelled before it started',
                                 lease_until=None, owner=None):
            self.stats['cancelled'] += 1
            return True
        return False

    def unclaim(self, rows, engine):
        """Give back claimed jobs that were never POSTed (the engine just failed us): provably not started."""
        why = 'engine %s failed a start just before; will try again' % engine['name']
        self.store.transition_many([(row['id'], STARTING, row['attempt'], SCHEDULED, why,
                                     {'not_before': None, 'start_marker': None, 'lease_until': None, 'owner': None,
                                      'reason': why, 'next_try_at': self.clock() + self.queue.retry_delay}) for row in rows],
                                   self.clock(), actor=self.owner)

    def mark(self, row, driver, engine):
        """Record the job's start marker before its POST -> the row to POST with, or None (settled otherwise)."""
        if not hasattr(driver, 'start_marker'):
            return row   # a driver without markers reconciles on its own terms
        try:
            marker = int(driver.start_marker(row))
        except EngineUnavailable as exc:
            # Nothing was POSTed yet, whatever the engine's trouble: the slot goes back at once.
            self.release(row, engine, exc)
            return None
        except EngineJobNotFound as exc:
            self.job_not_found(row, driver, engine, exc)
            return None
        except DriverError as exc:   # refused (credentials, unknown or ambiguous job) before anything ran
            self.fail_start(row, engine, exc)
            return None
        if not self.store.update_fields(row['id'], STARTING, row['attempt'], self.clock(), start_marker=marker):
            return None   # taken over meanwhile: the new holder reconciles
        return dict(row, start_marker=marker)

    def start(self, row, driver, engine):
        """POST the start of a claimed STARTING job and record the outcome. False when the engine should be left alone."""
        marked = self.mark(row, driver, engine)
        if marked is None:
            return engine.get('unreachable_since') is None
        row = marked
        try:
            info = driver.start(row)
        except EngineConflict as exc:
            return self.after_conflict(row, driver, engine, exc)
        except EngineNotReached as exc:
            self.release(row, engine, exc)
            return False
        except EngineUnavailable as exc:
            self.start_unknown(row, engine, exc)
            return False
        except EngineJobNotFound as exc:
            self.job_not_found(row, driver, engine, exc)
            return True
        except REFUSALS as exc:
            self.fail_start(row, engine, exc)
            return True
        except DriverError as exc:
            # An answer we cannot read: settle it through the engine's executions, never by guessing.
            try:
                info = driver.reconcile(row)
            except DriverError:
                info = None
            if info is None:
                self.fail_start(row, engine, exc)
                return True
        self.engine_up(engine)
        self.stats['started'] += 1
        self.adopt(row, info, engine, driver)
        return True

    def release(self, row, engine, exc):
        """Nothing reached the engine: give the slot back now and let the scheduler place the job again."""
        message = self.engine_down(engine, exc)
        now = self.clock()
        why = '%s; nothing was started there, placed again' % message
        if self.store.transition(row['id'], STARTING, row['attempt'], QUEUED, now, detail=why[:300], actor=self.owner,
                                 engine=None, owner=None, not_before=None, start_marker=None, lease_until=None,
                                 scheduled_at=None, reason=why, next_try_at=None):
            self.stats['requeued'] += 1
        self.stats['start_errors'] += 1

    def after_conflict(self, row, driver, engine, exc):
        now = self.clock()
        try:
            info = driver.reconcile(row)   # the execution that holds the job may be ours (an earlier lost start)
        except EngineUnavailable as again:
            self.start_unknown(row, engine, again)
            return False
        except DriverError:
            info = None
        if info is not None:
            self.stats['started'] += 1
            self.adopt(row, info, engine, driver)
            return True
        why = 'engine %s refused to start %s: it is already running or queued there (HTTP 409); will place it again' % (
            engine['name'], row['job_name'])
        if self.store.transition(row['id'], STARTING, row['attempt'], QUEUED, now, detail=str(exc)[:300], actor=self.owner,
                                 engine=None, owner=None, not_before=None, start_marker=None, lease_until=None,
                                 scheduled_at=None, reason=why, next_try_at=now + self.queue.retry_delay,
                                 start_failures=row['start_failures'] + 1):
            self.stats['requeued'] += 1
        return True

    def start_unknown(self, row, engine, exc):
        """The start may or may not have reached the engine: stay STARTING; a later take-over reconciles first."""
        message = self.engine_down(engine, exc)
        failures = row['start_failures'] + 1
        now = self.clock()
        delay = min(self.queue.retry_delay * (2 ** min(failures - 1, 6)), 300.0)
        self.store.transition(row['id'], STARTING, row['attempt'], STARTING, now, detail=message, actor=self.owner,
                              start_failures=failures, lease_until=now + delay,
                              reason='%s; start outcome unknown, will reconcile with the engine before any retry' % message)
        self.stats['start_errors'] += 1

    def fail_start(self, row, engine, exc):
        now = self.clock()
        message = 'could not start %s on engine %s: %s' % (row['job_name'], engine['name'], str(exc)[:400])
        if isinstance(exc, (EngineAuthError, MissingCredentials)):
            self.store.note_engine_error(engine['name'], str(exc)[:300], now)
        if self.store.transition(row['id'], STARTING, row['attempt'], FAILED, now, detail=message, actor=self.owner,
                                 finished_at=now, error=message, error_kind=getattr(exc, 'error_kind', 'start_failed'),
                                 reason=None, lease_until=None, owner=None):
            self.stats['finished'] += 1
        self.stats['start_errors'] += 1

    # ---- recover -------------------------------------------------------------------------------
    def recover_starting(self, engines):
        for row in self.mine(self.store.jobs(states=[STARTING])):
            now = self.clock()
            if row['lease_until'] is not None and row['lease_until'] > now and not (
                    holder_gone(row['owner']) and now >= row['updated_at'] + self.queue.dead_holder_grace):
                continue   # its holder is at work (or died so recently that its last POST may still be in flight)
            engine = engines.get(row['engine'])
            driver = self.queue.driver(engine)
            if driver is None:
                continue
            claimed = self.store.transition(row['id'], STARTING, row['attempt'], STARTING, now,
                                            detail='taking over an interrupted start: reconciling first', actor=self.owner,
                                            attempt=row['attempt'] + 1, owner=self.owner, lease_until=now + self.queue.start_lease)
            if claimed is None:
                continue
            self.stats['recovered'] += 1
            self.recover(claimed, driver, engine)

    def recover(self, claimed, driver, engine):
        now = self.clock()
        if hasattr(driver, 'start_marker') and claimed['start_marker'] is None:
            info = None   # the marker is committed before every POST: without one, nothing was POSTed
        else:
            try:
                info = driver.reconcile(claimed)
            except EngineUnavailable as exc:
                self.start_unknown(claimed, engine, exc)
                return
            except EngineJobNotFound as exc:
                self.job_not_found(claimed, driver, engine, exc)   # the job does not exist there: nothing can have started
                return
            except DriverError as exc:
                self.store.transition(claimed['id'], STARTING, claimed['attempt'], STARTING, now, detail=str(exc)[:300],
                                      actor=self.owner, lease_until=now + self.queue.retry_delay,
                                      reason='cannot check whether the start reached engine %s: %s' % (engine['name'], str(exc)[:300]))
                return
            self.engine_up(engine)
        if info is not None:
            self.adopt(claimed, info, engine, driver)
        elif claimed['cancel_requested']:
            self.cancel_unstarted(claimed, now)
        elif claimed['start_failures'] >= self.queue.max_start_attempts:
            self.fail_start(claimed, engine, MaskingQueueError(
                'gave up after %d attempts; the engine has no execution of it (last: %s)' % (claimed['start_failures'], claimed['reason'])))
        else:
            self.start(claimed, driver, engine)   # provably not started: safe to POST again

    # ---- execution outcomes --------------------------------------------------------------------
    def adopt(self, row, info, engine, driver):
        """Record the execution a start created (or a reconcile found)."""
        now = self.clock()
        fields = {'execution_id': info.execution_id, 'engine_job_id': info.engine_job_id, 'engine_status': info.status,
                  'started_at': info.start_time or now, 'lease_until': None, 'next_try_at': None}
        # A driver may record more about what it started (the fleet driver: the host claim and workflow id).
        fields.update(getattr(driver, 'adopt_fields', lambda _row, _info: {})(row, info))
        try:
            if info.status in ENGINE_TERMINAL:
                self.finish(row, info, engine, driver, extra=fields)
                return
            state, fields['reason'] = from_engine_status(info.status, engine['name'])
            adopted = self.store.transition(row['id'], row['state'], row['attempt'], state, now,
                                            detail='execution %s %s' % (info.execution_id, info.status), actor=self.owner, **fields)
        except ExecutionOwned as exc:
            # Never two owners for one execution: this start is not provably anyone's, so it fails loudly.
            self.fail_start(row, engine, exc)
            return
        if adopted is not None and adopted['cancel_requested']:
            self.cancel_on_engine(adopted, driver, engine)

    def final_change(self, row, info, engine, driver, extra=None):
        """The transition that records a finished execution: (job_id, from, attempt, to, detail, fields)."""
        now = self.clock()
        settle = getattr(driver, 'settle', None)
        if settle is not None:
            settle(row)   # before the slot is given back (the fleet driver releases the host's claim here)
        detail = driver.failure_detail(info.execution_id) if info.status in ('FAILED', 'WARNING') else None
        error = None
        if info.status == 'FAILED':
            error = 'execution %s on engine %s failed%s' % (info.execution_id, engine['name'], ': ' + detail if detail else '')
        elif info.status == 'WARNING':
            error = 'execution %s on engine %s finished with warnings%s' % (
                info.execution_id, engine['name'], ': ' + detail if detail else '')
        fields = dict(extra or {})
        fields.update({'engine_status': info.status, 'rows_masked': info.rows_masked, 'rows_total': info.rows_total,
                       'finished_at': info.end_time or now, 'error': error, 'reason': None, 'owner': None, 'lease_until': None,
                       'error_kind': 'job_failed' if info.status == 'FAILED' else None})
        if info.start_time and row.get('started_at') is None:
            fields.setdefault('started_at', info.start_time)
        state, _reason = from_engine_status(info.status, engine['name'])
        return (row['id'], row['state'], row['attempt'], state, 'execution %s %s' % (info.execution_id, info.status), fields)

    def finish(self, row, info, engine, driver, extra=None):
        moved = self.store.transition_many([self.final_change(row, info, engine, driver, extra)], self.clock(), actor=self.owner)
        self.stats['finished'] += len(moved)

    def apply_status(self, row, info, engine, driver):
        if info.status in ENGINE_TERMINAL:
            self.finish(row, info, engine, driver)
            return
        state, reason = from_engine_status(info.status, engine['name'])
        # Progress while running: the engine's rowsMasked / rowsTotal (-1 while it counts), written when they move.
        rows = dict((key, value) for key, value in (('rows_masked', info.rows_masked), ('rows_total', info.rows_total))
                    if value is not None and value != row.get(key))
        if state == row['state'] and info.status == row['engine_status']:
            if rows:   # same state: only the row counts, no history entry
                self.store.update_fields(row['id'], row['state'], row['attempt'], self.clock(), **rows)
            return   # nothing else changed: no other write
        fields = dict(rows, engine_status=info.status, reason=reason)
        if state == RUNNING and row['state'] == ENGINE_QUEUED and info.start_time:
            fields['started_at'] = info.start_time
        self.store.transition(row['id'], row['state'], row['attempt'], state, self.clock(),
                              detail='engine status %s' % info.status, actor=self.owner, **fields)

    def cancel_on_engine(self, row, driver, engine):
        """Cancel on the engine, guarded by the status we believe it has (expectedStatus), then settle."""
        expected = row['engine_status'] if row['engine_status'] in ('QUEUED', 'RUNNING') else (
            'QUEUED' if row['state'] == ENGINE_QUEUED else 'RUNNING')
        follow(driver, [row])
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
        self.stats['cancelled'] += 1
        fresh = self.store.job(row['id'])
        if fresh['state'] == row['state'] and fresh['attempt'] == row['attempt']:
            self.apply_status(fresh, info, engine, driver)

    # ---- refresh -------------------------------------------------------------------------------
    def refresh_active(self, engines):
        by_engine = {}
        for row in self.mine(self.store.jobs(states=[RUNNING, ENGINE_QUEUED])):
            by_engine.setdefault(row['engine'], []).append(row)
        for name, rows in sorted(by_engine.items()):
            engine = engines.get(name)
            driver = self.queue.driver(engine)
            if driver is None:
                continue
            cancels = [row for row in rows if row['cancel_requested']]
            if not cancels and self.queue.refresh_interval > 0 and not self.store.claim_turn(
                    'refresh:' + name, self.owner, self.queue.refresh_interval, self.clock()):
                continue   # another process asked this engine a moment ago
            follow(driver, rows)
            try:
                infos = driver.statuses(dict((row['execution_id'], row['engine_status']) for row in rows))
            except EngineUnavailable as exc:
                message = self.engine_down(engine, exc)
                for row in rows:
                    reason = '%s; status unknown, will check again' % message.split(':')[0]
                    if row['reason'] != reason:
                        self.store.update_fields(row['id'], row['state'], row['attempt'], self.clock(), reason=reason)
                continue
            except DriverError:
                infos = self.statuses_one_by_one(rows, driver, engine)
            self.engine_up(engine)
            finished = []
            for row in rows:
                info = infos.get(row['execution_id'])
                if info is None:
                    continue
                self.stats['refreshed'] += 1
                if row['cancel_requested'] and info.status not in ENGINE_TERMINAL:
                    self.cancel_on_engine(dict(row, engine_status=info.status), driver, engine)
                elif info.status in ENGINE_TERMINAL:
                    finished.append(self.final_change(row, info, engine, driver))
                else:
                    self.apply_status(row, info, engine, driver)
            if finished:   # every job this engine finished, in one transaction
                self.stats['finished'] += len(self.store.transition_many(finished, self.clock(), actor=self.owner))

    def statuses_one_by_one(self, rows, driver, engine):
        infos = {}
        for row in rows:
            try:
                infos[row['execution_id']] = driver.status(row['execution_id'])
            except EngineJobNotFound:
                now = self.clock()
                message = 'execution %s no longer exists on engine %s' % (row['execution_id'], engine['name'])
                if self.store.transition(row['id'], row['state'], row['attempt'], FAILED, now, detail=message, actor=self.owner,
                                         finished_at=now, error=message, error_kind='execution_lost', reason=None):
                    self.stats['finished'] += 1
            except DriverError:
                continue
        return infos

    # ---- describe: engines that say what they carry, and load the queue did not start ----------------
    def describe_engines(self, engines):
        """Per reachable engine this process can drive: its job list and capacity again when due (engines registered
        with discovery), and its foreign load when jobs wait for a slot or foreign load was seen before."""
        counts = self.store.counts()
        waiting = counts.get(QUEUED, 0) + counts.get(SCHEDULED, 0) > 0
        for name in sorted(engines):
            engine = engines[name]
            if engine['unreachable_since'] is not None or not engine['enabled']:
                continue
            due = engine.get('discovered') and self.store.claim_turn(
                'catalogue:' + name, self.owner, self.queue.catalogue_interval, self.clock())
            wants_load = waiting or engine.get('foreign_executions')
            if not (due or wants_load):
                continue
            driver = self.queue.driver(engine)
            if driver is None:
                continue
            if due:
                self.redescribe(engine, driver)
            if wants_load:
                self.note_foreign(engine, driver)

    def redescribe(self, engine, driver):
        """Read the engine's job list and capacity again; write the fields that came from discovery -> True if read."""
        if not hasattr(driver, 'describe') or not engine.get('discovered'):
            return False
        try:
            settings, system, catalogue = driver.describe()
        except DriverError as exc:
            self.store.note_engine_error(engine['name'], 'reading the job list failed: %s' % str(exc)[:280], self.clock())
            return False
        wanted = discovery.refresh_wanted(discovery.facts(settings, system, catalogue), engine['discovered'])
        now = self.clock()
        try:
            changes, _current = self.store.upsert_engine(engine['name'], now, **wanted)
        except InvalidRequest:
            return False   # removed from the queue meanwhile: nothing to refresh
        self.store.note_catalogue(engine['name'], now)
        for field, (_before, after) in changes.items():
            engine[field] = after
        forget = getattr(driver, 'forget_jobs', None)
        if forget is not None:
            forget()
        self.stats['described'] += 1
        return True

    def note_foreign(self, engine, driver):
        """Record the RUNNING/QUEUED executions on the engine that no queue job owns (they use its slots)."""
        if not hasattr(driver, 'active_executions'):
            return
        name = engine['name']
        if self.queue.refresh_interval > 0 and not self.store.claim_turn('load:' + name, self.owner,
                                                                         self.queue.refresh_interval, self.clock()):
            return
        try:
            active = driver.active_executions()
        except DriverError:
            return   # the start and refresh paths judge the engine's health; the last known load stands
        foreign, _owners = foreign_on(self.store, name, active)
        if foreign != (engine.get('foreign_executions') or []):
            self.store.set_foreign(name, foreign, self.clock())
            engine['foreign_executions'] = foreign
        self.stats['foreign'] += len(foreign)

    def give_back_overbooked(self, engine, rows, now):
        """Scheduled jobs an engine can no longer take (load started outside the queue filled it since they were
        placed) go back to the queue -> the rows still to start."""
        if not engine.get('foreign_executions'):
            return rows
        state = placement.engine_state(engine)
        back = set(placement.overbooked(state, [(row['id'], row['max_memory_mb']) for row in rows]))
        if not back:
            return rows
        why = 'engine %s: %s; placed again' % (engine['name'], placement.foreign_note(state))
        for row in rows:
            if row['id'] in back and self.store.transition(
                    row['id'], SCHEDULED, row['attempt'], QUEUED, now, detail=why[:300], actor=self.owner, engine=None,
                    owner=None, reason=why, scheduled_at=None, next_try_at=None):
                self.stats['requeued'] += 1
                engine['slots_used'] -= 1
        return [row for row in rows if row['id'] not in back]

    def job_not_found(self, row, driver, engine, exc):
        """The engine does not have the job. An engine whose job list was discovered is read again at once: a job
        deleted or renamed there goes back to the queue with that reason (another engine may carry it) instead of
        failing its start; anything else fails the start with the engine's words."""
        if not ('jobs' in (engine.get('discovered') or ()) and self.redescribe(engine, driver)):
            self.fail_start(row, engine, exc)
            return
        state = placement.engine_state(engine)
        if placement.carriers([state], row['job_name'], row['environment']):
            self.fail_start(row, engine, exc)   # still listed there: the engine refused it for another reason
            return
        now = self.clock()
        why = ('job %s is no longer on engine %s (deleted or renamed there; its job list was read again): placed again'
               % (row['job_name'] + (' in environment %s' % row['environment'] if row['environment'] else ''), engine['name']))
        if self.store.transition(row['id'], row['state'], row['attempt'], QUEUED, now, detail=why[:300], actor=self.owner,
                                 engine=None, owner=None, not_before=None, start_marker=None, lease_until=None,
                                 scheduled_at=None, reason=why, next_try_at=None):
            self.stats['requeued'] += 1

    # ---- probe ---------------------------------------------------------------------------------
    def probe_engines(self, engines):
        now = self.clock()
        for engine in engines.values():
            if engine['unreachable_since'] is None:
                continue
            if engine['last_probe_at'] is not None and now - engine['last_probe_at'] < self.queue.probe_interval:
                continue
            driver = self.queue.driver(engine)
            if driver is None:
                continue
            try:
                driver.probe()
            except EngineUnavailable as exc:
                self.engine_down(engine, exc)
                continue
            except DriverError as exc:
                self.store.note_engine_error(engine['name'], str(exc)[:300], now)
                continue
            self.engine_up(engine)
