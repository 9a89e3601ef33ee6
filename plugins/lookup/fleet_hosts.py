# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
name: fleet_hosts
short_description: Fleet hosts in a given state (lazy, busy, failed, ...), asked from their agents
version_added: 0.1.0
description:
  - Scans the same sources as the P(orchestra.fleet.fleet#inventory) inventory plugin and returns the hosts
    in any of the groups named by the terms (grouped as the inventory plugin does), in source order.
    The old C(orchestra lazy) command inside a playbook.
  - States are V(lazy), V(busy), V(failed), V(claimed), V(unknown), V(double_booked), V(unprovisioned), V(unreachable)
    and V(invalid).
  - The results are marked unsafe, so nothing an agent sends is ever templated.
author:
  - orchestra.fleet developers (@orchestra-fleet)
requirements:
  - requests (python library on the controller)
extends_documentation_fragment:
  - orchestra.fleet.fleet
  - orchestra.fleet.fleet.sources
options:
  _terms:
    description: States to return. Without terms, V(lazy).
    type: list
    elements: str
  details:
    description:
      - Return one dictionary per host (C(name), C(address), C(state), C(reason), C(agent_url), C(agent)) instead of its name.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Idle hosts of the build subnet
  ansible.builtin.debug:
    msg: "{{ lookup('orchestra.fleet.fleet_hosts', 'lazy', subnets=['10.20.0.0/24'], wantlist=True) }}"

- name: Why hosts are not usable
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.state }} ({{ item.reason }})"
  loop: "{{ query('orchestra.fleet.fleet_hosts', 'failed', 'unreachable', 'invalid', hosts_file='/var/cache/orchestra/hosts', details=true) }}"
'''

RETURN = r'''
_raw:
  description: Host names (or, with O(details=true), dictionaries) of the hosts in the requested states.
  type: list
  elements: raw
'''

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible.utils.unsafe_proxy import wrap_var
from ansible.utils.display import Display

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_discovery

display = Display()


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        states = [str(term) for term in (terms or ['lazy'])]
        try:
            agent_client.require_requests()
            fleet_discovery.select_states([], states)  # validate the terms before any network traffic
            targets = fleet_discovery.expand_sources(**fleet_discovery.source_options(self.get_option))
        except (fleet_discovery.FleetConfigError, ImportError) as exc:
            raise AnsibleError('orchestra.fleet.fleet_hosts: %s' % exc)
        warnings = []
        reports = fleet_discovery.select_states(
            fleet_discovery.discover(targets, warnings=warnings, **fleet_discovery.probe_options(self.get_option)), states)
        for warning in warnings:
            display.warning('orchestra.fleet.fleet_hosts: %s' % warning)
        # Agent strings are never templated: unsafe on every core, whatever allow_unsafe_lookups says.
        if self.get_option('details'):
            return wrap_var([dict((key, report.get(key)) for key in ('name', 'address', 'state', 'reason', 'agent_url', 'agent'))
                             for report in reports])
        return wrap_var([report['name'] for report in reports])
