"""The agent's HTTP/1.1 server: one asyncio event loop, h11 for the protocol, TLS off the accept path.

Why not a thread-per-connection server (cheroot, which this replaces): there every open
connection holds a worker thread, so 8 idle sockets (the thread count) or a dozen slowloris
clients stalled the agent, and cheroot ran the TLS handshake on its accept thread, so one
client that never sent a ClientHello froze it (cherrypy/cheroot#748). Here a connection costs
a few kilobytes, whatever it does:

- every connection has deadlines on the agent's own monotonic clock: the TLS handshake,
  the request headers (from the start of each request cycle, so a keep-alive connection
  that sits idle is closed too), the body, and the write of the answer;
- at most `max_connections` are open; a new one beyond that evicts the connection that has
  waited longest without a request in progress (never-served ones first), so a crowd of
  idle sockets sheds itself instead of locking out the scheduler's probes;
- the TLS handshake runs on the event loop (loop.start_tls) under its own deadline, so it
  never blocks accepting or serving anybody else.

The application is called with a WSGI-style environ and a fully read body. Reads (GET) are
answered on the loop (they only read in-memory snapshots); mutations run in a small thread
pool, because they write the claims file with fsync.
"""
import asyncio
import concurrent.futures
import io
import logging
import resource
import socket
import ssl
import threading
from urllib.parse import unquote_to_bytes

import h11

from orchestra_agent import __version__

LOG = logging.getLogger('orchestra_agent.server')
MAX_HEADER_BYTES = 16 * 1024
LISTEN_BACKLOG = 1024
TLS_HANDSHAKE_TIMEOUT = 5.0
READ_CHUNK = 65536
STOP_GRACE = 5.0
SLOW_READ_THREADS = 4
SERVER_HEADER = ('orchestra-agent/%s' % __version__).encode('ascii')


class Deadline(Exception):
    """A per-connection deadline passed."""


def raise_fd_limit(wanted):
    """Raise the soft open-files limit towards `wanted`; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def listening_socket(host, port):
    """A bound, listening, non-blocking socket; OSError when the address is taken or invalid."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ('::', ''):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def environ_for(request, body, peer, tls):
    """h11 Request + body -> the WSGI-style environ the application reads."""
    target = request.target
    path, _sep, query = target.partition(b'?')
    environ = {
        'REQUEST_METHOD': request.method.decode('ascii', 'replace'),
        'PATH_INFO': unquote_to_bytes(path).decode('latin-1'),
        'QUERY_STRING': query.decode('latin-1'),
        'REQUEST_URI': target.decode('latin-1'),
        'SERVER_PROTOCOL': 'HTTP/' + request.http_version.decode('ascii', 'replace'),
        'REMOTE_ADDR': peer[0] if peer else '',
        'wsgi.url_scheme': 'https' if tls else 'http',
        'wsgi.input': io.BytesIO(body),
    }
    for name, value in request.headers:
        key = name.decode('latin-1').upper().replace('-', '_')
        text = value.decode('latin-1')
        if key in ('CONTENT_LENGTH', 'CONTENT_TYPE'):
            environ[key] = text
            continue
        key = 'HTTP_' + key
        environ[key] = environ[key] + ',' + text if key in environ else text
    return environ


def call_application(application, environ):
    """Run the WSGI-style application; -> (status code, reason, headers, body bytes)."""
    captured = {}

    def start_response(status, headers, exc_info=None):  # pylint: disable=unused-argument
        captured['status'], captured['headers'] = status, headers

    body = b''.join(application(environ, start_response))
    code, _sep, reason = captured['status'].partition(' ')
    return int(code), reason, captured['headers'], body


