"""Provision a whole subnet for real: discover, install, and the hosts turn lazy.

Four Debian systemd hosts (tests/support/systemd_hosts.py) on a bridge this suite creates;
the scan target is only that bridge's /24, given through the original tool's
`~/.orchestra_subnet` (the `subnets_file` source). w1 already runs an agent (installed
first from a plain INI inventory); w2..w4 answer only on SSH. A decoy SSH listener on the
bridge's gateway address (the control node as the hosts see it) makes the control node show
up as `unprovisioned` too: it records every byte it receives, and an SSH client always
sends its banner first, so "no bytes" proves the playbook never connected to it.

HOME is a fresh directory for every command: the role provisions the token into
~/.config/orchestra-fleet/agent-token there and the inventory and the claim module read it
from there by default (no token option anywhere).

The tests run in file order against the same hosts.
"""
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid

import pytest
import yaml

from tests.support.ansible_json import plain
from tests.support import systemd_hosts
from tests.support.lab import docker_engine
from tests.support.lab.paths import lab_dir

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)
RECAP = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)
SSH_ARGS = '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10'


def shipped_version(source):
    with open(os.path.join(source, 'pyproject.toml')) as handle:
        return re.search(r'(?m)^version\s*=\s*"([^"]+)"', handle.read()).group(1)


class DecoySSH:
    """Listens on the control node's bridge address, port 22; keeps what every connection sent."""

    def __init__(self, address):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 22))
        self.sock.listen(64)
        self.sock.settimeout(0.5)
        self.received, self.connections, self.stopped = [], 0, False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped:
            try:
                conn, _peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(1)
            try:
                data = conn.recv(256)
                if data:
                    self.received.append(data)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        self.thread.join(5)


@pytest.fixture(scope='module')
def workdir():
    path = tempfile.mkdtemp(prefix='provision-', dir=lab_dir())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def collection(workdir):
    """A private copy of the collection: the shared staged tree may be restaged while the suite runs."""
    root = os.path.join(workdir, 'collections')
    shutil.copytree(FLEET_ROOT, os.path.join(root, 'ansible_collections', 'orchestra', 'fleet'),
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc', '.pytest_cache', 'output', 'build'))
    return root


@pytest.fixture(scope='module')
def wheelhouse(workdir, collection):
    source = os.path.join(workdir, 'agent-src')
    shutil.copytree(os.path.join(collection, 'ansible_collections', 'orchestra', 'fleet', 'roles', 'agent', 'files',
                                 'agent'), source, ignore=shutil.ignore_patterns('__pycache__', 'build', '*.egg-info'))
    path = os.path.join(workdir, 'wheelhouse')
    subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q', 'wheel', '--wheel-dir', path,
                    source], check=True)
    return path


@pytest.fixture(scope='module')
def lab():
    with systemd_hosts.started(count=4) as started:
        yield started


@pytest.fixture(scope='module')
def decoy(lab):
    listener = DecoySSH(lab.gateway)
    yield listener
    listener.close()


