#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: masking_job
short_description: Queue a Delphix masking job, wait for it, or cancel it
version_added: 0.1.0
description:
  - Puts a request to run a masking job into the orchestra.fleet masking queue. The queue places it on an engine
    that carries the job and has a free slot, starts it through the Delphix Masking API and follows it to the end.
  - With O(wait=true) (the default) the task blocks until the job ends and fails when the job fails, with the
    engine's message. While it waits, the task drives the queue itself (scheduling and polling under a leader
    lease shared with other waiters), so no cron job is needed for progress.
  - With O(request_id), running the task again returns the same queue entry instead of queueing the job twice, so
    a re-run playbook waits for (or reports) the run it already started.
  - With O(state=cancelled) the entry is cancelled at whatever stage it is, on the engine too when it already runs.
extends_documentation_fragment:
  - orchestra.fleet.masking
  - ansible.builtin.action_common_attributes
author:
  - orchestra.fleet developers (@orchestra-fleet)
options:
  job_name:
    description:
      - Name of the masking job (its C(jobName) on the engines). Resolved on the engine the job is placed on, since
        one job name has a different id on every engine.
      - Required with O(state=present).
      - The queue must hold at least one engine that carries this name (see M(orchestra.fleet.masking_engine));
        otherwise the task fails before anything is queued.
    type: str
    aliases: [name]
  request_id:
    description:
      - Your identifier for this request, unique in the queue. Submitting the same O(request_id) again returns the
        existing entry (and waits for it with O(wait=true)) instead of running the job again. An entry that has
        ended is reported as it ended (a failed one fails the task again), unless O(rerun=true).
      - Also selects the entry to cancel with O(state=cancelled).
      - Left out, every run of the task queues a new run of the job.
    type: str
  rerun:
    description:
      - The re-submission rule. With V(true), an entry of this O(request_id) that ended V(FAILED) or V(CANCELLED) is
        queued again (same queue id and request id, its history kept), so a retry of a failed run can keep the
        request id of the day. An entry that is still queued or running is waited for as usual, and one that
        V(SUCCEEDED) or ended with V(WARNING) is never run again under its request id.
      - With V(false) (the default) the entry is reported as it ended.
    type: bool
    default: false
  job_id:
    description:
      - The queue entry id (RV(job.id)) to cancel with O(state=cancelled), instead of O(request_id).
    type: int
  environment:
    description:
      - Environment the job lives in, when the same job name exists in several environments of an engine.
    type: str
  priority:
    description:
      - Higher runs first; jobs of the same priority run in the order they were queued.
    type: int
    default: 0
  engine:
    description:
      - Run the job only on this engine (engine affinity). Left out, the least loaded engine that carries the job
        is used.
    type: str
  max_memory_mb:
    description:
      - Memory the job needs in MB (its C(maxMemory)), used to balance engines that have a memory budget.
    type: int
  state:
    description:
      - V(present) queues the job (or finds the entry with the same O(request_id)).
      - V(cancelled) cancels the entry named by O(request_id) or O(job_id). A job that has already ended is left as
        it is.
    type: str
    choices: [present, cancelled]
    default: present
  wait:
    description:
      - Wait until the job has ended, driving the queue meanwhile. The task then fails when the job failed, was
        cancelled or did not end within O(timeout).
      - With V(false) the task returns once the job is queued; run M(orchestra.fleet.masking_schedule) and
        M(orchestra.fleet.masking_poll) (cron, an AWX schedule, or the C(orchestra.fleet.schedule) playbook), or
        wait later with the same O(request_id).
    type: bool
    default: true
  timeout:
    description:
      - Seconds this task waits with O(wait=true) (per task, so per job in a loop).
      - Defaults to V(3600) with O(state=present) and V(60) with O(state=cancelled) (how long the task waits for a
        cancelled job to settle on the engine).
    type: int
  poll_interval:
    description:
      - Seconds between queue steps while waiting.
    type: float
    default: 1.0
  cancel_on_timeout:
    description:
      - When the wait times out, cancel the job (on the engine too) instead of leaving it running.
    type: bool
    default: false
  cancel_on_interrupt:
    description:
      - When the waiting task is interrupted (Ctrl-C, which sends SIGINT, or SIGTERM, which AWX/AAP and systemd send to
        stop a job), cancel the job (on the engine too when it runs) before the task ends.
      - With V(false) (the default) an interrupted wait leaves the job queued or running; the queue keeps it going
        (another waiting task, M(orchestra.fleet.masking_poll) or the C(orchestra.fleet.schedule) playbook finish it)
        and waiting again with the same O(request_id) picks it up. Either way the task fails with
        RV(error_kind=interrupted).
    type: bool
    default: false
  warning_is_failure:
    description:
      - Treat a job that ended with status C(WARNING) (finished, but the engine reported non-conforming data) as a
        failure. By default it succeeds with a warning.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is queued, cancelled or waited for; C(changed) says whether it would be.
  diff_mode:
    support: none
