# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors of the masking queue.

Two families: the queue's own (raised to callers, messages written for humans)
and the driver's (raised by an engine driver, so the queue never has to know
which remote API sits behind a driver).

Every class carries `error_kind`, the stable word modules return to playbooks, set from
the one table ERROR_KINDS at the end: a module never decides a kind by isinstance.
"""


class MaskingQueueError(Exception):
    """Base of every error the queue raises to its callers."""


class UnknownJob(MaskingQueueError):
    """No queue entry has that id or request id."""


class UnknownEngine(MaskingQueueError):
    """No engine of that name is registered."""


class StoreUnavailable(MaskingQueueError):
    """The queue database cannot be reached or opened."""


class InvalidRequest(MaskingQueueError):
    """A parameter is malformed (negative slots, empty job name, ...)."""


class NoCarrier(InvalidRequest):
    """No registered engine carries the job (name, environment, affinity): nothing could ever run it."""


class EngineBusy(MaskingQueueError):
    """An engine cannot be removed while it holds scheduled or running jobs."""


class ExecutionOwned(MaskingQueueError):
    """An execution already belongs to another queue job: it is never adopted a second time."""


# Driver errors: what an engine said, sorted by what the queue may safely do next.

class DriverError(Exception):
    """An engine call failed for a reason that will not go away by retrying."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class EngineUnavailable(DriverError):
    """Transient: connection refused/reset, timeout, 5xx. The outcome of a start is unknown."""


class EngineAuthError(DriverError):
    """Login refused: nothing was started; retrying with the same credentials will not help."""


class EngineJobNotFound(DriverError):
    """The engine does not know the job name (or the execution)."""


class EngineConflict(DriverError):
    """The engine refused to start the job because it already runs or queues it (HTTP 409)."""


class MissingCredentials(DriverError):
    """This process was given no credentials for the engine."""


class EngineNotReached(EngineUnavailable):
    """Transient, but provably nothing reached the engine (connection refused, DNS or TLS failure,
    login refused before any start): a start that fails this way started nothing, so its slot can
    be released and the job placed again at once."""


class EngineJobAmbiguous(DriverError):
    """The job name matches masking jobs in several environments of the engine: name the environment."""


class NoCredentials(MaskingQueueError):
    """A waited-for job sits on an engine that no process with credentials is starting."""


class WaitInterrupted(MaskingQueueError):
    """The waiting caller was interrupted (SIGINT/SIGTERM); carries the jobs as they were left."""

    def __init__(self, message, jobs):
        super().__init__(message)
        self.jobs = jobs


# The one table of error kinds. A subclass not listed inherits its base's kind.
ERROR_KINDS = {
    MaskingQueueError: 'queue_error',
    UnknownJob: 'unknown_job',
    UnknownEngine: 'unknown_engine',
    StoreUnavailable: 'store_unavailable',
    InvalidRequest: 'bad_parameter',
    NoCarrier: 'unknown_job',
    EngineBusy: 'engine_busy',
    NoCredentials: 'no_credentials',
    WaitInterrupted: 'interrupted',
    DriverError: 'engine_error',
    EngineUnavailable: 'engine_unreachable',
    EngineAuthError: 'engine_auth',
    EngineJobNotFound: 'job_not_found',
    EngineConflict: 'engine_conflict',
    MissingCredentials: 'no_credentials',
    EngineJobAmbiguous: 'job_ambiguous',
}
for _error_class, _kind in ERROR_KINDS.items():
    _error_class.error_kind = _kind
