#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: claim
short_description: Claim, renew or release lazy fleet hosts through their orchestra agents
version_added: 0.1.0
description:
  - With O(state=claimed), asks the agents of O(hosts) for a claim until O(count) hosts are held. Each agent grants a
    claim only when its host is lazy and unclaimed, so two playbooks claiming from the same hosts at once never
    get the same host. Claims go out in waves no larger than the number still missing, so the module never holds
    more than O(count) hosts.
  - With O(all_or_nothing=true), claims already granted are released again when O(count) cannot be reached.
  - With O(state=renewed) or O(state=released), renews or releases the O(claims) returned by an earlier run.
  - "Runs on the controller (C(delegate_to: localhost) or a play on V(localhost)); it talks HTTP to the agents."
author:
  - orchestra.fleet developers (@orchestra-fleet)
requirements:
  - requests (python library where the module runs)
extends_documentation_fragment:
  - orchestra.fleet.fleet.module
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads the agents' states (claimed) or claim lists (renewed, released) and reports what would change.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  state:
    description: V(claimed) books hosts, V(renewed) extends O(claims), V(released) gives O(claims) back.
    type: str
    choices: [claimed, renewed, released]
    default: claimed
  hosts:
    description:
      - Candidate hosts (names or addresses of their agents), typically C(groups['lazy']) of the
        P(orchestra.fleet.fleet#inventory) inventory. Required with O(state=claimed).
    type: list
    elements: str
    default: []
  count:
    description: How many hosts to claim.
    type: int
    default: 1
  owner:
    description: Who holds the claims (shown by the agents and the inventory). Required with O(state=claimed).
    type: str
  ttl:
    description: Seconds until a claim expires unless renewed (also the extension with O(state=renewed)).
    type: int
    default: 3600
  note:
    description: Free text stored with the claim.
    type: str
  all_or_nothing:
    description: Release the claims already granted and fail when fewer than O(count) hosts could be claimed.
    type: bool
    default: false
  shuffle:
    description:
      - Try candidates in random order, so concurrent schedulers rarely ask the same host first.
        V(false) keeps the order of O(hosts).
    type: bool
    default: true
  claims:
    description:
      - Claims to renew or release, as returned in RV(claims) by O(state=claimed). Renewing changes neither the id
        nor the secret, so keep passing the claims of O(state=claimed).
      - Only each claim's O(claims[].secret) is kept out of logs; hosts, ids and fencing numbers stay readable.
    type: list
    elements: dict
    suboptions:
      host: {description: Host the claim is on., type: str, required: true}
      id: {description: Claim id., type: str, required: true}
      secret: {description: Secret of the claim (never logged)., type: str, required: true}
      fencing:
        description: Fencing number of the claim; when given, the agent refuses the call if it is no longer the claim's.
        type: int
      owner: {description: Owner of the claim (informational)., type: str}
      ttl: {description: Lifetime in seconds (informational)., type: int}
      expires_at: {description: Expiry (informational)., type: str}
      created_at: {description: Creation time (informational)., type: str}
'''

EXAMPLES = r'''
- name: Claim two idle hosts for this run
  orchestra.fleet.claim:
    hosts: "{{ groups['lazy'] }}"
    count: 2
    owner: "nightly-build-{{ ansible_date_time.epoch | default('run') }}"
    ttl: 1800
    all_or_nothing: true
  delegate_to: localhost
  register: booked

- name: Show why candidates were not claimed
  ansible.builtin.debug:
    msg: "{{ item.host }}: {{ item.reason }}"
  loop: "{{ booked.unclaimed }}"

- name: Keep them for another half hour (fails when a claim expired or its fencing number changed)
  orchestra.fleet.claim:
    state: renewed
    claims: "{{ booked.claims }}"
    ttl: 1800
  delegate_to: localhost
  register: renewed

- name: Give them back
  orchestra.fleet.claim:
    state: released
    claims: "{{ booked.claims }}"
  delegate_to: localhost
'''

RETURN = r'''
claims:
  description:
    - The claims now held (O(state=claimed) or O(state=renewed)). Pass those of O(state=claimed) to O(state=renewed)
      and O(state=released) later.
    - With O(state=claimed) each carries its C(secret). Keep that task's output out of logs with C(no_log) on the
      task (the registered variable keeps the secret). Renewed claims carry no C(secret).
  returned: success
  type: list
  elements: dict
  contains:
    host: {description: Host the claim is on., type: str, sample: 10.20.0.11}
    id: {description: Claim id., type: str, sample: 6c1d0e2a}
    secret: {description: Secret needed to renew or release the claim (O(state=claimed) only)., type: str, sample: "<secret>"}
    fencing: {description: Fencing number; grows with every claim on that host., type: int, sample: 7}
    owner: {description: Owner of the claim., type: str, sample: nightly-build}
    ttl: {description: Lifetime in seconds., type: int, sample: 1800}
    expires_at: {description: "Expiry, UTC, ISO 8601.", type: str, sample: "2026-11-22T12:00:00Z"}
    created_at: {description: "Creation time, UTC, ISO 8601.", type: str, sample: "2026-11-22T11:30:00Z"}
unclaimed:
  description:
    - Candidates that were asked (or, in check mode, looked at) and not claimed, with the agent's reason (busy,
      already claimed, unreachable, ...).
    - Named so because C(skipped), C(failed) and C(changed) are read by Ansible as the task's own status.
  returned: state=claimed
  type: list
  elements: dict
  sample: [{host: 10.20.0.12, reason: "HTTP 409 conflict: host is busy", state: busy}]