class Fleet:
    """The operator's side: a HOME with ~/.orchestra_subnet, fleet.orchestra.yml, and the commands of the docs."""

    def __init__(self, lab, workdir, collection, wheelhouse):
        self.lab, self.workdir, self.collection, self.wheelhouse = lab, workdir, collection, wheelhouse
        self.home = os.path.join(workdir, 'home')
        os.makedirs(self.home)
        self.version = shipped_version(os.path.join(collection, 'ansible_collections', 'orchestra', 'fleet', 'roles',
                                                    'agent', 'files', 'agent'))
        self.label = 'orchestra.test.provision=%s' % uuid.uuid4().hex[:8]
        self.log_dir = lab_dir('provision')
        self.count = 0
        with open(os.path.join(self.home, '.orchestra_subnet'), 'w') as handle:
            handle.write('# written by orchestra\n%s\n' % lab.subnet)
        self.inventory = os.path.join(workdir, 'fleet.orchestra.yml')
        config = {
            'plugin': 'orchestra.fleet.fleet',
            'subnets_file': '~/.orchestra_subnet',
            'timeout': 5,
            'compose': {'ansible_user': "'root'", 'ansible_ssh_private_key_file': repr(lab.key_path),
                        'ansible_ssh_common_args': repr(SSH_ARGS), 'ansible_python_interpreter': "'/usr/bin/python3'"},
        }
        with open(self.inventory, 'w') as handle:
            yaml.safe_dump(config, handle)
        self.token_file = os.path.join(self.home, '.config', 'orchestra-fleet', 'agent-token')

    def run(self, argv, name):
        self.count += 1
        env = dict(os.environ, HOME=self.home, ANSIBLE_COLLECTIONS_PATH=self.collection, ANSIBLE_PIPELINING='1',
                   ANSIBLE_HOST_KEY_CHECKING='False', ANSIBLE_FORKS='10', ANSIBLE_NOCOLOR='1',
                   ANSIBLE_RETRY_FILES_ENABLED='False', ANSIBLE_INVENTORY_UNPARSED_FAILED='1')
        for key in ('ORCHESTRA_FLEET_TOKEN', 'ORCHESTRA_AGENT_TOKEN'):
            env.pop(key, None)
        proc = subprocess.run([os.path.join(BIN, argv[0])] + argv[1:], env=env, cwd=self.workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=900,
                              check=False)
        with open(os.path.join(self.log_dir, '%02d-%s.log' % (self.count, name)), 'w') as handle:
            handle.write('$ %s\n%s\n--- stderr\n%s' % (' '.join(argv), proc.stdout, proc.stderr))
        return proc

    def graph(self, group='all'):
        proc = self.run(['ansible-inventory', '-i', self.inventory, '--graph', group], 'graph-' + group)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def listing(self):
        proc = self.run(['ansible-inventory', '-i', self.inventory, '--list'], 'list')
        assert proc.returncode == 0, proc.stderr
        return plain(json.loads(proc.stdout))

    def install(self, inventory, target, name, **extra):
        extra_vars = dict({'target': target, 'orchestra_agent_wheelhouse': self.wheelhouse,
                           'orchestra_agent_labels': [self.label]}, **extra)
        proc = self.run(['ansible-playbook', '-i', inventory, 'orchestra.fleet.install_agent',
                         '-e', json.dumps(extra_vars)], name)
        recap = {m.group(1): dict(zip(('ok', 'changed', 'unreachable', 'failed'), map(int, m.groups()[1:])))
                 for m in RECAP.finditer(proc.stdout)}
        return proc, recap


@pytest.fixture(scope='module')
def fleet(lab, workdir, collection, wheelhouse, decoy):
    return Fleet(lab, workdir, collection, wheelhouse)


def agent_pid_and_start(lab, host):
    out = lab.run(host, 'systemctl', 'show', '-p', 'MainPID', '-p', 'ExecMainStartTimestampMonotonic',
                  'orchestra-agent').stdout
    return out.strip(), lab.run(host, 'stat', '-c', '%i %Y', '/opt/orchestra-agent').stdout.strip()


DPKG_BACKUP = '/root/orchestra-test-dpkg'


def break_venv_package(lab, host):
    """Remove python3-venv (a doc-only package: the venv itself still works) from a host with no package source.

    The role installs it on a host without the agent's venv, and apt then fails as on any host whose mirror is
    unreachable ("No package matching 'python3-venv' is available"). dpkg's own records are kept aside so
    repair_venv_package can put the package back offline, as an operator would with a mirror.
    """
    lab.run(host, 'sh', '-ec', 'mkdir -p %s/info && cp -a /var/lib/dpkg/status %s/ && '
            'cp -a /var/lib/dpkg/info/python3-venv.* %s/info/ && dpkg --remove python3-venv'
            % (DPKG_BACKUP, DPKG_BACKUP, DPKG_BACKUP))


def repair_venv_package(lab, host):
    lab.run(host, 'sh', '-ec', 'cp -a %s/status /var/lib/dpkg/status && cp -a %s/info/. /var/lib/dpkg/info/ && '
            'mkdir -p /usr/share/doc/python3-venv && dpkg -s python3-venv' % (DPKG_BACKUP, DPKG_BACKUP))


