"""Discovery has one deadline for the whole run, however many hosts hang (issue 16 item 6).

Real misbehaving servers in network namespaces of a lab of this module's own: 98 addresses that
accept and never answer (one tarpit process serving all of them), a drip server, and a real
agent that must still be asked in time although it sits behind the tarpits.
"""
import time

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_discovery as fd
from tests.support.agent_proc import start_agent
from tests.support.lab import docker_engine
from tests.support.netns import NetnsLab

TARPITS = 98


@pytest.fixture(scope='module', name='hung_lab')
def hung_lab_fixture():
    docker_engine.ensure_engine()
    lab = NetnsLab('hung')
    agent = None
    lab.up()
    try:
        # The agent first (lowest address), so the sweep finds it before most tarpits; order must not matter.
        live = lab.add_host('agent')
        tarpits = lab.add_host('tarpits', count=TARPITS)
        drip = lab.add_host('drip')
        lab.misbehaving(tarpits, 'tarpit', listen='0.0.0.0')
        lab.misbehaving(drip, 'drip')
        agent = start_agent(listen=live.address, port=9009, labels=['orchestra.test.hung=%s' % lab.tag], prefix=live.prefix)
        yield lab, live, tarpits, drip
    finally:
        if agent:
            agent.close()
        lab.down()


def test_98_tarpits_at_concurrency_32_end_within_one_timeout(hung_lab):
    lab, live, tarpits, drip = hung_lab
    timeout = 2.0
    targets = fd.expand_sources(subnets=[str(lab.subnet)], exclude=[lab.gateway])
    began = time.monotonic()
    reports = fd.discover(targets, timeout=timeout, concurrency=32)
    elapsed = time.monotonic() - began
    by_name = dict((r['name'], r) for r in reports)
    # The old pool needed ceil(99 hung / 32) x (timeout + 0.5 s) = 10 s here. One deadline: the TCP
    # sweep (0.3 s connect timeout for the dead addresses), the timeout, and a small constant.
    assert elapsed < timeout + 1.5, elapsed
    assert sorted(by_name) == sorted(tarpits.addresses + [live.address, drip.address])
    assert by_name[live.address]['state'] in ('lazy', 'unknown'), by_name[live.address]  # asked and answered, not starved
    for address in tarpits.addresses + [drip.address]:
        report = by_name[address]
        assert report['state'] == 'unreachable'
        assert report['reason'].startswith('agent port 9009: no complete answer within 2.0 s'), report