released:
  description: Release results (O(state=released), or partial claims given back under O(all_or_nothing)).
  returned: when something was released
  type: list
  elements: dict
  sample: [{host: 10.20.0.11, id: 6c1d0e2a, released: true, reason: released}]
complete:
  description: Whether O(count) hosts were claimed (or would be, in check mode).
  returned: state=claimed
  type: bool
would_claim:
  description: Check mode only, the hosts that are lazy now and would be claimed.
  returned: check mode with state=claimed
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from ansible_collections.orchestra.fleet.plugins.module_utils import agent_options
from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_claims


def argument_spec():
    spec = dict(
        state=dict(type='str', choices=['claimed', 'renewed', 'released'], default='claimed'),
        hosts=dict(type='list', elements='str', default=[]),
        count=dict(type='int', default=1),
        owner=dict(type='str'),
        ttl=dict(type='int', default=3600),
        note=dict(type='str'),
        all_or_nothing=dict(type='bool', default=False),
        shuffle=dict(type='bool', default=True),
        claims=dict(type='list', elements='dict', options=dict(
            host=dict(type='str', required=True),
            id=dict(type='str', required=True),
            # Only the secret is masked: no_log on the whole list would also mask hosts, ids and fencing
            # numbers (every value of a no_log option is scrubbed from the output), and so the results.
            secret=dict(type='str', required=True, no_log=True),
            fencing=dict(type='int'),
            owner=dict(type='str'),
            ttl=dict(type='int'),
            expires_at=dict(type='str'),
            created_at=dict(type='str'),
        )),
    )
    spec.update(agent_options.agent_connection_spec())
    return spec


def client_factory(params):
    port = params['port'] or agent_client.DEFAULT_PORT
    scheme = params['scheme'] or 'http'
    verify = agent_client.verify_setting(params['validate_certs'], params['ca_path'])
    session = agent_client.new_session(pool_size=max(1, params['concurrency']))
    credentials = agent_client.client_auth(params['token'], params['token_file'], params['auth_reads'])

    def client_for(host):
        return agent_client.AgentClient(agent_client.agent_url(host, port, scheme), token=credentials,
                                        timeout=params['timeout'], verify=verify, session=session)
    return client_for


def run_claimed(module, client_for):
    params = module.params
    if params['count'] < 1:
        module.fail_json(msg='count must be at least 1')
    candidates = fleet_claims.order_candidates(params['hosts'], params['shuffle'])
    if module.check_mode:
        plan = fleet_claims.plan_claims(candidates, params['count'], client_for, params['concurrency'])
        module.exit_json(changed=bool(plan['would_claim']), claims=[], **plan)
    outcome = fleet_claims.claim_hosts(candidates, params['count'], params['owner'], params['ttl'], client_for,
                                       note=params['note'], all_or_nothing=params['all_or_nothing'],
                                       concurrency=params['concurrency'], timeout=params['timeout'])
    changed = bool(outcome['claims'] or outcome['released'])
    if not outcome['complete'] and (params['all_or_nothing'] or not outcome['claims']):
        reasons = '; '.join('%s: %s' % (s['host'], s['reason']) for s in outcome['unclaimed'][:10]) or 'no candidate hosts'
        granted = len(outcome['claims']) or len(outcome['released'])
        module.fail_json(msg='claimed %d of %d host(s)%s: %s' % (
            granted, params['count'],
            ', released them again (all_or_nothing)' if outcome['released'] else '', reasons), changed=changed, **outcome)
    if not outcome['complete']:
        module.warn('claimed only %d of %d host(s)' % (len(outcome['claims']), params['count']))
    module.exit_json(changed=changed, **outcome)


def run_renewed_or_released(module, client_for):
    params = module.params
    claims = params['claims'] or []
    if module.check_mode:
        held = [dict((key, value) for key, value in claim.items() if key != 'secret' and value is not None)
                for claim in fleet_claims.existing_claims(claims, client_for)]
        module.exit_json(changed=bool(held), claims=held if params['state'] == 'renewed' else [])
    try:
        if params['state'] == 'renewed':
            module.exit_json(changed=bool(claims), claims=fleet_claims.renew_claims(claims, params['ttl'], client_for, params['concurrency']))
        released = fleet_claims.release_claims(claims, client_for, params['concurrency'])
    except fleet_claims.ClaimError as exc:
        module.fail_json(msg='%s failed: %s' % (params['state'][:-1], exc))
    module.exit_json(changed=any(r['released'] for r in released), released=released, claims=[])


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[('state', 'claimed', ('owner',)), ('state', 'renewed', ('claims',)), ('state', 'released', ('claims',))],
        supports_check_mode=True,
    )
    if not agent_client.HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib('requests'), exception=str(agent_client.REQUESTS_IMPORT_ERROR))
    try:
        client_for = client_factory(module.params)
    except agent_client.TokenFileError as exc:
        module.fail_json(msg=str(exc))
    if module.params['state'] == 'claimed':
        run_claimed(module, client_for)
    run_renewed_or_released(module, client_for)


if __name__ == '__main__':
    main()
