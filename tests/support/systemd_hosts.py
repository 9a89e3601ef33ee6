"""Throwaway systemd Debian hosts reachable over real SSH, for role tests.

`image(release)` builds a Debian image (bookworm unless another release of
RELEASES is asked for) with debootstrap (offline from then on: the hosts never
reach a network beyond the test bridge) and caches it as a docker image whose
tag is the release and a hash of its recipe, so it is rebuilt only when the
recipe below changes. `started(count, release=...)` creates a docker bridge network on a
test-only 10.77.X.0/24 subnet that collides with no route and no other docker
network, starts `count` hosts with systemd as PID 1 (the flags LAB.md verified;
--privileged does not work on this kernel), bind-mounts the lab engine's socket
so a Docker-aware service inside sees a real engine, installs a per-run SSH key
for root, and yields the hosts. Everything it created is removed on exit.
"""
import hashlib
import inspect
import ipaddress
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager

from tests.support.lab import docker_engine
from tests.support.lab.paths import lab_dir
from tests.support.lab.ports import port_open
from tests.support.lab.processes import locked

SUITE = 'bookworm'  # the default release: the controller's own
# Debian releases the agent supports as worker OS, with the Python each ships (what the role's venv gets).
RELEASES = {'bullseye': '3.9', 'bookworm': '3.11', 'trixie': '3.13'}
MIRROR = 'http://deb.debian.org/debian'
PACKAGES = ('systemd', 'systemd-sysv', 'python3', 'python3-venv', 'python3-apt', 'openssh-server',
            'iproute2', 'dbus', 'sudo')
# Units that only make sense on a console or real hardware; masked so the
# container reaches `running` instead of `degraded`.
MASKED_UNITS = ('console-getty.service', 'getty@tty1.service', 'systemd-firstboot.service',
                'systemd-udevd.service', 'systemd-udev-trigger.service', 'sys-kernel-debug.mount',
                'sys-kernel-tracing.mount', 'systemd-remount-fs.service')
SSHD_DROPIN = 'PasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n'
RECIPE_VERSION = 1
IMAGE_REPO = 'orchestra-test/debian-systemd'
RUN_FLAGS = ('--stop-signal', 'SIGRTMIN+3', '--cap-add', 'SYS_ADMIN', '--security-opt', 'seccomp=unconfined', '--tmpfs', '/run',
             '--tmpfs', '/run/lock', '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw')
SUBNET_POOL = '10.77.0.0/16'
LABEL = 'orchestra.test=systemd-hosts'


class Host:
    """One started host: its container name, hostname and address."""

    def __init__(self, name, hostname, ip):
        self.name, self.hostname, self.ip = name, hostname, ip

    def __repr__(self):
        return 'Host(%s, %s)' % (self.hostname, self.ip)