'''

EXAMPLES = r'''
- name: Mask the customer copy and wait for the result (fails when the job fails)
  orchestra.fleet.masking_job:
    job_name: mask_customers
    request_id: "nightly-{{ ansible_date_time.date }}-customers"
    rerun: true
    timeout: 7200
  delegate_to: localhost
  register: masked

- name: Show where it ran
  ansible.builtin.debug:
    msg: "{{ masked.engine }} execution {{ masked.execution_id }}: {{ masked.rows_masked }} rows in {{ masked.timings.run_seconds }} s"

- name: Queue urgent work on a given engine and return at once
  orchestra.fleet.masking_job:
    job_name: mask_orders
    environment: prod_copy
    engine: masking2
    priority: 10
    wait: false
  delegate_to: localhost

- name: Queue several jobs first, then wait for each (they run in parallel meanwhile)
  orchestra.fleet.masking_job:
    job_name: "{{ item }}"
    request_id: "release-42-{{ item }}"
    wait: false
  loop: [mask_customers, mask_orders, mask_invoices]
  delegate_to: localhost

- name: Wait for all of them; the task fails if any job failed
  orchestra.fleet.masking_job:
    job_name: "{{ item }}"
    request_id: "release-42-{{ item }}"
    warning_is_failure: true
    timeout: 3600
    cancel_on_timeout: true
  loop: [mask_customers, mask_orders, mask_invoices]
  delegate_to: localhost

- name: Retry today's run after a failure, under the same request id
  orchestra.fleet.masking_job:
    job_name: mask_customers
    request_id: "nightly-{{ ansible_date_time.date }}-customers"
    rerun: true
    cancel_on_interrupt: true
  delegate_to: localhost

- name: Cancel a request (waits up to 60 s for the engine to confirm)
  orchestra.fleet.masking_job:
    request_id: release-42-mask_orders
    state: cancelled
  delegate_to: localhost

- name: Engine credentials from AWX or vault, set once for all masking tasks
  module_defaults:
    group/orchestra.fleet.masking:
      store: /var/lib/orchestra/masking-queue.db
      username: "{{ masking_user }}"
      password: "{{ masking_password }}"
  block:
    - name: Run the job
      orchestra.fleet.masking_job:
        job_name: mask_customers
      delegate_to: localhost
'''

RETURN = r'''
created:
  description: Whether this task queued a new entry (false when O(request_id) found an existing one).
  returned: state is present
  type: bool
  sample: true
state:
  description: The job's state in the queue at the end of the task.
  returned: when the entry exists
  type: str
  sample: SUCCEEDED
engine:
  description: The engine the job was placed on, or null while it waits for one.
  returned: when the entry exists
  type: str
  sample: masking1
execution_id:
  description: The engine's execution id, or null before the job started.
  returned: when the entry exists
  type: int
  sample: 4711
rows_masked:
  description: Rows masked, as the engine reported them.
  returned: when the entry exists
  type: int
  sample: 1000
rows_total:
  description: Rows in total, as the engine reported them (-1 while the engine is still counting).
  returned: when the entry exists
  type: int
  sample: 1000
timings:
  description: How long the job waited and ran, in seconds; null while unknown.
  returned: when the entry exists
  type: dict
  contains:
    queued_seconds:
      description: From queueing to the engine starting the execution.
      type: float
      sample: 0.42
    run_seconds:
      description: From the start of the execution to its end.
      type: float
      sample: 61.3
    total_seconds:
      description: From queueing to the end.
      type: float
      sample: 61.72
