# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The masking queue's state machine: the one place that names states and says which moves are legal.

    QUEUED -> SCHEDULED -> STARTING -> RUNNING | ENGINE_QUEUED -> SUCCEEDED | WARNING | FAILED | CANCELLED

Every writer of a job's state (single compare-and-set or a bulk SQL statement) checks its move
against TRANSITIONS through check_transition(), and every reader that maps an engine's execution
status to a queue state goes through from_engine_status().
"""

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import MaskingQueueError

QUEUED, SCHEDULED, STARTING, RUNNING, ENGINE_QUEUED = 'QUEUED', 'SCHEDULED', 'STARTING', 'RUNNING', 'ENGINE_QUEUED'
SUCCEEDED, WARNING, FAILED, CANCELLED = 'SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED'

# Hold an engine slot (the scheduler counts these against an engine's slots).
SLOT_STATES = (SCHEDULED, STARTING, RUNNING, ENGINE_QUEUED)
# Kept for callers of the store's old name: the slot-holding states.
ACTIVE_STATES = SLOT_STATES
# Not ended yet: waiting for a slot, or holding one.
UNFINISHED_STATES = (QUEUED,) + SLOT_STATES
TERMINAL_STATES = (SUCCEEDED, WARNING, FAILED, CANCELLED)
STATES = UNFINISHED_STATES + TERMINAL_STATES
# Started on the engine: an execution exists (or may exist) there.
STARTED_STATES = (STARTING, RUNNING, ENGINE_QUEUED)

TRANSITIONS = {
    QUEUED: (SCHEDULED, CANCELLED, FAILED),
    SCHEDULED: (STARTING, QUEUED, CANCELLED, FAILED),
    STARTING: (STARTING, RUNNING, ENGINE_QUEUED, QUEUED, SCHEDULED) + TERMINAL_STATES,
    RUNNING: (RUNNING, ENGINE_QUEUED) + TERMINAL_STATES,
    ENGINE_QUEUED: (ENGINE_QUEUED, RUNNING) + TERMINAL_STATES,
    # Only an explicit rerun of the same request id (MaskingQueue.enqueue(rerun=True)) leaves these.
    FAILED: (QUEUED,),
    CANCELLED: (QUEUED,),
}

# What an engine reports for an execution (Delphix status values).
ENGINE_TERMINAL = frozenset(TERMINAL_STATES)     # the engine's terminal statuses have the queue's names
ENGINE_WAITING = frozenset(('QUEUED', 'WAITING'))


# The kinds of capacity that share the queue: Delphix masking engines (slots) and fleet hosts (lazy hosts whose
# agents start workflow containers). Engines and jobs carry their kind; a job goes only to its own kind.
MASKING, FLEET = 'masking', 'fleet'
KINDS = (MASKING, FLEET)


def kind_of(row):
    """The kind of an engine or job row (rows from before schema migration 4, and test doubles, are masking)."""
    return row.get('kind') or MASKING


class IllegalTransition(MaskingQueueError):
    """A programming error: a writer tried a move the state machine does not allow."""


def check_transition(from_state, to_state, what='job'):
    """Raise IllegalTransition unless from_state -> to_state is allowed."""
    if to_state not in TRANSITIONS.get(from_state, ()):
        raise IllegalTransition('illegal transition %s -> %s for %s' % (from_state, to_state, what))


def from_engine_status(status, engine_name):
    """An execution's engine status -> (queue state, reason shown while not finished).

    Terminal statuses map to the queue state of the same name (reason None). An unknown status is
    treated as not finished and said so: it is never taken for success.
    """
    if status in ENGINE_TERMINAL:
        return status, None
    if status in ENGINE_WAITING:
        return ENGINE_QUEUED, 'queued by engine %s until it has capacity' % engine_name
    if status == 'RUNNING':
        return RUNNING, None
    return RUNNING, 'engine %s reports an unknown status %s: treated as not finished' % (engine_name, status)


def is_terminal(state):
    return state in TERMINAL_STATES
