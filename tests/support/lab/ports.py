"""TCP port helpers shared by the lab's fixtures and the tests."""
import socket
import time


def free_port(address='127.0.0.1'):
    """A port nothing listens on right now (the kernel picks it; closed again before we return)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def port_open(address, port, timeout=2.0):
    """Whether address:port accepts a TCP connection within `timeout` s."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def wait_port(address, port, timeout):
    """Wait, at most `timeout` s, until address:port accepts; return whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(address, port, timeout=0.5):
            return True
        time.sleep(0.05)
    return False