@pytest.mark.slow
class TestProvisionASubnet:
    state = {}

    def test_one_host_already_runs_an_agent(self, lab, fleet):
        first = lab.hosts[0]
        ini = os.path.join(fleet.workdir, 'w1.ini')
        with open(ini, 'w') as handle:
            handle.write('[old]\n%s ansible_host=%s\n\n[old:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\n'
                         "ansible_ssh_common_args='%s'\nansible_python_interpreter=/usr/bin/python3\n"
                         % (first.hostname, first.ip, lab.key_path, SSH_ARGS))
        proc, recap = fleet.install(ini, 'old', 'install-w1')
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert recap[first.hostname]['failed'] == 0
        assert os.path.exists(fleet.token_file), 'the role did not provision the token on the controller'
        self.state['w1'] = agent_pid_and_start(lab, first)

    def test_inventory_finds_the_subnet_unprovisioned(self, lab, fleet, decoy):
        graph = fleet.graph()
        data = fleet.listing()
        unprovisioned = set(data.get('unprovisioned', {}).get('hosts', []))
        lazy = set(data.get('lazy', {}).get('hosts', []))
        assert unprovisioned == {h.ip for h in lab.hosts[1:]} | {lab.gateway}, graph
        assert lazy == {lab.hosts[0].ip}, graph
        hostvars = data['_meta']['hostvars']
        assert hostvars[lab.hosts[0].ip]['orchestra_agent_version'] == fleet.version
        assert 'SSH port 22 answers' in hostvars[lab.gateway]['orchestra_reason']
        assert not decoy.received, 'the inventory sent bytes to the control node: %r' % decoy.received

    def test_install_agent_on_exactly_the_unprovisioned(self, lab, fleet, decoy):
        """w2 installs; w3's package install fails; w4 stops answering during the run: each reported per host."""
        w2, w3, w4 = lab.hosts[1:]
        break_venv_package(lab, w3)
        lab.pause(w4)
        try:
            proc, recap = fleet.install(fleet.inventory, 'unprovisioned', 'install-unprovisioned')
        finally:
            lab.unpause(w4)
        assert proc.returncode != 0, 'a failed and an unreachable host must fail the run'
        assert recap[w2.ip]['failed'] == 0 and recap[w2.ip]['unreachable'] == 0, proc.stdout[-6000:]
        assert recap[w2.ip]['changed'] > 0
        assert recap[w3.ip]['failed'] == 1, proc.stdout[-6000:]
        assert recap[w4.ip]['unreachable'] == 1, proc.stdout[-6000:]
        # Per host, with the reason: apt's own words for w3, SSH's for w4.
        assert re.search(r'^fatal: \[%s\]: FAILED!.*python3-venv' % re.escape(w3.ip), proc.stdout, re.M), proc.stdout[-6000:]
        assert re.search(r'^fatal: \[%s\]: UNREACHABLE!' % re.escape(w4.ip), proc.stdout, re.M), proc.stdout[-6000:]
        assert lab.hosts[0].ip not in recap, 'the host that already ran an agent was targeted'
        install_play = proc.stdout.split('PLAY [Install the orchestra.fleet agent]', 1)[1]
        assert not re.search(r'^\w+: \[%s\]' % re.escape(lab.gateway), install_play, re.M), install_play[-4000:]
        assert not decoy.received, 'something connected to the control node over SSH: %r' % decoy.received
        self.state['w2'] = agent_pid_and_start(lab, w2)

    def test_rerun_finishes_without_touching_the_hosts_already_done(self, lab, fleet, decoy):
        w2, w3, w4 = lab.hosts[1:]
        repair_venv_package(lab, w3)   # what the operator does about w3's failure
        data = fleet.listing()
        assert set(data['unprovisioned']['hosts']) == {w3.ip, w4.ip, lab.gateway}, data['unprovisioned']
        proc, recap = fleet.install(fleet.inventory, 'unprovisioned', 'install-rerun')
        assert proc.returncode == 0, proc.stdout[-6000:]
        for host in (w3, w4):
            assert recap[host.ip]['failed'] == 0 and recap[host.ip]['unreachable'] == 0, proc.stdout[-4000:]
            assert recap[host.ip]['changed'] > 0
        assert w2.ip not in recap and lab.hosts[0].ip not in recap, 'a host already done was targeted again'
        assert agent_pid_and_start(lab, w2) == self.state['w2'], 'the host installed by the first run was touched'
        assert not decoy.received

    def test_next_inventory_run_shows_them_all_lazy(self, lab, fleet, decoy):
        data = fleet.listing()
        fleet.graph('lazy')
        assert set(data['lazy']['hosts']) == {h.ip for h in lab.hosts}
        assert set(data.get('unprovisioned', {}).get('hosts', [])) == {lab.gateway}
        for host in lab.hosts:
            assert data['_meta']['hostvars'][host.ip]['orchestra_agent_version'] == fleet.version
        assert agent_pid_and_start(lab, lab.hosts[0]) == self.state['w1'], 'the existing agent was touched'
        assert not decoy.received

    def test_the_provisioned_token_signs_a_claim(self, lab, fleet):
        host = lab.hosts[2]
        with open(fleet.token_file) as handle:
            token = handle.read().strip()
        # Unsigned, the agent refuses: so a success below is the role's token at work.
        unsigned = lab.run(host, 'python3', '-c', (
            'import urllib.request,json;r=urllib.request.Request("http://127.0.0.1:9009/v1/claims",'
            'data=json.dumps({"owner":"x","ttl":60}).encode(),headers={"Content-Type":"application/json"});'
            '\ntry:\n urllib.request.urlopen(r);print("accepted")\nexcept Exception as e:print(e)'), check=False)
        assert 'HTTP Error 401' in unsigned.stdout, unsigned.stdout
        proc = fleet.run(['ansible', 'localhost', '-i', fleet.inventory, '-m', 'orchestra.fleet.claim', '-a',
                          json.dumps({'hosts': [host.ip], 'count': 1, 'owner': 'provision-test', 'ttl': 120})],
                         'claim')
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert '"claimed": true' in proc.stdout or '"changed": true' in proc.stdout, proc.stdout
        assert token not in proc.stdout
        data = fleet.listing()
        assert host.ip in data['claimed']['hosts']
        assert data['_meta']['hostvars'][host.ip]['orchestra_claim_owner'] == 'provision-test'

    def test_coming_from_orchestra(self, lab, fleet):
        """Every command of docs/inventory.md "Coming from orchestra", run as written against this subnet."""
        commands = coming_from_orchestra_commands()
        assert len(commands) >= 7, commands
        host = lab.hosts[1]
        ini = os.path.join(fleet.workdir, 'hosts.ini')
        with open(ini, 'w') as handle:
            handle.write(lab.inventory(group='workers'))
        docker_engine.ensure_busybox_image()
        key, value = fleet.label.split('=', 1)
        workload = 'orchestra-provision-%s' % uuid.uuid4().hex[:8]
        # One workload container on the shared engine carries the label every agent of this suite counts.
        subprocess.run(['docker', 'run', '-d', '--network', 'none', '--name', workload, '--label', '%s=%s' % (key, value),
                        docker_engine.BUSYBOX_IMAGE, 'sleep', '300'], check=True, stdout=subprocess.DEVNULL)
        try:
            for number, line in enumerate(commands):
                argv = shlex.split(line.replace('HOST', host.ip).replace('hosts.ini', ini))
                if argv[0] == 'ansible-playbook':
                    # The lab's hosts reach no package index: the agent comes from the suite's wheelhouse.
                    argv += ['-e', json.dumps({'orchestra_agent_wheelhouse': fleet.wheelhouse,
                                               'orchestra_agent_labels': [fleet.label]})]
                if argv[0] == 'curl':
                    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          universal_newlines=True, timeout=60, check=False)
                else:
                    proc = fleet.run(argv, 'orchestra-%d' % number)
                assert proc.returncode == 0, '%s\n%s\n%s' % (line, proc.stdout[-3000:], proc.stderr[-3000:])
                out = proc.stdout
                if argv[0] == 'ansible-playbook':
                    recap = {m.group(1): int(m.group(3)) for m in RECAP.finditer(out)}
                    assert all(recap.get(h.hostname, recap.get(h.ip, 0)) == 0 for h in lab.hosts), \
                        '%s: an installed fleet changed again: %s' % (line, recap)
                elif line.endswith('--graph'):
                    assert all(h.ip in out for h in lab.hosts) and '@busy:' in out, out
                elif line.endswith('--graph busy') or line.endswith('--graph lazy'):
                    group = line.rsplit(' ', 1)[1]
                    listed = set(re.findall(r'\|--(\S+)', out))
                    assert listed == ({h.ip for h in lab.hosts} if group == 'busy' else set()), (line, out)
                elif argv[0] == 'curl':
                    assert workload in out, out
                else:
                    hostvars = plain(json.loads(out))
                    assert hostvars['orchestra_state'] == 'busy' and hostvars['orchestra_running'] == 1, hostvars
        finally:
            subprocess.run(['docker', 'rm', '-f', workload], check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def coming_from_orchestra_commands():
    with open(os.path.join(FLEET_ROOT, 'docs', 'inventory.md')) as handle:
        guide = handle.read()
    section = guide.split('## Coming from orchestra', 1)[1].split('\n## ', 1)[0]
    block = section.split('```console', 1)[1].split('```', 1)[0]
    return [line[2:].strip() for line in block.splitlines() if line.startswith('$ ')]
