"""A small real fleet for the inventory suite: network namespaces on a test-made bridge.

    lazy1, lazy2  real agents, nothing running (real sshd too: run_workflow goes there over SSH)
    busy          real agent + a running busybox container with its label
    failed        real agent + a busybox container that exited 3, and one still running
    claimed       real agent holding a claim
    sshonly       no agent, a real sshd (unprovisioned; install_agent targets it)
    reset, tarpit, html, garbage, wrong_json   misbehaving servers on the agent port

All agents share the one real Docker engine through its unix socket; each counts only
containers labelled orchestra.test.host=<its address>.
"""
import collections
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from tests.support.ansible_json import plain
from tests.support.agent_proc import start_agent
from tests.support.fleet_lab import docker, remove_containers, wait_state
from tests.support.lab import docker_engine
from tests.support.lab.paths import lab_dir
from tests.support.netns import NetnsLab, Sshd, make_client_key

TOKEN = 'inventory-suite-token'
HOST_LABEL = 'orchestra.test.host'
MISBEHAVING = ('reset', 'tarpit', 'html', 'garbage', 'wrong_json')
COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

Fleet = collections.namedtuple('Fleet', 'lab hosts agents key workdir suite_label')


@pytest.fixture(scope='session')
def fleet():
    if os.geteuid() != 0:
        pytest.fail('the inventory suite needs root (network namespaces)')
    docker_engine.ensure_engine()
    image = docker_engine.ensure_busybox_image()
    lab = NetnsLab('inv')
    workdir = lab_dir('inventory-suite')
    agents = {}
    suite_label = 'orchestra.test.suite=inventory-%s' % lab.tag
    lab.up()
    try:
        hosts = dict((name, lab.add_host(name)) for name in ('lazy1', 'lazy2', 'busy', 'failed', 'claimed', 'sshonly'))
        hosts.update((mode, lab.add_host(mode)) for mode in MISBEHAVING)
        key = make_client_key(workdir)
        for name in ('lazy1', 'lazy2', 'busy', 'failed', 'claimed'):
            host = hosts[name]
            agents[name] = start_agent(listen=host.address, port=9009, labels=['%s=%s' % (HOST_LABEL, host.address)],
                                       token=TOKEN, prefix=host.prefix)
        for name in ('lazy1', 'lazy2', 'sshonly'):
            Sshd(lab, hosts[name]).start(key + '.pub')
        for mode in MISBEHAVING:
            lab.misbehaving(hosts[mode], mode)
        docker('run', '-d', '--network', 'none', '--label', suite_label, '--label', '%s=%s' % (HOST_LABEL, hosts['busy'].address),
               image, 'sleep', '3600')
        docker('run', '-d', '--network', 'none', '--label', suite_label, '--label', '%s=%s' % (HOST_LABEL, hosts['failed'].address),
               image, 'sh', '-c', 'exit 3')
        # The failed host also runs work: its state is failed, and it belongs in busy too.
        docker('run', '-d', '--network', 'none', '--label', suite_label, '--label', '%s=%s' % (HOST_LABEL, hosts['failed'].address),
               image, 'sleep', '3600')
        agent_client.AgentClient(agent_client.agent_url(hosts['claimed'].address), token=TOKEN).create_claim('suite-holder', 3600)
        for name, state in (('busy', 'busy'), ('failed', 'failed'), ('claimed', 'claimed'), ('lazy1', 'lazy'), ('lazy2', 'lazy')):
            wait_state(hosts[name].address, state)
        yield Fleet(lab, hosts, agents, key, workdir, suite_label)
    finally:
        remove_containers(suite_label)
        close_ssh_masters(os.path.join(workdir, 'cp'))
        for handle in agents.values():
            handle.close()
        lab.down()


def close_ssh_masters(control_dir):
    """Stop the SSH connection masters our ansible runs left (ControlPersist) before their hosts go away."""
    if not os.path.isdir(control_dir):
        return
    for name in os.listdir(control_dir):
        subprocess.run(['ssh', '-o', 'ControlPath=%s' % os.path.join(control_dir, name), '-O', 'exit', 'unused'],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=10)


@pytest.fixture
def lazy_again(fleet):
    """After a test that claims or runs work: lazy1/lazy2 lazy again (claims released, containers gone)."""
    yield
    for name in ('lazy1', 'lazy2'):
        address = fleet.hosts[name].address
        remove_containers('%s=%s' % (HOST_LABEL, address))
        client = agent_client.AgentClient(agent_client.agent_url(address), token=TOKEN)
        client.ack_failures()
        wait_state(address, 'lazy', timeout=15)


def ansible_env(fleet, **extra):
    env = dict(os.environ)
    env.update({
        'ANSIBLE_INVENTORY_UNPARSED_FAILED': '1',
        'ANSIBLE_HOST_KEY_CHECKING': 'False',
        'ANSIBLE_PRIVATE_KEY_FILE': fleet.key,
        'ANSIBLE_REMOTE_USER': 'root',
        # One SSH connection per host for the whole run (each new one costs ~0.7 s here); the masters
        # exit when the suite's sshd processes stop.
        'ANSIBLE_SSH_ARGS': '-o ControlMaster=auto -o ControlPersist=20s -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no',
        'ANSIBLE_SSH_CONTROL_PATH_DIR': os.path.join(fleet.workdir, 'cp'),
        'ANSIBLE_PIPELINING': 'True',
        'ANSIBLE_PYTHON_INTERPRETER': '/usr/bin/python3',  # the namespace hosts' system python (auto finds a pyenv shim)
        'ANSIBLE_RETRY_FILES_ENABLED': 'False',
        'ANSIBLE_NOCOLOR': '1',
        'ORCHESTRA_FLEET_TOKEN': TOKEN,
    })
    env.pop('ANSIBLE_CONFIG', None)
    env.update(extra)
    return env


def run(argv, env, timeout=120, cwd=None):
    """Run an ansible command; the timeout is a hang guard, not a speed assertion."""
    return subprocess.run(argv, env=env, cwd=cwd or COLLECTION, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, check=False)


def ansible_bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def write_inventory(path, **options):
    config = {'plugin': 'orchestra.fleet.fleet'}
    config.update(options)
    with open(path, 'w') as handle:
        json.dump(config, handle)  # JSON is YAML
    return str(path)


class Ansible:
    """The helpers the tests need, handed out as a fixture (conftest is not importable with --import-mode=importlib)."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.write_inventory = write_inventory
        self.bin = ansible_bin

    def env(self, **extra):
        return ansible_env(self.fleet, **extra)

    def run(self, argv, env=None, timeout=120):
        return run(argv, env or self.env(), timeout=timeout)

    def subnet_inventory(self, directory, name='fleet.orchestra.yml', **options):
        options.setdefault('subnets', [str(self.fleet.lab.subnet)])
        options.setdefault('exclude', [self.fleet.lab.gateway])  # the control node itself
        options.setdefault('timeout', 1.0)
        return write_inventory(os.path.join(str(directory), name), **options)

    def inventory_list(self, path, *extra, **env):
        result = self.run([ansible_bin('ansible-inventory'), '-i', path, '--list'] + list(extra), self.env(**env))
        assert result.returncode == 0, result.stderr
        return plain(json.loads(result.stdout))

    def playbook(self, inventory, playbook, *extra, **env):
        return self.run([ansible_bin('ansible-playbook'), '-i', inventory, playbook] + list(extra), self.env(**env), timeout=240)


@pytest.fixture
def ansible(fleet):
    return Ansible(fleet)
