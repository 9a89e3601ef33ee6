"""A real Docker engine for the test suites, started on demand and shared.

The machine has the docker.io package but no running engine. The first suite
that needs one starts dockerd (vfs storage, no iptables, no default bridge, as
docs/testing.md explains) and leaves it running for the next suites; the pid is
recorded so `make lab-down` stops only the engine we started. A file lock keeps
parallel suites from starting two engines.
"""
import os
import shutil
import subprocess
import tarfile
import tempfile
import time

from tests.support.lab.paths import lab_dir
from tests.support.lab.processes import locked

SOCKET = '/var/run/docker.sock'
BUSYBOX_IMAGE = 'orchestra-test/busybox:1'
BUSYBOX_LINKS = ('sh', 'sleep', 'true', 'false', 'echo', 'cat', 'ls', 'wc', 'yes', 'dd', 'head')


def engine_answers():
    return subprocess.run(['docker', 'info', '--format', '{{.ServerVersion}}'], check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def pid_file():
    return os.path.join(lab_dir(), 'dockerd.pid')


def ensure_engine(timeout=60):
    """Start dockerd unless one already answers; return the socket path."""
    if engine_answers():
        return SOCKET
    if shutil.which('dockerd') is None:
        raise RuntimeError('dockerd is not installed: run make test as root so scripts/setup.sh installs docker.io')
    with locked('dockerd'):
        if engine_answers():
            return SOCKET
        log = open(os.path.join(lab_dir(), 'dockerd.log'), 'ab')
        proc = subprocess.Popen(
            ['dockerd', '--storage-driver=vfs', '--iptables=false', '--ip6tables=false', '--bridge=none',
             '--host', 'unix://' + SOCKET, '--pidfile', os.path.join(lab_dir(), 'dockerd.own.pid')],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with open(pid_file(), 'w') as handle:
            handle.write(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if engine_answers():
                return SOCKET
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError('dockerd did not come up; see %s' % os.path.join(lab_dir(), 'dockerd.log'))


def stop_engine():
    """Stop the dockerd we started (and only that one)."""
    try:
        with open(pid_file()) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 20
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.unlink(pid_file())
    return True


def _gone(pid):
    """True once pid has exited; reaps it when it is our child (a zombie still answers kill 0)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return True
    except ChildProcessError:
        pass  # not our child: its parent or init reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def image_exists(name):
    return subprocess.run(['docker', 'image', 'inspect', name], check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def ensure_busybox_image():
    """Import a busybox-only image offline (no registry is reachable)."""
    ensure_engine()
    with locked('busybox-image'):
        if image_exists(BUSYBOX_IMAGE):
            return BUSYBOX_IMAGE
        busybox = shutil.which('busybox') or '/bin/busybox'
        if not os.path.exists(busybox):
            raise RuntimeError('busybox-static is not installed: run make test as root')
        with tempfile.TemporaryDirectory() as tmp:
            tar_path = os.path.join(tmp, 'rootfs.tar')
            with tarfile.open(tar_path, 'w') as tar:
                tar.add(busybox, arcname='bin/busybox')
                for link in BUSYBOX_LINKS:
                    info = tarfile.TarInfo('bin/' + link)
                    info.type = tarfile.SYMTYPE
                    info.linkname = 'busybox'
                    tar.addfile(info)
            with open(tar_path, 'rb') as handle:
                subprocess.run(['docker', 'import', '-', BUSYBOX_IMAGE], stdin=handle, check=True,
                               stdout=subprocess.DEVNULL)
        return BUSYBOX_IMAGE
