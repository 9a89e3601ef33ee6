"""Test hosts in Linux network namespaces on a bridge the test makes (root only).

    lab = NetnsLab('inv').up()                 # bridge + a free 10.78.X.0/24, .1 on the bridge
    h1 = lab.add_host('h1')                    # namespace with one address on the bridge
    proc = lab.spawn(h1, ['python3', ...])     # a process inside the namespace (killed by lab.down())
    lab.down()                                 # kills what it spawned, deletes namespaces and bridge

Only addresses of the lab's own subnet are ever used, and the subnet is chosen
so that it overlaps no route or address the machine already has.
"""
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid

from tests.support.lab import ports
from tests.support.lab.paths import lab_dir
from tests.support.lab.processes import locked, stop_process

PYTHON_LISTENER = (
    'import socket,sys,time\n'
    's=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n'
    's.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)\n'
    'while True:\n'
    '    c,_=s.accept(); c.sendall(b"SSH-2.0-OpenSSH_9.2 listener\\r\\n"); c.close()\n'
)


def _ip(*args, check=True, input_text=None):
    return subprocess.run(['ip'] + list(args), check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, input=input_text)


def used_networks():
    """Every IPv4 network the machine already routes or has an address in (all namespaces we can see: the root)."""
    nets = []
    for route in json.loads(_ip('-j', '-4', 'route', 'show', 'table', 'all').stdout or '[]'):
        dst = route.get('dst')
        if dst and dst != 'default':
            try:
                nets.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                continue
    for link in json.loads(_ip('-j', '-4', 'addr').stdout or '[]'):
        for info in link.get('addr_info', []):
            nets.append(ipaddress.ip_network('%s/%s' % (info['local'], info['prefixlen']), strict=False))
    return nets


def pick_subnet(candidates):
    used = used_networks()
    for text in candidates:
        net = ipaddress.ip_network(text)
        if not any(net.overlaps(other) for other in used if not other.is_loopback):
            return net
    raise RuntimeError('no free test subnet among %s' % ', '.join(candidates))


class NetnsHost:
    def __init__(self, name, netns, addresses):
        self.name = name
        self.netns = netns
        self.addresses = addresses

    @property
    def address(self):
        return self.addresses[0]

    @property
    def prefix(self):
        return ['ip', 'netns', 'exec', self.netns]

    def __repr__(self):
        return 'NetnsHost(%s %s)' % (self.name, self.address)


