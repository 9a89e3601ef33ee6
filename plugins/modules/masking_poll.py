#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: masking_poll
short_description: Run one poll step of the masking queue, or follow it until it drains
version_added: 0.1.0
description:
  - Starts the jobs the scheduler placed (POST to the engine, never twice, also when a response is lost), refreshes
    the running ones from the engines, records the final state of those that ended and frees their slots, and
    carries out requested cancels.
  - Safe to run from many processes at once. Run it from cron or an AWX schedule next to
    M(orchestra.fleet.masking_schedule), or use the C(orchestra.fleet.schedule) playbook.
  - With O(follow=true) it keeps scheduling and polling until no masking job is queued, scheduled, starting or running (or
    O(timeout) passes). Jobs that end in failure do not fail this task; read them with
    M(orchestra.fleet.masking_queue_info).
  - Talks to the engines, so it needs their credentials (O(username)/O(password) or O(engine_credentials)).
extends_documentation_fragment:
  - orchestra.fleet.masking
  - ansible.builtin.action_common_attributes
author:
  - orchestra.fleet developers (@orchestra-fleet)
options:
  follow:
    description:
      - Keep running scheduler and poll steps until the queue has no active job.
    type: bool
    default: false
  timeout:
    description:
      - With O(follow=true), stop after this many seconds even if jobs are still active (the task then fails).
    type: int
    default: 3600
  poll_interval:
    description:
      - With O(follow=true), seconds between steps.
    type: float
    default: 1.0
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
'''

EXAMPLES = r'''
- name: One poll step (for example from cron, after masking_schedule)
  orchestra.fleet.masking_poll:
    store: /var/lib/orchestra/masking-queue.db
    username: "{{ masking_user }}"
    password: "{{ masking_password }}"
  delegate_to: localhost

- name: Run the queue until it drains, at most two hours
  orchestra.fleet.masking_poll:
    follow: true
    timeout: 7200
  delegate_to: localhost
  register: drained

- name: Show the counts
  ansible.builtin.debug:
    var: drained.summary.states
'''

RETURN = r'''
step:
  description:
    - What the first poll step reported, counters of jobs C(started), C(recovered) (interrupted starts reconciled),
      C(refreshed), C(finished), C(requeued), C(cancelled), C(start_errors), engines found C(unreachable), and
      C(waiting_for_credentials) (scheduled jobs on engines this task has no credentials for; the task then fails
      with C(error_kind=no_credentials) instead of reporting success while nothing can move), C(described) (engines
      registered with discovery whose job list and capacity were read again) and C(foreign) (executions seen on the
      engines that no queue job owns, which use slots in placement).
    - C(changed) is true when a job was started, recovered, finished, requeued or cancelled.
  returned: always
  type: dict
  sample: {started: 2, recovered: 0, refreshed: 5, finished: 1, requeued: 0, cancelled: 0, start_errors: 0, unreachable: 0,
           waiting_for_credentials: 0, described: 0, foreign: 0}
steps:
  description: How many poll steps this task ran (1 without O(follow)).
  returned: always
  type: int
  sample: 1
active:
  description: Jobs still queued, scheduled, starting or running when the task ended.
  returned: always
  type: int
  sample: 0
summary:
  description: Number of jobs per state in the whole queue and slot use per engine when the task ended.
  returned: always
  type: dict
  contains:
    states:
      description: Number of jobs per state (every state is listed).
      type: dict
      sample: {QUEUED: 0, RUNNING: 0, SUCCEEDED: 8, WARNING: 1, FAILED: 1}
    active:
      description: Jobs not yet ended.
      type: int
      sample: 0
    engines:
      description: Per engine, C(slots), C(slots_used), C(foreign_slots) (executions started outside the queue),
        C(enabled) and C(drained).
      type: dict
      sample: {masking1: {slots: 4, slots_used: 0, foreign_slots: 0, enabled: true, drained: false}}
'''

import time

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    masking_module, UNFINISHED_STATES, argument_spec, open_queue, queue_errors, queue_summary, store_url_of)


# Step counters that mean the queue was written (refreshed alone only read the engines).
CHANGING_COUNTERS = ('started', 'recovered', 'finished', 'requeued', 'cancelled')


def step_changed(step):
    return any(int(step.get(key) or 0) > 0 for key in CHANGING_COUNTERS)


def active_ids(queue):
    """The unfinished masking jobs (workflow jobs on the fleet are driven by workflow_job, not here)."""
    info = queue.info(jobs=True, engines=False, states=list(UNFINISHED_STATES))
    return [job['id'] for job in info.get('jobs') or () if job.get('kind', 'masking') == 'masking']


def follow(module, queue):
    """Let the queue's own waiter drive the steps for every active job, until none is left or time runs out."""
    params = module.params
    deadline = time.time() + params['timeout']
    rounds = 0
    ids = active_ids(queue)
    while ids and time.time() < deadline:
        queue.wait(ids, max(0.0, deadline - time.time()), poll_interval=params['poll_interval'])
        rounds += 1
        ids = active_ids(queue)  # jobs queued meanwhile are followed too
    return rounds, ids


def main():
    module = masking_module(argument_spec=argument_spec(
        follow=dict(type='bool', default=False),
        timeout=dict(type='int', default=3600),
        poll_interval=dict(type='float', default=1.0),
    ), supports_check_mode=False)
    params = module.params
    if params['timeout'] < 0 or params['poll_interval'] <= 0:
        module.fail_json(msg='timeout must be 0 or more and poll_interval more than 0', error_kind='bad_parameter')
    queue = open_queue(module)
    with queue_errors(module, store_url=store_url_of(module)):
        step = queue.poll_step()
        steps, left = 1, []
        if params['follow']:
            queue.schedule_step()
            rounds, left = follow(module, queue)
            steps += rounds
        summary = queue_summary(queue.info(jobs=False, engines=True))
    result = dict(changed=step_changed(step) or steps > 1,
                  step=step, steps=steps, active=summary['active'], summary=summary)
    if step.get('waiting_for_credentials'):
        # Not green when nothing can move: jobs sit on engines this task cannot log in to.
        module.fail_json(msg='%d scheduled masking jobs wait on engines this task has no credentials for: give it '
                         'username/password or engine_credentials' % step['waiting_for_credentials'],
                         error_kind='no_credentials', **result)
    if params['follow'] and left:
        module.fail_json(msg='%d masking jobs still active after %d s' % (len(left), params['timeout']),
                         error_kind='timeout', **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
