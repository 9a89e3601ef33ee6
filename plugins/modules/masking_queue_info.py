#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: masking_queue_info
short_description: Read the masking queue - jobs, engines with slot use, pending reasons and history
version_added: 0.1.0
description:
  - Returns the jobs of the orchestra.fleet masking queue with their state, engine, execution and the reason why a
    job still waits; the engines with their slot and memory use; and, on request, the transition history of jobs.
  - Reads only; never talks to the engines. It opens an existing queue store and never creates or migrates one, so
    a mistyped O(store) fails clearly (also in check mode) instead of reading as an empty queue.
  - Summary counts cover the whole queue and stay cheap on large queues; the job list is the newest O(limit) jobs.
extends_documentation_fragment:
  - orchestra.fleet.masking
  - ansible.builtin.action_common_attributes
author:
  - orchestra.fleet developers (@orchestra-fleet)
options:
  jobs:
    description:
      - Return the jobs.
    type: bool
    default: true
  engines:
    description:
      - Return the engines.
    type: bool
    default: true
  states:
    description:
      - Return only jobs in these states.
    type: list
    elements: str
    choices: [QUEUED, SCHEDULED, STARTING, RUNNING, ENGINE_QUEUED, SUCCEEDED, WARNING, FAILED, CANCELLED]
  limit:
    description:
      - Return at most this many jobs, the newest first. V(0) returns every selected job.
    type: int
    default: 100
  history_for:
    description:
      - Queue ids or request ids of jobs whose transition history to return in RV(history).
    type: list
    elements: str
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so it behaves the same in check mode.
  diff_mode:
    support: N/A
'''

EXAMPLES = r'''
- name: Why is my job still waiting?
  orchestra.fleet.masking_queue_info:
    states: [QUEUED]
  delegate_to: localhost
  register: queued

- name: Print the reasons
  ansible.builtin.debug:
    msg: "{{ queued.jobs | map(attribute='reason') | list }}"

- name: Slot use per engine
  orchestra.fleet.masking_queue_info:
    jobs: false
  delegate_to: localhost
  register: fleet

- name: Engines without free slots
  ansible.builtin.debug:
    msg: "{{ fleet.engines | selectattr('slots_used', '>=', 4) | map(attribute='name') | list }}"

- name: History of one request
  orchestra.fleet.masking_queue_info:
    jobs: false
    engines: false
    history_for: [nightly-2026-11-22-customers]
  delegate_to: localhost
  register: story
