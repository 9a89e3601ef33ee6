"""Real fleet hosts for the queue's fleet driver: network namespaces, one real agent each, one Docker engine
(tests/support/fleet_lab.py); controllers are separate processes (controller.py)."""
import collections
import os
import subprocess
import sys

import pytest

from tests.support.fleet_lab import HOST_LABEL, TOKEN, client, remove_containers, start_host_agent, wait_state
from tests.support.lab import docker_engine
from tests.support.lab.paths import lab_dir
from tests.support.netns import NetnsLab

HOSTS = 8
COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

Fleet = collections.namedtuple('Fleet', 'lab hosts agents image workdir')


@pytest.fixture(scope='session')
def fleet():
    if os.geteuid() != 0:
        pytest.fail('the fleet_queue suite needs root (network namespaces)')
    docker_engine.ensure_engine()
    image = docker_engine.ensure_busybox_image()
    lab = NetnsLab('fq')
    workdir = lab_dir('fleet-queue-suite')
    agents = {}
    lab.up()
    try:
        hosts = dict(('h%d' % i, lab.add_host('h%d' % i)) for i in range(1, HOSTS + 1))
        for name, host in hosts.items():
            agents[name] = start_host_agent(host, image)
        for host in hosts.values():
            wait_state(host.address, 'lazy')
        yield Fleet(lab, hosts, agents, image, workdir)
    finally:
        for host in hosts.values():
            remove_containers('%s=%s' % (HOST_LABEL, host.address))
        for handle in agents.values():
            handle.close()
        lab.down()


@pytest.fixture
def fleet_clean(fleet):
    """Every host lazy again afterwards: containers removed, failures acknowledged, agents running."""
    yield fleet
    for name, host in fleet.hosts.items():
        if fleet.agents[name].proc is None:
            fleet.agents[name].restart()
        remove_containers('%s=%s' % (HOST_LABEL, host.address))
        client(host.address).ack_failures()
    for host in fleet.hosts.values():
        wait_state(host.address, 'lazy', timeout=90)   # a claim left by a killed controller lapses by its TTL


def start_controller(store, hosts, ids_file, log_path, mode='steps', seconds=150, claim_ttl=15):
    """A controller process (tests/integration/fleet_queue/controller.py) driving the queue until the jobs end."""
    argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'controller.py'), store, ids_file,
            ','.join(hosts), mode, str(seconds), str(claim_ttl)]
    env = dict(os.environ, ORCHESTRA_FLEET_TOKEN=TOKEN, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION))), COLLECTION]))
    log = open(log_path, 'ab')  # pylint: disable=consider-using-with  # the child keeps it
    try:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()
