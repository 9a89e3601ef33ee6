"""Upgrade a fleet in place: the previous release's agent, replaced by this one's role.

Two Debian systemd hosts (tests/support/systemd_hosts.py). Both first get the agent of the
previous release with the previous release's own role and install_agent playbook, taken from
this repository's history (PREVIOUS_RELEASE, extracted with `git archive`): the cheroot agent
with bearer tokens and no token by default. Then:

- w1 is made to hold what an upgrade must keep: a workload that failed and was acknowledged, and a
  claim (its id, secret and fencing number);
- w2 is mid-workflow: a workload container runs there (on the lab's real Docker engine, counted
  by w2's label selector).

This release's role upgrades both (the design choice, docs/role-agent.md "Upgrades": workloads are
Docker containers, not children of the agent, so restarting the agent never interrupts them; the
role restarts the agent and the new one reads the same state directory). Afterwards the claim is
the same claim with the same fencing number and can be renewed and released with its secret over
the new signed protocol, the next claim's fencing number is higher, the acknowledged failure stays
acknowledged, w2's workload is the same container still running, and w2 is busy. A second run of
the role changes nothing.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

import pytest
import requests

from tests.support import systemd_hosts
from tests.support.lab import docker_engine
from tests.support.lab.paths import build_dir, lab_dir

# The collection as it first landed (0.1.0 before the agent-hardening work): a cheroot agent, bearer
# tokens, unguarded by default. Its claims and acknowledgements files are the format this release reads.
PREVIOUS_RELEASE = 'ae3ff0a'
FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)
RECAP = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)
SSH_ARGS = '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10'
AGENT_SOURCE = ('roles', 'agent', 'files', 'agent')


def repository_root():
    """The git checkout this suite was staged from (the staged copy's own git holds no history)."""
    return os.path.dirname(build_dir())


def extract_release(commit, dest):
    """The collection tree of an earlier commit, as an installed collection under dest."""
    root = os.path.join(dest, 'ansible_collections', 'orchestra', 'fleet')
    os.makedirs(root)
    repo = repository_root()
    found = subprocess.run(['git', '-C', repo, 'cat-file', '-e', commit + '^{commit}'], check=False,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if found.returncode:
        pytest.fail('the previous release %s is not in the history of %s (a shallow clone?): %s'
                    % (commit, repo, found.stderr.decode(errors='replace').strip()))
    archive = os.path.join(dest, 'previous.tar')
    subprocess.run(['git', '-C', repo, 'archive', '--format=tar', '-o', archive, commit,
                    'galaxy.yml', 'meta', 'playbooks', 'plugins', 'roles'], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root)
    os.unlink(archive)
    return dest


def build_wheelhouse(source, dest):
    work = tempfile.mkdtemp(prefix='agent-src-', dir=os.path.dirname(dest))
    copy = os.path.join(work, 'agent')
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns('__pycache__', 'build', '*.egg-info'))
    subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q', 'wheel', '--wheel-dir', dest,
                    copy], check=True)
    shutil.rmtree(work, ignore_errors=True)
    return dest


