# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
name: fleet
short_description: Fleet hosts grouped by what their orchestra agent says (lazy, busy, failed, claimed, ...)
version_added: 0.1.0
description:
  - Scans subnets, host lists, the original tool's cache file and its C(~/.orchestra_subnet) for orchestra agents, asks each agent for its
    state and puts every host that answers into the group of its state, one of V(lazy), V(busy), V(failed),
    V(claimed), V(unknown) (the agent cannot see Docker), V(double_booked) (the agent reports a workload running
    under a stale or foreign claim; outranks every other state), V(unprovisioned) (SSH answers, the agent port
    does not), V(unreachable) or V(invalid) (something answered, but not the agent protocol).
  - A host is also put in each of V(failed), V(busy) and V(claimed) whose flag its agent reports, because those
    can hold together (a claimed host running its workflow is busy and claimed); V(lazy) stays exclusive.
  - Each host gets lean variables prefixed C(orchestra_), among them C(orchestra_state) and C(orchestra_reason),
    the one-line reason for its group. O(compose), O(groups) and O(keyed_groups) also see the agent's whole
    state document as C(orchestra_agent).
  - A dead, slow or lying host never fails or stalls the run. Every host has O(timeout) from the moment its agent
    port accepted, so however many hosts hang the run ends within O(timeout) of the end of the TCP sweep.
    A bad configuration is a parse error.
  - Every value that comes from an agent is marked unsafe (never templated), on every supported ansible-core.
  - The configuration file name must end in C(.orchestra.yml) or C(.orchestra.yaml).
author:
  - orchestra.fleet developers (@orchestra-fleet)
requirements:
  - requests (python library on the controller)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
  - orchestra.fleet.fleet
  - orchestra.fleet.fleet.sources
options:
  plugin:
    description: Marks the file as a configuration of this plugin.
    type: str
    required: true
    choices: [orchestra.fleet.fleet]
'''

EXAMPLES = r'''
# fleet.orchestra.yml: every agent of two subnets, except the control node
plugin: orchestra.fleet.fleet
subnets:
  - 10.20.0.0/24
  - 10.20.1.0/24
exclude:
  - 10.20.0.1
timeout: 2
# ansible-inventory -i fleet.orchestra.yml --graph lazy

---
# Coming from orchestra: its subnet file (one CIDR a line) as the source, the control node left out
plugin: orchestra.fleet.fleet
subnets_file: ~/.orchestra_subnet
exclude:
  - 10.20.0.1

---
# The original tool's cache file, TLS agents, cached for five minutes, extra groups by agent version
plugin: orchestra.fleet.fleet
hosts_file: /var/cache/orchestra/hosts
scheme: https
ca_path: /etc/orchestra/ca.pem
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/orchestra-fleet
cache_timeout: 300
keyed_groups:
  - key: orchestra_agent.version | default('none')
    prefix: agent
compose:
  ansible_user: "'ops'"
'''

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_discovery


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = 'orchestra.fleet.fleet'

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(('.orchestra.yml', '.orchestra.yaml'))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        try:
            config = self._read_config_data(path)
        except AnsibleParserError:
            raise
        except AnsibleError as exc:
            raise AnsibleParserError('%s: %s' % (path, exc))
        self._reject_unknown_options(config, path)
        try:
            agent_client.require_requests()
            targets = fleet_discovery.expand_sources(**fleet_discovery.source_options(self.get_option))
        except (fleet_discovery.FleetConfigError, ImportError) as exc:
            raise AnsibleParserError('%s: %s' % (path, exc))

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache')
        # --flush-cache arrives as cache=False: probe again and overwrite the entry.
        needs_update = use_cache and not cache
        reports = None
        if use_cache and cache:
            try:
                reports = self._cache[cache_key]
            except KeyError:
                needs_update = True
        if reports is None:
            warnings = []
            reports = fleet_discovery.discover(targets, warnings=warnings, **fleet_discovery.probe_options(self.get_option))
            for warning in warnings:
                self.display.warning('%s: %s' % (path, warning))
        if needs_update:
            # Written only after a real probe: a cache hit must not extend the entry's life.
            self._cache[cache_key] = reports
        self._populate(reports)

    def _reject_unknown_options(self, config, path):
        unknown = sorted(set(config) - set(self._options))
        if unknown:
            raise AnsibleParserError('%s: unknown option(s) %s for %s; valid options: %s'
                                     % (path, ', '.join(unknown), self.NAME, ', '.join(sorted(self._options))))

    def _populate(self, reports):
        for state in fleet_discovery.STATES:
            self.inventory.add_group(state)
        strict = self.get_option('strict')
        for report in reports:
            host = self.inventory.add_host(report['name'], group=report['state'])
            for group in fleet_discovery.groups_of(report)[1:]:
                self.inventory.add_child(group, host)
            # Everything below came from the network (an agent, or whatever answered on its port): marked
            # unsafe so that no core ever templates it. ansible-core 2.19 trusts no inventory string anyway;
            # 2.16 to 2.18 would run a Jinja payload in a reason as soon as a play or compose reads it.
            lean = wrap_var(fleet_discovery.host_vars(report))
            if report.get('address') and report['address'] != report['name']:
                lean['ansible_host'] = wrap_var(report['address'])
            for key, value in lean.items():
                self.inventory.set_variable(host, key, value)
            full = dict(lean, orchestra_agent=wrap_var(report.get('agent') or {}), orchestra_address=wrap_var(report.get('address')))
            self._set_composite_vars(self.get_option('compose'), full, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), full, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), full, host, strict=strict)
