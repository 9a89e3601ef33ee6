#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: masking_engine_info
short_description: Ask the registered Delphix masking engines what they say now, beside the queue's view of them
version_added: 0.1.0
description:
  - For every engine registered in the orchestra.fleet masking queue (or the one named), asks the engine itself -
    its version, whether it answers (and why not), the jobs it carries with their environments and C(maxMemory),
    its application settings, the capacity they give, and the executions RUNNING or QUEUED on it now, split into the
    queue's own and the ones started outside the queue (the engine's UI, another tool).
  - Beside that, the queue's own view of each engine - slots, slots used, drained, last error, the foreign load the
    poll step last saw.
  - Reads only, from the engines and the queue; never changes either, so it runs the same in check mode. It opens an
    existing queue store and never creates one.
  - An engine that cannot be reached, or refuses the login, is reported with RV(engines[].reachable) and
    RV(engines[].error); the task does not fail for it.
  - Every string an engine sends is returned as data and never templated.
extends_documentation_fragment:
  - orchestra.fleet.masking
  - ansible.builtin.action_common_attributes
author:
  - orchestra.fleet developers (@orchestra-fleet)
options:
  name:
    description:
      - Only this engine. Fails with C(error_kind=unknown_engine) when it is not registered.
      - Left out, every registered engine.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so it behaves the same in check mode.
  diff_mode:
    support: N/A
'''

EXAMPLES = r'''
- name: What do the engines say now?
  orchestra.fleet.masking_engine_info:
    username: "{{ masking_user }}"
    password: "{{ masking_password }}"
  register: engines
  delegate_to: localhost

- name: Show who else runs jobs on masking1
  ansible.builtin.debug:
    msg: "{{ (engines.engines | selectattr('name', 'equalto', 'masking1') | first).executions.foreign }}"
'''

RETURN = r'''
engines:
  description: One entry per engine, by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Engine name in the queue.
      type: str
      sample: masking1
    url:
      description: The engine's API URL as registered.
      type: str
      sample: https://masking1.example.com:8282/masking/api
    reachable:
      description: True when the engine answered, false when it could not be reached, null when it was not asked
        (no credentials in this task). An engine that refuses the login answered, so it is reachable.
      type: bool
      sample: true
    error:
      description: Why the engine could not be read (not reached, login refused, no credentials), or null.
      type: str
      sample: null
    error_kind:
      description: The stable word for that error (C(engine_unreachable), C(engine_auth), C(no_credentials), ...), or null.
      type: str
      sample: null
    version:
      description: The engine's version (C(system-information)).
      type: str
      sample: 6.0.17.0
    build:
      description: The engine's build.
      type: str
      sample: 6.0.17.0-20260110
    settings:
      description: The engine's application settings, name to value, as the engine wrote them.
      type: dict
      sample: {NumSimulJobsAllowed: "7", MaximumMemoryForJobs: "16384", API_AUTHORIZATION_TIMEOUT: "900"}
    system:
      description: The engine's C(system-information) answer.
      type: dict
      sample: {version: 6.0.17.0, totalAllocatedMemoryForJobs: 16384, totalAvailableCores: 8}
    capacity:
      description: The slots and memory for jobs the engine's answers give, each with the answer it came from.
      type: dict
      sample: {slots: {value: 7, source: application-settings NumSimulJobsAllowed},
               memory_mb: {value: 16384, source: application-settings MaximumMemoryForJobs}}
    jobs:
      description: Every masking job on the engine with its environment, application, id and C(maxMemory) in MB.
      type: list
      elements: dict
      sample: [{name: mask_customers, environment: prod_copy, application: crm, job_id: 12, max_memory_mb: 1024}]
    executions:
      description:
        - Executions RUNNING or QUEUED on the engine now. C(ours) are the queue's (with C(queue_id) and C(request_id)
          when the queue has recorded them), C(foreign) the ones no queue job owns.
      type: dict
      sample: {ours: [{execution_id: 30, job_id: 12, job_name: mask_customers, status: RUNNING, max_memory_mb: 1024,
                       queue_id: 7, request_id: ticket-42}],
               foreign: [{execution_id: 31, job_id: 13, job_name: mask_orders, status: QUEUED, max_memory_mb: 2048}]}
    queue:
      description: The queue's own view of the engine, as RV(orchestra.fleet.masking_engine#module:engine) returns it
        (slots, slots_used, memory, drained, enabled, last_error, unreachable_since, discovered, foreign).
      type: dict
      sample: {name: masking1, slots: 7, slots_used: 1, drained: false, enabled: true, last_error: null}
'''

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    masking_module, argument_spec, open_queue, queue_errors, store_url_of)


def main():
    module = masking_module(argument_spec=argument_spec(name=dict(type='str')), supports_check_mode=True)
    queue = open_queue(module, read_only=True)
    with queue_errors(module, store_url=store_url_of(module)):
        engines = queue.engine_reports(module.params['name'])
    module.exit_json(changed=False, engines=engines)


if __name__ == '__main__':
    main()
