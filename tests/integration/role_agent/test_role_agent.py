"""The orchestra.fleet.agent role and the install_agent playbook on real systemd hosts over real SSH.

Three Debian bookworm containers with systemd as PID 1 (tests/support/systemd_hosts.py)
on a bridge this suite creates; the lab's Docker socket is mounted into each, so the
installed agent talks to a real engine. The hosts have no network beyond the bridge:
the agent is installed from a wheelhouse built here from roles/agent/files/agent.

The lifecycle tests run in file order against the same hosts:
install (no token given: the role provisions one on the controller, and the agents refuse
unsigned claims but accept ones signed with that file) -> re-run is change-free -> check mode
touches nothing -> token (and TLS) change restarts -> source install from an index -> absent
removes everything -> check mode on a fresh host.
"""
import ipaddress
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
import yaml

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from tests.support import systemd_hosts
from tests.support.lab.paths import lab_dir

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLE = os.path.join(FLEET_ROOT, 'roles', 'agent')
AGENT_SOURCE = os.path.join(ROLE, 'files', 'agent')
PORT = 9009
# The fenced-start allow-list the lifecycle installs (rendered into agent.json, accepted by the agent).
WORKFLOW_IMAGES = ('orchestra-test/busybox:1', 'registry.example/workflows/*')
RECAP = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)', re.M)
# Paths the role creates with its defaults; all must be gone after state=absent.
INSTALLED_PATHS = ('/etc/systemd/system/orchestra-agent.service', '/opt/orchestra-agent', '/etc/orchestra-agent',
                   '/var/lib/orchestra-agent')


def shipped_version(agent_source=AGENT_SOURCE):
    with open(os.path.join(agent_source, 'pyproject.toml')) as handle:
        return re.search(r'(?m)^version\s*=\s*"([^"]+)"', handle.read()).group(1)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def workdir():
    path = tempfile.mkdtemp(prefix='role-agent-', dir=lab_dir())
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _pip(*args):
    subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q'] + list(args), check=True)


@pytest.fixture(scope='module')
def collection(workdir):
    """A private copy of the collection: the shared staged tree may be restaged while the suite runs."""
    root = os.path.join(workdir, 'collections')
    litter = shutil.ignore_patterns('__pycache__', '*.pyc', '.pytest_cache')
    test_output = os.path.join(FLEET_ROOT, 'tests')

    def ignore(directory, names):
        return set(litter(directory, names)) | ({'output'} if directory == test_output else set())
    shutil.copytree(FLEET_ROOT, os.path.join(root, 'ansible_collections', 'orchestra', 'fleet'), ignore=ignore)
    return root


def agent_source_in(collection):
    return os.path.join(collection, 'ansible_collections', 'orchestra', 'fleet', 'roles', 'agent', 'files', 'agent')


@pytest.fixture(scope='module')
def wheelhouse(workdir, collection):
    """The agent's wheel and its dependencies, built on the controller (the hosts are offline)."""
    source = os.path.join(workdir, 'agent-src')  # a copy: setuptools writes build/ into the tree it builds
    shutil.copytree(agent_source_in(collection), source,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc', 'build', '*.egg-info'))
    path = os.path.join(workdir, 'wheelhouse')
    _pip('wheel', '--wheel-dir', path, source)
    return path


@pytest.fixture(scope='module')
def index_dir(workdir, wheelhouse):
    """A flat package index for the source-install mode: the dependencies plus the build backend."""
    path = os.path.join(workdir, 'index')
    shutil.copytree(wheelhouse, path, ignore=shutil.ignore_patterns('orchestra_agent-*'))
    _pip('download', '--only-binary', ':all:', '--dest', path, 'setuptools>=61')
    return path


@pytest.fixture(scope='module')
def lab():
    with systemd_hosts.started(count=3) as started:
        yield started


@pytest.fixture(scope='module')
def tls_pair(workdir, lab):
    """A self-signed certificate for every host's address, and its key (controller files the role copies)."""
    cert, key = os.path.join(workdir, 'agent.crt'), os.path.join(workdir, 'agent.key')
    sans = ','.join('IP:%s' % host.ip for host in lab.hosts)
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                    '-subj', '/CN=orchestra-agent-test', '-days', '2', '-addext', 'subjectAltName=' + sans,
                    '-keyout', key, '-out', cert], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


