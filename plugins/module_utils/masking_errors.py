# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors of the masking queue.

Two families: the queue's own (raised to callers, messages written for humans)
and the driver's (raised by an engine driver, so the queue never has to know
which remote API sits behind a driver).

Every class carries `error_kind`, the stable word modules return to playbooks: the
classes are the one table, a module never decides a kind by isinstance.
"""


class MaskingQueueError(Exception):
    """Base of every error the queue raises to its callers."""

    error_kind = 'queue_error'


class UnknownJob(MaskingQueueError):
    """No queue entry has that id or request id."""

    error_kind = 'unknown_job'


class UnknownEngine(MaskingQueueError):
    """No engine of that name is registered."""

    error_kind = 'unknown_engine'


class StoreUnavailable(MaskingQueueError):
    """The queue database cannot be reached or opened."""

    error_kind = 'store_unavailable'


class InvalidRequest(MaskingQueueError):
    """A parameter is malformed (negative slots, empty job name, ...)."""

    error_kind = 'bad_parameter'


class NoCarrier(InvalidRequest):
    """No registered engine carries the job (name, environment, affinity): nothing could ever run it."""

    error_kind = 'unknown_job'


class EngineBusy(MaskingQueueError):
    """An engine cannot be removed while it holds scheduled or running jobs."""

    error_kind = 'engine_busy'


class ExecutionOwned(MaskingQueueError):
    """An execution already belongs to another queue job: it is never adopted a second time."""


# Driver errors: what an engine said, sorted by what the queue may safely do next.

class DriverError(Exception):
    """An engine call failed for a reason that will not go away by retrying."""

    error_kind = 'engine_error'

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class EngineUnavailable(DriverError):
    """Transient: connection refused/reset, timeout, 5xx. The outcome of a start is unknown."""

    error_kind = 'engine_unreachable'


class EngineAuthError(DriverError):
    """Login refused: nothing was started; retrying with the same credentials will not help."""

    error_kind = 'engine_auth'


class EngineJobNotFound(DriverError):
    """The engine does not know the job name (or the execution)."""

    error_kind = 'job_not_found'


class EngineConflict(DriverError):
    """The engine refused to start the job because it already runs or queues it (HTTP 409)."""

    error_kind = 'engine_conflict'


class MissingCredentials(DriverError):
    """This process was given no credentials for the engine."""

    error_kind = 'no_credentials'


class EngineNotReached(EngineUnavailable):
    """Transient, but provably nothing reached the engine (connection refused, DNS or TLS failure,
    login refused before any start): a start that fails this way started nothing, so its slot can
    be released and the job placed again at once."""


class EngineJobAmbiguous(DriverError):
    """The job name matches masking jobs in several environments of the engine: name the environment."""

    error_kind = 'job_ambiguous'
