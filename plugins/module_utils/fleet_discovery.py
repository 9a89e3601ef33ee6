# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find fleet hosts and classify them: the core of the inventory plugin and the lookup.

Three stages, each bounded in time and concurrency:
1. expand_sources(): subnets, hosts, the original tool's cache file and its ~/.orchestra_subnet -> targets.
2. tcp_sweep(): one thread, non-blocking connects to the agent port and to SSH of
   every address, at most `connect_concurrency` in flight, each with its own
   connect timeout (a dead address on a directly attached subnet would otherwise
   hang ~3 s in ARP).
3. probe the addresses whose agent port accepted: GET /v1/state through a bounded
   pool of daemon threads with a hard per-host deadline, so one tarpit can neither
   stall the run nor keep the process alive.
Each host ends in exactly one state with a one-line reason.
"""

import collections
import errno
import ipaddress
import resource
import selectors
import socket
import time

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from ansible_collections.orchestra.fleet.plugins.module_utils.pool import DeadlinePool, run_bounded

# The agent's verdicts, then what discovery adds: double_booked (the agent saw a workload whose claim
# labels are stale or foreign), unprovisioned, unreachable, invalid.
STATES = ('lazy', 'busy', 'failed', 'claimed', 'unknown', 'double_booked', 'unprovisioned', 'unreachable', 'invalid')
DEFAULT_MAX_ADDRESSES = 65536
SSH_PORT = 22


class FleetConfigError(ValueError):
    """A source option is unusable; the message names the option and the value."""


Target = collections.namedtuple('Target', 'name address named')


# ---------------------------------------------------------------------------- sources

def _network(text, option):
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError as exc:
        raise FleetConfigError('%s: %r is not a valid CIDR or address (%s)' % (option, text, exc))


def _subnet_addresses(network):
    if network.num_addresses == 1:
        return [network.network_address]
    return list(network.hosts())


def _read_items_file(option, path, parse, kind):
    """Items of one of the original tool's files: one a line, blank lines and '#' comments allowed.

    parse(text) -> str raises ValueError for a line that is not a *kind*; the error names the option, file and line.
    """
    try:
        with open(path, 'r') as handle:
            lines = handle.read().splitlines()
    except (OSError, IOError, UnicodeDecodeError) as exc:
        raise FleetConfigError('%s: cannot read %s: %s' % (option, path, getattr(exc, 'strerror', None) or exc))
    items = []
    for number, line in enumerate(lines, 1):
        text = line.split('#', 1)[0].strip()
        if not text:
            continue
        try:
            items.append(parse(text))
        except ValueError:
            raise FleetConfigError('%s: %s line %d: %r is not %s' % (option, path, number, text[:60], kind))
    return items


def read_hosts_file(path):
    """Addresses of the original tool's cache file (one IP a line)."""
    return _read_items_file('hosts_file', path, lambda text: str(ipaddress.ip_address(text)), 'an IP address')


def read_subnets_file(path):
    """CIDRs of the original tool's ~/.orchestra_subnet (one CIDR a line)."""
    return _read_items_file('subnets_file', path, lambda text: str(ipaddress.ip_network(text, strict=False)),
                            'a CIDR')


