"""A throwaway PostgreSQL server for the queue suites (real server, loopback only).

initdb and pg_ctl refuse to run as root, so the cluster is owned by the
`postgres` user; each server gets its own data dir and port and is stopped by
the fixture that started it.
"""
import glob
import os
import shutil
import subprocess
import tempfile
import time

from tests.support.lab.ports import free_port, wait_port


def _bin(name):
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/' + name))
    if not found:
        raise RuntimeError('PostgreSQL is not installed: run make test as root so scripts/setup.sh installs it')
    return found[-1]


class PostgresServer:
    """Start with .start(), use .dsn, end with .stop()."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix='orchestra-pg-')
        self.data = os.path.join(self.dir, 'data')
        self.dsn = 'postgresql://postgres@127.0.0.1:%d/postgres' % self.port

    def _as_owner(self, args):
        if os.geteuid() == 0:
            args = ['runuser', '-u', 'postgres', '--'] + args
        return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def start(self):
        if os.geteuid() == 0:
            shutil.chown(self.dir, 'postgres', 'postgres')
        self._as_owner([_bin('initdb'), '-D', self.data, '-A', 'trust', '-U', 'postgres', '--no-sync'])
        return self._run_server()

    def _run_server(self):
        opts = '-k %s -c listen_addresses=127.0.0.1 -p %d -c fsync=off -c max_connections=200' % (self.dir, self.port)
        self._as_owner([_bin('pg_ctl'), '-D', self.data, '-o', opts, '-l', os.path.join(self.dir, 'log'), '-w', 'start'])
        if wait_port('127.0.0.1', self.port, timeout=30):
            return self
        raise RuntimeError('PostgreSQL did not start; see %s/log' % self.dir)

    def restart(self, down_for):
        """Crash-stop the server (pg_ctl -m immediate: every connection dies at once), stay down for
        `down_for` seconds, start it again on the same port and data (it runs crash recovery)."""
        self._as_owner([_bin('pg_ctl'), '-D', self.data, '-m', 'immediate', 'stop'])
        time.sleep(down_for)
        return self._run_server()

    def stop(self):
        try:
            self._as_owner([_bin('pg_ctl'), '-D', self.data, '-m', 'immediate', 'stop'])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