'''

RETURN = r'''
jobs:
  description:
    - The selected jobs, newest first, at most O(limit) (see M(orchestra.fleet.masking_job) RV(orchestra.fleet.masking_job#module:job)
      for the keys).
    - Each job also has C(timings) with C(queued_seconds), C(run_seconds) and C(total_seconds) (null while unknown), as
      M(orchestra.fleet.masking_job) RV(orchestra.fleet.masking_job#module:timings).
    - Each job also has C(progress), from the row counts the poll step records while the engine runs the job
      (C(percent), null while unknown; C(counting), true while the engine still counts rows; C(rows_per_second), the
      observed rate; C(eta_at), when the rest would be done at that rate, ISO-8601 UTC; C(elapsed_seconds), how long
      it has run so far or ran, also for workflow jobs, whose agents report no rows).
    - Workflow jobs on the fleet (M(orchestra.fleet.workflow_job)) are listed beside masking jobs, told apart by
      C(kind) (V(masking) or V(fleet)); a workflow's C(engine) is its host, its C(execution_id) the fencing number of
      the host claim it started under, and C(workflow_id) the agent's id of it (null for masking jobs).
  returned: when O(jobs=true)
  type: list
  elements: dict
  sample:
    - id: 17
      request_id: nightly-customers
      job_name: mask_customers
      environment: null
      priority: 0
      engine_affinity: null
      state: QUEUED
      attempt: 1
      reason: all 8 slots full on engines masking1, masking2
      engine: null
      execution_id: null
      rows_masked: null
      rows_total: null
      submitted_at: "2026-11-22T02:00:00Z"
      scheduled_at: null
      started_at: null
      finished_at: null
      error: null
      max_memory_mb: null
      engine_status: null
      cancel_requested: false
      timings: {queued_seconds: null, run_seconds: null, total_seconds: null}
      progress: {percent: null, counting: false, rows_per_second: null, eta_at: null, elapsed_seconds: null}
engines:
  description:
    - The registered engines (see M(orchestra.fleet.masking_engine) RV(orchestra.fleet.masking_engine#module:engine) for the keys).
    - Fleet hosts that M(orchestra.fleet.workflow_job) registered are listed too, with C(kind) V(fleet) (masking engines
      have V(masking)) and C(slots) the workflows a host runs at once.
    - C(foreign) is the load on the engine that the queue did not start (RUNNING or QUEUED executions no queue job owns,
      as the poll step last listed them), with C(slots), C(memory_mb), the C(executions) and a C(note) such as
      C(1 of 4 slots used by an execution started outside the queue); placement counts it like the queue's own jobs.
  returned: when O(engines=true)
  type: list
  elements: dict
  sample:
    - name: masking1
      url: https://masking1.example.com:8282/masking/api
      slots: 4
      memory_mb: null
      enabled: true
      drained: false
      verify: true
      jobs: [mask_customers]
      slots_used: 4
      memory_used_mb: 4096
      last_error: null
      unreachable_since: null
      discovered: [slots, memory_mb, jobs]
      jobs_read_at: "2026-11-22T01:58:00.000Z"
      foreign: {slots: 1, memory_mb: 1024, checked_at: "2026-11-22T02:00:00.100Z",
                executions: [{execution_id: 31, job_id: 12, job_name: mask_x, status: RUNNING, max_memory_mb: 1024}],
                note: "1 of 4 slots used by an execution started outside the queue (execution 31 of mask_x, RUNNING)"}
history:
  description:
    - Transitions per requested job, oldest first, keyed by queue id (the C(id) of RV(jobs)).
    - Each entry has C(at), C(from_state), C(to_state), C(attempt), C(engine), C(execution_id), C(detail) and C(actor)
      (which process made the change).
  returned: when O(history_for) is given
  type: dict
  sample:
    "17":
      - {at: "2026-11-22T02:00:00.120Z", from_state: null, to_state: QUEUED, attempt: 0, engine: null, execution_id: null,
         detail: queued, actor: "ctl1:4242:1a2b3c4d"}
      - {at: "2026-11-22T02:00:00.310Z", from_state: QUEUED, to_state: SCHEDULED, attempt: 1, engine: masking1,
         execution_id: null, detail: placed, actor: "ctl1:4242:1a2b3c4d"}
store:
  description: The store in use, as the queue describes it (passwords masked).
  returned: always
  type: str
  sample: sqlite:////var/lib/orchestra/masking-queue.db
schema_version:
  description: Version of the queue's database schema.
  returned: always
  type: int
  sample: 1
summary:
  description: Number of jobs per state in the whole queue (whatever O(states) and O(limit) select), and slot use per engine.
  returned: always
  type: dict
  contains:
    states:
      description: Number of jobs per state (every state is listed).
      type: dict
      sample: {QUEUED: 1, SCHEDULED: 0, STARTING: 0, RUNNING: 8, ENGINE_QUEUED: 0, SUCCEEDED: 120, WARNING: 2, FAILED: 1, CANCELLED: 0}
    active:
      description: Jobs not yet ended (queued, scheduled, starting, running or queued on an engine).
      type: int
      sample: 9
    engines:
      description: Per engine, C(slots), C(slots_used) (the queue's own jobs), C(foreign_slots) (executions started
        outside the queue), C(enabled) and C(drained).
      type: dict
      sample: {masking1: {slots: 4, slots_used: 3, foreign_slots: 1, enabled: true, drained: false}}
'''

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    masking_module, ALL_STATES, argument_spec, job_timings, open_queue, queue_errors, queue_summary, store_url_of)


def history_keys(values):
    """history_for entries as the queue takes them: numbers are queue ids, anything else a request id."""
    return [int(value) if str(value).isdigit() else value for value in values or ()]


def main():
    module = masking_module(argument_spec=argument_spec(
        jobs=dict(type='bool', default=True),
        engines=dict(type='bool', default=True),
        states=dict(type='list', elements='str', choices=list(ALL_STATES)),
        limit=dict(type='int', default=100),
        history_for=dict(type='list', elements='str'),
    ), supports_check_mode=True)
    params = module.params
    if params['limit'] < 0:
        module.fail_json(msg='limit must be 0 (no limit) or more', error_kind='bad_parameter')
    queue = open_queue(module, read_only=True)
    with queue_errors(module, store_url=store_url_of(module)):
        info = queue.info(jobs=params['jobs'], engines=params['engines'],
                          history_for=history_keys(params['history_for']) or None,
                          states=params['states'], limit=params['limit'] or None, newest_first=True)
    result = dict(changed=False, summary=queue_summary(info), store=info.get('store'), schema_version=info.get('schema_version'))
    if params['jobs']:
        result['jobs'] = [dict(job, timings=job_timings(job)) for job in info.get('jobs') or ()]
    if params['engines']:
        result['engines'] = info.get('engines') or []
    if params['history_for']:
        result['history'] = info.get('history') or {}
    module.exit_json(**result)


if __name__ == '__main__':
    main()