class Connection(asyncio.Protocol):
    """One client connection: feeds h11, serves request after request, enforces the deadlines."""

    def __init__(self, server):
        self.server = server
        self.loop = server.loop
        self.transport = None
        self.peer = None
        self.buffer = bytearray()
        self.eof = False
        self.closed = False
        self.wakeup = None
        self.can_write = None
        self.busy = False        # a request is being answered: not to be evicted
        self.want_headers = False  # waiting for the headers of a new request
        self.served = 0          # requests answered on this connection
        self.waiting_since = self.loop.time()
        self.task = None

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport):
        if self.transport is not None:  # start_tls hands the protocol its new TLS transport
            return
        self.transport = transport
        self.peer = transport.get_extra_info('peername')
        self.server.admit(self)
        if not self.closed:
            self.task = self.loop.create_task(self.run())

    def data_received(self, data):
        self.buffer += data
        if len(self.buffer) > 4 * READ_CHUNK:
            self.transport.pause_reading()  # h11 is not keeping up; resumed when it has read the buffer
        if self.want_headers and len(self.buffer) <= MAX_HEADER_BYTES:
            # Waiting for request headers: parsing is pointless until the blank line that ends them
            # arrives (h11 accepts LF and CRLF), so a slowloris drip costs one search, not a parse.
            tail = bytes(self.buffer[-(len(data) + 2):])
            if b'\n\n' not in tail and b'\n\r\n' not in tail:
                return
        self._wake()

    def eof_received(self):
        self.eof = True
        self._wake()
        # Keep a plain transport open to answer a request that ended with the half-close; TLS cannot
        # half-close (asyncio warns when asked to), so there the answer is lost with the connection.
        return self.server.ssl_context is None

    def connection_lost(self, exc):
        self.closed = True
        self._wake()
        if self.can_write is not None and not self.can_write.done():
            self.can_write.set_result(None)
        self.server.forget(self)

    def pause_writing(self):
        self.can_write = self.loop.create_future()

    def resume_writing(self):
        if self.can_write is not None and not self.can_write.done():
            self.can_write.set_result(None)
        self.can_write = None

    def _wake(self):
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    # -- helpers ---------------------------------------------------------------------------------
    def abort(self):
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def _wait_data(self, deadline):
        remaining = deadline - self.loop.time()
        if remaining <= 0:
            raise Deadline()
        self.wakeup = self.loop.create_future()
        try:
            await asyncio.wait_for(self.wakeup, remaining)
        except asyncio.TimeoutError:
            raise Deadline()
        finally:
            self.wakeup = None

    async def next_event(self, conn, deadline):
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.buffer:
                # h11 checks its size limit only on incomplete events: fed in small pieces, headers
                # larger than MAX_HEADER_BYTES (plus one piece) are refused even when sent at once.
                size = 4096 if self.want_headers else READ_CHUNK
                data = bytes(self.buffer[:size])
                del self.buffer[:size]
                if not self.buffer and not self.closed:
                    self.transport.resume_reading()
                conn.receive_data(data)
            elif self.eof or self.closed:
                conn.receive_data(b'')
            else:
                await self._wait_data(deadline)

    async def write(self, data, deadline):
        if self.closed or not data:
            return
        self.transport.write(data)
        if self.can_write is not None:
            remaining = deadline - self.loop.time()
            try:
                await asyncio.wait_for(asyncio.shield(self.can_write), max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise Deadline()

    # -- the connection's life -------------------------------------------------------------------
    async def run(self):
        try:
            if self.server.ssl_context is not None:
                await self._handshake()
            await self._serve()
        except (Deadline, ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # pylint: disable=broad-except  # one connection's bug never stops the server
            LOG.exception('connection failed', extra={'fields': {'peer': str(self.peer)}})
        finally:
            if self.busy:
                self.abort()
            else:
                self._close()
            self.server.forget(self)  # also when the TLS handshake failed (no connection_lost then)

    async def _handshake(self):
        transport = await self.loop.start_tls(self.transport, self, self.server.ssl_context, server_side=True,
                                              ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        if transport is None:
            raise ConnectionError('TLS handshake failed')
        self.transport = transport

    def _close(self):
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    async def _serve(self):
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        timeout = self.server.request_timeout
        while not self.closed and not self.server.stopping:
            self.busy = False
            self.waiting_since = self.loop.time()
            deadline = self.waiting_since + timeout
            try:
                self.want_headers = conn.their_state is h11.IDLE
                try:
                    event = await self.next_event(conn, deadline)
                finally:
                    self.want_headers = False
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    return
                if event.http_version not in (b'1.0', b'1.1'):
                    raise h11.RemoteProtocolError('unsupported HTTP version', error_status_hint=400)
                self.busy = True
                body, too_large = await self._read_body(conn, event, self.loop.time() + timeout)
            except h11.RemoteProtocolError as exc:
                await self._protocol_error(conn, exc, self.loop.time() + timeout)
                return
            except Deadline:
                if conn.their_state is h11.SEND_BODY:
                    # Headers came, the body did not: say so before closing (a 408 is harmless to a client).
                    await self._simple(conn, 408, 'request_timeout', 'the request body did not arrive in time',
                                       self.loop.time() + timeout)
                return
            if too_large:  # refused before authentication or routing, and the rest is not read
                await self._simple(conn, 413, 'too_large', 'body exceeds %d bytes' % self.server.max_body,
                                   self.loop.time() + timeout)
                return
            status, reason, headers, payload = await self.server.dispatch(
                environ_for(event, body, self.peer, self.server.ssl_context is not None))
            keep = not self.server.stopping
            if event.method == b'HEAD':
                payload = b''  # h11 frames a HEAD answer without a body
            await self._respond(conn, status, reason, headers, payload, keep, self.loop.time() + timeout)
            self.served += 1
            if conn.our_state is h11.MUST_CLOSE or not keep:
                return
            # Anything the client sent past its request body belongs to the next cycle.
            try:
                while conn.their_state is not h11.DONE:
                    event = await self.next_event(conn, self.loop.time() + timeout)
                    if isinstance(event, h11.ConnectionClosed):
                        return
                conn.start_next_cycle()
            except (h11.ProtocolError, Deadline):
                return

    async def _read_body(self, conn, request, deadline):
        """(the whole body, False), or (b'', True) when it exceeds max_body_bytes (then answered 413)."""
        cap = self.server.max_body
        length = dict(request.headers).get(b'content-length')
        if length is not None and length.isdigit() and int(length) > cap:
            return b'', True  # refused from Content-Length alone, without reading it
        if conn.they_are_waiting_for_100_continue:
            await self.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])), deadline)
        chunks, size = [], 0
        while True:
            event = await self.next_event(conn, deadline)
            if isinstance(event, h11.Data):
                size += len(event.data)
                chunks.append(event.data)
                if size > cap:
                    return b'', True
            elif isinstance(event, h11.EndOfMessage):
                return b''.join(chunks), False
            else:
                raise h11.RemoteProtocolError('connection closed inside the request body')

    async def _respond(self, conn, status, reason, headers, payload, keep, deadline):
        out = [(b'server', SERVER_HEADER)]
        out += [(name.encode('latin-1'), value.encode('latin-1')) for name, value in headers]
        if not keep:
            out.append((b'connection', b'close'))
        data = conn.send(h11.Response(status_code=status, reason=reason.encode('latin-1'), headers=out))
        data += conn.send(h11.Data(data=payload)) if payload else b''
        data += conn.send(h11.EndOfMessage())
        await self.write(data, deadline)

    async def _simple(self, conn, status, code, message, deadline):
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status, reason, headers, payload = self.server.error_answer(status, code, message)
        try:
            await self._respond(conn, status, reason, headers, payload, False, deadline)
        except h11.LocalProtocolError:
            pass

    async def _protocol_error(self, conn, exc, deadline):
        status = exc.error_status_hint
        # A request line naming an unknown HTTP version (h11 hints 505) is the client's error too.
        status = 400 if not 400 <= status < 500 else status
        await self._simple(conn, status, 'bad_request', 'malformed HTTP request: %s' % str(exc)[:200], deadline)


