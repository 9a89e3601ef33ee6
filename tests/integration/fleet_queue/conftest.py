"""Real fleet hosts for the queue's fleet driver: network namespaces, one real agent each, one Docker engine.

Every host's agent counts only containers labelled orchestra.test.fq=<its address> and may start only the
lab's busybox image (its allow-list). Docker's own event stream (`docker events`) is the witness of what ran
where: not our queue, not the agents.
"""
import collections
import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from tests.support.agent_proc import start_agent
from tests.support.lab import docker_engine
from tests.support.lab.paths import lab_dir
from tests.support.lab.processes import stop_process
from tests.support.netns import NetnsLab

TOKEN = 'fleet-queue-suite-token'   # fixed: the test module imports this file a second time (importlib mode)
HOST_LABEL = 'orchestra.test.fq'
HOSTS = 8
COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

Fleet = collections.namedtuple('Fleet', 'lab hosts agents image workdir')


def docker(*args, check=True):
    return subprocess.run(['docker'] + list(args), check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def client(address, timeout=3):
    return agent_client.AgentClient(agent_client.agent_url(address), token=TOKEN, timeout=timeout)


def wait_state(address, wanted, timeout=30):
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        try:
            state = client(address).state()['state']
        except agent_client.AgentError:
            state = None
        if state == wanted:
            return
        time.sleep(0.1)
    raise RuntimeError('%s stayed %s, wanted %s' % (address, state, wanted))


def remove_containers(label):
    ids = docker('ps', '-aq', '--filter', 'label=%s' % label).stdout.split()
    if ids:
        docker('rm', '-f', *ids, check=False)


def start_host_agent(host, image):
    return start_agent(listen=host.address, port=9009, labels=['%s=%s' % (HOST_LABEL, host.address)], token=TOKEN,
                       prefix=host.prefix, config={'workflow_images': [image], 'workflow_network': 'none'})


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


class DockerEvents:
    """`docker events` for the suite's containers, from before the dispatch until stop(): Docker's own record."""

    def __init__(self):
        self.proc = subprocess.Popen(['docker', 'events', '--filter', 'type=container', '--filter', 'label=' + HOST_LABEL,
                                      '--format', '{{json .}}'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.5)   # the stream is subscribed before anything starts

    def stop(self):
        time.sleep(1.0)   # the last die events are out
        stop_process(self.proc, 5)
        events = []
        for line in self.proc.stdout.read().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


def runs_from_events(events):
    """{container id: {'host', 'job', 'start', 'die'}} from Docker's start and die events (its own timestamps)."""
    runs = {}
    for event in events:
        action = event.get('Action') or event.get('status')
        attributes = (event.get('Actor') or {}).get('Attributes') or {}
        if action not in ('start', 'die'):
            continue
        run = runs.setdefault(event['id'], {'host': attributes.get(HOST_LABEL), 'job': attributes.get('orchestra.queue.job'),
                                            'start': None, 'die': None, 'starts': 0})
        if action == 'start':
            run['start'] = event['timeNano']
            run['starts'] += 1
        else:
            run['die'] = event['timeNano']
    return runs


def overlaps(runs):
    """Pairs of runs on one host whose [start, die] intervals overlap (Docker's clock, one machine)."""
    found = []
    by_host = collections.defaultdict(list)
    for cid, run in runs.items():
        by_host[run['host']].append((run['start'], run['die'] or float('inf'), cid))
    for host, spans in by_host.items():
        spans.sort()
        for (_s1, end1, c1), (start2, _e2, c2) in zip(spans, spans[1:]):
            if start2 < end1:
                found.append((host, c1, c2))
    return found


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
