"""fleet_discovery: source expansion, the bounded pool, the TCP sweep and classification.

Classification runs against real sockets on 127.0.0.0/8 (every 127.x address is local),
one misbehaving server per address, all on the same port, as on a real fleet.
"""
import socket
import time
import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_discovery as fd
from tests.support.lab import ports
from tests.support.misbehaving import MisbehavingServer

LAZY = {'hostname': 'w2', 'version': '0.1.0', 'state': 'lazy', 'reason': 'no workload running', 'running': 0,
        'failed_workflows': 0, 'claim': None, 'fencing': 2}
CLAIMED = dict(LAZY, state='claimed', reason='claimed by sched-a until 2026-11-22T12:00:00Z',
               claim={'id': 'c1', 'owner': 'sched-a', 'fencing': 3, 'expires_at': '2026-11-22T12:00:00Z'}, fencing=3)


def names(targets):
    return [t.name for t in targets]


# ---------------------------------------------------------------- sources

def test_expand_subnet_hosts_exclude_dedupe(tmp_path):
    cache = tmp_path / 'cache'
    cache.write_text('# the old tool\n10.9.0.7\n\n10.9.1.1  # trailing comment\n')
    targets = fd.expand_sources(subnets=['10.9.0.0/29'], hosts=['10.9.0.2', 'w1.example'], hosts_file=str(cache),
                                exclude=['10.9.0.3', '10.9.0.4/31'])
    assert names(targets) == ['10.9.0.2', 'w1.example', '10.9.0.7', '10.9.1.1', '10.9.0.1', '10.9.0.6']
    assert [t.named for t in targets] == [True, True, True, True, False, False]
    assert targets[1].address is None  # resolved at probe time


def test_single_address_subnet():
    assert names(fd.expand_sources(subnets=['10.9.0.5/32'])) == ['10.9.0.5']


@pytest.mark.parametrize('kwargs, text', [
    ({}, 'no source'),
    ({'subnets': ['10.0.0.0/33']}, "subnets: '10.0.0.0/33' is not a valid CIDR"),
    ({'subnets': ['banana']}, 'is not a valid CIDR'),
    ({'subnets': ['10.0.0.0/24'], 'exclude': ['nope/8']}, 'exclude:'),
    ({'hosts': ['10.0.0.1'], 'exclude': ['10.0.0.0/24']}, 'conflicting sources: 10.0.0.1 is listed in hosts and excluded'),
    ({'subnets': ['10.0.0.0/30'], 'exclude': ['10.0.0.0/24']}, 'exclude removes every address'),
    ({'subnets': ['10.0.0.0/8']}, 'exceed max_addresses'),
    ({'hosts': ['']}, 'empty entry'),
])
def test_bad_sources_raise_clear_errors(kwargs, text):
    with pytest.raises(fd.FleetConfigError, match=text):
        fd.expand_sources(**kwargs)


def test_unreadable_and_bad_hosts_file(tmp_path):
    with pytest.raises(fd.FleetConfigError, match='cannot read'):
        fd.read_hosts_file(str(tmp_path / 'missing'))
    bad = tmp_path / 'bad'
    bad.write_text('10.0.0.1\nnot-an-ip\n')
    with pytest.raises(fd.FleetConfigError, match='line 2'):
        fd.read_hosts_file(str(bad))


def test_env_list():
    assert fd.env_list('10.0.0.0/24, 10.1.0.0/24  h1') == ['10.0.0.0/24', '10.1.0.0/24', 'h1']
    assert fd.env_list(['a ', 'b']) == ['a', 'b']
    assert fd.env_list(None) == []


# ---------------------------------------------------------------- sweep and classification

@pytest.fixture(name='free_port')
def free_port_fixture():
    return ports.free_port()


