"""cheroot (the production WSGI server of CherryPy) with TLS, size limits and JSON-line error logs."""
import logging
import ssl

from cheroot import server as cheroot_server
from cheroot import wsgi

from orchestra_agent import __version__

LOG = logging.getLogger('orchestra_agent.server')
MAX_HEADER_BYTES = 16 * 1024
LISTEN_BACKLOG = 256


class AgentRequest(cheroot_server.HTTPRequest):
    """A request line naming an unknown HTTP version is the client's error: answer 400, not cheroot's 505."""

    def simple_response(self, status, msg=''):
        if str(status).startswith('505'):
            status = '400 Bad Request'
        super().simple_response(status, msg)


class AgentConnection(cheroot_server.HTTPConnection):
    RequestHandlerClass = AgentRequest


class AgentServer(wsgi.Server):
    """cheroot writes its own errors to stderr as plain text; route them through logging instead."""

    ConnectionClass = AgentConnection

    def error_log(self, msg='', level=logging.INFO, traceback=False):  # pylint: disable=arguments-differ
        LOG.log(level if level >= logging.WARNING else logging.DEBUG, msg, exc_info=traceback)


def build(settings, application):
    server = AgentServer((settings.listen, settings.port), application, numthreads=settings.threads,
                         server_name='orchestra-agent/%s' % __version__, timeout=10, shutdown_timeout=5,
                         # A burst of schedulers (say 100 claims at once) must queue, not be reset.
                         request_queue_size=LISTEN_BACKLOG)
    server.max_request_header_size = MAX_HEADER_BYTES
    # The app answers a too-large body with JSON 413 without reading it; this hard cap
    # keeps cheroot from draining an arbitrarily large body after that answer.
    server.max_request_body_size = max(4 * settings.max_body_bytes, 1024 * 1024)
    if settings.tls_cert:
        from cheroot.ssl.builtin import BuiltinSSLAdapter  # pylint: disable=import-outside-toplevel
        adapter = BuiltinSSLAdapter(settings.tls_cert, settings.tls_key)
        adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
        server.ssl_adapter = adapter
    return server
