"""The agent role on every Debian release the package registry serves, as systemd hosts over SSH.

One host per release (tests/support/systemd_hosts.py, images cached per release):
bullseye (Python 3.9, the lowest the agent claims), bookworm (3.11) and trixie (3.13).
The hosts are offline, so the agent is installed from a wheelhouse built here for the
release's own Python (the agent's wheel plus its dependencies' wheels for that
interpreter), which is what a user of that release would copy to it.

Per release, in file order against the same host: check mode on a fresh host creates
nothing -> a real install answers on the host's address from a venv of the release's
Python -> a re-run changes nothing. The version matrix (tests/support/core_matrix.py)
runs the check-mode test on bookworm under each older ansible-core.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest
import requests

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from tests.support import systemd_hosts
from tests.support.lab.paths import lab_dir

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PORT = 9009
RECAP = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)
INSTALLED_PATHS = ('/etc/systemd/system/orchestra-agent.service', '/opt/orchestra-agent', '/etc/orchestra-agent',
                   '/var/lib/orchestra-agent')
TOKEN = 'releases-' + uuid.uuid4().hex

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope='module')
def workdir():
    path = tempfile.mkdtemp(prefix='role-releases-', dir=lab_dir())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def collection(workdir):
    """A private copy of the collection's content (the shared staged tree may be restaged meanwhile)."""
    root = os.path.join(workdir, 'collections')
    target = os.path.join(root, 'ansible_collections', 'orchestra', 'fleet')
    for part in ('galaxy.yml', 'meta', 'plugins', 'roles', 'playbooks'):
        source = os.path.join(FLEET_ROOT, part)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(target, part), ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc', 'build', '*.egg-info'))
        elif os.path.exists(source):
            os.makedirs(target, exist_ok=True)
            shutil.copy2(source, target)
    return root


def _pip(*args):
    subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q'] + list(args), check=True)


@pytest.fixture(scope='module')
def agent_wheel(workdir, collection):
    source = os.path.join(workdir, 'agent-src')  # setuptools writes build/ into the tree it builds
    shutil.copytree(os.path.join(collection, 'ansible_collections', 'orchestra', 'fleet', 'roles', 'agent', 'files', 'agent'),
                    source, ignore=shutil.ignore_patterns('__pycache__', '*.pyc', 'build', '*.egg-info'))
    out = os.path.join(workdir, 'agent-wheel')
    _pip('wheel', '--no-deps', '--wheel-dir', out, source)
    wheels = os.listdir(out)
    assert len(wheels) == 1, wheels
    return os.path.join(out, wheels[0])


def wheelhouse_for(workdir, agent_wheel, python_version):
    """The agent's wheel and its dependencies as wheels for CPython `python_version` on x86_64 Linux."""
    path = os.path.join(workdir, 'wheelhouse-%s' % python_version)
    if not os.path.isdir(path):
        abi = 'cp' + python_version.replace('.', '')
        _pip('download', '--only-binary', ':all:', '--dest', path, '--python-version', python_version,
             '--implementation', 'cp', '--abi', abi, '--abi', 'abi3', '--abi', 'none',
             '--platform', 'manylinux2014_x86_64', '--platform', 'manylinux_2_17_x86_64', '--platform', 'linux_x86_64',
             agent_wheel)
    return path


@pytest.fixture(scope='module', params=sorted(systemd_hosts.RELEASES))
def release(request):
    return request.param


@pytest.fixture(scope='module')
def host(release):
    with systemd_hosts.started(count=1, release=release) as lab:
        yield lab, lab.hosts[0]


class Play:
    def __init__(self, returncode, output):
        self.returncode, self.output = returncode, output
        self.recap = dict((m.group(1), {'changed': int(m.group(3)), 'unreachable': int(m.group(4)),
                                        'failed': int(m.group(5))}) for m in RECAP.finditer(output))

    def assert_ok(self, hostname):
        tail = self.output[-6000:]
        assert self.returncode == 0, tail
        assert hostname in self.recap, tail
        assert self.recap[hostname]['failed'] == 0 and self.recap[hostname]['unreachable'] == 0, tail