class Lab:
    """What `started` yields: the hosts, the network, and the SSH key for root."""

    def __init__(self, network, subnet, key_path):
        self.network, self.subnet, self.key_path = network, subnet, key_path
        self.hosts = []

    @property
    def gateway(self):
        """The bridge's address on this machine (the controller, as the hosts see it)."""
        return str(self.subnet.network_address + 1)

    def run(self, host, *argv, check=True):
        """Run argv inside a host (docker exec; for assertions, not for the code under test)."""
        return subprocess.run(['docker', 'exec', host.name] + list(argv), check=check, universal_newlines=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def pause(self, host):
        """Freeze every process of a host: its kernel still completes TCP handshakes, nothing answers after."""
        _docker('pause', host.name)

    def unpause(self, host):
        _docker('unpause', host.name, check=False)

    def inventory(self, group='workers', extra_hosts=(), extra_vars=None):
        """An INI inventory reaching every host as root over SSH with this run's key.

        extra_hosts: more INI host lines for the group (e.g. decoys a playbook must skip).
        """
        ssh_args = '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10'
        lines = ['[%s]' % group]
        for host in self.hosts:
            lines.append('%s ansible_host=%s' % (host.hostname, host.ip))
        lines += list(extra_hosts)
        lines += ['', '[%s:vars]' % group, 'ansible_user=root',
                  'ansible_ssh_private_key_file=%s' % self.key_path,
                  "ansible_ssh_common_args='%s'" % ssh_args,
                  'ansible_python_interpreter=/usr/bin/python3']
        for key, value in sorted((extra_vars or {}).items()):
            lines.append('%s=%s' % (key, value))
        return '\n'.join(lines) + '\n'


def _docker(*argv, check=True, stdin=None):
    return subprocess.run(['docker'] + list(argv), check=check, universal_newlines=True, input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def recipe_hash(release=SUITE):
    """Changes whenever anything that goes into the image changes (constants and the tweak code)."""
    recipe = json.dumps([RECIPE_VERSION, release, MIRROR, PACKAGES, MASKED_UNITS, SSHD_DROPIN,
                         inspect.getsource(_customise)], sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def image_name(release=SUITE):
    # bookworm keeps its historic tag (the bare hash), so existing caches stay valid.
    prefix = '' if release == SUITE else release + '-'
    return '%s:%s%s' % (IMAGE_REPO, prefix, recipe_hash(release))


def _release_of(tag):
    head = tag.split('-', 1)[0]
    return head if '-' in tag and head in RELEASES else SUITE


def _customise(rootfs):
    """File-level tweaks on the bootstrapped tree (no chroot needed)."""
    # An empty machine-id makes systemd generate one per container at boot.
    with open(os.path.join(rootfs, 'etc', 'machine-id'), 'w'):
        pass
    dbus_id = os.path.join(rootfs, 'var', 'lib', 'dbus', 'machine-id')
    if os.path.lexists(dbus_id):
        os.unlink(dbus_id)
    units = os.path.join(rootfs, 'etc', 'systemd', 'system')
    os.makedirs(units, exist_ok=True)
    for unit in MASKED_UNITS:
        link = os.path.join(units, unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink('/dev/null', link)
    dropins = os.path.join(rootfs, 'etc', 'ssh', 'sshd_config.d')
    os.makedirs(dropins, exist_ok=True)
    with open(os.path.join(dropins, 'orchestra-lab.conf'), 'w') as handle:
        handle.write(SSHD_DROPIN)
    wants = os.path.join(units, 'multi-user.target.wants')
    os.makedirs(wants, exist_ok=True)
    ssh_link = os.path.join(wants, 'ssh.service')
    if not os.path.lexists(ssh_link):
        os.symlink('/lib/systemd/system/ssh.service', ssh_link)
    for cache in ('var/cache/apt/archives', 'var/lib/apt/lists'):
        path = os.path.join(rootfs, cache)
        for entry in os.listdir(path) if os.path.isdir(path) else ():
            full = os.path.join(path, entry)
            if os.path.isfile(full):
                os.unlink(full)


def image(release=SUITE):
    """Return the host image of a Debian release, building it first when its recipe changed."""
    if release not in RELEASES:
        raise ValueError('unknown Debian release %r (known: %s)' % (release, ', '.join(sorted(RELEASES))))
    docker_engine.ensure_engine()
    name = image_name(release)
    with locked('debian-systemd-image-%s' % release):
        if docker_engine.image_exists(name):
            return name
        if shutil.which('debootstrap') is None:
            raise RuntimeError('debootstrap is not installed: run make test as root so scripts/setup.sh installs it')
        work = tempfile.mkdtemp(prefix='debian-systemd-', dir=lab_dir())
        try:
            rootfs = os.path.join(work, 'rootfs')
            log_path = os.path.join(lab_dir(), 'debootstrap-%s.log' % release)
            with open(log_path, 'wb') as log:
                code = subprocess.run(['debootstrap', '--variant=minbase', '--include=' + ','.join(PACKAGES),
                                       release, rootfs, MIRROR], stdout=log, stderr=subprocess.STDOUT, check=False).returncode
            if code:
                raise RuntimeError('debootstrap failed (exit %d); see %s' % (code, log_path))
            _customise(rootfs)
            tar = subprocess.Popen(['tar', '--numeric-owner', '-C', rootfs, '-c', '.'], stdout=subprocess.PIPE)
            subprocess.run(['docker', 'import', '--change', 'CMD ["/sbin/init"]', '-', name],
                           stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
            tar.stdout.close()
            if tar.wait():
                raise RuntimeError('tar of the debootstrap tree failed')
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _drop_older_images(name, release)
        return name


def _drop_older_images(keep, release=SUITE):
    """Images of earlier recipes of this release are dead weight (about 300 MB each); one still in use stays."""
    for ref in _docker('image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', IMAGE_REPO).stdout.split():
        if ref != keep and _release_of(ref.rsplit(':', 1)[-1]) == release:
            _docker('image', 'rm', ref, check=False)


def _taken_networks():
    """Every IPv4 network already routed on this machine or held by a docker network."""
    taken = []
    routes = json.loads(subprocess.run(['ip', '-j', '-4', 'route', 'show', 'table', 'all'], check=True,
                                       stdout=subprocess.PIPE).stdout or b'[]')
    for route in routes:
        dst = route.get('dst', '')
        if dst and dst != 'default' and '.' in dst:
            taken.append(ipaddress.ip_network(dst, strict=False))
    for net_id in _docker('network', 'ls', '-q').stdout.split():
        info = json.loads(_docker('network', 'inspect', net_id).stdout)[0]
        for config in (info.get('IPAM') or {}).get('Config') or []:
            if config.get('Subnet') and '.' in config['Subnet']:
                taken.append(ipaddress.ip_network(config['Subnet'], strict=False))
    return taken


def free_subnets(taken, pool=SUBNET_POOL, prefix=24):
    """Candidate /24s of the test pool that overlap nothing in `taken` (pure)."""
    return [net for net in ipaddress.ip_network(pool).subnets(new_prefix=prefix)
            if not any(net.overlaps(other) for other in taken)]


def _create_network(name):
    with locked('systemd-hosts-network'):
        candidates = free_subnets(_taken_networks())
        if not candidates:
            raise RuntimeError('no free /24 left in %s' % SUBNET_POOL)
        subnet = random.choice(candidates)
        _docker('network', 'create', '--driver', 'bridge', '--label', LABEL, '--subnet', str(subnet),
                '--gateway', str(subnet.network_address + 1), name)
        return subnet


def _socket_gid(sock):
    return os.stat(sock).st_gid


def _start_hosts(lab, image_ref, count, sock, run_id):
    """docker run every host side by side (each copies the vfs rootfs), then check they all started."""
    starts = []
    for index in range(1, count + 1):
        ip = str(lab.subnet.network_address + 10 + index)
        host = Host('orchestra-sysd-%s-%d' % (run_id, index), 'w%d' % index, ip)
        lab.hosts.append(host)  # before it runs: teardown removes whatever got created
        starts.append(subprocess.Popen(
            ['docker', 'run', '-d', '--name', host.name, '--hostname', host.hostname, '--label', LABEL,
             '--network', lab.network, '--ip', ip] + list(RUN_FLAGS) + ['-v', '%s:/run/docker.sock' % sock, image_ref],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True))
    errors = [proc.communicate()[1] for proc in starts if proc.wait()]
    if errors:
        raise RuntimeError('docker run failed: %s' % errors[0].strip())


def _prepare_host(lab, host, public_key, socket_gid):
    """Root's SSH key, and the docker group a Docker install would have made (owning the socket)."""
    _docker('exec', '-i', host.name, 'sh', '-c',
            'install -d -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys',
            stdin=public_key)
    if socket_gid:
        _docker('exec', host.name, 'groupadd', '--non-unique', '--gid', str(socket_gid), 'docker')


def _wait_ready(lab, timeout):
    deadline = time.monotonic() + timeout
    pending = list(lab.hosts)
    while pending and time.monotonic() < deadline:
        host = pending[0]
        state = _docker('exec', host.name, 'systemctl', 'is-system-running', check=False).stdout.strip()
        if state in ('running', 'degraded') and port_open(host.ip, 22):
            pending.pop(0)
            continue
        time.sleep(0.5)
    if pending:
        raise RuntimeError('hosts not ready after %d s: %s' % (timeout, pending))


def _teardown(lab):
    # One `docker rm` per host, side by side: removing a vfs rootfs takes seconds each.
    removals = [subprocess.Popen(['docker', 'rm', '-f', '-v', host.name], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL) for host in lab.hosts]
    for proc in removals:
        proc.wait()
    if lab.network:
        _docker('network', 'rm', lab.network, check=False)


@contextmanager
def started(count=3, ready_timeout=120, release=SUITE):
    """Start `count` SSH-reachable systemd hosts of a Debian release; yield a Lab; remove everything on exit."""
    sock = docker_engine.ensure_engine()
    image_ref = image(release)
    run_id = '%d-%s' % (os.getpid(), hashlib.sha1(os.urandom(8)).hexdigest()[:6])
    key_dir = tempfile.mkdtemp(prefix='ssh-%s-' % run_id, dir=lab_dir())
    key_path = os.path.join(key_dir, 'id_ed25519')
    lab = Lab('orchestra-sysd-%s' % run_id, None, key_path)
    try:
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'orchestra-test', '-f', key_path],
                       check=True)
        with open(key_path + '.pub') as handle:
            public_key = handle.read()
        lab.subnet = _create_network(lab.network)
        _start_hosts(lab, image_ref, count, sock, run_id)
        gid = _socket_gid(sock)
        for host in lab.hosts:
            _prepare_host(lab, host, public_key, gid)
        _wait_ready(lab, ready_timeout)
        yield lab
    finally:
        _teardown(lab)
        shutil.rmtree(key_dir, ignore_errors=True)


def remove_leftovers():
    """Remove every host and network this helper ever labelled (after a killed run; not during one)."""
    names = _docker('ps', '-aq', '--filter', 'label=' + LABEL).stdout.split()
    if names:
        _docker('rm', '-f', '-v', *names, check=False)
    networks = _docker('network', 'ls', '-q', '--filter', 'label=' + LABEL).stdout.split()
    for net_id in networks:
        _docker('network', 'rm', net_id, check=False)
    return len(names), len(networks)


if __name__ == '__main__':
    import sys
    if sys.argv[1:2] == ['build']:
        # python -m tests.support.systemd_hosts build [RELEASE...]: build/cache the images now.
        for wanted in sys.argv[2:] or [SUITE]:
            print(image(wanted))
    else:
        # python -m tests.support.systemd_hosts: clean up after an interrupted role suite.
        print('removed %d hosts and %d networks' % remove_leftovers())
