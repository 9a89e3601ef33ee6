"""Hostile TCP clients for the agent's resilience tests and benchmark, bounded in count and time.

    with Hostile('127.0.0.1', port, idle=200, slowloris=200, silent_tls=50) as crowd:
        samples = probe_latency(url + '/v1/state', rate=20, duration=5)

- idle: connects and never sends a byte;
- slowloris: sends a request line and then one header line every `drip` seconds, never the
  blank line that ends the headers;
- silent_tls: connects to a TLS port and never sends a ClientHello (to a plain-HTTP agent it is
  just another idle connection).

With tls=True the idle and slowloris clients first complete a TLS handshake (certificate not
checked: the attacker does not care), so they reach the HTTP layer of a TLS agent.

Every socket goes to the given host and port only (loopback or a test namespace), is opened
once (no reconnect loop) and closed on exit; the drip thread stops by itself after `max_seconds`.
"""
import select
import socket
import ssl
import threading
import time

import requests


class Hostile:
    def __init__(self, host, port, idle=0, slowloris=0, silent_tls=0, drip=1.0, max_seconds=120.0, tls=False):
        self.host, self.port = host, port
        self.tls = tls
        self.counts = {'idle': idle, 'slowloris': slowloris, 'silent_tls': silent_tls}
        self.drip = drip
        self.max_seconds = max_seconds
        self.sockets = {'idle': [], 'slowloris': [], 'silent_tls': []}
        self.open_failures = 0
        self._stop = threading.Event()
        self._thread = None

    def _connect(self, handshake=False):
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
            if handshake:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(sock)
            return sock
        except OSError:
            self.open_failures += 1
            return None

    def open(self):
        # Silent TLS last: the agent drops those first (its handshake deadline is the shortest).
        for kind in ('idle', 'slowloris', 'silent_tls'):
            for _index in range(self.counts[kind]):
                sock = self._connect(handshake=self.tls and kind != 'silent_tls')
                if sock is None:
                    continue
                if kind == 'slowloris':
                    try:
                        sock.sendall(b'GET /v1/state HTTP/1.1\r\nHost: agent\r\n')
                    except OSError:
                        pass
                self.sockets[kind].append(sock)
        if self.sockets['slowloris']:
            self._thread = threading.Thread(target=self._dripper, name='slowloris', daemon=True)
            self._thread.start()
        return self

    def _dripper(self):
        deadline = time.monotonic() + self.max_seconds
        number = 0
        while not self._stop.wait(self.drip) and time.monotonic() < deadline:
            number += 1
            for sock in self.sockets['slowloris']:
                try:
                    sock.sendall(b'X-Drip-%d: x\r\n' % number)
                except OSError:
                    pass

    def still_open(self, kind):
        """How many sockets of a kind the server has neither answered nor closed (no blocking read)."""
        alive = 0
        for sock in self.sockets[kind]:
            if isinstance(sock, ssl.SSLSocket):
                # TLS 1.3 servers send session tickets after the handshake, so readable is no sign
                # of an answer here: read through TLS, which consumes them and reports app data only.
                sock.setblocking(False)
                try:
                    alive += 0 if sock.recv(1) else 0
                except ssl.SSLWantReadError:
                    alive += 1
                except OSError:
                    pass
                finally:
                    sock.settimeout(5)
                continue
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
            alive += 0 if poller.poll(0) else 1
        return alive

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for socks in self.sockets.values():
            for sock in socks:
                try:
                    sock.close()
                except OSError:
                    pass
            del socks[:]

    def __enter__(self):
        return self.open()

    def __exit__(self, *_exc):
        self.close()


def probe_latency(url, rate=20.0, duration=5.0, timeout=2.0, verify=False):
    """GET `url` at a fixed rate for `duration` s over one keep-alive session (after one warm-up request).

    Returns latencies in seconds; a request that fails or times out counts as `timeout`
    (so a stalled agent shows up in the percentiles instead of vanishing from them).
    """
    session = requests.Session()
    session.trust_env = False
    samples = []
    interval = 1.0 / rate
    try:
        try:  # warm-up: the connection (and TLS handshake) a keep-alive client makes once is not a sample
            session.get(url, timeout=timeout, verify=verify)
        except requests.RequestException:
            pass
        start = time.monotonic()
        for number in range(int(rate * duration)):
            due = start + number * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            began = time.monotonic()
            try:
                response = session.get(url, timeout=timeout, verify=verify)
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            samples.append(time.monotonic() - began if ok else timeout)
    finally:
        session.close()
    return samples


def percentile(samples, fraction):
    ordered = sorted(samples)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]