job:
  description: The queue entry.
  returned: when the entry exists
  type: dict
  contains:
    id:
      description: Queue entry id.
      type: int
      sample: 17
    request_id:
      description: The request id (generated by the queue when none was given).
      type: str
      sample: nightly-2026-11-22-customers
    job_name:
      description: Masking job name.
      type: str
      sample: mask_customers
    environment:
      description: Environment, or null.
      type: str
      sample: null
    priority:
      description: Priority.
      type: int
      sample: 0
    engine_affinity:
      description: Engine the job is bound to, or null.
      type: str
      sample: null
    state:
      description: >-
        One of QUEUED, SCHEDULED, STARTING, RUNNING, ENGINE_QUEUED, SUCCEEDED, WARNING, FAILED, CANCELLED.
      type: str
      sample: SUCCEEDED
    attempt:
      description: Transition counter of the entry (every state change increments it).
      type: int
      sample: 4
    reason:
      description: Why the job is not running yet (for example C(all 8 slots full on engines masking1, masking2)), or null.
      type: str
      sample: null
    engine:
      description: Engine it was placed on.
      type: str
      sample: masking1
    execution_id:
      description: Engine execution id.
      type: int
      sample: 4711
    rows_masked:
      description: Rows masked.
      type: int
      sample: 1000
    rows_total:
      description: Rows in total.
      type: int
      sample: 1000
    submitted_at:
      description: When it was queued (ISO-8601 UTC).
      type: str
      sample: "2026-11-22T02:00:00Z"
    scheduled_at:
      description: When a slot was reserved for it.
      type: str
      sample: "2026-11-22T02:00:00Z"
    started_at:
      description: When the engine started it.
      type: str
      sample: "2026-11-22T02:00:01Z"
    finished_at:
      description: When it ended.
      type: str
      sample: "2026-11-22T02:01:02Z"
    error:
      description: The engine's (or the queue's) message for a failed or warned job.
      type: str
      sample: null
    error_kind:
      description: For a FAILED entry, why (see RV(error_kind)); null otherwise.
      type: str
      sample: null
    start_marker:
      description: The highest execution id of the masking job on its engine just before the queue started it (only a
        newer execution can be this entry's own).
      type: int
      sample: 4710
    max_memory_mb:
      description: Memory the job declared, or null.
      type: int
      sample: null
    engine_status:
      description: The last status the engine reported for the execution (for example C(RUNNING)), or null.
      type: str
      sample: SUCCEEDED
    cancel_requested:
      description: Whether a cancel was requested.
      type: bool
      sample: false
error_kind:
  description: >-
    On failure, what went wrong. V(job_failed) only when the engine ran the job and it failed; V(job_warning),
    V(job_cancelled), V(timeout), V(interrupted); refusals before anything ran: V(engine_auth) (the engine refused
    the login), V(no_credentials) (no credentials for the engine the job is placed on), V(job_not_found) (the engine
    has no job of that name), V(job_ambiguous) (the name exists in several environments: set O(environment));
    V(unknown_job) (no registered engine carries the job, or no such queue entry), V(unknown_engine),
    V(store_unavailable), V(bad_parameter), V(engine_error), V(start_failed) or V(queue_error).
  returned: failure
  type: str
  sample: job_failed
'''

import time

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    masking_module, argument_spec, interruptible, job_outcome, job_timings, open_queue, queue_errors, store_url_of)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import TERMINAL_STATES, WaitInterrupted

DEFAULT_TIMEOUT = {'present': 3600, 'cancelled': 60}


def module_argument_spec():
    return argument_spec(
        job_name=dict(type='str', aliases=['name']),
        request_id=dict(type='str'),
        job_id=dict(type='int'),
        environment=dict(type='str'),
        priority=dict(type='int', default=0),
        engine=dict(type='str'),
        max_memory_mb=dict(type='int'),
        state=dict(type='str', default='present', choices=['present', 'cancelled']),
        rerun=dict(type='bool', default=False),
        wait=dict(type='bool', default=True),
        timeout=dict(type='int'),
        poll_interval=dict(type='float', default=1.0),
        cancel_on_timeout=dict(type='bool', default=False),
        cancel_on_interrupt=dict(type='bool', default=False),
        warning_is_failure=dict(type='bool', default=False),
    )


def job_result(job):
    """The top-level return values for one queue entry."""
    return dict(
        job=job,
        state=job.get('state'),
        engine=job.get('engine'),
        execution_id=job.get('execution_id'),
        rows_masked=job.get('rows_masked'),
        rows_total=job.get('rows_total'),
        timings=job_timings(job),
    )


def outcome_kind(job, timed_out):
    state = job.get('state')
    if state == 'FAILED':
        return job.get('error_kind') or 'job_failed'
    if state == 'WARNING':
        return 'job_warning'
    if state == 'CANCELLED' and not timed_out:
        return 'job_cancelled'
    return 'timeout'


def wait_for(module, queue, job, result, timeout):
    """Block until the entry ends, then exit or fail according to its outcome."""
    params = module.params
    started = time.time()
    try:
        with interruptible():
            jobs = queue.wait([job['id']], timeout, poll_interval=params['poll_interval'],
                              cancel_on_timeout=params['cancel_on_timeout'],
                              cancel_on_interrupt=params['cancel_on_interrupt'])
    except WaitInterrupted as interrupted:
        result.update(job_result(interrupted.jobs[0]))
        module.fail_json(msg='%s: masking job %s is %s' % (interrupted, job.get('job_name'), interrupted.jobs[0].get('state')),
                         error_kind='interrupted', **result)
    job = jobs[0]
    timed_out = job.get('state') not in TERMINAL_STATES or (
        params['cancel_on_timeout'] and job.get('state') == 'CANCELLED' and time.time() - started >= timeout)
    result.update(job_result(job))
    failed, message, warnings = job_outcome(job, params['warning_is_failure'], timed_out=timed_out)
    for warning in warnings:
        module.warn(warning)
    if failed:
        module.fail_json(msg=message, error_kind=outcome_kind(job, timed_out), **result)
    result['msg'] = message
    module.exit_json(**result)


def present(module, queue):
    """The queue decides: new entry, existing entry, rerun, refusal (also in check mode, as a dry run)."""
    params = module.params
    created, job = queue.enqueue(params['job_name'], request_id=params['request_id'], environment=params['environment'],
                                 priority=params['priority'], engine=params['engine'], max_memory_mb=params['max_memory_mb'],
                                 rerun=params['rerun'], dry_run=module.check_mode)
    result = dict(changed=bool(created), created=bool(created))
    if module.check_mode:
        if created:   # nothing exists yet: no entry to return
            module.exit_json(msg='would queue masking job %s' % params['job_name'], **result)
        result.update(job_result(job))
        module.exit_json(msg='masking job %s is %s' % (params['job_name'], job.get('state')), **result)
    result.update(job_result(job))
    if params['wait']:
        with queue_errors(module, store_url=store_url_of(module), **result):
            wait_for(module, queue, job, result, params['timeout'])
    result['msg'] = 'masking job %s is %s' % (params['job_name'], job.get('state'))
    module.exit_json(**result)


def cancel(module, queue):
    params = module.params
    key = params['request_id'] if params['request_id'] is not None else params['job_id']
    job = queue.job(key)
    if job.get('state') in TERMINAL_STATES:
        result = dict(changed=False, msg='masking job %s already ended (%s)' % (job.get('job_name'), job.get('state')))
        result.update(job_result(job))
        module.exit_json(**result)
    result = dict(changed=True)
    job = queue.cancel(key, dry_run=module.check_mode)
    result.update(job_result(job))
    if module.check_mode:
        module.exit_json(msg='would cancel masking job %s' % job.get('job_name'), **result)
    if params['wait']:
        with queue_errors(module, store_url=store_url_of(module), **result):
            job = queue.wait([job['id']], params['timeout'], poll_interval=params['poll_interval'])[0]
        result.update(job_result(job))
    result['msg'] = 'masking job %s is %s' % (job.get('job_name'), job.get('state'))
    module.exit_json(**result)


def main():
    module = masking_module(
        argument_spec=module_argument_spec(),
        required_if=[('state', 'present', ('job_name',)), ('state', 'cancelled', ('request_id', 'job_id'), True)],
        mutually_exclusive=[('request_id', 'job_id')],
        supports_check_mode=True,
    )
    params = module.params
    if params['timeout'] is None:
        params['timeout'] = DEFAULT_TIMEOUT[params['state']]
    if params['timeout'] < 0 or params['poll_interval'] <= 0:
        module.fail_json(msg='timeout must be 0 or more and poll_interval more than 0', error_kind='bad_parameter')
    if params['max_memory_mb'] is not None and params['max_memory_mb'] < 0:
        module.fail_json(msg='max_memory_mb must be 0 or more', error_kind='bad_parameter')
    if params['state'] == 'present' and params['job_id'] is not None:
        module.fail_json(msg='job_id only selects an entry to cancel; use request_id to make queueing idempotent',
                         error_kind='bad_parameter')
    queue = open_queue(module)
    with queue_errors(module, store_url=store_url_of(module)):
        if params['state'] == 'cancelled':
            cancel(module, queue)
        else:
            present(module, queue)


if __name__ == '__main__':
    main()
