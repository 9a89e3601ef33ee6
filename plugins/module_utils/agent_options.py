# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent connection options of the modules that talk to fleet agents (claim, workflow_job): one definition.

Their documentation is the doc fragment orchestra.fleet.fleet (module); the environment variables are the
inventory plugin's, so an AWX credential injects the same values into all of them.
"""

from ansible.module_utils.basic import env_fallback


def agent_connection_spec(timeout_option='timeout'):
    """argument_spec entries for reaching agents; `timeout_option` names the per-request timeout (a module whose
    own `timeout` means something else, such as a wait, calls it differently)."""
    spec = dict(
        port=dict(type='int', fallback=(env_fallback, ['ORCHESTRA_FLEET_PORT'])),
        scheme=dict(type='str', choices=['http', 'https'], fallback=(env_fallback, ['ORCHESTRA_FLEET_SCHEME'])),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path', fallback=(env_fallback, ['ORCHESTRA_FLEET_CA_PATH'])),
        token=dict(type='str', no_log=True, fallback=(env_fallback, ['ORCHESTRA_FLEET_TOKEN', 'ORCHESTRA_AGENT_TOKEN'])),
        token_file=dict(type='path', fallback=(env_fallback, ['ORCHESTRA_FLEET_TOKEN_FILE'])),
        auth_reads=dict(type='bool', default=False),
        concurrency=dict(type='int', default=16),
    )
    spec[timeout_option] = dict(type='float', default=5.0)
    return spec