def _is_address(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def expand_sources(subnets=(), hosts=(), hosts_file=None, exclude=(), max_addresses=DEFAULT_MAX_ADDRESSES,
                   subnets_file=None):
    """Targets in source order, de-duplicated. `named` targets (hosts, hosts_file) are reported even when dead."""
    subnets, hosts, exclude = list(subnets or ()), [str(h).strip() for h in hosts or ()], list(exclude or ())
    if not subnets and not hosts and not hosts_file and not subnets_file:
        raise FleetConfigError('no source: set at least one of subnets, subnets_file, hosts or hosts_file')
    # The file's CIDRs are swept like `subnets` (dead addresses left out) and count against max_addresses.
    file_subnets = read_subnets_file(subnets_file) if subnets_file else []
    excluded = [_network(item, 'exclude') for item in exclude]

    def is_excluded(address):
        ip = ipaddress.ip_address(address)
        return any(ip.version == net.version and ip in net for net in excluded)

    for host in hosts:
        if not host:
            raise FleetConfigError('hosts: empty entry')
        if _is_address(host) and is_excluded(host):
            raise FleetConfigError('conflicting sources: %s is listed in hosts and excluded by exclude' % host)

    networks = [_network(item, 'subnets') for item in subnets] + [_network(item, 'subnets_file') for item in file_subnets]
    total = sum(net.num_addresses for net in networks)
    if total > max_addresses:
        raise FleetConfigError('subnets%s: %d addresses exceed max_addresses=%d; split the range or raise the limit'
                               % (' and subnets_file' if file_subnets else '', total, max_addresses))
    named = list(hosts) + (read_hosts_file(hosts_file) if hosts_file else [])
    targets, seen = [], set()
    for name in named:
        if name in seen or (_is_address(name) and is_excluded(name)):
            continue
        seen.add(name)
        targets.append(Target(name, name if _is_address(name) else None, True))
    for network in networks:
        for ip in _subnet_addresses(network):
            address = str(ip)
            if address in seen or is_excluded(address):
                continue
            seen.add(address)
            targets.append(Target(address, address, False))
    if not targets:
        raise FleetConfigError('conflicting sources: exclude removes every address of subnets/subnets_file/hosts/hosts_file')
    return targets


# ---------------------------------------------------------------------------- TCP sweep

def _fd_budget(wanted):
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(wanted, soft - 64)) if soft > 0 else wanted