class AgentServer:
    """Owns the listening socket, the event loop and the mutation thread pool."""

    def __init__(self, settings, application, error_answer):
        self.settings = settings
        self.application = application
        self.error_answer = error_answer
        self.max_body = settings.max_body_bytes
        self.request_timeout = float(settings.request_timeout)
        self.max_connections = settings.max_connections
        self.ssl_context = None
        self.loop = None
        self.sock = None
        self.stopping = False
        self.connections = {}
        self.shed = 0
        self._stop_event = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix='mutation')
        self._read_pool = concurrent.futures.ThreadPoolExecutor(max_workers=SLOW_READ_THREADS, thread_name_prefix='slow-read')

    @property
    def bind_addr(self):
        return self.sock.getsockname()[:2]

    def prepare(self):
        """Load TLS and bind (OSError / ssl.SSLError on failure) before the loop starts, so errors show at once."""
        if self.settings.tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
            self.ssl_context = context
        limit = raise_fd_limit(self.max_connections + 128)
        if limit != resource.RLIM_INFINITY and limit < self.max_connections + 64:
            allowed = max(16, limit - 64)
            LOG.warning('open-files limit below max_connections', extra={'fields': {
                'limit': limit, 'max_connections': self.max_connections, 'using': allowed}})
            self.max_connections = allowed
        self.sock = listening_socket(self.settings.listen, self.settings.port)

    # -- connection accounting ---------------------------------------------------------------------
    def admit(self, connection):
        """Track a new connection; over the cap, evict the one waiting longest without a request in progress."""
        if len(self.connections) >= self.max_connections:
            victims = [conn for conn in self.connections if not conn.busy]
            if victims:
                victim = min(victims, key=lambda conn: (conn.served > 0, conn.waiting_since))
                self.connections.pop(victim, None)
                victim.abort()
            else:
                connection.abort()  # every slot is answering a request right now: refuse the newcomer
            self.shed += 1
            if self.shed in (1, 10, 100, 1000) or self.shed % 10000 == 0:
                LOG.warning('connection cap reached; shedding', extra={'fields': {
                    'max_connections': self.max_connections, 'shed_total': self.shed}})
            if connection.closed:
                return
        self.connections[connection] = None

    def forget(self, connection):
        self.connections.pop(connection, None)

    async def dispatch(self, environ):
        inline = getattr(self.application, 'answers_inline', None)
        if inline(environ) if inline is not None else environ['REQUEST_METHOD'] in ('GET', 'HEAD'):
            return call_application(self.application, environ)
        # Reads that wait on Docker get their own few threads, so a crowd of them never delays a claim.
        pool = self._pool if environ['REQUEST_METHOD'] not in ('GET', 'HEAD') else self._read_pool
        return await self.loop.run_in_executor(pool, call_application, self.application, environ)

    # -- life cycle ------------------------------------------------------------------------------
    def serve(self):
        """Run until stop(); returns after open connections finished or STOP_GRACE passed."""
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self._pool.shutdown(wait=True)
            self._read_pool.shutdown(wait=True)
            self.loop.close()

    async def _main(self):
        self._stop_event = asyncio.Event()
        if self.stopping:  # a signal came before the loop ran
            self._stop_event.set()
        server = await self.loop.create_server(lambda: Connection(self), sock=self.sock, backlog=LISTEN_BACKLOG)
        await self._stop_event.wait()
        self.stopping = True
        server.close()
        for conn in list(self.connections):
            if not conn.busy:
                conn.abort()
        deadline = self.loop.time() + STOP_GRACE
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        await asyncio.sleep(0)  # let the aborts run their callbacks before the loop closes

    def stop(self):
        """Thread- and signal-safe: ask the loop to stop serving."""
        loop, event = self.loop, self._stop_event
        if loop is None or event is None:
            self.stopping = True
            return
        loop.call_soon_threadsafe(event.set)


def start_in_thread(server):
    """Serve in a background thread (tests); returns the thread."""
    thread = threading.Thread(target=server.serve, name='agent-http', daemon=True)
    thread.start()
    return thread


def build(settings, application):
    from orchestra_agent import app  # pylint: disable=import-outside-toplevel
    return AgentServer(settings, application, app.error_answer)