def play(workdir, collection, lab, extra_vars, *args):
    inventory = os.path.join(workdir, 'hosts-%s.ini' % lab.network)
    with open(inventory, 'w') as handle:
        handle.write(lab.inventory(group='workers'))
    vars_path = os.path.join(workdir, 'vars-%s.json' % uuid.uuid4().hex[:8])
    with open(vars_path, 'w') as handle:
        json.dump(extra_vars, handle)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collection, ANSIBLE_PIPELINING='1', ANSIBLE_HOST_KEY_CHECKING='False',
               ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='False')
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory,
                           'orchestra.fleet.install_agent', '-e', '@' + vars_path] + list(args),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=900, check=False)
    with open(os.path.join(lab_dir('role_releases'), '%s.log' % os.path.basename(vars_path)), 'w') as handle:
        handle.write(proc.stdout)
    return Play(proc.returncode, proc.stdout)


def role_vars(workdir, agent_wheel, release):
    return {'target': 'workers', 'orchestra_agent_token': TOKEN,
            'orchestra_agent_wheelhouse': wheelhouse_for(workdir, agent_wheel, systemd_hosts.RELEASES[release]),
            'orchestra_agent_labels': ['orchestra.test.role-releases=%s' % release]}


def exists(lab, host, path):
    return lab.run(host, 'test', '-e', path, check=False).returncode == 0


def test_host_is_the_release_it_claims(host, release):
    lab, target = host
    os_release = lab.run(target, 'cat', '/etc/os-release').stdout
    assert 'VERSION_CODENAME=%s' % release in os_release, os_release
    version = lab.run(target, 'python3', '-c', 'import sys; print("%d.%d" % sys.version_info[:2])').stdout.strip()
    assert version == systemd_hosts.RELEASES[release]


def test_check_mode_on_a_fresh_host(host, release, workdir, collection, agent_wheel):
    lab, target = host
    result = play(workdir, collection, lab, role_vars(workdir, agent_wheel, release), '--check')
    result.assert_ok(target.hostname)
    assert result.recap[target.hostname]['changed'] > 0, result.output[-4000:]
    for path in INSTALLED_PATHS:
        assert not exists(lab, target, path), path
    assert lab.run(target, 'id', 'orchestra-agent', check=False).returncode != 0


def test_install_answers_from_the_release_python(host, release, workdir, collection, agent_wheel):
    lab, target = host
    play(workdir, collection, lab, role_vars(workdir, agent_wheel, release)).assert_ok(target.hostname)
    health = requests.get('http://%s:%d/v1/health' % (target.ip, PORT), timeout=10)
    assert health.status_code == 200, health.text
    assert lab.run(target, 'systemctl', 'is-active', 'orchestra-agent', check=False).stdout.strip() == 'active'
    venv_python = lab.run(target, '/opt/orchestra-agent/venv/bin/python', '-c',
                          'import sys; print("%d.%d" % sys.version_info[:2])').stdout.strip()
    assert venv_python == systemd_hosts.RELEASES[release]
    # A mutation needs the token the role configured: unsigned it is refused, signed with the token it is done.
    unsigned = requests.post('http://%s:%d/v1/failures/ack' % (target.ip, PORT), json={'containers': []}, timeout=10)
    assert unsigned.status_code == 401, unsigned.text
    client = agent_client.AgentClient('http://%s:%d' % (target.ip, PORT), token=TOKEN, timeout=10)
    client.ack_failures([])


def test_second_run_changes_nothing(host, release, workdir, collection, agent_wheel):
    lab, target = host
    result = play(workdir, collection, lab, role_vars(workdir, agent_wheel, release))
    result.assert_ok(target.hostname)
    assert result.recap[target.hostname]['changed'] == 0, result.output[-6000:]
