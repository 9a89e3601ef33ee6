# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue for the workflow_job module: its options, opening the FleetQueue, and workflow specs from options.

The decisions are pure functions here (spec_from, summary_of) so they are tested without Ansible;
errors, interrupts and outcomes are masking_module's (one queue, one set of error kinds).
"""

import os
import traceback

from ansible.module_utils.basic import env_fallback

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client, agent_options
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import queue_errors, resolve_store, store_url_of
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import STATES

try:
    from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_queue import FleetQueue
    FLEET_IMPORT_ERROR = None
except ImportError:
    FleetQueue = None
    FLEET_IMPORT_ERROR = traceback.format_exc()

DEFAULT_INI_PATH = '/orchestra/workflow.ini'
INI_ENV = 'ORCHESTRA_WORKFLOW_INI'
SPEC_KEYS = ('name', 'image', 'command', 'env', 'labels', 'files')
ENTRY_KEYS = SPEC_KEYS + ('ini', 'ini_path', 'request_id', 'host', 'priority')


def fleet_argument_spec():
    """Store, capacity sources and agent connection options (the claim module's, with agent_timeout: `timeout` is the wait's)."""
    spec = dict(
        store=dict(type='str', fallback=(env_fallback, ['ORCHESTRA_QUEUE_STORE'])),
        hosts=dict(type='list', elements='str', default=[]),
        subnets=dict(type='list', elements='str', default=[]),
        hosts_file=dict(type='path'),
        exclude=dict(type='list', elements='str', default=[]),
        workflows_per_host=dict(type='int', default=1),
        claim_ttl=dict(type='int', default=60),
    )
    spec.update(agent_options.agent_connection_spec('agent_timeout'))
    return spec


def spec_from(entry, defaults=None):
    """A workflow entry (module options, or one item of `workflows`) -> (spec, request_id, host, priority).

    Keys the entry leaves out come from `defaults` (the module's own options). `ini` is an INI file's text:
    the agent mounts it read-only at `ini_path` and the container finds that path in ORCHESTRA_WORKFLOW_INI.
    """
    merged = dict((key, value) for key, value in (defaults or {}).items() if value is not None)
    merged.update((key, value) for key, value in entry.items() if value is not None)
    unknown = set(entry) - set(ENTRY_KEYS)
    if unknown:
        raise ValueError('unknown workflow keys: %s (known: %s)' % (', '.join(sorted(unknown)), ', '.join(ENTRY_KEYS)))
    spec = dict((key, merged.get(key)) for key in SPEC_KEYS)
    if merged.get('ini') is not None:
        path = merged.get('ini_path') or DEFAULT_INI_PATH
        spec['files'] = list(spec.get('files') or []) + [{'path': path, 'content': str(merged['ini'])}]
        spec['env'] = dict(spec.get('env') or {}, **{INI_ENV: path})
    return spec, merged.get('request_id'), merged.get('host'), int(merged.get('priority') or 0)


def summary_of(jobs):
    """Counts per state and the failed ones (name, host, error) for a playbook's summary."""
    counts = dict((state, 0) for state in STATES)
    failed = []
    for job in jobs:
        counts[job.get('state')] = counts.get(job.get('state'), 0) + 1
        if job.get('state') in ('FAILED', 'CANCELLED'):
            failed.append({'name': job.get('job_name'), 'request_id': job.get('request_id'), 'host': job.get('engine'),
                           'state': job.get('state'), 'error': job.get('error') or job.get('reason')})
    return {'total': len(jobs), 'states': counts, 'succeeded': counts.get('SUCCEEDED', 0), 'failed': failed}


def open_fleet_queue(module):
    """Build the FleetQueue from the options; fails the module with a clear message."""
    if FLEET_IMPORT_ERROR:
        module.fail_json(msg='the orchestra.fleet queue could not be imported', exception=FLEET_IMPORT_ERROR)
    if not agent_client.HAS_REQUESTS:
        module.fail_json(msg='the python requests library is required on the controller', error_kind='bad_parameter')
    params = module.params
    with queue_errors(module, store_url=store_url_of(module)):
        url, sqlite_path = resolve_store(params.get('store'))
        try:
            auth = agent_client.client_auth(params['token'], params['token_file'], params['auth_reads'])
        except agent_client.TokenFileError as error:
            module.fail_json(msg=str(error), error_kind='bad_parameter')
        if sqlite_path:
            try:
                os.makedirs(os.path.dirname(sqlite_path), exist_ok=True)
            except OSError as error:
                module.fail_json(msg='cannot create the directory of the queue store %s: %s' % (sqlite_path, error),
                                 error_kind='store_unavailable')
        return FleetQueue(url, hosts=params['hosts'], subnets=params['subnets'], hosts_file=params['hosts_file'],
                          exclude=params['exclude'], port=params['port'], scheme=params['scheme'] or 'http', token=auth,
                          verify=agent_client.verify_setting(params['validate_certs'], params['ca_path']),
                          workflows_per_host=params['workflows_per_host'], claim_ttl=params['claim_ttl'],
                          agent_timeout=params['agent_timeout'], discovery_concurrency=params['concurrency'])
    return None  # not reached: fail_json exits