@pytest.fixture(scope='module')
def label():
    # A selector no container carries: the agent sees no workload, so the host is lazy and claimable.
    return 'orchestra.test.role-agent=%s' % uuid.uuid4().hex[:8]


class Runner:
    """Runs `ansible-playbook orchestra.fleet.install_agent` against the lab and keeps every log."""

    def __init__(self, lab, workdir, collection, wheelhouse, label):
        self.lab, self.workdir, self.collection, self.wheelhouse, self.label = lab, workdir, collection, wheelhouse, label
        self.version = shipped_version(agent_source_in(collection))
        self.tls = None  # (cert, key) once a test switches the agents to HTTPS
        self.log_dir = lab_dir('role_agent')
        for old in os.listdir(self.log_dir):
            os.unlink(os.path.join(self.log_dir, old))
        self.count = 0
        self.inventory = os.path.join(workdir, 'hosts.ini')
        # Where the role provisions the fleet's token (stands in for ~/.config/orchestra-fleet/agent-token).
        self.token_file = os.path.join(workdir, 'controller-home', '.config', 'orchestra-fleet', 'agent-token')
        # Decoys that must be skipped as the control node: the bridge's own address on this
        # machine, and the name localhost. Port 1 makes any attempt to reach them fail loudly.
        decoys = ['controller ansible_host=%s ansible_port=1' % lab.gateway,
                  'localhost ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1']
        with open(self.inventory, 'w') as handle:
            handle.write(lab.inventory(group='workers', extra_hosts=decoys))

    def base_vars(self, token=None):
        """Play variables; token None leaves the role to provision (or reuse) the token in self.token_file."""
        extra = {'target': 'workers', 'orchestra_agent_token_file': self.token_file,
                 'orchestra_agent_wheelhouse': self.wheelhouse, 'orchestra_agent_labels': [self.label],
                 'orchestra_agent_workflow_images': list(WORKFLOW_IMAGES)}
        if token is not None:
            extra['orchestra_agent_token'] = token
        if self.tls:
            extra.update(orchestra_agent_tls_cert=self.tls[0], orchestra_agent_tls_key=self.tls[1])
        return extra

    def url(self, host, path):
        return '%s://%s:%d%s' % ('https' if self.tls else 'http', host.ip, PORT, path)

    def request(self, method, host, path, **kwargs):
        """An unsigned HTTP(S) request to a host's agent, trusting only the test's certificate once TLS is on."""
        return requests.request(method, self.url(host, path), timeout=10, verify=self.tls[0] if self.tls else True,
                                **kwargs)

    def client(self, host, token=None, token_file=None):
        """The collection's own agent client, signing with `token` or with the token read from `token_file`."""
        return agent_client.AgentClient(self.url(host, ''), token=agent_client.client_auth(token, token_file),
                                        timeout=10, verify=self.tls[0] if self.tls else True)

    def provisioned_token(self):
        with open(self.token_file) as handle:
            return handle.read().strip()

    def play(self, extra_vars, *args):
        self.count += 1
        vars_path = os.path.join(self.workdir, 'vars-%d.json' % self.count)
        with open(vars_path, 'w') as handle:
            json.dump(extra_vars, handle)
        env = dict(os.environ)
        env.update({'ANSIBLE_COLLECTIONS_PATH': self.collection, 'ANSIBLE_PIPELINING': '1',
                    'ANSIBLE_HOST_KEY_CHECKING': 'False', 'ANSIBLE_FORKS': '10', 'ANSIBLE_NOCOLOR': '1',
                    'ANSIBLE_RETRY_FILES_ENABLED': 'False'})
        playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
        proc = subprocess.run([playbook, '-i', self.inventory, 'orchestra.fleet.install_agent', '-e', '@' + vars_path]
                              + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=900, check=False)
        with open(os.path.join(self.workdir, 'play-%d.log' % self.count), 'w') as handle:
            handle.write(proc.stdout)
        # Keep a copy in build/lab/role_agent/ for post-mortems after the workdir is gone.
        with open(os.path.join(self.log_dir, 'play-%d.log' % self.count), 'w') as handle:
            handle.write(proc.stdout)
        return Play(proc.returncode, proc.stdout)


