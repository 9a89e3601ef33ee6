"""Fixtures of the agent suite: the real agent process, the shared Docker engine, busybox workloads.

Every test gets its own label selector, so containers of other suites (or other
tests) never count, and every container a test creates is removed afterwards.
"""
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import docker
import pytest

from tests.support.agent_proc import start_agent
from tests.support.lab import docker_engine
from tests.support.lab.processes import stop_process
from tests.support.lab.paths import lab_dir

TOKEN = 'agent-suite-token-%s' % uuid.uuid4().hex


@pytest.fixture(scope='session')
def busybox_image():
    docker_engine.ensure_engine()
    return docker_engine.ensure_busybox_image()


@pytest.fixture(scope='session')
def docker_client(busybox_image):
    client = docker.DockerClient(base_url='unix://' + docker_engine.SOCKET, version='auto')
    yield client
    client.close()


@pytest.fixture
def selector():
    """A label key no other test or suite uses."""
    return 'orchestra.test.agent-%s' % uuid.uuid4().hex[:12]


@pytest.fixture
def workloads(docker_client, busybox_image, selector):
    """run(command, labels=None, **kwargs) -> container with the test's label; all removed at the end."""
    created = []

    def run(command, labels=None, **kwargs):
        labels = {selector: 'yes'} if labels is None else labels
        container = docker_client.containers.run(busybox_image, command, labels=labels, network_mode='none',
                                                 detach=True, **kwargs)
        created.append(container)
        return container

    yield run
    for container in created:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture
def token():
    return TOKEN


@pytest.fixture
def agent(busybox_image, selector):
    handle = start_agent(labels=[selector], token=TOKEN)
    yield handle
    handle.close()


class PrivateDockerd:
    """A second, throwaway dockerd on its own socket, data-root and exec-root, so stopping it
    cannot disturb the shared engine other suites use. Stopped by its pid only."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix='agent-dockerd-', dir=lab_dir())
        # exec-root holds unix sockets (108-byte path limit): keep it short.
        self.exec_root = tempfile.mkdtemp(prefix='oad-', dir='/tmp')
        self.socket = os.path.join(self.root, 'docker.sock')
        self.url = 'unix://' + self.socket
        self.proc = None
        namespace = 'orchestra-agent-test-' + os.path.basename(self.exec_root)
        self.argv = ['dockerd', '--host', self.url, '--data-root', os.path.join(self.root, 'data'),
                     '--exec-root', self.exec_root, '--pidfile', os.path.join(self.root, 'dockerd.pid'),
                     '--storage-driver=vfs', '--iptables=false', '--ip6tables=false', '--bridge=none',
                     '--containerd-namespace', namespace, '--containerd-plugins-namespace', namespace + '-plugins']

    def answers(self):
        return subprocess.run(['docker', '--host', self.url, 'info', '--format', '{{.ServerVersion}}'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode == 0

    def start(self, timeout=60):
        log = open(os.path.join(self.root, 'dockerd.log'), 'ab')  # pylint: disable=consider-using-with
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        with open(os.path.join(self.root, 'dockerd.log'), errors='replace') as handle:
            raise RuntimeError('private dockerd did not start:\n' + handle.read()[-3000:])

    def stop(self, timeout=30):
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, timeout)

    def cleanup(self):
        self.stop()
        subprocess.run(['umount', '-R', self.exec_root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_dockerd():
    if shutil.which('dockerd') is None:
        pytest.fail('dockerd is not installed: run make setup as root')
    engine = PrivateDockerd()
    try:
        engine.start()
        yield engine
    finally:
        engine.cleanup()
