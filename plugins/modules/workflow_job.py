#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: workflow_job
short_description: Queue workflow containers onto lazy fleet hosts, wait for them, or cancel one
version_added: 0.1.0
description:
  - Puts workflows (a container image, command, environment and read-only files such as an INI file) into the
    orchestra.fleet queue, the same queue, store and state machine as masking jobs. The queue places each on a lazy
    fleet host (one workflow per host by default), claims the host through its agent, starts the workflow through the
    agent's fenced start (the agent refuses a start whose claim is stale or foreign), follows it to the end and
    releases the claim.
  - The capacity is the fleet given by O(hosts), O(subnets) or O(hosts_file) (for example the inventory's C(lazy)
    group), found with the inventory plugin's discovery and refreshed while the task waits. A host that is failed,
    busy with other work or gone is left out until its agent says it is lazy again; a workflow placed on a host that
    vanished before its start goes back to the queue and runs elsewhere.
  - With O(wait=true) (the default) the task drives the queue itself and blocks until every workflow it names has
    ended; it fails when any failed (non-zero exit), was cancelled or did not end within O(timeout), like
    M(orchestra.fleet.masking_job).
  - With O(request_id) a re-run returns the same queue entry instead of running the workflow twice.
  - O(host) pins a workflow to one host (the original tool's C(orchestra schedule IP INI)).
  - See the fleet scheduling guide (C(docs/fleet-scheduling.md)).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
author:
  - orchestra.fleet developers (@orchestra-fleet)
options:
  store:
    description:
      - The queue store shared with the masking queue, as for M(orchestra.fleet.masking_job) (an absolute SQLite path or a
        PostgreSQL DSN); falls back to E(ORCHESTRA_QUEUE_STORE), then C(~/.orchestra/masking-queue.db).
    type: str
  name:
    description: Name of the workflow (shown in the queue; one workflow of a name runs on a host at a time).
    type: str
  image:
    description: Container image; it must be in the agents' allow-list (role variable C(orchestra_agent_workflow_images)).
    type: str
  command:
    description: Command of the container (a list of arguments), or the image's own when left out.
    type: list
    elements: str
  env:
    description: Environment variables of the container.
    type: dict
  labels:
    description: Extra container labels (the agent's own claim and workflow labels cannot be overridden).
    type: dict
  files:
    description: Files the agent mounts read-only into the container.
    type: list
    elements: dict
    suboptions:
      path:
        description: Absolute path in the container.
        type: str
        required: true
      content:
        description: The file's text.
        type: str
        required: true
  ini:
    description:
      - The text of a workflow INI file. It is mounted read-only at O(ini_path) and the container finds that path in
        E(ORCHESTRA_WORKFLOW_INI).
    type: str
  ini_path:
    description: Where O(ini) is mounted in the container.
    type: str
    default: /orchestra/workflow.ini
  workflows:
    description:
      - Several workflows at once, each a mapping with the keys V(name), V(image), V(command), V(env), V(labels),
        V(files), V(ini), V(ini_path), V(request_id), V(host) and V(priority). Keys an entry leaves out come from the
        options of the same name. With O(wait=true) the task waits for all of them, which keeps every lazy host busy
        until the list is done.
    type: list
    elements: dict
  request_id:
    description:
      - Your identifier for the workflow, unique in the queue. The same O(request_id) again returns the existing entry
        (and waits for it) instead of running the workflow twice; with another spec it is refused.
      - Also selects the entry to cancel with O(state=cancelled).
    type: str
  rerun:
    description: Queue an entry of this O(request_id) that ended V(FAILED) or V(CANCELLED) again (as M(orchestra.fleet.masking_job)).
    type: bool
    default: false
  job_id:
    description: The queue entry id to cancel with O(state=cancelled), instead of O(request_id).
    type: int
  priority:
    description: Higher runs first; the same priority runs in queue order.
    type: int
    default: 0
  host:
    description: Run the workflow only on this fleet host (host affinity), as named in O(hosts).
    type: str
  hosts:
    description: Fleet hosts (names or addresses) whose agents give the capacity, for example C(groups['lazy']).
    type: list
    elements: str
    default: []
  subnets:
    description: Subnets (CIDRs) to discover fleet hosts in, as the inventory plugin does.
    type: list
    elements: str
    default: []
  hosts_file:
    description: The original tool's cache file of host addresses (one a line).
    type: path
  exclude:
    description: Addresses or CIDRs left out of O(subnets).
    type: list
    elements: str
    default: []
  workflows_per_host:
    description: How many workflows a host runs at once.
    type: int
    default: 1
  claim_ttl:
    description:
      - Lifetime in seconds of the host claim each start takes; it is renewed while the workflow runs and released
        when it ends. A controller that dies between the claim and the start leaves the host claimed this long.
    type: int
    default: 60
  port:
    description: TCP port of the agents; falls back to E(ORCHESTRA_FLEET_PORT), then V(9009).
    type: int
  scheme:
    description: V(https) when the agents serve TLS; falls back to E(ORCHESTRA_FLEET_SCHEME), then V(http).
    type: str
    choices: [http, https]
  validate_certs:
    description: Verify the agents' TLS certificates.
    type: bool
    default: true
  ca_path:
    description: CA bundle (PEM) for the agents' certificates; falls back to E(ORCHESTRA_FLEET_CA_PATH).
    type: path
  token:
    description:
      - The agents' token, used to sign claims and workflow starts (mutations); it is never sent itself, never stored.
      - Falls back to E(ORCHESTRA_FLEET_TOKEN), E(ORCHESTRA_AGENT_TOKEN), then O(token_file).
    type: str
  token_file:
    description:
      - File holding the agents' token, used when O(token) is unset; falls back to E(ORCHESTRA_FLEET_TOKEN_FILE),
        then C(~/.config/orchestra-fleet/agent-token) when that exists (the file the agent role provisions).
    type: path
  auth_reads:
    description: Sign reads too (for agents that run with C(auth_reads)).
    type: bool
    default: false
  agent_timeout:
    description: Deadline in seconds for one agent's answer (O(timeout) is the wait's).
    type: float
    default: 5.0
  concurrency:
    description: How many agents the discovery of O(hosts) and O(subnets) asks at once.
    type: int
    default: 16
  state:
    description: V(present) queues the workflows; V(cancelled) cancels the entry of O(request_id) or O(job_id).
    type: str
    choices: [present, cancelled]
    default: present
  wait:
    description: Wait until the workflows have ended, driving the queue meanwhile.
    type: bool
    default: true
  timeout:
    description: Seconds the task waits with O(wait=true) for all its workflows (V(60) with O(state=cancelled)).
    type: int
    default: 3600
  poll_interval:
    description: Seconds between queue steps while waiting.
    type: float
    default: 1.0
  cancel_on_timeout:
    description: When the wait times out, cancel the unfinished workflows.
    type: bool
    default: false
  cancel_on_interrupt:
    description: When the waiting task is interrupted (SIGINT, SIGTERM), cancel the unfinished workflows.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is queued, cancelled or waited for, and no host is registered; C(changed) says whether
        it would be.
  diff_mode:
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - The task runs on the controller (C(delegate_to=localhost)); the workflows run on the fleet hosts.
'''

EXAMPLES = r'''
- name: Run one workflow on any lazy host of the fleet and wait (fails when it exits non-zero)
  orchestra.fleet.workflow_job:
    name: sample-17
    image: registry.example.com/pipeline:2.1
    ini: "{{ lookup('ansible.builtin.file', 'workflows/sample-17.ini') }}"
    command: [pipeline, --ini, /orchestra/workflow.ini]
    request_id: sample-17
    hosts: "{{ groups['lazy'] }}"
  delegate_to: localhost

- name: The old "orchestra schedule IP INI" - on that host only, return at once
  orchestra.fleet.workflow_job:
    name: sample-18
    image: registry.example.com/pipeline:2.1
    ini: "{{ lookup('ansible.builtin.file', 'workflows/sample-18.ini') }}"
    host: 10.20.0.11
    hosts: [10.20.0.11]
    wait: false
  delegate_to: localhost

- name: A list of workflows on a subnet; keeps every lazy host busy until all are done
  orchestra.fleet.workflow_job:
    image: registry.example.com/pipeline:2.1
    command: [pipeline, --ini, /orchestra/workflow.ini]
    subnets: [10.20.0.0/24]
    workflows:
      - {name: a, ini: "[sample]\nid = a\n", request_id: batch7-a}
      - {name: b, ini: "[sample]\nid = b\n", request_id: batch7-b}
    timeout: 86400
  delegate_to: localhost

- name: Cancel one
  orchestra.fleet.workflow_job:
    request_id: batch7-b
    state: cancelled
  delegate_to: localhost
'''

RETURN = r'''
created:
  description: Whether this task queued at least one new entry.
  returned: state is present
  type: bool
  sample: true
state:
  description: The (first) workflow's state in the queue at the end of the task.
  returned: when an entry exists
  type: str
  sample: SUCCEEDED
host:
  description: The host the (first) workflow was placed on, or null while it waits.
  returned: when an entry exists
  type: str
  sample: 10.20.0.11
workflow_id:
  description: The agent's id of the (first) workflow, or null before it started.
  returned: when an entry exists
  type: str
  sample: 5d0c2a6b9e
timings:
  description: How long the (first) workflow waited and ran, in seconds (as M(orchestra.fleet.masking_job)).
  returned: when an entry exists
  type: dict
  contains:
    queued_seconds: {description: From queueing to the start., type: float, sample: 0.4}
    run_seconds: {description: From the start to the end., type: float, sample: 61.3}
    total_seconds: {description: From queueing to the end., type: float, sample: 61.7}
job:
  description:
    - The (first) queue entry, with the keys of RV(orchestra.fleet.masking_job#module:job) plus RV(job.kind) and
      RV(job.workflow_id). Its C(engine) is the host and its C(execution_id) the host claim's fencing number.
  returned: when an entry exists
  type: dict
  contains:
    id: {description: Queue entry id., type: int, sample: 17}
    request_id: {description: The request id., type: str, sample: sample-17}
    job_name: {description: The workflow's name., type: str, sample: sample-17}
    kind: {description: V(fleet) for a workflow (V(masking) for a masking job)., type: str, sample: fleet}
    state: {description: The queue state., type: str, sample: SUCCEEDED}
    engine: {description: The fleet host., type: str, sample: 10.20.0.11}
    execution_id: {description: The fencing number of the claim the workflow was started under., type: int, sample: 12}
    workflow_id: {description: The agent's workflow id., type: str, sample: 5d0c2a6b9e}
    error: {description: "Why it failed (exit code and the end of its log), or null.", type: str, sample: null}
    error_kind: {description: "For a FAILED entry, why (see RV(error_kind)).", type: str, sample: null}
jobs:
  description: Every queue entry this task named, in the order given (the same keys as RV(job)).
  returned: when entries exist
  type: list
  elements: dict
summary:
  description: Counts per state of RV(jobs), and the failed or cancelled ones.
  returned: when entries exist
  type: dict
  contains:
    total: {description: How many workflows., type: int, sample: 200}
    succeeded: {description: How many succeeded., type: int, sample: 199}
    states: {description: Count per queue state., type: dict, sample: {SUCCEEDED: 199, FAILED: 1}}
    failed:
      description: The failed or cancelled workflows with their host and error.
      type: list
      elements: dict
      sample: [{name: sample-3, request_id: sample-3, host: 10.20.0.12, state: FAILED, error: "... exit code 2 ..."}]
hosts:
  description: The fleet as the task's discovery saw it (name, state, reason, usable).
  returned: state is present
  type: list
  elements: dict
error_kind:
  description: >-
    On failure, what went wrong: V(job_failed) (a workflow ran and exited non-zero), V(job_cancelled), V(timeout),
    V(interrupted), V(workflow_refused) (an agent refused the workflow, for example an image outside its allow-list),
    V(unknown_engine) (O(host) is not a known fleet host), V(unknown_job) (no fleet host at all, or no such entry),
    V(store_unavailable), V(bad_parameter), V(engine_error) or V(queue_error).
  returned: failure
  type: str
  sample: job_failed
'''

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_module import (
    fleet_argument_spec, open_fleet_queue, spec_from, summary_of)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    interruptible, job_outcome, job_timings, queue_errors, store_url_of)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import TERMINAL_STATES, WaitInterrupted


def module_argument_spec():
    spec = fleet_argument_spec()
    spec.update(
        name=dict(type='str'),
        image=dict(type='str'),
        command=dict(type='list', elements='str'),
        env=dict(type='dict'),
        labels=dict(type='dict'),
        files=dict(type='list', elements='dict', options=dict(path=dict(type='str', required=True),
                                                              content=dict(type='str', required=True))),
        ini=dict(type='str'),
        ini_path=dict(type='str', default='/orchestra/workflow.ini'),
        workflows=dict(type='list', elements='dict'),
        request_id=dict(type='str'),
        rerun=dict(type='bool', default=False),
        job_id=dict(type='int'),
        priority=dict(type='int', default=0),
        host=dict(type='str'),
        state=dict(type='str', default='present', choices=['present', 'cancelled']),
        wait=dict(type='bool', default=True),
        timeout=dict(type='int', default=3600),
        poll_interval=dict(type='float', default=1.0),
        cancel_on_timeout=dict(type='bool', default=False),
        cancel_on_interrupt=dict(type='bool', default=False),
    )
    return spec


DEFAULT_KEYS = ('name', 'image', 'command', 'env', 'labels', 'files', 'ini', 'ini_path', 'host', 'priority')


def entries(params):
    """The workflows this task names: the `workflows` list, or the single one of the options."""
    defaults = dict((key, params.get(key)) for key in DEFAULT_KEYS)
    if params['workflows']:
        return [spec_from(entry, defaults) for entry in params['workflows']]
    return [spec_from({'request_id': params['request_id']}, defaults)]


def results_of(jobs):
    first = jobs[0]
    return dict(job=first, jobs=jobs, state=first.get('state'), host=first.get('engine'), workflow_id=first.get('workflow_id'),
                timings=job_timings(first), summary=summary_of(jobs))


def outcome_kind(job, timed_out):
    if job.get('state') == 'FAILED':
        return job.get('error_kind') or 'job_failed'
    if job.get('state') == 'CANCELLED' and not timed_out:
        return 'job_cancelled'
    return 'timeout'


def wait_for(module, queue, jobs, result):
    params = module.params
    started = time.time()
    try:
        with interruptible():
            jobs = queue.wait([job['id'] for job in jobs], params['timeout'], poll_interval=params['poll_interval'],
                              cancel_on_timeout=params['cancel_on_timeout'], cancel_on_interrupt=params['cancel_on_interrupt'])
    except WaitInterrupted as interrupted:
        result.update(results_of(interrupted.jobs))
        module.fail_json(msg='%s' % interrupted, error_kind='interrupted', **result)
    result.update(results_of(jobs))
    timed_out = time.time() - started >= params['timeout']
    failures = []
    for job in jobs:
        failed, message, _warnings = job_outcome(job, timed_out=timed_out and job.get('state') not in TERMINAL_STATES)
        if failed:
            failures.append((job, message))
    if failures:
        job, message = failures[0]
        more = ' (and %d more of %d workflows failed)' % (len(failures) - 1, len(jobs)) if len(failures) > 1 else ''
        module.fail_json(msg=message + more, error_kind=outcome_kind(job, job.get('state') not in TERMINAL_STATES), **result)
    result['msg'] = '%d workflow(s) succeeded' % len(jobs)
    module.exit_json(**result)


def present(module, queue):
    params = module.params
    try:
        wanted = entries(params)
    except ValueError as error:
        module.fail_json(msg=str(error), error_kind='bad_parameter')
    hosts = []
    if not module.check_mode:
        hosts = queue.refresh_hosts()['hosts']
    created_any, jobs = False, []
    for spec, request_id, host, priority in wanted:
        created, job = queue.enqueue_workflow(spec, request_id=request_id, priority=priority, host=host, rerun=params['rerun'],
                                              dry_run=module.check_mode)
        created_any = created_any or created
        jobs.append(job)
    result = dict(changed=created_any, created=created_any, hosts=hosts)
    if module.check_mode:
        module.exit_json(msg='would queue %d workflow(s)' % sum(1 for job in jobs if job.get('id') is None), **result)
    result.update(results_of(jobs))
    if params['wait']:
        with queue_errors(module, store_url=store_url_of(module), **result):
            wait_for(module, queue, jobs, result)
    result['msg'] = 'queued %d workflow(s)' % len(jobs)
    module.exit_json(**result)


def cancel(module, queue):
    params = module.params
    key = params['request_id'] if params['request_id'] is not None else params['job_id']
    job = queue.job(key)
    if job.get('kind') != 'fleet':
        module.fail_json(msg='queue entry %s is masking job %s, not a workflow: cancel it with orchestra.fleet.masking_job'
                         % (key, job.get('job_name')), error_kind='bad_parameter')
    if job.get('state') in TERMINAL_STATES:
        module.exit_json(changed=False, msg='workflow %s already ended (%s)' % (job.get('job_name'), job.get('state')),
                         **results_of([job]))
    job = queue.cancel(key, dry_run=module.check_mode)
    if not module.check_mode and params['wait']:
        job = queue.wait([job['id']], min(params['timeout'], 60), poll_interval=params['poll_interval'])[0]
    module.exit_json(changed=True, msg='workflow %s is %s' % (job.get('job_name'), job.get('state')), **results_of([job]))


def main():
    module = AnsibleModule(
        argument_spec=module_argument_spec(),
        required_if=[('state', 'cancelled', ('request_id', 'job_id'), True)],
        mutually_exclusive=[('request_id', 'job_id'), ('workflows', 'request_id')],
        supports_check_mode=True,
    )
    params = module.params
    if params['timeout'] < 0 or params['poll_interval'] <= 0 or params['workflows_per_host'] < 1 or params['claim_ttl'] < 5:
        module.fail_json(msg='timeout must be 0 or more, poll_interval more than 0, workflows_per_host at least 1 and '
                             'claim_ttl at least 5', error_kind='bad_parameter')
    if params['state'] == 'present' and not params['workflows'] and not (params['name'] and params['image']):
        module.fail_json(msg='state=present needs name and image, or workflows', error_kind='bad_parameter')
    queue = open_fleet_queue(module)
    with queue_errors(module, store_url=store_url_of(module)):
        if params['state'] == 'cancelled':
            cancel(module, queue)
        else:
            present(module, queue)


if __name__ == '__main__':
    main()