class Play:
    def __init__(self, returncode, output):
        self.returncode, self.output = returncode, output
        self.recap = {m.group(1): {'ok': int(m.group(2)), 'changed': int(m.group(3)), 'unreachable': int(m.group(4)),
                                   'failed': int(m.group(5))} for m in RECAP.finditer(output)}

    def tail(self):
        return self.output[-6000:]

    def assert_ok(self, hosts):
        assert self.returncode == 0, self.tail()
        for host in hosts:
            assert host.hostname in self.recap, self.tail()
            assert self.recap[host.hostname]['failed'] == 0 and self.recap[host.hostname]['unreachable'] == 0, self.tail()

    def changed(self, host):
        return self.recap[host.hostname]['changed']


@pytest.fixture(scope='module')
def runner(lab, workdir, collection, wheelhouse, label):
    return Runner(lab, workdir, collection, wheelhouse, label)


# ---------------------------------------------------------------- helpers

def service_identity(lab, host):
    """MainPID and start time: both change when systemd restarts the service."""
    out = lab.run(host, 'systemctl', 'show', '-p', 'MainPID', '-p', 'ActiveEnterTimestampMonotonic',
                  'orchestra-agent').stdout
    values = dict(line.split('=', 1) for line in out.split())
    return values['MainPID'], values['ActiveEnterTimestampMonotonic']


def ack(runner, host, token):
    """A signed mutation: 200 with the right token, 401 otherwise."""
    try:
        runner.client(host, token).ack_failures([])
    except agent_client.AgentHTTPError as exc:
        return exc.status
    return 200


def listening_ports(lab, host):
    out = lab.run(host, 'ss', '-Hltn').stdout
    return {line.split()[3].rsplit(':', 1)[1] for line in out.splitlines() if line.strip()}


def exists(lab, host, path):
    return lab.run(host, 'test', '-e', path, check=False).returncode == 0


# ---------------------------------------------------------------- fast checks (no hosts)

def test_argument_specs_document_every_default():
    with open(os.path.join(ROLE, 'defaults', 'main.yml')) as handle:
        defaults = yaml.safe_load(handle)
    with open(os.path.join(ROLE, 'meta', 'argument_specs.yml')) as handle:
        options = yaml.safe_load(handle)['argument_specs']['main']['options']
    assert sorted(defaults) == sorted(options)
    for name, value in defaults.items():
        assert options[name].get('description'), name
        if '{{' not in str(value):
            assert options[name].get('default') == value, name


def test_role_variables_carry_the_collection_prefix():
    with open(os.path.join(ROLE, 'defaults', 'main.yml')) as handle:
        assert all(name.startswith('orchestra_agent_') for name in yaml.safe_load(handle))


def test_free_subnets_avoid_routes_and_networks():
    taken = [ipaddress.ip_network('10.77.0.0/23'), ipaddress.ip_network('10.77.5.128/25')]
    free = systemd_hosts.free_subnets(taken)
    assert ipaddress.ip_network('10.77.2.0/24') in free
    for net in ('10.77.0.0/24', '10.77.1.0/24', '10.77.5.0/24'):
        assert ipaddress.ip_network(net) not in free
    assert systemd_hosts.free_subnets([ipaddress.ip_network('10.0.0.0/8')]) == []


# ---------------------------------------------------------------- the lifecycle on real hosts

