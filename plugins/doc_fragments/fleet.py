# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:

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
      - The agents' token. It is never sent; mutations (and reads, with O(auth_reads)) are signed with it
        (HMAC-SHA256 over the request and a single-use nonce the agent issues), so a host that answers on the
        agent port learns nothing it can reuse. Probes send no credential.
      - When unset, O(token_file) is read; when that is unset too, the file the P(orchestra.fleet.agent#role) role
        provisions, C(~/.config/orchestra-fleet/agent-token), if it exists.
      - Prefer the environment variable (an AWX credential can inject it) over writing it into a file.
    type: str
    env:
      - name: ORCHESTRA_FLEET_TOKEN
      - name: ORCHESTRA_AGENT_TOKEN
  token_file:
    description:
      - File on the controller holding the agents' token (used when O(token) is unset). An unreadable or empty file
        is an error.
      - Unset, C(~/.config/orchestra-fleet/agent-token) is used when it exists (where the agent role keeps the
        token it provisions).
    type: path
    env:
      - name: ORCHESTRA_FLEET_TOKEN_FILE
  auth_reads:
    description:
      - Sign reads too. Needed when the agents run with C(auth_reads) (the role's C(orchestra_agent_auth_reads));
        each signed read costs one more round trip (the nonce).
    type: bool
    default: false
    env:
      - name: ORCHESTRA_FLEET_AUTH_READS
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
  subnets_file:
    description:
      - The original tool's C(~/.orchestra_subnet), one CIDR a line (blank lines and C(#) comments allowed).
        Its subnets are swept like O(subnets) and count against O(max_addresses).
      - An unreadable file or a line that is not a CIDR is a parse error naming the file and the line.
    type: path
    env:
      - name: ORCHESTRA_FLEET_SUBNETS_FILE
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
    description:
      - The agents' token, used to sign claims (mutations); it is never sent itself.
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
  timeout:
    description: Deadline in seconds for one agent's answer.
    type: float
    default: 5.0
  concurrency:
    description: How many agents are contacted at once.
    type: int
    default: 16
'''
