"""Serve one simulated engine with cheroot (a production-grade WSGI server)."""
import socket
import time

from cheroot import wsgi

from .api import App
from .engine import Engine
from .faults import Faults


class DroppingGateway(wsgi.Gateway_10):
    """WSGI gateway that can close a connection without answering (lost responses, engine down).

    The app signals it through environ['sim.drop'][0]: False to answer normally, or the seconds
    to hold the connection before closing it.
    """

    def get_environ(self):
        environ = super().get_environ()
        environ['sim.drop'] = [False]
        return environ

    def respond(self):
        response = self.req.server.wsgi_app(self.env, self.start_response)
        hold = self.env['sim.drop'][0]
        if hold is False:
            self._send(response)
            return
        if hold:
            time.sleep(hold)
        self.req.close_connection = True
        self.req.sent_headers = True  # nothing may be written: the answer is lost
        try:
            self.req.conn.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, response):
        try:
            for chunk in filter(None, response):
                self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            if hasattr(response, 'close'):
                response.close()


def make_server(config, host='127.0.0.1', port=0, faults=None, threads=32):
    """Build (server, app); call server.prepare() to bind and server.serve() to run."""
    knobs = dict(config.get('faults') or {})
    knobs.update(faults or {})
    engine = Engine(config)
    app = App(engine, Faults(knobs))
    server = wsgi.Server((host, port), app, numthreads=threads, server_name='delphix-sim')
    server.gateway = DroppingGateway
    return server, app