class NetnsLab:
    def __init__(self, name, subnet_candidates=None):
        self.tag = 'o%s%s' % (name[:3], uuid.uuid4().hex[:4])  # <= 8 chars: interface names have 15
        self.candidates = subnet_candidates or ['10.78.%d.0/24' % n for n in range(10, 250, 7)]
        self.subnet = None
        self.bridge = self.tag + 'br'
        self.hosts = []
        self.processes = []
        self._next = 10
        self._is_up = False

    # -- topology --------------------------------------------------------------
    def up(self):
        if os.geteuid() != 0:
            raise RuntimeError('network namespaces need root')
        with locked('netns-subnet'):  # labs of parallel runs (the version matrix) must not pick the same subnet
            self.subnet = pick_subnet(self.candidates)
            _ip('link', 'add', self.bridge, 'type', 'bridge')
            self._is_up = True
            _ip('addr', 'add', '%s/%d' % (self.gateway, self.subnet.prefixlen), 'dev', self.bridge)
        _ip('link', 'set', self.bridge, 'up')
        return self

    def tune_arp(self, probes=1, retrans_ms=100):
        """Shorten ARP resolution on the lab's own bridge (per-device sysctls; nothing global changes).

        Scanning a large directly attached subnet otherwise fills the kernel-wide neighbour
        table with entries that take ~3 s to fail (see docs/inventory.md).
        """
        for name, value in (('mcast_solicit', probes), ('retrans_time_ms', retrans_ms)):
            with open('/proc/sys/net/ipv4/neigh/%s/%s' % (self.bridge, name), 'w') as handle:
                handle.write(str(value))

    @property
    def gateway(self):
        """The root namespace's address on the bridge (where ansible-inventory scans from)."""
        return str(self.subnet.network_address + 1)

    def address(self, index):
        return str(self.subnet.network_address + index)

    def add_host(self, name, addresses=None, count=1):
        """A namespace on the bridge with `addresses` (default: the next `count` free ones)."""
        if addresses is None:
            addresses = [self.address(self._next + i) for i in range(count)]
            self._next += count
        index = len(self.hosts)
        netns = '%s-%s' % (self.tag, name)
        outer, inner = '%sv%d' % (self.tag, index), '%sp%d' % (self.tag, index)
        _ip('netns', 'add', netns)
        host = NetnsHost(name, netns, list(addresses))
        host.outer = outer
        self.hosts.append(host)
        _ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner)
        _ip('link', 'set', inner, 'netns', netns)
        _ip('link', 'set', outer, 'master', self.bridge)
        _ip('link', 'set', outer, 'up')
        batch = ['link set lo up', 'link set %s name eth0' % inner, 'link set eth0 up']
        batch += ['addr add %s/%d dev eth0' % (a, self.subnet.prefixlen) for a in addresses]
        batch.append('route add default via %s' % self.gateway)
        _ip('-n', netns, '-batch', '-', input_text='\n'.join(batch) + '\n')
        return host

    # -- processes ---------------------------------------------------------------
    def spawn(self, host, argv, log_name=None, env=None, cwd=None):
        """Start argv inside host's namespace; lab.down() kills it (by pid)."""
        log_path = os.path.join(lab_dir('netns'), '%s-%s.log' % (host.netns, log_name or os.path.basename(argv[0])))
        with open(log_path, 'ab') as log:
            proc = subprocess.Popen(host.prefix + list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env, cwd=cwd, start_new_session=True)
        proc.log_path = log_path
        self.processes.append(proc)
        return proc

    def tcp_listener(self, host, port):
        """A bare TCP service that greets like sshd: enough to classify a host as 'unprovisioned'."""
        proc = self.spawn(host, [sys.executable, '-c', PYTHON_LISTENER, host.address, str(port)], log_name='listener%d' % port)
        wait_port(host, port)
        return proc

    def misbehaving(self, host, mode, port=9009, listen=None):
        """A misbehaving server (tests/support/misbehaving.py) on host; listen='0.0.0.0' serves every address of a
        host that has many (one process for a hundred tarpits)."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        proc = self.spawn(host, [sys.executable, '-m', 'tests.support.misbehaving', '--mode', mode, '--listen', listen or host.address,
                                 '--port', str(port)], log_name=mode, cwd=root)
        wait_port(host, port)
        return proc

    def stop(self, proc, timeout=10):
        stop_process(proc, timeout)

    # -- teardown ----------------------------------------------------------------
    def down(self):
        for proc in reversed(self.processes):
            self.stop(proc)
        self.processes = []
        for host in self.hosts:
            # Children our processes left inside the namespace (e.g. an sshd session whose client is gone)
            # would keep it, and its veth, alive after `ip netns del`.
            for pid in _ip('netns', 'pids', host.netns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            _ip('netns', 'del', host.netns, check=False)
            _ip('link', 'del', host.outer, check=False)  # gone with the namespace, unless something still pins it
        self.hosts = []
        if self._is_up:
            _ip('link', 'del', self.bridge, check=False)
            self._is_up = False

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()


def wait_port(host, port, timeout=15):
    """Wait (bounded) until host:port accepts, probing from inside the namespace's subnet via the root side."""
    if not ports.wait_port(host.address, port, timeout):
        raise RuntimeError('%s:%d did not accept within %ss' % (host.address, port, timeout))


class Sshd:
    """A real OpenSSH server inside a namespace, root login with a key the test generated."""

    def __init__(self, lab, host):
        self.lab, self.host = lab, host
        self.dir = os.path.join(lab_dir('netns'), '%s-sshd' % host.netns)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.proc = None

    def start(self, client_key_pub):
        host_key = os.path.join(self.dir, 'host_ed25519')
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', host_key], check=True)
        authorized = os.path.join(self.dir, 'authorized_keys')
        shutil.copy(client_key_pub, authorized)
        os.chmod(authorized, 0o600)
        config = os.path.join(self.dir, 'sshd_config')
        with open(config, 'w') as handle:
            handle.write('\n'.join([
                'ListenAddress %s:22' % self.host.address, 'HostKey %s' % host_key,
                'AuthorizedKeysFile %s' % authorized, 'PermitRootLogin prohibit-password',
                'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no',
                'PidFile %s' % os.path.join(self.dir, 'sshd.pid'), 'Subsystem sftp internal-sftp', 'LogLevel ERROR',
                'ClientAliveInterval 5', 'ClientAliveCountMax 2', '']))
        os.makedirs('/run/sshd', exist_ok=True)  # privilege separation directory sshd insists on
        self.proc = self.lab.spawn(self.host, [shutil.which('sshd') or '/usr/sbin/sshd', '-D', '-e', '-f', config], log_name='sshd')
        wait_port(self.host, 22)
        return self


def make_client_key(directory):
    key = os.path.join(directory, 'id_ed25519')
    if not os.path.exists(key):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key], check=True)
    return key
