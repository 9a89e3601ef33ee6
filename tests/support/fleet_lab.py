"""A fleet of real hosts for the queue's fleet tests and benchmark: agents in network namespaces, one Docker engine.

Every host's agent counts only containers labelled orchestra.test.fq=<its address> and may start only the
lab's busybox image (its allow-list). Docker's own event stream (`docker events`) is the witness of what ran
where: not the queue, not the agents.
"""
import collections
import json
import subprocess
import threading
import time

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from tests.support.agent_proc import start_agent
from tests.support.lab.processes import stop_process

HOST_LABEL = 'orchestra.test.fq'
TOKEN = 'fleet-queue-suite-token'


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


def start_host_agent(host, image, token=TOKEN):
    return start_agent(listen=host.address, port=9009, labels=['%s=%s' % (HOST_LABEL, host.address)], token=token,
                       prefix=host.prefix, config={'workflow_images': [image], 'workflow_network': 'none'})


class DockerEvents:
    """`docker events` for the suite's containers, from before the dispatch until stop(): Docker's own record.

    A thread reads the stream as it comes (a full pipe would make Docker drop a slow subscriber's events).
    """

    def __init__(self):
        self.proc = subprocess.Popen(['docker', 'events', '--filter', 'type=container', '--filter', 'label=' + HOST_LABEL,
                                      '--filter', 'event=start', '--filter', 'event=die', '--format', '{{json .}}'],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        time.sleep(0.5)   # the stream is subscribed before anything starts

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self):
        time.sleep(1.0)   # the last die events are out
        stop_process(self.proc, 5)
        self.reader.join(5)
        events = []
        for line in self.lines:
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
