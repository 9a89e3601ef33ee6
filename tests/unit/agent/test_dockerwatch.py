"""The watcher against a scripted stand-in client: sync, events, loss of Docker, reconnect."""
import threading
import time

import docker
import pytest

from orchestra_agent import dockerwatch, workload


def attrs(cid, status='running', labels=None, exit_code=0):
    return {'Id': cid, 'Name': '/' + cid, 'Config': {'Image': 'img', 'Labels': labels if labels is not None else {'w': '1'}},
            'State': {'Status': status, 'ExitCode': exit_code}}


class Stream:
    def __init__(self):
        self.queue = []
        self.cond = threading.Condition()
        self.closed = False

    def push(self, event):
        with self.cond:
            self.queue.append(event)
            self.cond.notify_all()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def __iter__(self):
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait(0.1)
                if self.closed and not self.queue:
                    return
                event = self.queue.pop(0)
            yield event


class FakeApi:
    def __init__(self, world):
        self.world = world

    def events(self, decode, filters):
        assert decode and filters['type'] == ['container']
        self.world.filters = filters
        self.world.stream = Stream()
        return self.world.stream

    def containers(self, all, filters):  # pylint: disable=redefined-builtin
        return [{'Id': cid} for cid in self.world.containers]

    def inspect_container(self, cid):
        if cid not in self.world.containers:
            raise docker.errors.NotFound('gone')
        return self.world.containers[cid]

    def ping(self):
        if self.world.down:
            raise ConnectionError('ping failed')
        return True


class FakeClient:
    def __init__(self, world):
        self.api = FakeApi(world)

    def close(self):
        pass


class World:
    def __init__(self):
        self.containers = {}
        self.down = False
        self.stream = None
        self.filters = None
        self.connects = 0

    def factory(self):
        self.connects += 1
        if self.down:
            raise docker.errors.DockerException('Error while fetching server API version: connection refused')
        return FakeClient(self)


def wait_for(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError('condition not reached')


@pytest.fixture
def world():
    return World()


@pytest.fixture
def watcher(world):
    watch = dockerwatch.DockerWatcher('unix:///fake', workload.selectors(['w']), ping_interval=0.05, max_backoff=0.1,
                                      client_factory=world.factory)
    watch.start()
    yield watch
    watch.stop()


def test_sync_then_events_update_the_snapshot(world, watcher):
    wait_for(lambda: watcher.snapshot.up)
    assert world.filters['label'] == ['w']
    world.containers['c1'] = attrs('c1')
    world.containers['other'] = attrs('other', labels={})
    world.stream.push({'Type': 'container', 'Action': 'start', 'id': 'c1'})
    world.stream.push({'Type': 'container', 'Action': 'start', 'id': 'other'})
    wait_for(lambda: 'c1' in watcher.snapshot.records)
    world.containers['c1'] = attrs('c1', status='exited', exit_code=3)
    world.stream.push({'Type': 'container', 'Action': 'die', 'Actor': {'ID': 'c1'}})
    wait_for(lambda: watcher.snapshot.records['c1']['exit_code'] == 3)
    assert 'other' not in watcher.snapshot.records
    del world.containers['c1']
    world.stream.push({'Type': 'container', 'Action': 'destroy', 'id': 'c1'})
    wait_for(lambda: 'c1' not in watcher.snapshot.records)


def test_lost_docker_is_reported_and_recovered(world, watcher):
    wait_for(lambda: watcher.snapshot.up)
    world.containers['c1'] = attrs('c1')
    world.stream.push({'Type': 'container', 'Action': 'create', 'id': 'c1'})
    wait_for(lambda: 'c1' in watcher.snapshot.records)
    world.down = True
    world.stream.close()
    wait_for(lambda: not watcher.snapshot.up)
    assert watcher.snapshot.error
    connects = world.connects
    wait_for(lambda: world.connects > connects + 1)
    assert not watcher.snapshot.up
    world.down = False
    del world.containers['c1']
    wait_for(lambda: watcher.snapshot.up)
    assert watcher.snapshot.records == {}


def test_hung_docker_is_noticed_by_the_ping(world, watcher):
    wait_for(lambda: watcher.snapshot.up)
    world.down = True  # the stream stays open: only the ping can tell
    wait_for(lambda: not watcher.snapshot.up)
    assert 'ping failed' in watcher.snapshot.error


def test_unreachable_from_the_start_is_logged_once_not_per_retry(world, caplog):
    world.down = True
    watch = dockerwatch.DockerWatcher('unix:///fake', [], ping_interval=0.05, max_backoff=0.05, client_factory=world.factory)
    with caplog.at_level('WARNING', logger='orchestra_agent.docker'):
        watch.start()
        try:
            wait_for(lambda: world.connects >= 4)
        finally:
            watch.stop()
    assert not watch.snapshot.up
    assert 'connection refused' in watch.snapshot.error
    assert [record.getMessage() for record in caplog.records] == ['docker unreachable']