def listener(address, port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(8)
    return sock


def test_tcp_sweep_open_refused(free_port):
    sock = listener('127.0.0.41', free_port)
    try:
        result = fd.tcp_sweep(['127.0.0.41', '127.0.0.42'], [free_port], 0.5, max_in_flight=1)
    finally:
        sock.close()
    assert result == {('127.0.0.41', free_port): 'open', ('127.0.0.42', free_port): 'refused'}


@pytest.fixture
def fleet(free_port):
    """One misbehaving or fake-agent server per 127.0.0.x address, all on one port."""
    servers = [
        MisbehavingServer('json', '127.0.0.11', free_port, routes={'/v1/state': (200, LAZY)}),
        MisbehavingServer('json', '127.0.0.12', free_port, routes={'/v1/state': (200, CLAIMED)}),
        MisbehavingServer('html', '127.0.0.13', free_port),
        MisbehavingServer('garbage', '127.0.0.14', free_port),
        MisbehavingServer('wrong_json', '127.0.0.15', free_port),
        MisbehavingServer('reset', '127.0.0.16', free_port),
        MisbehavingServer('tarpit', '127.0.0.17', free_port),
        MisbehavingServer('json', '127.0.0.18', free_port, routes={'/busy': (200, b'FALSE', 'text/plain')}),
        MisbehavingServer('json', '127.0.0.19', free_port, routes={'/v1/state': (401, {'error': 'unauthorized', 'message': 'token'})}),
    ]
    for server in servers:
        server.start()
    ssh = listener('127.0.0.20', free_port + 1 if free_port < 65535 else free_port - 1)
    yield free_port, ssh.getsockname()[1]
    ssh.close()
    for server in servers:
        server.stop()


def test_discover_classifies_every_kind_of_host(fleet):
    port, ssh_port = fleet
    targets = fd.expand_sources(subnets=['127.0.0.0/27'], hosts=['127.0.0.30', 'no-such-host.invalid'])
    reports = fd.discover(targets, port=port, timeout=1.0, connect_timeout=0.3, concurrency=4, ssh_port=ssh_port)
    by_name = dict((r['name'], r) for r in reports)
    got = dict((name, r['state']) for name, r in by_name.items())
    assert got == {
        '127.0.0.11': 'lazy', '127.0.0.12': 'claimed', '127.0.0.13': 'invalid', '127.0.0.14': 'invalid',
        '127.0.0.15': 'invalid', '127.0.0.16': 'unreachable', '127.0.0.17': 'unreachable', '127.0.0.18': 'lazy',
        '127.0.0.19': 'invalid', '127.0.0.20': 'unprovisioned',
        '127.0.0.30': 'unreachable',  # named, so reported though dead
        'no-such-host.invalid': 'unreachable',
    }  # the anonymous dead addresses of the /27 are left out
    assert 'text/html' in by_name['127.0.0.13']['reason']
    assert 'not with HTTP' in by_name['127.0.0.14']['reason']
    assert 'wrong shape' in by_name['127.0.0.15']['reason']
    assert 'reset' in by_name['127.0.0.16']['reason']
    assert 'legacy agent' in by_name['127.0.0.18']['reason']
    assert 'token' in by_name['127.0.0.19']['reason']
    # Reasons name the ports really used (issue 16: it always said "SSH port 22").
    assert by_name['127.0.0.20']['reason'] == 'no agent on port %d (refused), SSH port %d answers' % (port, ssh_port)
    assert by_name['127.0.0.30']['reason'] == 'agent port %d: refused, SSH port %d: refused' % (port, ssh_port)
    assert by_name['127.0.0.17']['reason'].startswith('agent port %d: no complete answer within 1.0 s' % port)
    assert 'does not resolve' in by_name['no-such-host.invalid']['reason']
    assert by_name['127.0.0.12']['reason'].startswith('claimed by sched-a')


def test_host_vars_are_lean_and_prefixed():
    report = {'state': 'claimed', 'reason': 'claimed by x', 'agent_url': 'http://10.0.0.1:9009', 'agent': CLAIMED}
    values = fd.host_vars(report)
    assert values['orchestra_state'] == 'claimed'
    assert values['orchestra_reason'] == 'claimed by x'
    assert values['orchestra_claim_owner'] == 'sched-a'
    assert values['orchestra_fencing'] == 3
    assert all(key.startswith('orchestra_') for key in values)
    assert 'orchestra_agent' not in values


def test_select_states():
    reports = [{'state': 'lazy'}, {'state': 'busy'}, {'state': 'unprovisioned'}]
    assert fd.select_states(reports, ['lazy', 'unprovisioned']) == [reports[0], reports[2]]
    with pytest.raises(fd.FleetConfigError, match='unknown state'):
        fd.select_states(reports, ['idle'])


def test_flags_that_hold_together_put_a_host_in_each_group():
    failed_and_busy = {'state': 'failed', 'agent': {'failed': True, 'busy': True, 'claimed': False}}
    claimed_and_busy = {'state': 'busy', 'agent': {'failed': False, 'busy': True, 'claimed': True}}
    lazy = {'state': 'lazy', 'agent': {'failed': False, 'busy': False, 'claimed': False}}
    silent = {'state': 'unprovisioned'}
    assert fd.groups_of(failed_and_busy) == ['failed', 'busy']
    assert fd.groups_of(claimed_and_busy) == ['busy', 'claimed']
    assert fd.groups_of(lazy) == ['lazy'] and fd.groups_of(silent) == ['unprovisioned']
    reports = [failed_and_busy, claimed_and_busy, lazy, silent]
    assert fd.select_states(reports, ['busy']) == [failed_and_busy, claimed_and_busy]
    assert fd.select_states(reports, ['claimed']) == [claimed_and_busy]
    assert fd.select_states(reports, ['lazy']) == [lazy]


def test_a_drip_server_cannot_overrun_the_timeout_and_a_huge_body_is_refused(free_port):
    """A drip server keeps every recv() busy well within the read timeout, so only the run's deadline
    stops it; the old pool let it run for its 0.5 s grace past `timeout`."""
    servers = [MisbehavingServer('drip', '127.0.0.51', free_port).start(),
               MisbehavingServer('bigbody', '127.0.0.52', free_port).start()]
    try:
        began = time.monotonic()
        reports = fd.discover(fd.expand_sources(hosts=['127.0.0.51', '127.0.0.52']), port=free_port, timeout=1.0, ssh_port=0)
        elapsed = time.monotonic() - began
    finally:
        for server in servers:
            server.stop()
    drip, big = reports
    assert drip['state'] == 'unreachable' and drip['reason'] == 'agent port %d: no complete answer within 1.0 s' % free_port
    assert big['state'] == 'invalid' and 'larger than' in big['reason']
    assert elapsed < 1.45, elapsed  # the deadline itself plus the watchdog's tick, no grace


def test_double_booking_outranks_the_agent_state_and_groups_the_host(free_port):
    """The agent reports a workload whose claim labels are stale or foreign as `double_booking` (its own
    branch); such a host is never lazy, never handed out, and says why."""
    doc = dict(LAZY, state='busy', reason='1 workload container running', busy=True, running=1,
               double_booking={'reason': 'container wf-1 runs under claim c7 (fence 4), the claim now is c9 (fence 5)',
                               'containers': ['wf-1']})
    quiet = dict(LAZY, double_booking=None)
    servers = [MisbehavingServer('json', '127.0.0.53', free_port, routes={'/v1/state': (200, doc)}).start(),
               MisbehavingServer('json', '127.0.0.54', free_port, routes={'/v1/state': (200, quiet)}).start()]
    try:
        booked, calm = fd.discover(fd.expand_sources(hosts=['127.0.0.53', '127.0.0.54']), port=free_port, timeout=1.0, ssh_port=0)
    finally:
        for server in servers:
            server.stop()
    assert booked['state'] == 'double_booked'
    assert booked['reason'] == 'double booking: container wf-1 runs under claim c7 (fence 4), the claim now is c9 (fence 5)'
    assert fd.groups_of(booked) == ['double_booked', 'busy']
    assert fd.host_vars(booked)['orchestra_double_booking']['containers'] == ['wf-1']
    assert calm['state'] == 'lazy' and 'orchestra_double_booking' not in fd.host_vars(calm)
    assert fd.select_states([booked, calm], ['lazy']) == [calm]
    assert fd.select_states([booked, calm], ['double_booked']) == [booked]


@pytest.mark.parametrize('value, reason', [
    ('wf-2 has a foreign claim', 'wf-2 has a foreign claim'),
    ({'message': 'stale fence 3'}, 'stale fence 3'),
    ({}, 'a workload carries a stale or foreign claim'),
    (None, None), (False, None),
])
def test_double_booking_reason_shapes(value, reason):
    assert fd.double_booking_reason(value) == reason
