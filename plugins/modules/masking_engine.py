#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: masking_engine
short_description: Register, update, drain or remove a Delphix masking engine in the masking queue
version_added: 0.1.0
description:
  - Keeps one masking engine's record in the orchestra.fleet masking queue as described - its API URL, how many
    jobs it may run at once (O(slots)), an optional memory budget, and which masking job names it carries.
  - The queue places queued jobs only on engines that are present, enabled and not drained, and never above their
    slots.
  - Options left out keep the value the engine already has, so changing the slots of a registered engine needs
    only O(name) and O(slots).
  - With O(discover=true) the module asks the engine itself (reads only) which jobs it carries, how many jobs it runs
    at once and how much memory it has for jobs, and registers that; this needs engine credentials (O(username) and
    O(password), or O(engine_credentials)). Anything given explicitly overrides what the engine says.
  - Without O(discover), only the queue is changed; the engine itself is not contacted, so no engine credentials are
    needed.
extends_documentation_fragment:
  - orchestra.fleet.masking
  - ansible.builtin.action_common_attributes
author:
  - orchestra.fleet developers (@orchestra-fleet)
options:
  name:
    description:
      - Name of the engine in the queue. Jobs with an engine affinity and O(engine_credentials) refer to it.
    type: str
    required: true
  state:
    description:
      - V(present) registers or updates the engine and makes it take new jobs (it also undrains a drained engine).
      - V(drained) keeps the engine registered but places no new job on it; jobs already on it run to the end.
        Use it before maintenance, then V(absent) once RV(engine.slots_used) is 0.
      - V(absent) removes the engine. The queue refuses while jobs are scheduled, starting or running on it,
        unless O(force=true).
    type: str
    choices: [present, drained, absent]
    default: present
  url:
    description:
      - URL of the engine, V(http://) or V(https://) with host and port, for example
        V(https://masking1.example.com:8282). The API path C(/masking/api) is added when the URL does not end with it.
      - Required when the engine is not registered yet.
    type: str
  discover:
    description:
      - Read from the engine what it carries and can run, and register that. The jobs are every masking job of every
        environment of every application (C(applications), C(environments), C(masking-jobs), all pages), registered
        by name and environment. O(slots) comes from the application setting C(NumSimulJobsAllowed) (0 means the
        engine's C(totalAvailableCores) - 1); O(memory_mb) from C(MaximumMemoryForJobs), or else
        C(totalAllocatedMemoryForJobs) of C(system-information).
      - O(slots), O(memory_mb) and O(jobs), when given, override what the engine says; RV(sources) says where each
        value came from. The poll step keeps the discovered values fresh (see the user guide).
      - An engine that cannot be reached or refuses the login fails the task, naming the engine; the queue is left
        as it was. Check mode reads the engine and shows what would change.
    type: bool
    default: false
  slots:
    description:
      - How many jobs the queue runs on this engine at once (the engine setting C(NumSimulJobsAllowed), or fewer to
        keep headroom).
      - Required when the engine is not registered yet, unless O(discover=true).
    type: int
  memory_mb:
    description:
      - Memory budget in MB for the summed C(maxMemory) of the jobs running on the engine (the engine setting
        C(MaximumMemoryForJobs)). When set, placement also balances by free memory.
      - Left out, there is no memory budget (or the current one is kept).
    type: int
  jobs:
    description:
      - The masking jobs this engine carries. Each entry is a job name, or a dictionary with C(name) and
        C(environment) when the same job name exists in several environments.
      - V(*) means any job name.
      - When the engine is added without this option it carries any job name; a job it does not have then fails
        with the engine's message. Given for a registered engine, the list replaces the current one.
    type: list
    elements: raw
  enabled:
    description:
      - Whether the queue may use this engine at all. A disabled engine is kept with its settings but gets no jobs.
    type: bool
  validate_certs:
    description:
      - Whether to verify the engine's TLS certificate when the queue talks to it.
    type: bool
  force:
    description:
      - With O(state=absent), remove the engine even while jobs are scheduled or running on it. Those jobs keep
        running on the engine, but the queue no longer follows them.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
'''

EXAMPLES = r'''
- name: Register an engine from what it says about itself (jobs, slots, memory)
  orchestra.fleet.masking_engine:
    name: masking1
    url: https://masking1.example.com:8282
    discover: true
    username: "{{ masking_user }}"
    password: "{{ masking_password }}"
  delegate_to: localhost

- name: Discover, but keep one slot free for people who start jobs in the engine's UI
  orchestra.fleet.masking_engine:
    name: masking2
    url: https://masking2.example.com:8282
    discover: true
    slots: 5
    username: "{{ masking_user }}"
    password: "{{ masking_password }}"
  delegate_to: localhost

- name: Register two engines that carry the customer masking jobs
  orchestra.fleet.masking_engine:
    name: "{{ item.name }}"
    url: "{{ item.url }}"
    slots: 6
    memory_mb: 16384
    jobs:
      - mask_customers
      - name: mask_orders
        environment: prod_copy
  loop:
    - {name: masking1, url: "https://masking1.example.com:8282/masking/api"}
    - {name: masking2, url: "https://masking2.example.com:8282/masking/api"}
  delegate_to: localhost

- name: Give masking2 two more slots (everything else stays as it is)
  orchestra.fleet.masking_engine:
    name: masking2
    slots: 8
  delegate_to: localhost

- name: Drain masking1 before maintenance
  orchestra.fleet.masking_engine:
    name: masking1
    state: drained
  delegate_to: localhost

- name: Remove masking1 for good
  orchestra.fleet.masking_engine:
    name: masking1
    state: absent
  delegate_to: localhost

- name: Use a shared PostgreSQL queue for every masking task of the play
  module_defaults:
    group/orchestra.fleet.masking:
      store: postgresql://orchestra@db.example.com/masking
  block:
    - name: Register the engine in the shared queue
      orchestra.fleet.masking_engine:
        name: masking3
        url: https://masking3.example.com/masking/api
        slots: 4
      delegate_to: localhost
'''

RETURN = r'''
engine:
  description:
    - The engine as the queue holds it after the task (in check mode, as it would be). Empty after removal.
  returned: always
  type: dict
  contains:
    name:
      description: Engine name.
      type: str
      sample: masking1
    url:
      description: Base URL of the masking API.
      type: str
      sample: https://masking1.example.com:8282/masking/api
    slots:
      description: Jobs the queue runs on it at once.
      type: int
      sample: 6
    memory_mb:
      description: Memory budget in MB, or null.
      type: int
      sample: 16384
    enabled:
      description: Whether the engine takes jobs at all.
      type: bool
      sample: true
    verify:
      description: Whether the engine's TLS certificate is verified.
      type: bool
      sample: true
    drained:
      description: Whether the engine is drained (takes no new jobs).
      type: bool
      sample: false
    jobs:
      description: Job names (or name and environment) it carries; null means any job.
      type: list
      elements: raw
      sample: [mask_customers, {name: mask_orders, environment: prod_copy}]
    slots_used:
      description: Slots held right now by scheduled, starting and running jobs.
      type: int
      sample: 2
    memory_used_mb:
      description: Summed memory of the jobs holding slots.
      type: int
      sample: 4096
    last_error:
      description: The last error the queue had talking to the engine, or null.
      type: str
      sample: null
    unreachable_since:
      description: Since when (ISO-8601 UTC) the engine has not answered, or null.
      type: str
      sample: null
    discovered:
      description: Which of C(slots), C(memory_mb) and C(jobs) came from the engine (the poll step refreshes those);
        null when the engine was registered by hand.
      type: list
      elements: str
      sample: [slots, memory_mb, jobs]
    jobs_read_at:
      description: When (ISO-8601 UTC) the queue last read the engine's job list, or null.
      type: str
      sample: "2026-12-04T15:02:11.120Z"
    foreign:
      description: Load on the engine that the queue did not start (RUNNING or QUEUED executions no queue job owns),
        as the poll step last listed it; it uses the engine's slots and memory in placement.
      type: dict
      sample: {executions: [{execution_id: 31, job_id: 12, job_name: mask_x, status: RUNNING, max_memory_mb: 1024}],
               slots: 1, memory_mb: 1024, checked_at: "2026-12-04T15:02:11.120Z",
               note: "1 of 4 slots used by an execution started outside the queue (execution 31 of mask_x, RUNNING)"}
sources:
  description:
    - With O(discover=true), where each of C(slots), C(memory_mb) and C(jobs) came from - V(explicit) for a value given
      to the task, else the engine's answer it was read from.
  returned: when O(discover=true)
  type: dict
  sample: {slots: application-settings NumSimulJobsAllowed, memory_mb: explicit,
           jobs: "the engine: 390 jobs in 3 environments"}
discovered:
  description:
    - With O(discover=true), what the engine said, including values an explicit option overrode, and its version.
  returned: when O(discover=true)
  type: dict
  sample: {slots: 7, memory_mb: 16384, jobs: [{name: mask_customers, environment: prod_copy}], version: 6.0.17.0}
diff:
  description: The engine's settings before and after, in diff mode.
  returned: when changed and diff mode is on
  type: dict
  sample: {before: {slots: 6}, after: {slots: 8}}
'''

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    masking_module, UnknownEngine, argument_spec, engine_view, normalize_job_entries, open_queue, queue_errors, store_url_of)


def module_argument_spec():
    return argument_spec(
        name=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'drained', 'absent']),
        url=dict(type='str'),
        slots=dict(type='int'),
        memory_mb=dict(type='int'),
        jobs=dict(type='list', elements='raw'),
        enabled=dict(type='bool'),
        validate_certs=dict(type='bool'),
        force=dict(type='bool', default=False),
        discover=dict(type='bool', default=False),
    )


def validate(module):
    params = module.params
    if params['slots'] is not None and params['slots'] < 1:
        module.fail_json(msg='slots must be 1 or more (use state=drained to stop placing jobs on an engine)',
                         error_kind='bad_parameter')
    if params['memory_mb'] is not None and params['memory_mb'] < 1:
        module.fail_json(msg='memory_mb must be 1 or more', error_kind='bad_parameter')


def current_engine(queue, name):
    try:
        return queue.engine(name)
    except UnknownEngine:
        return None


def remove(module, queue):
    """The queue decides (also in check mode, as a dry run) whether the engine may go."""
    name = module.params['name']
    current = current_engine(queue, name)
    result = dict(changed=current is not None, engine={})
    if module._diff and current is not None:
        result['diff'] = dict(before=engine_view(current), after={})
    with queue_errors(module, store_url=store_url_of(module), **result):
        result['changed'] = queue.remove_engine(name, force=module.params['force'], dry_run=module.check_mode)
    module.exit_json(**result)


def ensure(module, queue):
    """Options left out keep the engine's value; the queue computes what changes (a dry run in check mode)."""
    params = module.params
    try:
        jobs = normalize_job_entries(params['jobs'])
    except ValueError as error:
        module.fail_json(msg=str(error), error_kind='bad_parameter')
    new = current_engine(queue, params['name']) is None
    settings = dict(url=params['url'], slots=params['slots'], memory_mb=params['memory_mb'], jobs=jobs,
                    enabled=params['enabled'], drained=params['state'] == 'drained', verify=params['validate_certs'],
                    dry_run=module.check_mode)
    report = {}
    if params['discover']:
        changes, engine, report = queue.discover_engine(params['name'], **settings)
    else:
        changes, engine = queue.ensure_engine(params['name'], **settings)
    result = dict(changed=bool(changes), engine=engine, **report)
    result.pop('version', None)
    if report:
        result['discovered'] = dict(report['discovered'], version=report.get('version'))
    if module._diff and changes:
        result['diff'] = dict(before={} if new else dict((k, v[0]) for k, v in changes.items()),
                              after=dict((k, v[1]) for k, v in changes.items()))
    module.exit_json(**result)


def main():
    module = masking_module(argument_spec=module_argument_spec(), supports_check_mode=True)
    validate(module)
    queue = open_queue(module)
    with queue_errors(module, store_url=store_url_of(module)):
        if module.params['state'] == 'absent':
            remove(module, queue)
        else:
            ensure(module, queue)


if __name__ == '__main__':
    main()
