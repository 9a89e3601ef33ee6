# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Engine drivers: what the queue needs from a kind of capacity, and the Delphix one.

The queue talks to an engine only through an EngineDriver (one per engine):

    start_marker(job) -> int             the job's highest execution id on the engine now (0: none)
    start(job) -> ExecutionInfo          job: the queue's job row (job_name, environment, id, start_marker)
    reconcile(job) -> ExecutionInfo|None the execution a start after job['start_marker'] created, if any
    status(execution_id) -> ExecutionInfo
    statuses({execution_id: last_status}) -> {execution_id: ExecutionInfo}   (batched refresh)
    cancel(execution_id, expected_status) -> ExecutionInfo
    probe() -> None                      raises when the engine is not usable
    failure_detail(execution_id) -> str|None
    close() -> None                      log out; best effort, never raises

No decision here compares the engine's clock with ours: execution ids only grow on an engine, so the
execution a lost start created is the lowest one above the marker taken before the POST. The queue
records job['start_marker'] (from start_marker()) before it POSTs, so any process can reconcile later;
a queue that always records it first also knows that a row without one was never POSTed. For a row
without one, reconcile() answers only in the process whose start() took the marker, and otherwise
raises DriverError: nothing else can prove whether that start reached the engine.

It raises only the Driver* errors of masking_errors, so another kind of capacity can be added without
touching the queue:
- EngineNotReached (from start and start_marker only): provably nothing was started (connection refused,
  DNS or TLS failure, login failed before the POST); the slot can be given back at once. Every other call
  reports the same failures as EngineUnavailable: for reconcile, not reaching the engine proves nothing.
- EngineUnavailable: the outcome is unknown; reconcile before any new start.
- EngineAuthError (credentials refused), MissingCredentials, EngineJobNotFound, EngineJobAmbiguous (the
  name is in several environments), EngineConflict (409), DriverError (anything else).
"""

import collections
import datetime
import functools
import threading

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineAuthError, EngineConflict, EngineJobAmbiguous, EngineJobNotFound, EngineNotReached,
    EngineUnavailable, MissingCredentials)

ENGINE_TERMINAL = frozenset(('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED'))
ENGINE_WAITING = frozenset(('QUEUED', 'WAITING'))
SKEW_SHOWN = 2.0   # seconds: below this a Date header (1 s resolution) cannot tell skew from noise
LISTABLE = frozenset(('QUEUED', 'RUNNING', 'WAITING'))   # non-terminal values the execution_status filter accepts

ExecutionInfo = collections.namedtuple(
    'ExecutionInfo', 'execution_id engine_job_id status rows_masked rows_total start_time end_time')

# Markers this process took itself (a job row without start_marker), by (engine URL, queue job id), so a
# take-over in the same process can still reconcile. Across processes only job['start_marker'] can.
_MARKERS = {}
_MARKERS_LOCK = threading.Lock()
_MARKERS_MAX = 10000
NOT_POSTED = 'not posted'   # recalled for a job whose last start failed before its POST: nothing to reconcile


def _remember_marker(key, marker):
    with _MARKERS_LOCK:
        if len(_MARKERS) >= _MARKERS_MAX:
            _MARKERS.pop(next(iter(_MARKERS)))
        _MARKERS[key] = marker


def _recalled_marker(key):
    with _MARKERS_LOCK:
        return _MARKERS.get(key)


def _epoch(moment):
    if moment is None:
        return None
    return (moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds()


class EngineDriver:
    """Interface (documentation only: the fake driver of the tests and the Delphix driver implement it)."""

    def start_marker(self, job):
        raise NotImplementedError

    def start(self, job):
        raise NotImplementedError

    def reconcile(self, job):
        raise NotImplementedError

    def status(self, execution_id):
        raise NotImplementedError

    def statuses(self, last_known):
        return dict((execution_id, self.status(execution_id)) for execution_id in last_known)

    def cancel(self, execution_id, expected_status=None):
        raise NotImplementedError

    def probe(self):
        raise NotImplementedError

    def failure_detail(self, execution_id):
        return None

    def close(self):
        return None


def _translate(not_reached=EngineUnavailable):
    """Map the Delphix client's errors to the queue's driver errors (which say what is safe next).

    not_reached: what "provably nothing reached the engine" means for this call: EngineNotReached for a
    start (nothing started), EngineUnavailable elsewhere (a reconcile that could not look proves nothing).
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            delphix = self.delphix
            try:
                return fn(self, *args, **kwargs)
            except delphix.DelphixNotReached as exc:
                raise not_reached(str(exc), status=exc.status)
            except delphix.DelphixUnavailable as exc:
                raise EngineUnavailable(str(exc), status=exc.status)
            except delphix.DelphixAuthError as exc:
                raise EngineAuthError('engine %s refused the credentials: %s' % (self.name, exc), status=exc.status)
            except delphix.DelphixAmbiguous as exc:
                raise EngineJobAmbiguous(str(exc), status=exc.status)
            except delphix.DelphixNotFound as exc:
                raise EngineJobNotFound(str(exc), status=exc.status)
            except delphix.DelphixConflict as exc:
                raise EngineConflict(str(exc), status=exc.status)
            except delphix.DelphixError as exc:
                raise DriverError(str(exc), status=exc.status)
        return wrapper
    return decorate


