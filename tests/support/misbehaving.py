"""Servers that misbehave on purpose, to prove discovery reports them instead of breaking.

Modes:
  reset      accept, then close with RST (SO_LINGER 0)
  tarpit     accept and never answer (keeps the socket open)
  html       HTTP 200 text/html page
  garbage    bytes that are not HTTP at all
  wrong_json HTTP 200 application/json of the wrong shape
  drip       HTTP 200 application/json headers, then the body one byte every 0.2 s, never complete
             (each recv() gets data well within any read timeout, so only a deadline stops a client)
  bigbody    HTTP 200 application/json with a 10 MB body, sent as fast as the client reads
  json       HTTP answers from a {path: (status, body)} table (a scriptable fake agent for unit tests)

In-process: `with MisbehavingServer('tarpit') as server: server.port`.
As a process (e.g. inside a network namespace):
  python -m tests.support.misbehaving --mode tarpit --listen 10.78.0.20 --port 9009
"""
import argparse
import json
import signal
import socket
import struct
import sys
import threading

HTML = b'<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body>It works</body></html>'
WRONG_JSON = {'status': 'ok', 'hosts': ['a', 'b'], 'state': 42}


def _http(status, content_type, body):
    head = 'HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % (
        status, content_type, len(body))
    return head.encode('ascii') + body


def _read_request(conn):
    """The request line and body (enough of HTTP/1.1 for our clients)."""
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, None, b''
        data += chunk
    head, _sep, body = data.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    method, path = lines[0].split(' ')[:2]
    length = 0
    for line in lines[1:]:
        if line.lower().startswith('content-length:'):
            length = int(line.split(':', 1)[1])
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return method, path, body


class MisbehavingServer:
    def __init__(self, mode, listen='127.0.0.1', port=0, routes=None):
        self.mode = mode
        self.routes = routes or {}
        self.requests = []  # (method, path, body) seen, for assertions
        family = socket.AF_INET6 if ':' in listen else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((listen, port))
        self._sock.listen(128)
        self.listen = listen
        self.port = self._sock.getsockname()[1]
        self._held = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        for conn in self._held:
            conn.close()
        self._thread.join(timeout=5)

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _peer = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            if self.mode == 'tarpit':
                self._held.append(conn)  # never answer, never close until stop()
                return
            if self.mode == 'reset':
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                conn.close()
                return
            method, path, body = _read_request(conn)
            if method is None:
                conn.close()
                return
            self.requests.append((method, path, body))
            if self.mode == 'garbage':
                conn.sendall(b'\x00\xffSSH-2.0-not-http\x01\x02 garbage garbage\r\n\r\n')
            elif self.mode == 'html':
                conn.sendall(_http(200, 'text/html', HTML))
            elif self.mode == 'wrong_json':
                conn.sendall(_http(200, 'application/json', json.dumps(WRONG_JSON).encode()))
            elif self.mode == 'json':
                conn.sendall(self._route(method, path, body))
            elif self.mode == 'drip':
                self._drip(conn)
            elif self.mode == 'bigbody':
                self._big_body(conn)
            conn.close()
        except OSError:
            conn.close()

    def _drip(self, conn, interval=0.2, limit=3000):
        """Bounded (limit bytes, ~10 min) and stopped by stop(): a test loop must end by itself."""
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"state": "lazy", "reason": "')
        for _byte in range(limit):
            if self._stop.wait(interval):
                return
            conn.sendall(b'z')

    def _big_body(self, conn, size=10 * 1024 * 1024):
        chunk = b' ' * 65536
        conn.sendall(('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' % size).encode())
        sent = 0
        while sent < size and not self._stop.is_set():
            conn.sendall(chunk)
            sent += len(chunk)

    def _route(self, method, path, body):
        answer = self.routes.get((method, path), self.routes.get(path))
        if callable(answer):
            answer = answer(method, path, body)
        if answer is None:
            return _http(404, 'application/json', json.dumps({'error': 'not_found', 'message': 'no route %s' % path}).encode())
        status, payload = answer[0], answer[1]
        content_type = answer[2] if len(answer) > 2 else 'application/json'
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return _http(status, content_type, data)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--mode', required=True, choices=('reset', 'tarpit', 'html', 'garbage', 'wrong_json', 'drip', 'bigbody'))
    parser.add_argument('--listen', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=9009)
    args = parser.parse_args(argv)
    server = MisbehavingServer(args.mode, args.listen, args.port).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print('listening %s:%d mode %s' % (args.listen, server.port, args.mode), flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