def _neighbour_budget(wanted):
    """Each connect to a new address holds a kernel neighbour entry until ARP resolves or fails; keep the
    attempts in flight well under the table's hard limit (gc_thresh3), or the kernel drops SYNs to live hosts."""
    try:
        with open('/proc/sys/net/ipv4/neigh/default/gc_thresh3') as handle:
            limit = int(handle.read().strip())
    except (OSError, IOError, ValueError):
        return wanted
    return max(16, min(wanted, limit * 3 // 4))


def tcp_sweep(addresses, ports, connect_timeout, max_in_flight=1024, on_result=None):
    """{(address, port): 'open' | 'refused' | 'reset' | 'timeout' | '<errno name>'} for every pair.

    One thread and non-blocking sockets: a /16 costs file descriptors, not threads.
    on_result(address, port, result) is called as each pair is decided, so the caller
    can start talking to live hosts while dead ones are still timing out; it may return
    further (address, port) pairs to try next (e.g. SSH once the agent port refused).
    """
    pending = collections.deque((address, port) for address in addresses for port in ports)

    def decided(address, port, result):
        more = on_result(address, port, result) if on_result else None
        pending.extendleft(more or ())

    outcome = _Outcome(decided)
    selector = selectors.DefaultSelector()
    in_flight = collections.deque()  # (deadline, sock, key), FIFO == deadline order (one timeout for all)
    limit = _neighbour_budget(_fd_budget(max_in_flight))
    active = 0
    try:
        while pending or active:
            while pending and active < limit:
                address, port = key = pending.popleft()
                family = socket.AF_INET6 if ':' in address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex((address, port))
                if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                    selector.register(sock, selectors.EVENT_WRITE, key)
                    in_flight.append((time.monotonic() + connect_timeout, sock, key))
                    active += 1
                    continue
                outcome[key] = _connect_result(code)
                sock.close()
            wait = max(0.0, in_flight[0][0] - time.monotonic()) if in_flight else 0.0
            for selector_key, _events in selector.select(timeout=wait):
                sock = selector_key.fileobj
                outcome[selector_key.data] = _connect_result(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                selector.unregister(sock)
                sock.close()
                active -= 1
            now = time.monotonic()
            while in_flight and (in_flight[0][2] in outcome or in_flight[0][0] <= now):
                _deadline, sock, key = in_flight.popleft()
                if key not in outcome:
                    outcome[key] = 'timeout'
                    selector.unregister(sock)
                    sock.close()
                    active -= 1
    finally:
        for _deadline, sock, key in in_flight:
            if key not in outcome:
                selector.unregister(sock)
                sock.close()
        selector.close()
    return dict(outcome)


class _Outcome(dict):
    """The sweep's result table, announcing each decision to a callback."""

    def __init__(self, on_result):
        super(_Outcome, self).__init__()
        self._on_result = on_result

    def __setitem__(self, key, value):
        super(_Outcome, self).__setitem__(key, value)
        if self._on_result:
            self._on_result(key[0], key[1], value)


def neighbour_table_overflows():
    """Linux's count of dropped neighbour (ARP) allocations since boot, or None where unknown.

    All network namespaces share one table (net.ipv4.neigh.default.gc_thresh3, 1024 by default);
    scanning a large directly attached subnet fills it with unresolved entries for ~3 s each,
    and the kernel then drops packets, SYNs to live hosts included.
    """
    try:
        with open('/proc/net/stat/arp_cache') as handle:
            lines = handle.read().split('\n')
        header = lines[0].split()
        column = header.index('table_fulls')
        return sum(int(line.split()[column], 16) for line in lines[1:] if line.strip())
    except (OSError, IOError, ValueError, IndexError):
        return None


def _connect_result(code):
    if code == 0:
        return 'open'
    if code == errno.ECONNREFUSED:
        return 'refused'
    if code == errno.ECONNRESET:
        return 'reset'  # accepted, then reset before we looked: something listens there
    return errno.errorcode.get(code, 'errno %d' % code)


# ---------------------------------------------------------------------------- classification

def report(target, state, reason, address=None, agent=None, url=None):
    return {'name': target.name, 'address': address or target.address, 'state': state, 'reason': reason,
            'named': target.named, 'agent': agent, 'agent_url': url}


def double_booking_reason(value):
    """One line from the agent's `double_booking` field (an object with a reason, or a string), None when absent."""
    if value is None or value is False:
        return None
    if isinstance(value, dict):
        text = value.get('reason') or value.get('message')
        return str(text) if text else 'a workload carries a stale or foreign claim'
    if isinstance(value, str) and value.strip():
        return value
    return 'a workload carries a stale or foreign claim'


def classify_agent_state(doc):
    """(state, reason) from a validated /v1/state document: the agent is the arbiter.

    A double booking (a workload labelled with a claim that is stale or not the current one)
    outranks every agent state: such a host must never be handed out as lazy.
    """
    double = double_booking_reason(doc.get('double_booking'))
    if double:
        return 'double_booked', 'double booking: %s' % double
    state = doc['state']
    reason = doc.get('reason') or {'lazy': 'no workload running'}.get(state, state)
    return state, reason


def probe_agent(target, client, port=None, timeout=None):
    """Report for a host whose agent port accepted a TCP connection.

    `port` and `timeout` (what the user configured) only word the reasons; the client carries
    whatever is left of the run's deadline.
    """
    url = client.base_url
    port = port or url.rsplit(':', 1)[-1]
    try:
        doc = client.state()
    except agent_client.AgentNotFound:
        return _probe_legacy(target, client)
    except agent_client.AgentAuthError as exc:
        return report(target, 'invalid', 'agent refused our token: %s' % exc, url=url)
    except agent_client.AgentProtocolError as exc:
        return report(target, 'invalid', 'agent port %s: %s' % (port, exc), url=url)
    except agent_client.AgentTimeout as exc:
        return report(target, 'unreachable', 'agent port %s: %s' % (port, overdue_reason(timeout or client.timeout, exc)), url=url)
    except agent_client.AgentError as exc:
        return report(target, 'unreachable', 'agent port %s: %s' % (port, exc), url=url)
    state, reason = classify_agent_state(doc)
    return report(target, state, reason, agent=doc, url=url)


def overdue_reason(timeout, detail=None):
    """The one wording for "this host did not finish its answer in time", whoever noticed first."""
    return 'no complete answer within %.1f s%s' % (timeout, ' (%s)' % detail if detail else '')


def _probe_legacy(target, client):
    """A 404 on /v1/state may be the original tool: it only knows /busy."""
    try:
        busy = client.legacy_busy()
    except agent_client.AgentError as exc:
        return report(target, 'invalid', 'no /v1/state (HTTP 404) and no legacy /busy: %s' % exc, url=client.base_url)
    agent = {'legacy': True, 'state': 'busy' if busy else 'lazy'}
    reason = 'legacy agent: /busy says %s' % ('TRUE' if busy else 'FALSE')
    return report(target, agent['state'], reason, agent=agent, url=client.base_url)


def classify_ports(target, agent_port_result, ssh_result, port, ssh_port=SSH_PORT):
    """Report for a host whose agent port did not accept; None for an anonymous dead address."""
    if ssh_result == 'open':
        return report(target, 'unprovisioned', 'no agent on port %d (%s), SSH port %d answers' % (port, agent_port_result, ssh_port))
    if not target.named:
        return None
    if not ssh_port:
        return report(target, 'unreachable', 'agent port %d: %s (SSH not probed: ssh_port is 0)' % (port, agent_port_result))
    return report(target, 'unreachable', 'agent port %d: %s, SSH port %d: %s' % (port, agent_port_result, ssh_port, ssh_result))


def _resolve(target):
    try:
        infos = socket.getaddrinfo(target.name, None, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return report(target, 'unreachable', 'name does not resolve: %s' % getattr(exc, 'strerror', exc))
    return target._replace(address=infos[0][4][0])


# A probe running this long is almost surely hung (an agent answers /v1/state in milliseconds): it
# stops holding one of the `concurrency` slots, so hosts queued behind it are still asked in time.
STALL_SECONDS = 0.25
# How many probe threads a run may hold at most, hung ones included, per unit of `concurrency`.
THREADS_PER_SLOT = 8
MAX_PROBE_THREADS = 512


def discover(targets, port=agent_client.DEFAULT_PORT, scheme='http', token=None, verify=True, timeout=2.0,
             connect_timeout=0.3, concurrency=32, connect_concurrency=1024, ssh_port=SSH_PORT, warnings=None):
    """Classify every target; returns reports in target order (dead anonymous addresses left out).

    One clock for the probes: every host gets `timeout` seconds from the moment its agent port
    accepted, whether it waited for a thread or not, so the run ends within `timeout` of the end
    of the TCP sweep however many hosts hang (tarpits, drip servers) and whatever `concurrency` is.
    Conditions the caller should show the user are appended to `warnings` (a list) when given.
    """
    targets = list(targets)
    final = {}
    unresolved = [t for t in targets if t.address is None]
    if unresolved:
        resolved = run_bounded(unresolved, lambda target, _due: _resolve(target), min(concurrency, 16), timeout,
                               lambda t, _started: report(t, 'unreachable', 'name resolution took longer than %.1f s' % timeout),
                               from_submit=True, stall=STALL_SECONDS, max_threads=64)
        lookup = {}
        for index, outcome in resolved.items():
            if isinstance(outcome, dict):
                final[unresolved[index].name] = outcome
            else:
                lookup[unresolved[index].name] = outcome
        targets = [lookup.get(t.name, t) for t in targets]
    live = [t for t in targets if t.name not in final]
    by_address = collections.defaultdict(list)
    for target in live:
        by_address[target.address].append(target)
    sessions = agent_client.ThreadLocalSessions()

    def probe(target, due):
        # What is left of this host's budget: it may have waited for a thread.
        left = max(0.05, due - time.monotonic())
        client = agent_client.AgentClient(agent_client.agent_url(target.address, port, scheme), token=token, timeout=left,
                                          connect_timeout=min(left, max(connect_timeout, 1.0)), verify=verify,
                                          session=sessions.get())
        return probe_agent(target, client, port=port, timeout=timeout)

    def overdue(target, started):
        url = agent_client.agent_url(target.address, port, scheme)
        if started:
            return report(target, 'unreachable', 'agent port %d: %s' % (port, overdue_reason(timeout)), url=url)
        return report(target, 'unreachable', 'agent port %d accepted, but the host was not asked within %.1f s: every probe '
                      'thread was held by hung hosts (raise concurrency)' % (port, timeout), url=url)

    # The watchdog gives its verdict at the deadline itself: no grace a drip server could use.
    pool = DeadlinePool(probe, concurrency, timeout, overdue, from_submit=True, stall=STALL_SECONDS,
                        max_threads=min(MAX_PROBE_THREADS, concurrency * THREADS_PER_SLOT))

    named = set(t.address for t in live if t.named)

    def on_result(address, probed_port, result):
        if probed_port != port:
            return None
        if result in ('open', 'reset'):
            for target in by_address[address]:
                pool.submit(target.name, target)
            return None
        # SSH only where it can matter: the host is up (it refused the agent port), or it was named.
        # A dead address then costs one connect, not two, which halves a /16 sweep.
        if ssh_port and (result == 'refused' or address in named):
            return [(address, ssh_port)]
        return None

    overflows_before = neighbour_table_overflows()
    sweep = tcp_sweep(sorted(by_address), (port,), connect_timeout, connect_concurrency, on_result=on_result)
    overflows = neighbour_table_overflows()
    if warnings is not None and overflows_before is not None and overflows is not None and overflows > overflows_before:
        warnings.append('the kernel neighbour (ARP) table overflowed %d time(s) during the scan, so live hosts may be missing: '
                        'raise net.ipv4.neigh.default.gc_thresh3, shorten ARP probing on the scanning interface, or scan '
                        'smaller ranges (docs/inventory.md)' % (overflows - overflows_before))
    for target in live:
        if sweep[(target.address, port)] not in ('open', 'reset'):
            verdict = classify_ports(target, sweep[(target.address, port)], sweep.get((target.address, ssh_port), 'not probed'),
                                     port, ssh_port)
            if verdict:
                final[target.name] = verdict
    for name, outcome in pool.collect().items():
        if isinstance(outcome, Exception):
            outcome = report(pool_target(live, name), 'invalid', 'probe failed: %s' % outcome)
        final[name] = outcome
    sessions.close()
    return [final[t.name] for t in targets if t.name in final]


def pool_target(targets, name):
    return [t for t in targets if t.name == name][0]


# ---------------------------------------------------------------------------- host variables

def host_vars(host_report, prefix='orchestra_'):
    """Lean host variables: what a play needs, not the whole agent document."""
    agent = host_report.get('agent') or {}
    claim = agent.get('claim') if isinstance(agent.get('claim'), dict) else None
    values = {
        'state': host_report['state'],
        'reason': host_report['reason'],
        'agent_url': host_report.get('agent_url'),
        'agent_hostname': agent.get('hostname'),
        'agent_version': agent.get('version'),
        'running': agent.get('running'),
        'failed_workflows': agent.get('failed_workflows'),
        'claim_owner': claim.get('owner') if claim else None,
        'claim_expires_at': claim.get('expires_at') if claim else None,
        'fencing': agent.get('fencing'),
        'double_booking': agent.get('double_booking') or None,
    }
    return dict((prefix + key, value) for key, value in values.items() if value is not None)


FLAG_GROUPS = ('failed', 'busy', 'claimed')


def groups_of(host_report):
    """The host's state first, then every other of failed / busy / claimed its agent reports.

    The state is one verdict by precedence, but the flags can hold together: a host running work
    with an unacknowledged failure is both failed and busy, and a claimed host whose workflow has
    started is both busy and claimed. `--graph busy` must list every host running work.
    """
    agent = host_report.get('agent') or {}
    groups = [host_report['state']]
    groups.extend(flag for flag in FLAG_GROUPS if agent.get(flag) is True and flag not in groups)
    return groups


def select_states(reports, states):
    """Reports in any of the groups `states` (validated against STATES), as the inventory groups them."""
    wanted = list(states)
    unknown = [s for s in wanted if s not in STATES]
    if unknown:
        raise FleetConfigError('unknown state(s) %s; choose from %s' % (', '.join(unknown), ', '.join(STATES)))
    return [r for r in reports if set(groups_of(r)) & set(wanted)]


def env_list(value):
    """Comma/space separated string (from an environment variable) or list -> list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item for item in value.replace(',', ' ').split() if item]
    return [str(item).strip() for item in value if str(item).strip()]


def source_options(get_option):
    """expand_sources() keyword arguments from plugin options (inventory plugin and lookup share them)."""
    return dict(
        subnets=env_list(get_option('subnets')),
        hosts=env_list(get_option('hosts')),
        hosts_file=get_option('hosts_file') or None,
        subnets_file=get_option('subnets_file') or None,
        exclude=env_list(get_option('exclude')),
        max_addresses=get_option('max_addresses'),
    )


def _client_auth(get_option):
    """The agents' credentials (token option > token_file option > the role's default file), or None."""
    try:
        return agent_client.client_auth(get_option('token') or None, get_option('token_file') or None,
                                        get_option('auth_reads'))
    except agent_client.TokenFileError as exc:
        raise FleetConfigError(str(exc))


def probe_options(get_option):
    """discover() keyword arguments from plugin options."""
    return dict(
        port=get_option('port'),
        scheme=get_option('scheme'),
        token=_client_auth(get_option),
        verify=agent_client.verify_setting(get_option('validate_certs'), get_option('ca_path')),
        timeout=get_option('timeout'),
        connect_timeout=get_option('connect_timeout'),
        concurrency=max(1, get_option('concurrency')),
        connect_concurrency=max(1, get_option('connect_concurrency')),
        ssh_port=get_option('ssh_port'),
    )