class DelphixEngineDriver(EngineDriver):
    """One Delphix masking engine, over plugins/module_utils/delphix.py's MaskingEngineClient."""

    # Refresh by listing the engine's RUNNING (and QUEUED) executions once instead of one GET per job,
    # when that saves calls; whatever a list does not show is read one by one, so a race between the
    # lists (QUEUED -> RUNNING -> done) costs an extra GET, never a wrong state.
    LIST_THRESHOLD = 2

    def __init__(self, name, client, delphix_module):
        self.name = name
        self.client = client
        self.delphix = delphix_module
        self._lists_ok = True
        self._jobs = None        # the engine's job objects, from one paged list
        self._catalogue = None   # jobName -> set of maskingJobIds, from that list

    def _info(self, execution):
        """The engine's answer with its times moved onto our clock by the offset its Date header showed (when
        more than SKEW_SHOWN): the queue shows and ages them next to its own times. Nothing is decided on them."""
        offset = getattr(self.client, 'clock_offset', None)
        shift = offset if offset is not None and abs(offset) >= SKEW_SHOWN else 0.0

        def ours(moment):
            epoch = _epoch(moment)
            return None if epoch is None else epoch - shift
        return ExecutionInfo(execution.execution_id, execution.job_id, execution.status, execution.rows_masked,
                             execution.rows_total, ours(execution.start_time), ours(execution.end_time))

    def _all_jobs(self):
        """Every masking job object on the engine (one paged list, kept for the driver's life or until forget_jobs)."""
        if self._jobs is None:
            self._jobs = [entry for entry in self.client.list_jobs() if entry.get('maskingJobId') is not None]
        return self._jobs

    def _job_id(self, job):
        """The job's id on this engine: one list of all jobs answers every unambiguous name without an
        environment (instead of one list per name); everything else goes through the client's resolver."""
        if job.get('environment') is None:
            if self._catalogue is None:
                catalogue = {}
                for entry in self._all_jobs():
                    if entry.get('jobName') is not None:
                        catalogue.setdefault(entry['jobName'], set()).add(int(entry['maskingJobId']))
                self._catalogue = catalogue
            ids = self._catalogue.get(job['job_name'])
            if ids and len(ids) == 1:
                return next(iter(ids))
        return self.client.resolve_job(job['job_name'], job.get('environment'))

    def forget_jobs(self):
        """Drop what this driver knows of the engine's jobs (after the engine's job list changed)."""
        self._jobs = None
        self._catalogue = None
        forget = getattr(self.client, 'forget_jobs', None)
        if forget is not None:
            forget()

    @_translate()
    def describe(self):
        """What the engine says about itself -> (settings {name: value}, system-information, catalogue).

        catalogue: every job object with environmentName (applications -> environments -> masking-jobs, every page).
        """
        settings = self.delphix.setting_values(self.client.application_settings())
        return settings, self.client.system_information() or {}, self.client.catalogue()

    @_translate()
    def active_executions(self):
        """Executions RUNNING or QUEUED on the engine now, whoever started them:
        [{'execution_id', 'job_id', 'job_name', 'status', 'max_memory_mb'}] (two filtered lists, every page)."""
        found = {}
        for status in ('RUNNING', 'QUEUED'):
            try:
                executions = self.client.list_executions(status=status)
            except self.delphix.DelphixUnavailable:
                raise
            except self.delphix.DelphixError:
                if status == 'RUNNING':
                    raise
                continue   # an older API without QUEUED: RUNNING is all it has
            for execution in executions:
                found[execution.execution_id] = execution
        jobs = dict((int(entry['maskingJobId']), entry) for entry in self._all_jobs()) if found else {}
        result = []
        for execution_id in sorted(found):
            execution = found[execution_id]
            job = jobs.get(execution.job_id)
            if job is None:
                try:
                    job = self.client.get_job(execution.job_id)
                except self.delphix.DelphixNotFound:
                    job = {}   # deleted since: its execution still takes a slot
                jobs[execution.job_id] = job
            result.append({'execution_id': execution_id, 'job_id': execution.job_id, 'job_name': job.get('jobName'),
                           'status': execution.status, 'max_memory_mb': job.get('maxMemory')})
        return result

    def _marker_key(self, job):
        return (self.client.base, job.get('id'), job.get('job_name'), job.get('environment'))

    def _before_post(self, fn, *args):
        """A call made before any POST: an engine that cannot be reached there has started nothing."""
        try:
            return fn(*args)
        except self.delphix.DelphixNotReached:
            raise
        except self.delphix.DelphixUnavailable as exc:
            raise self.delphix.DelphixNotReached('%s; nothing was started' % exc, status=exc.status,
                                                 engine_message=exc.engine_message, url=exc.url)

    @_translate(not_reached=EngineNotReached)
    def start_marker(self, job):
        """The job's highest execution id on this engine now (0 when it never ran here): record it before start()."""
        return self._before_post(lambda: self.client.execution_marker(self._job_id(job)))

    @_translate(not_reached=EngineNotReached)
    def start(self, job):
        """Start the job; after a lost or failed answer adopt only an execution above the start marker."""
        key = self._marker_key(job)
        marker = job.get('start_marker')
        try:
            job_id = self._before_post(self._job_id, job)
            if marker is None:   # the caller recorded none: take it now, right before the POST
                marker = self._before_post(self.client.execution_marker, job_id)
        except self.delphix.DelphixError:
            if job.get('start_marker') is None:
                _remember_marker(key, NOT_POSTED)
            raise
        if job.get('start_marker') is None:
            _remember_marker(key, marker)
        return self._info(self.client.start_execution(job_id, marker=int(marker)))

    @_translate()
    def reconcile(self, job):
        """The execution the job's start created (the lowest id above its start marker), or None: not started."""
        marker = job.get('start_marker')
        if marker is None:
            marker = _recalled_marker(self._marker_key(job))
            if marker == NOT_POSTED:
                return None
        if marker is None:
            raise DriverError('cannot tell whether %s was started on engine %s: no start marker was recorded before '
                              'its POST (no clock can tell; check the engine and cancel the job if needed)'
                              % (job.get('job_name'), self.name))
        found = self.client.find_execution_after(self._job_id(job), int(marker))
        return self._info(found) if found is not None else None

    @_translate()
    def status(self, execution_id):
        return self._info(self.client.get_execution(execution_id))

    @_translate()
    def statuses(self, last_known):
        wanted = set(last_known)
        found = {}
        if self._lists_ok and len(wanted) > self.LIST_THRESHOLD:
            listed = set(['RUNNING']) | (set(last_known.values()) & LISTABLE)
            try:
                for status in sorted(listed):
                    for execution in self.client.list_executions(status=status):
                        if execution.execution_id in wanted:
                            found[execution.execution_id] = self._info(execution)
            except self.delphix.DelphixUnavailable:
                raise
            except self.delphix.DelphixError:
                # an older API that does not filter by this status: read one by one from now on
                self._lists_ok = False
                found = {}
        for execution_id in sorted(wanted - set(found)):
            found[execution_id] = self._info(self.client.get_execution(execution_id))
        return found

    @_translate()
    def cancel(self, execution_id, expected_status=None):
        if expected_status not in ('QUEUED', 'RUNNING'):
            expected_status = None
        return self._info(self.client.cancel_execution(execution_id, expected_status=expected_status))

    @_translate()
    def probe(self):
        self.client.system_information()

    def close(self):
        """Log out of the engine (every login is a session there until then); best effort, never raises."""
        try:
            self.client.logout()
        except Exception:  # pylint: disable=broad-except  # closing must never fail the caller
            pass

    def failure_detail(self, execution_id):
        """The engine's own words on why an execution failed or warned (first events), best effort."""
        try:
            events = self.client.execution_events(execution_id)
        except self.delphix.DelphixError:
            return None
        parts = []
        for event in events[:3]:
            text = ' '.join(str(event.get(key)) for key in ('eventType', 'cause', 'exceptionDetail') if event.get(key))
            if text:
                parts.append(text)
        return '; '.join(parts)[:500] or None


class DelphixDriverFactory:
    """Builds one DelphixEngineDriver per engine: factory(engine_dict, credentials) -> driver."""

    def __init__(self, timeout=30.0, retries=3, backoff=0.5):
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def __call__(self, engine, credentials):
        # Imported here so that a queue with a fake driver (tests) or PostgreSQL-only use needs no requests.
        from ansible_collections.orchestra.fleet.plugins.module_utils import delphix  # pylint: disable=import-outside-toplevel
        if not credentials or not credentials.get('username') or credentials.get('password') is None:
            raise MissingCredentials('no credentials for engine %s in this process' % engine['name'])
        try:
            client = delphix.MaskingEngineClient(engine['url'], credentials['username'], credentials['password'],
                                                 timeout=self.timeout, verify=engine.get('verify', True), retries=self.retries,
                                                 backoff=self.backoff)
        except delphix.DelphixError as exc:
            raise DriverError(str(exc))
        return DelphixEngineDriver(engine['name'], client, delphix)
