"""python -m delphix_sim --port P --config FILE [fault knobs]: run one simulated engine.

Prints one line `DELPHIX_SIM READY port=<port> url=<base url>` on stdout once it listens.
"""
import argparse
import os
import signal
import sys
import threading
import time

from .config import load_config
from .server import make_server


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m delphix_sim', description=__doc__.splitlines()[0])
    parser.add_argument('--config', required=True, help='engine config file (JSON or YAML)')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8282, help='0 picks a free port')
    parser.add_argument('--threads', type=int, default=32)
    parser.add_argument('--parent-pid', type=int, help='exit when this process is gone (no orphans after a crashed test run)')
    parser.add_argument('--fault-error-rate', type=float, dest='error_rate')
    parser.add_argument('--latency-ms', type=float, dest='latency_ms')
    parser.add_argument('--lost-response-rate', type=float, dest='lost_response_rate')
    parser.add_argument('--lost-mode', choices=('reset', 'hang'), dest='lost_mode')
    parser.add_argument('--lost-hold-s', type=float, dest='lost_hold_s')
    parser.add_argument('--token-expiry-calls', type=int, dest='token_expiry_calls')
    parser.add_argument('--token-timeout-s', type=float, dest='token_timeout_s')
    parser.add_argument('--down-after', type=float, dest='down_after', help='seconds after start until the engine goes down')
    parser.add_argument('--down-for', type=float, dest='down_for', help='seconds the engine stays down')
    parser.add_argument('--down-mode', choices=('reset', '503'), dest='down_mode')
    parser.add_argument('--fault-match', dest='match', help='regex on "METHOD /path" limiting error/lost/latency faults')
    parser.add_argument('--fault-budget', type=int, dest='budget')
    parser.add_argument('--fault-seed', type=int, dest='seed')
    parser.add_argument('--post-status', type=int, choices=(200, 201), dest='post_status')
    parser.add_argument('--clock-offset-s', type=float, dest='clock_offset_s',
                        help="the engine's clock in seconds ahead (+) or behind (-) this host's (overrides the config)")
    return parser.parse_args(argv)


FAULT_ARGS = ('error_rate', 'latency_ms', 'lost_response_rate', 'lost_mode', 'lost_hold_s', 'token_expiry_calls',
              'token_timeout_s', 'down_after', 'down_for', 'down_mode', 'match', 'budget', 'seed', 'post_status')


def exit_with_parent(pid, interval=1.0):
    """Watch the parent; a test run killed hard must not leave engines behind."""
    def watch():
        while True:
            time.sleep(interval)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)  # pylint: disable=protected-access
            except PermissionError:
                pass  # alive, owned by someone else
            if os.getppid() != pid:
                os._exit(0)  # pylint: disable=protected-access
    threading.Thread(target=watch, name='parent-watch', daemon=True).start()


def main(argv=None):
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError, as are JSON errors
        sys.stderr.write('delphix_sim: bad config %s: %s\n' % (args.config, exc))
        return 2
    if args.clock_offset_s is not None:
        config['engine']['clock_offset_s'] = args.clock_offset_s
    faults = {name: getattr(args, name) for name in FAULT_ARGS if getattr(args, name) is not None}
    server, _app = make_server(config, args.host, args.port, faults, args.threads)
    if args.parent_pid:
        exit_with_parent(args.parent_pid)
    server.prepare()
    port = server.bind_addr[1]

    def stop(_signum, _frame):
        # No state to flush; a graceful cheroot stop would wait for clients' idle keep-alive connections.
        sys.stdout.flush()
        os._exit(0)  # pylint: disable=protected-access

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write('DELPHIX_SIM READY port=%d url=http://%s:%d/masking/api\n' % (port, args.host, port))
    sys.stdout.flush()
    server.serve()


if __name__ == '__main__':
    sys.exit(main())