@pytest.fixture(scope='module')
def workdir():
    path = tempfile.mkdtemp(prefix='upgrade-', dir=lab_dir())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def releases(workdir):
    """{'previous': (collections path, wheelhouse), 'current': (...)}."""
    previous = extract_release(PREVIOUS_RELEASE, os.path.join(workdir, 'previous'))
    current = os.path.join(workdir, 'current')
    shutil.copytree(FLEET_ROOT, os.path.join(current, 'ansible_collections', 'orchestra', 'fleet'),
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc', '.pytest_cache', 'output', 'build'))
    out = {}
    for name, collections in (('previous', previous), ('current', current)):
        source = os.path.join(collections, 'ansible_collections', 'orchestra', 'fleet', *AGENT_SOURCE)
        out[name] = (collections, build_wheelhouse(source, os.path.join(workdir, 'wheelhouse-' + name)))
    return out


@pytest.fixture(scope='module')
def lab():
    with systemd_hosts.started(count=2) as started:
        yield started


class Operator:
    """One controller HOME, one INI inventory with a label selector per host, the install_agent runs."""

    def __init__(self, lab, workdir):
        self.lab, self.workdir = lab, workdir
        self.home = os.path.join(workdir, 'home')
        os.makedirs(self.home, exist_ok=True)
        self.run_id = uuid.uuid4().hex[:8]
        self.labels = {host.hostname: 'orchestra.test.upgrade=%s-%s' % (self.run_id, host.hostname) for host in lab.hosts}
        self.inventory = os.path.join(workdir, 'hosts.ini')
        lines = ['[workers]']
        for host in lab.hosts:
            lines.append("%s ansible_host=%s orchestra_agent_labels='[\"%s\"]'"
                         % (host.hostname, host.ip, self.labels[host.hostname]))
        lines += ['', '[workers:vars]', 'ansible_user=root', 'ansible_ssh_private_key_file=%s' % lab.key_path,
                  "ansible_ssh_common_args='%s'" % SSH_ARGS, 'ansible_python_interpreter=/usr/bin/python3']
        with open(self.inventory, 'w') as handle:
            handle.write('\n'.join(lines) + '\n')
        self.log_dir = lab_dir('upgrade')
        self.count = 0
        self.containers = []

    def run(self, argv, name, collections):
        self.count += 1
        env = dict(os.environ, HOME=self.home, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_PIPELINING='1',
                   ANSIBLE_HOST_KEY_CHECKING='False', ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='False')
        # The claim calls run on the implicit localhost (no inventory), which the runner's
        # ANSIBLE_INVENTORY_UNPARSED_FAILED=1 would turn into an error.
        for key in ('ORCHESTRA_FLEET_TOKEN', 'ORCHESTRA_AGENT_TOKEN', 'ANSIBLE_INVENTORY_UNPARSED_FAILED'):
            env.pop(key, None)
        proc = subprocess.run([os.path.join(BIN, argv[0])] + argv[1:], env=env, cwd=self.workdir, check=False,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=900)
        with open(os.path.join(self.log_dir, '%s-%02d-%s.log' % (self.run_id, self.count, name)), 'w') as handle:
            handle.write('$ %s\n%s\n--- stderr\n%s' % (' '.join(argv), proc.stdout, proc.stderr))
        return proc

    def install(self, release, name):
        collections, wheelhouse = release
        proc = self.run(['ansible-playbook', '-i', self.inventory, 'orchestra.fleet.install_agent',
                         '-e', json.dumps({'target': 'workers', 'orchestra_agent_wheelhouse': wheelhouse})],
                        name, collections)
        recap = {m.group(1): dict(zip(('ok', 'changed', 'unreachable', 'failed'), map(int, m.groups()[1:])))
                 for m in RECAP.finditer(proc.stdout)}
        return proc, recap

    def workload(self, host, command):
        """A workload container on the lab engine that only `host`'s agent counts (its label selector)."""
        key, value = self.labels[host.hostname].split('=', 1)
        name = 'orchestra-upgrade-%s-%s-%d' % (self.run_id, host.hostname, len(self.containers))
        subprocess.run(['docker', 'run', '-d', '--network', 'none', '--name', name, '--label', '%s=%s' % (key, value),
                        docker_engine.BUSYBOX_IMAGE, 'sh', '-c', command], check=True, stdout=subprocess.DEVNULL)
        self.containers.append(name)
        return name

    def remove_workloads(self):
        if self.containers:
            subprocess.run(['docker', 'rm', '-f'] + self.containers, check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


@pytest.fixture(scope='module')
def operator(lab, workdir):
    docker_engine.ensure_busybox_image()
    op = Operator(lab, workdir)
    yield op
    op.remove_workloads()


def agent_get(host, path):
    response = requests.get('http://%s:9009%s' % (host.ip, path), timeout=10)
    return response.status_code, (response.json() if response.headers.get('Content-Type', '').startswith(
        'application/json') else response.text)


def wait_state(host, wanted, timeout=30):
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        try:
            _status, state = agent_get(host, '/v1/state')
        except requests.RequestException:
            state = None
        if isinstance(state, dict) and state.get('state') == wanted:
            return state
        time.sleep(0.5)
    raise AssertionError('%s never reported %r: last %r' % (host.hostname, wanted, state))


def agent_pid(lab, host):
    return lab.run(host, 'systemctl', 'show', '-p', 'MainPID', '--value', 'orchestra-agent').stdout.strip()


def container_started_at(name):
    out = subprocess.run(['docker', 'inspect', '-f', '{{.State.Status}} {{.State.StartedAt}}', name], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout.split()
    return out[0], out[1]


@pytest.mark.slow
class TestUpgradeInPlace:
    state = {}

    def test_previous_release_runs_on_both_hosts(self, lab, operator, releases):
        proc, recap = operator.install(releases['previous'], 'install-previous')
        assert proc.returncode == 0, proc.stdout[-6000:]
        for host in lab.hosts:
            assert recap[host.hostname]['failed'] == 0, proc.stdout[-4000:]
            # The previous release has no nonce endpoint (bearer tokens): this is the old protocol answering.
            assert agent_get(host, '/v1/nonce')[0] == 404
            assert wait_state(host, 'lazy')['version']

    def test_state_to_keep_on_the_previous_release(self, lab, operator):
        w1, w2 = lab.hosts
        failed = operator.workload(w1, 'exit 3')
        wait_state(w1, 'failed')
        ack = requests.post('http://%s:9009/v1/failures/ack' % w1.ip, json={'containers': [failed]}, timeout=10)
        assert ack.status_code == 200, ack.text
        wait_state(w1, 'lazy')
        claim = requests.post('http://%s:9009/v1/claims' % w1.ip, json={'owner': 'before-upgrade', 'ttl': 3600},
                              timeout=10)
        assert claim.status_code == 201, claim.text
        self.state['claim'] = claim.json()
        assert wait_state(w1, 'claimed')['claim']['id'] == self.state['claim']['id']
        running = operator.workload(w2, 'sleep 900')
        wait_state(w2, 'busy')
        self.state['running'] = (running, container_started_at(running))
        self.state['pids'] = {host.hostname: agent_pid(lab, host) for host in lab.hosts}

    def test_this_release_upgrades_both(self, lab, operator, releases):
        proc, recap = operator.install(releases['current'], 'upgrade')
        assert proc.returncode == 0, proc.stdout[-6000:]
        for host in lab.hosts:
            assert recap[host.hostname]['failed'] == 0 and recap[host.hostname]['changed'] > 0, proc.stdout[-4000:]
            assert agent_pid(lab, host) != self.state['pids'][host.hostname], 'the agent was not restarted'
            # The new protocol answers now (signed mutations need a nonce).
            assert agent_get(host, '/v1/nonce')[0] == 200

    def test_claim_and_fencing_survive(self, lab, operator, releases):
        w1 = lab.hosts[0]
        before = self.state['claim']
        state = wait_state(w1, 'claimed')
        assert state['claim']['id'] == before['id']
        assert state['claim']['fencing'] == before['fencing']
        assert state['claim']['owner'] == 'before-upgrade'
        held = {'host': w1.ip, 'id': before['id'], 'secret': before['secret'], 'fencing': before['fencing']}
        # The holder renews and releases with its secret over the new protocol, signed with the token the role
        # provisioned on the controller (read from HOME by default: no token option here).
        for state_name in ('renewed', 'released'):
            proc = operator.run(['ansible', 'localhost', '-m', 'orchestra.fleet.claim', '-a',
                                 json.dumps({'state': state_name, 'claims': [held], 'ttl': 600})],
                                state_name, releases['current'][0])
            assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_state(w1, 'lazy')
        again = operator.run(['ansible', 'localhost', '-m', 'orchestra.fleet.claim', '-a',
                              json.dumps({'hosts': [w1.ip], 'count': 1, 'owner': 'after-upgrade', 'ttl': 120})],
                             'claim-again', releases['current'][0])
        assert again.returncode == 0, again.stdout + again.stderr
        state = wait_state(w1, 'claimed')
        assert state['claim']['fencing'] > before['fencing'], 'a fencing number went backwards across the upgrade'

    def test_acknowledged_failure_stays_acknowledged(self, lab):
        _status, containers = agent_get(lab.hosts[0], '/v1/containers')
        failed = [item for item in containers['containers'] if item['failed']]
        assert failed and all(item['acknowledged'] for item in failed), containers
        assert not wait_state(lab.hosts[0], 'claimed').get('failed_workflows')

    def test_running_workflow_was_not_interrupted(self, lab):
        name, started = self.state['running']
        assert container_started_at(name) == started, 'the workload was restarted or stopped by the upgrade'
        assert started[0] == 'running'
        wait_state(lab.hosts[1], 'busy')

    def test_second_run_changes_nothing(self, lab, operator, releases):
        proc, recap = operator.install(releases['current'], 'rerun')
        assert proc.returncode == 0, proc.stdout[-6000:]
        for host in lab.hosts:
            assert recap[host.hostname]['changed'] == 0, proc.stdout[-4000:]