@pytest.mark.slow
class TestLifecycle:
    new_token = 'second-' + uuid.uuid4().hex

    def test_install_answers_on_every_host(self, lab, runner):
        assert not os.path.exists(runner.token_file)
        play = runner.play(runner.base_vars())
        play.assert_ok(lab.hosts)
        # No token given: the role made one on the controller, private to its user.
        token = runner.provisioned_token()
        assert len(token) == 43
        assert oct(os.stat(runner.token_file).st_mode & 0o777) == '0o600'
        assert oct(os.stat(os.path.dirname(runner.token_file)).st_mode & 0o777) == '0o700'
        assert token not in play.output, 'the token leaked into the output'
        # The decoys stand for the control node and sit on port 1: had the playbook not
        # skipped them before the role, they would be unreachable and fail the run.
        install_play = play.output.split('PLAY [Install the orchestra.fleet agent]', 1)[1]
        for decoy in ('controller', 'localhost'):
            assert not re.search(r'^\w+: \[%s\]' % decoy, install_play, re.M), play.tail()
        for host in lab.hosts:
            health = runner.request('GET', host, '/v1/health')
            assert health.status_code == 200
            assert health.json()['version'] == runner.version
            assert health.json()['docker'] == 'up', 'the agent cannot reach Docker through the socket group'
            legacy = runner.request('GET', host, '/healthy')
            assert legacy.text.strip() == 'TRUE'

    def test_installed_as_specified(self, lab, runner):
        for host in lab.hosts:
            assert lab.run(host, 'systemctl', 'is-enabled', 'orchestra-agent').stdout.strip() == 'enabled'
            user = lab.run(host, 'id', '-nG', 'orchestra-agent').stdout.split()
            assert 'docker' in user
            config = lab.run(host, 'stat', '-c', '%a %U %G', '/etc/orchestra-agent/agent.json').stdout.split()
            assert config == ['640', 'root', 'orchestra-agent']
            written = json.loads(lab.run(host, 'cat', '/etc/orchestra-agent/agent.json').stdout)
            assert (written['workflow_images'], written['workflow_network']) == (list(WORKFLOW_IMAGES), None)
            assert lab.run(host, 'stat', '-c', '%U', '/opt/orchestra-agent/venv/bin/orchestra-agent').stdout.strip() == 'root'
            props = lab.run(host, 'systemctl', 'show', 'orchestra-agent', '-p', 'User', '-p', 'NoNewPrivileges',
                            '-p', 'ProtectSystem', '-p', 'ProtectHome', '-p', 'PrivateTmp').stdout
            for expected in ('User=orchestra-agent', 'NoNewPrivileges=yes', 'ProtectSystem=strict',
                             'ProtectHome=yes', 'PrivateTmp=yes'):
                assert expected in props
            # The provisioned token guards claims: unsigned is refused, even as proper JSON ...
            unsigned = runner.request('POST', host, '/v1/claims', json={'owner': 'role-test', 'ttl': 60})
            assert (unsigned.status_code, unsigned.json()['error']) == (401, 'unauthorized'), unsigned.text
            # ... and a claim signed with the controller's token file is granted. The sandbox still lets
            # the agent write its state dir and read Docker: a claim is only granted on a lazy host
            # whose Docker view is live, and is persisted first.
            client = runner.client(host, token_file=runner.token_file)
            body = client.create_claim('role-test', 60)
            assert body['fencing'] >= 1
            assert lab.run(host, 'ls', '-A', '/var/lib/orchestra-agent').stdout.strip()
            assert client.release_claim(body['id'], body['secret'])['released'] is True

    def test_second_run_changes_nothing(self, lab, runner):
        before = {host.name: service_identity(lab, host) for host in lab.hosts}
        play = runner.play(runner.base_vars())
        play.assert_ok(lab.hosts)
        assert [play.changed(host) for host in lab.hosts] == [0] * len(lab.hosts), play.tail()
        assert {host.name: service_identity(lab, host) for host in lab.hosts} == before

    def test_check_mode_reports_but_applies_nothing(self, lab, runner):
        before = {host.name: service_identity(lab, host) for host in lab.hosts}
        play = runner.play(runner.base_vars(self.new_token), '--check', '--diff')
        play.assert_ok(lab.hosts)
        assert self.new_token not in play.output, 'the token leaked into the diff'
        assert all(play.changed(host) > 0 for host in lab.hosts), play.tail()
        assert {host.name: service_identity(lab, host) for host in lab.hosts} == before
        assert all(ack(runner, host, runner.provisioned_token()) == 200 for host in lab.hosts)

    def test_token_and_tls_change_restarts_the_service(self, lab, runner, tls_pair):
        before = {host.name: service_identity(lab, host) for host in lab.hosts}
        runner.tls = tls_pair
        play = runner.play(runner.base_vars(self.new_token))
        play.assert_ok(lab.hosts)
        assert self.new_token not in play.output, 'the token leaked into the output'
        for host in lab.hosts:
            pid, started = service_identity(lab, host)
            assert pid != before[host.name][0] and started != before[host.name][1]
            assert ack(runner, host, self.new_token) == 200  # over HTTPS, verified against the copied cert
            assert ack(runner, host, runner.provisioned_token()) == 401
            key = lab.run(host, 'stat', '-c', '%a %U %G', '/etc/orchestra-agent/tls/agent.key').stdout.split()
            assert key == ['640', 'root', 'orchestra-agent']

    def test_source_install_from_a_package_index(self, lab, runner, index_dir):
        """The default mode: source copied from the role, dependencies and build backend from an index."""
        host = lab.hosts[-1]
        subprocess.run(['docker', 'cp', index_dir, '%s:/srv/index' % host.name], check=True)
        extra = dict(runner.base_vars(self.new_token), target=host.hostname, orchestra_agent_wheelhouse='',
                     orchestra_agent_pip_extra_args=['--no-index', '--find-links', '/srv/index'])
        play = runner.play(extra)
        play.assert_ok([host])
        assert play.changed(host) > 0
        assert runner.request('GET', host, '/v1/health').json()['version'] == runner.version
        assert not exists(lab, host, '/opt/orchestra-agent/src'), 'the install-time copy was left behind'
        again = runner.play(extra)
        again.assert_ok([host])
        assert again.changed(host) == 0, again.tail()
        lab.run(host, 'rm', '-rf', '/srv/index')

    def test_absent_leaves_nothing_behind(self, lab, runner):
        play = runner.play(dict(runner.base_vars(self.new_token), orchestra_agent_state='absent'))
        play.assert_ok(lab.hosts)
        for host in lab.hosts:
            for path in INSTALLED_PATHS:
                assert not exists(lab, host, path), path
            assert lab.run(host, 'id', 'orchestra-agent', check=False).returncode != 0
            assert lab.run(host, 'getent', 'group', 'orchestra-agent', check=False).returncode != 0
            units = lab.run(host, 'systemctl', 'list-unit-files', '--no-legend', 'orchestra-agent*', check=False).stdout
            assert 'orchestra-agent' not in units
            assert str(PORT) not in listening_ports(lab, host)
            with pytest.raises(requests.ConnectionError):
                runner.request('GET', host, '/v1/health')
        first = lab.hosts[0]
        again = runner.play(dict(runner.base_vars(self.new_token), orchestra_agent_state='absent', target=first.hostname))
        again.assert_ok([first])
        assert again.changed(first) == 0, again.tail()

    def test_check_mode_on_a_fresh_host_creates_nothing(self, lab, runner):
        host = lab.hosts[0]
        play = runner.play(dict(runner.base_vars(), target=host.hostname), '--check')
        play.assert_ok([host])
        assert play.changed(host) > 0, play.tail()
        for path in INSTALLED_PATHS:
            assert not exists(lab, host, path), path
        assert lab.run(host, 'id', 'orchestra-agent', check=False).returncode != 0
