"""Process and lock helpers shared by the lab's fixtures."""
import fcntl
import os
import signal
import subprocess
from contextlib import contextmanager

from tests.support.lab.paths import lab_dir


def stop_process(proc, timeout=10):
    """SIGTERM a process we started, SIGKILL it after `timeout` s; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def cmdline(pid):
    """A process's command line ('' once it is gone), to tell our process from another that reused its pid."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
        return ''


@contextmanager
def locked(name):
    """An exclusive lock shared by every process of the lab (parallel suites, helpers)."""
    with open(os.path.join(lab_dir(), name + '.lock'), 'w') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
