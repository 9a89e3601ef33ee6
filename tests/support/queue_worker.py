"""A scheduler/poller process for the queue's multi-process tests (and a handy manual driver).

    python -m tests.support.queue_worker --store URL --credentials-file creds.json [--mode both|schedule|poll]
           [--until-drained] [--max-seconds 300] [--interval 0.02] [--start-lease 10] [--retry-delay 0.5]
           [--client-timeout 2] [--client-retries 1]

Runs schedule/poll steps in a loop (each step rides out a database outage of up to --outage-timeout
seconds, reconnecting with backoff) until the queue holds no unfinished job (--until-drained) or
--max-seconds pass; always ends by itself. Credentials come from a file (JSON {"*": {"username", "password"}}),
never from the command line, so they do not show in `ps`. Prints one JSON summary line at the end.
"""
import argparse
import json
import sys
import time

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixDriverFactory
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import MaskingQueueError
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--store', required=True)
    parser.add_argument('--credentials-file')
    parser.add_argument('--mode', choices=('both', 'schedule', 'poll'), default='both')
    parser.add_argument('--until-drained', action='store_true')
    parser.add_argument('--max-seconds', type=float, default=300.0)
    parser.add_argument('--interval', type=float, default=0.05, help='pause between idle cycles')
    parser.add_argument('--start-lease', type=float, default=10.0)
    parser.add_argument('--retry-delay', type=float, default=0.5)
    parser.add_argument('--probe-interval', type=float, default=0.5)
    parser.add_argument('--refresh-interval', type=float, default=0.2)
    parser.add_argument('--dead-holder-grace', type=float, default=3.0)
    parser.add_argument('--client-timeout', type=float, default=2.0)
    parser.add_argument('--client-retries', type=int, default=1)
    parser.add_argument('--outage-timeout', type=float, default=90.0, help='seconds a step rides out a database outage')
    return parser.parse_args(argv)


def unfinished(queue):
    return queue.store.unfinished_count()


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    credentials = {}
    if args.credentials_file:
        with open(args.credentials_file, encoding='utf-8') as handle:
            credentials = json.load(handle)
    factory = DelphixDriverFactory(timeout=args.client_timeout, retries=args.client_retries, backoff=0.05)
    started = time.monotonic()
    totals = {'cycles': 0, 'placed': 0, 'started': 0, 'finished': 0, 'recovered': 0, 'errors': 0}
    try:
        queue = MaskingQueue(args.store, credentials=credentials, driver_factory=factory, start_lease=args.start_lease,
                             retry_delay=args.retry_delay, probe_interval=args.probe_interval,
                             refresh_interval=args.refresh_interval, dead_holder_grace=args.dead_holder_grace,
                             outage_timeout=args.outage_timeout)
    except MaskingQueueError as exc:
        print(json.dumps({'error': str(exc)}), flush=True)
        return 2
    print(json.dumps({'ready': queue.owner}), flush=True)
    while time.monotonic() - started < args.max_seconds:
        busy = False
        try:
            if args.mode in ('both', 'schedule'):
                placed = queue.schedule_step()['placed']
                totals['placed'] += placed
                busy = busy or placed > 0
            if args.mode in ('both', 'poll'):
                stats = queue.poll_step(close_drivers=False)   # keep the engine sessions between cycles
                for key in ('started', 'finished', 'recovered'):
                    totals[key] += stats[key]
                busy = busy or stats['started'] > 0 or stats['finished'] > 0
        except MaskingQueueError as exc:
            totals['errors'] += 1
            print(json.dumps({'step_error': str(exc)}), flush=True)
        totals['cycles'] += 1
        try:
            if args.until_drained and not busy and unfinished(queue) == 0:
                break
        except MaskingQueueError as exc:   # the store stayed down longer than --outage-timeout: say so, go on
            totals['errors'] += 1
            print(json.dumps({'step_error': str(exc)}), flush=True)
        if not busy:
            time.sleep(args.interval)
    totals['seconds'] = round(time.monotonic() - started, 3)
    try:
        totals['unfinished'] = unfinished(queue)
    except MaskingQueueError as exc:
        totals['unfinished'] = None
        totals['last_error'] = str(exc)
    queue.close()   # logs out of the engines
    print(json.dumps(totals), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
