"""`orchestra-agent`: read settings, start the Docker watcher and the HTTP server, stop cleanly on SIGTERM."""
import argparse
import gc
import logging
import os
import signal
import sys

from orchestra_agent import __version__, config, persist

LOG = logging.getLogger('orchestra_agent')
EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='orchestra-agent', description='orchestra.fleet worker agent')
    parser.add_argument('--config', help='JSON config file (every key optional)')
    parser.add_argument('--listen', help='address to bind (default 0.0.0.0)')
    parser.add_argument('--port', type=int, help='TCP port (default 9009; 0 picks a free one)')
    parser.add_argument('--state-dir', help='where claims and acknowledgements are persisted')
    parser.add_argument('--docker-url', help='Docker Engine URL (default unix:///var/run/docker.sock)')
    parser.add_argument('--label', action='append', dest='labels',
                        help='workload selector "key" or "key=value" (repeatable; all must match)')
    parser.add_argument('--workflows-dir', help='directory whose entries are listed as workflows')
    parser.add_argument('--token-file', help='file holding the bearer token')
    parser.add_argument('--log-level', choices=config.LOG_LEVELS)
    parser.add_argument('--version', action='version', version='orchestra-agent ' + __version__)
    return parser.parse_args(argv)


def load_settings(args, env):
    file_values = config.load_file(args.config) if args.config else {}
    overrides = {'listen': args.listen, 'port': args.port, 'state_dir': args.state_dir, 'docker_url': args.docker_url,
                 'labels': args.labels, 'workflows_dir': args.workflows_dir, 'token_file': args.token_file,
                 'log_level': args.log_level}
    return config.validate(config.merge(file_values, overrides, env))


def fail(code, message):
    sys.stderr.write('orchestra-agent: error: %s\n' % message)
    return code


def on_signal(http, signum):
    LOG.info('stopping', extra={'fields': {'signal': signal.Signals(signum).name}})
    http.stop()


def warn_if_unguarded(settings):
    """Without a token anyone who reaches the port can claim the host or clear its failures: say so loudly."""
    if settings.token:
        return
    LOG.warning('MUTATIONS ARE UNGUARDED: no token is configured, so anyone who can reach this port can claim '
                'this host, release or renew claims and acknowledge its failures. Set token or token_file '
                '(the orchestra.fleet.agent role provisions one by default).',
                extra={'fields': {'event': 'unguarded', 'auth': False}})


def main(argv=None):
    # Deferred imports keep `--help` and config errors fast and independent of the SDKs.
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(args, os.environ)
    except config.ConfigError as exc:
        return fail(EXIT_CONFIG, str(exc))
    from orchestra_agent import app, core, dockerwatch, logs, server, workload  # pylint: disable=import-outside-toplevel
    logs.setup(settings.log_level)
    watcher = dockerwatch.DockerWatcher(settings.docker_url, workload.selectors(settings.labels))
    try:
        agent = core.Agent(settings, watcher)
    except persist.StoreError as exc:
        return fail(EXIT_CONFIG, str(exc))
    http = server.build(settings, app.Application(agent))
    try:
        http.prepare()
    except (OSError, ValueError) as exc:
        return fail(EXIT_RUNTIME, 'cannot listen on %s:%s: %s' % (settings.listen, settings.port, exc))
    # The loop is not running yet: a signal before it does only marks the server as stopping.
    signal.signal(signal.SIGTERM, lambda signum, _frame: on_signal(http, signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: on_signal(http, signum))
    watcher.start()
    host, port = http.bind_addr[:2]
    LOG.info('listening', extra={'fields': {'event': 'listening', 'listen': host, 'port': port, 'version': __version__,
                                            'tls': bool(settings.tls_cert), 'auth': bool(settings.token),
                                            'auth_reads': settings.auth_reads, 'labels': settings.labels,
                                            'max_connections': http.max_connections,
                                            'docker_url': settings.docker_url, 'pid': os.getpid()}})
    warn_if_unguarded(settings)
    # Everything allocated so far (modules, SDKs) lives until exit: keep it out of the
    # cyclic collector, so full collections stay short and do not stall requests.
    gc.collect()
    gc.freeze()
    http.serve()
    watcher.stop()
    LOG.info('stopped', extra={'fields': {'event': 'stopped'}})
    return 0
