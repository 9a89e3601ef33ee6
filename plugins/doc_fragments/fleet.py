# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Agent connection options of the inventory plugin and the lookup (env fallbacks for AWX credentials).
    DOCUMENTATION = r'''
options:
  port:
    description: TCP port of the orchestra agent on every host.
    type: int
    default: 9009
    env:
      - name: ORCHESTRA_FLEET_PORT
  scheme:
    description: V(https) when the agents run with a TLS certificate and key.
    type: str
    choices: [http, https]
    default: http
    env:
      - name: ORCHESTRA_FLEET_SCHEME
  validate_certs:
    description: Verify the agents' TLS certificates (with O(scheme=https)).
    type: bool
    default: true
    env:
      - name: ORCHESTRA_FLEET_VALIDATE_CERTS
  ca_path:
    description: CA bundle (PEM) that signed the agents' certificates; the system trust store when unset.
    type: path
    env:
      - name: ORCHESTRA_FLEET_CA_PATH
  token:
    description:
      - Bearer token of the agents. Only needed when the agents protect reads (C(auth_reads)) or for claims.
      - Prefer the environment variable (an AWX credential can inject it) over writing it into a file.
    type: str
    env:
      - name: ORCHESTRA_FLEET_TOKEN
  timeout:
    description:
      - Hard deadline, in seconds, for one agent's whole answer. A host that accepts the connection and then
        says nothing (a tarpit) is reported as V(unreachable) after this long; it never stalls the run longer.
    type: float
    default: 2.0
    env:
      - name: ORCHESTRA_FLEET_TIMEOUT
  concurrency:
    description: How many agents are asked at once (threads).
    type: int
    default: 32
    env:
      - name: ORCHESTRA_FLEET_CONCURRENCY
'''

    # Where to look for hosts (inventory plugin and lookup).
    SOURCES = r'''
options:
  subnets:
    description:
      - CIDRs to scan, for example V(10.20.0.0/24). Every address is tried on O(port) (and on O(ssh_port) where it refuses).
      - Addresses that answer on neither port are left out; use O(hosts) to have dead hosts reported.
      - From the environment, a comma or space separated list.
    type: list
    elements: str
    default: []
    env:
      - name: ORCHESTRA_FLEET_SUBNETS
  hosts:
    description:
      - Host names or addresses to ask. Unlike subnet addresses, these are always reported, in group V(unreachable) if dead.
      - From the environment, a comma or space separated list.
    type: list
    elements: str
    default: []
    env:
      - name: ORCHESTRA_FLEET_HOSTS
  hosts_file:
    description:
      - The original tool's cache file, one IP address a line (blank lines and C(#) comments allowed).
      - An unreadable file or a line that is not an IP address is a parse error.
    type: path
    env:
      - name: ORCHESTRA_FLEET_HOSTS_FILE
  exclude:
    description:
      - Addresses or CIDRs never to contact (the control node, gateways, ...).
      - Excluding an address that O(hosts) names explicitly is a conflict and a parse error.
    type: list
    elements: str
    default: []
    env:
      - name: ORCHESTRA_FLEET_EXCLUDE
  connect_timeout:
    description:
      - Seconds to wait for a TCP connection. Dead addresses of a directly attached subnet never answer ARP
        (the kernel gives up after about 3 s), so this bounds the scan of a mostly empty subnet.
      - The default suits a LAN or a routed network with round trips well under 300 ms (the SYN-ACK comes from
        the host's kernel, not from the agent); raise it for fleets behind slow or lossy links.
    type: float
    default: 0.3
    env:
      - name: ORCHESTRA_FLEET_CONNECT_TIMEOUT
  connect_concurrency:
    description:
      - Maximum TCP connection attempts in flight during the scan (non-blocking sockets, one thread).
      - Also kept under 3/4 of the kernel's neighbour table limit (C(net.ipv4.neigh.default.gc_thresh3)), since every
        attempt to a new address on a directly attached subnet holds an entry until ARP resolves or fails.
    type: int
    default: 1024
  ssh_port:
    description:
      - Port whose answer marks a host without an agent as V(unprovisioned). V(0) disables the check.
      - It is tried only where it can matter, when the agent port refused the connection (the host is up) or
        for hosts named in O(hosts) or O(hosts_file), so a dead subnet address costs one connection attempt.
    type: int
    default: 22
  max_addresses:
    description: Refuse subnets that add up to more addresses than this (protects against a typo like V(/8)).
    type: int
    default: 65536
'''

    # The same connection options for modules (which take environment fallbacks in their argument_spec).
    MODULE = r'''
options:
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
    description: Bearer token of the agents (claims are mutations and need it); falls back to E(ORCHESTRA_FLEET_TOKEN).
    type: str
  timeout:
    description: Deadline in seconds for one agent's answer.
    type: float
    default: 5.0
  concurrency:
    description: How many agents are contacted at once.
    type: int
    default: 16
'''
