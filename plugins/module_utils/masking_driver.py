# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Engine drivers: what the queue needs from a kind of capacity, and the Delphix one.

The queue talks to an engine only through an EngineDriver (one per engine):

    start(job) -> ExecutionInfo          job: the queue's job row (job_name, environment, not_before)
    reconcile(job) -> ExecutionInfo|None the execution a start at job['not_before'] created, if any
    status(execution_id) -> ExecutionInfo
    statuses({execution_id: last_status}) -> {execution_id: ExecutionInfo}   (batched refresh)
    cancel(execution_id, expected_status) -> ExecutionInfo
    probe() -> None                      raises when the engine is not usable
    failure_detail(execution_id) -> str|None

and raises only the Driver* errors of masking_errors, so another kind of
capacity can be added without touching the queue.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import datetime

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineAuthError, EngineConflict, EngineJobNotFound, EngineUnavailable, MissingCredentials)

ENGINE_TERMINAL = frozenset(('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED'))
ENGINE_WAITING = frozenset(('QUEUED', 'WAITING'))

ExecutionInfo = collections.namedtuple(
    'ExecutionInfo', 'execution_id engine_job_id status rows_masked rows_total start_time end_time')


def is_terminal(info):
    return info.status in ENGINE_TERMINAL


def _epoch(moment):
    if moment is None:
        return None
    return (moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds()


def _aware(epoch):
    return datetime.datetime.fromtimestamp(float(epoch), tz=datetime.timezone.utc)


class EngineDriver:
    """Interface (documentation only: the fake driver of the tests and the Delphix driver implement it)."""

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


def _translate(fn):
    """Map the Delphix client's errors to the queue's driver errors (which say what is safe next)."""
    def wrapper(self, *args, **kwargs):
        delphix = self.delphix
        try:
            return fn(self, *args, **kwargs)
        except delphix.DelphixUnavailable as exc:
            raise EngineUnavailable(str(exc), status=exc.status)
        except delphix.DelphixAuthError as exc:
            raise EngineAuthError('engine %s refused the credentials: %s' % (self.name, exc), status=exc.status)
        except delphix.DelphixNotFound as exc:
            raise EngineJobNotFound(str(exc), status=exc.status)
        except delphix.DelphixConflict as exc:
            raise EngineConflict(str(exc), status=exc.status)
        except delphix.DelphixError as exc:
            raise DriverError(str(exc), status=exc.status)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


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
        self._catalogue = None   # jobName -> set of maskingJobIds, from one list of the engine's jobs

    @staticmethod
    def _info(execution):
        return ExecutionInfo(execution.execution_id, execution.job_id, execution.status, execution.rows_masked,
                             execution.rows_total, _epoch(execution.start_time), _epoch(execution.end_time))

    def _job_id(self, job):
        """The job's id on this engine: one list of all jobs answers every unambiguous name without an
        environment (instead of one list per name); everything else goes through the client's resolver."""
        if job.get('environment') is None:
            if self._catalogue is None:
                catalogue = {}
                for entry in self.client.list_jobs():
                    if entry.get('jobName') is not None and entry.get('maskingJobId') is not None:
                        catalogue.setdefault(entry['jobName'], set()).add(int(entry['maskingJobId']))
                self._catalogue = catalogue
            ids = self._catalogue.get(job['job_name'])
            if ids and len(ids) == 1:
                return next(iter(ids))
        return self.client.resolve_job(job['job_name'], job.get('environment'))

    @_translate
    def start(self, job):
        job_id = self._job_id(job)
        return self._info(self.client.start_execution(job_id, not_before=_aware(job['not_before'])))

    @_translate
    def reconcile(self, job):
        job_id = self._job_id(job)
        found = self.client.find_execution_since(job_id, _aware(job['not_before']))
        return self._info(found) if found is not None else None

    @_translate
    def status(self, execution_id):
        return self._info(self.client.get_execution(execution_id))

    @_translate
    def statuses(self, last_known):
        wanted = set(last_known)
        found = {}
        if self._lists_ok and len(wanted) > self.LIST_THRESHOLD:
            listed = set(['RUNNING']) | set(s for s in last_known.values() if s and s not in ENGINE_TERMINAL)
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

    @_translate
    def cancel(self, execution_id, expected_status=None):
        if expected_status not in ('QUEUED', 'RUNNING'):
            expected_status = None
        return self._info(self.client.cancel_execution(execution_id, expected_status=expected_status))

    @_translate
    def probe(self):
        self.client.system_information()

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

    def __init__(self, timeout=30.0, retries=3, backoff=0.5, clock_skew=5.0):
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.clock_skew = clock_skew

    def __call__(self, engine, credentials):
        # Imported here so that a queue with a fake driver (tests) or PostgreSQL-only use needs no requests.
        from ansible_collections.orchestra.fleet.plugins.module_utils import delphix  # pylint: disable=import-outside-toplevel
        if not credentials or not credentials.get('username') or credentials.get('password') is None:
            raise MissingCredentials('no credentials for engine %s in this process' % engine['name'])
        try:
            client = delphix.MaskingEngineClient(engine['url'], credentials['username'], credentials['password'],
                                                 timeout=self.timeout, verify=engine.get('verify', True), retries=self.retries,
                                                 backoff=self.backoff, clock_skew=self.clock_skew)
        except delphix.DelphixError as exc:
            raise DriverError(str(exc))
        return DelphixEngineDriver(engine['name'], client, delphix)
