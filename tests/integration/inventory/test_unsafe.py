"""Nothing an agent says is ever templated on the controller, on any supported ansible-core (issue 14).

Fake agents on loopback answer the real protocol (documents our client accepts, so the payload
reaches Ansible instead of being rejected), with a Jinja payload in every string field: reason,
host name, version, claim fields, container names and labels, Docker errors, the double-booking
reason, claim answers and a claim refusal. Each payload would create its own marker file through
the `pipe` lookup. `ansible-inventory --list`, a play that prints host vars, `compose` /
`groups` / `keyed_groups` over those fields, the `fleet_hosts` lookup and the `claim` module all
run, and no marker file appears.

Runs with the ansible CLIs next to the running Python (the version matrix runs it in a venv per
ansible-core), needs no root, and uses nothing that only ansible-core 2.19 has.
"""
import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.support.ansible_json import plain
from tests.support.lab import ports
from tests.support.misbehaving import MisbehavingServer

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(FLEET_ROOT)))
BUSY, DOUBLE = '127.0.0.61', '127.0.0.62'


class Payloads:
    """One payload per field, each touching a marker file of its own, so a failure names the field."""

    def __init__(self, directory):
        self.directory = directory
        self.token = uuid.uuid4().hex[:8]

    def __call__(self, field):
        return "{{ lookup('pipe', 'touch %s/PWNED-%s-%s') }}" % (self.directory, field, self.token)

    def fired(self):
        return sorted(name for name in os.listdir(self.directory) if name.startswith('PWNED-'))


def busy_state(p):
    return {
        'hostname': p('hostname'), 'version': p('version'), 'state': 'busy', 'reason': p('reason'),
        'running': 1, 'failed_workflows': 0, 'busy': True, 'failed': False, 'claimed': True, 'fencing': 3,
        'claim': {'id': p('claim_id'), 'owner': p('claim_owner'), 'note': p('claim_note'), 'fencing': 3, 'ttl': 60,
                  'expires_at': p('claim_expires_at'), 'created_at': p('claim_created_at')},
        'containers': [{'id': p('container_id'), 'name': p('container_name'), 'image': p('container_image'),
                        'status': p('container_status'), 'labels': {p('label_key'): p('label_value')}}],
        'docker': {'reachable': True, 'error': p('docker_error'), 'version': p('docker_version')},
    }


def double_state(p):
    return {'hostname': 'w2', 'version': '0.1.0', 'state': 'busy', 'reason': p('double_agent_reason'), 'running': 2,
            'failed_workflows': 0, 'fencing': 9, 'claim': None,
            'double_booking': {'reason': p('double_booking_reason'), 'claim_id': p('double_booking_claim')}}


@pytest.fixture(name='agents')
def agents_fixture(tmp_path):
    markers = tmp_path / 'markers'
    markers.mkdir()
    p = Payloads(str(markers))
    port = ports.free_port()
    granted = {'id': p('granted_id'), 'secret': 'not-a-payload', 'fencing': 4, 'owner': p('granted_owner'), 'ttl': 60,
               'expires_at': p('granted_expires_at'), 'created_at': p('granted_created_at')}
    refusal = {'error': 'conflict', 'message': p('refusal_message'), 'state': 'busy'}
    servers = [
        MisbehavingServer('json', BUSY, port, routes={'/v1/state': (200, busy_state(p)), ('POST', '/v1/claims'): (201, granted)}),
        MisbehavingServer('json', DOUBLE, port, routes={'/v1/state': (200, double_state(p)), ('POST', '/v1/claims'): (409, refusal)}),
    ]
    for server in servers:
        server.start()
    try:
        yield port, p, tmp_path
    finally:
        for server in servers:
            server.stop()


def env():
    out = dict(os.environ)
    out.update(ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_INVENTORY_UNPARSED_FAILED='1', ANSIBLE_NOCOLOR='1',
               ANSIBLE_RETRY_FILES_ENABLED='False', ANSIBLE_HOST_KEY_CHECKING='False',
               PATH=os.path.dirname(sys.executable) + os.pathsep + out.get('PATH', ''))
    for key in [k for k in out if k.startswith('ORCHESTRA_FLEET_') or k == 'ANSIBLE_CONFIG']:
        out.pop(key)
    return out


def run(*argv):
    """An ansible CLI of the running Python's venv; the timeout is a hang guard, not a speed assertion."""
    command = [os.path.join(os.path.dirname(sys.executable), argv[0])] + list(argv[1:])
    return subprocess.run(command, env=env(), cwd=FLEET_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=180, check=False)


def inventory(directory, port):
    path = os.path.join(str(directory), 'payload.orchestra.yml')
    with open(path, 'w') as handle:
        json.dump({'plugin': 'orchestra.fleet.fleet', 'hosts': [BUSY, DOUBLE], 'port': port, 'timeout': 3,
                   'compose': {'seen_reason': 'orchestra_reason', 'seen_version': 'orchestra_agent.version',
                               'seen_container': 'orchestra_agent.containers[0].name | default("")',
                               'seen_owner': 'orchestra_claim_owner | default("")',
                               'seen_docker_error': 'orchestra_agent.docker.error | default("")'},
                   'groups': {'payload_claimed': 'orchestra_claim_owner is defined and orchestra_claim_owner is search("lookup")'},
                   'keyed_groups': [{'key': 'orchestra_agent.hostname', 'prefix': 'agent_host'}]}, handle)
    return path


def test_inventory_list_keeps_payloads_as_data_and_compose_works(agents):
    port, p, directory = agents
    result = run('ansible-inventory', '-i', inventory(directory, port), '--list')
    assert result.returncode == 0, result.stderr
    data = plain(json.loads(result.stdout))
    assert p.fired() == []
    busy, double = data['_meta']['hostvars'][BUSY], data['_meta']['hostvars'][DOUBLE]
    # The payloads arrive as plain text, and compose/groups/keyed_groups still work over them.
    assert busy['orchestra_reason'] == p('reason') and busy['seen_reason'] == p('reason')
    assert busy['seen_version'] == p('version') and busy['orchestra_agent_version'] == p('version')
    assert busy['seen_container'] == p('container_name') and busy['seen_docker_error'] == p('docker_error')
    assert busy['orchestra_claim_owner'] == p('claim_owner') == busy['seen_owner']
    assert data['payload_claimed']['hosts'] == [BUSY]
    assert [name for name in data if name.startswith('agent_host')], sorted(data)
    assert double['orchestra_state'] == 'double_booked' and p('double_booking_reason') in double['orchestra_reason']
    assert data['double_booked']['hosts'] == [DOUBLE]
    assert p.fired() == []


def test_plays_over_hostvars_lookup_and_claim_results_execute_nothing(agents):
    port, p, directory = agents
    playbook = os.path.join(str(directory), 'payload.yml')
    with open(playbook, 'w') as handle:
        handle.write('''
- name: Print everything the agents said
  hosts: busy:double_booked
  gather_facts: false
  tasks:
    - name: All host vars
      ansible.builtin.debug:
        var: hostvars[inventory_hostname]
    - name: Composed and lean vars inside a template
      ansible.builtin.debug:
        msg: "{{ orchestra_reason }} {{ seen_reason }} {{ seen_container }} {{ orchestra_agent_hostname | default('') }}"

- name: The lookup and the claim module
  hosts: localhost
  gather_facts: false
  vars:
    ansible_connection: local
    ansible_python_interpreter: %(python)s
  tasks:
    - name: Lookup with details
      ansible.builtin.set_fact:
        found: "{{ query('orchestra.fleet.fleet_hosts', 'busy', 'double_booked', hosts=['%(busy)s', '%(double)s'],
                         port=%(port)d, details=true) }}"
    - name: Print the lookup result
      ansible.builtin.debug:
        msg: "{{ found }}"
    - name: A claim granted with payloads in the answer
      orchestra.fleet.claim: {hosts: ['%(busy)s'], count: 1, owner: me, port: %(port)d, shuffle: false}
      register: granted
    - name: A claim refused with a payload as the reason
      orchestra.fleet.claim: {hosts: ['%(double)s'], count: 1, owner: me, port: %(port)d, all_or_nothing: true}
      register: refused
      ignore_errors: true
    - name: Print both claim results
      ansible.builtin.debug:
        msg: "{{ granted.claims }} {{ refused.msg }} {{ refused.unclaimed }}"
    - name: Print the refusal through a template
      ansible.builtin.debug:
        msg: "why: {{ refused.msg }}"
''' % {'python': sys.executable, 'busy': BUSY, 'double': DOUBLE, 'port': port})
    hosts = inventory(directory, port)
    result = run('ansible-playbook', '-i', hosts, '-i', 'localhost,', playbook)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert p.fired() == [], output
    # The payloads were printed as text, so they did reach the templating engine.
    assert "lookup('pipe', 'touch %s/PWNED-reason-" % p.directory in output
    assert 'PWNED-refusal_message-' in output and 'PWNED-granted_owner-' in output
    assert 'PWNED-double_booking_reason-' in output and 'PWNED-container_name-' in output
