"""Benchmark: the agent's /v1/state latency with hostile connections open, against the same without them.

Side by side in one run, on loopback, against the REAL agent with TLS (so a silent TLS
client means something):
  * quiet:   a normal client at a fixed rate, nothing else connected;
  * attack:  the same client while 200 idle, 200 slowloris (TLS done, then one header
             line a second, never the end of the headers) and 50 silent-TLS (no ClientHello)
             connections are open;
  * peer:    the same attack on the agent as it was before (cheroot, thread per
             connection), run from git (--peer-ref), unless --no-peer.
The normal client keeps one keep-alive connection (after one warm-up request); a request
that fails or takes longer than --timeout counts as --timeout, so a stalled server shows up
in the percentiles instead of vanishing from them.

    .venv/bin/python bench/agent_attack_bench.py                  # defaults below
    .venv/bin/python bench/agent_attack_bench.py --rate 40 --seconds 4 --no-peer

Every hostile socket is opened once, to the agent on 127.0.0.1 only, and closed at the end;
the agents are stopped by pid. No Docker needed (the agent serves its state either way).
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

from bench_paths import use_staged_collection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PEER_REF = 'e1a562d'  # the last commit whose agent served with cheroot


def old_agent_source(ref, workdir):
    """The agent package as it was at `ref`, exported from git into workdir; its path or None."""
    target = os.path.join(workdir, 'old-agent')
    os.makedirs(target)
    archive = subprocess.run(['git', '-C', ROOT, 'archive', ref, 'roles/agent/files/agent'], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, check=False)
    if archive.returncode != 0:
        print('peer not run: git archive %s failed: %s' % (ref, archive.stderr.decode(errors='replace').strip()))
        return None
    subprocess.run(['tar', '-x', '-C', target], input=archive.stdout, check=True)
    return os.path.join(target, 'roles', 'agent', 'files', 'agent')


def measure(name, handle, crowd_sizes, args):
    from tests.support.hostile_clients import Hostile, percentile, probe_latency  # pylint: disable=import-outside-toplevel
    idle, slowloris, silent = crowd_sizes
    started = time.monotonic()
    with Hostile(handle.host, handle.port, idle=idle, slowloris=slowloris, silent_tls=silent, tls=True,
                 max_seconds=args.seconds + 60) as crowd:
        opened = time.monotonic() - started
        samples = probe_latency(handle.url + '/v1/state', rate=args.rate, duration=args.seconds, timeout=args.timeout)
        still = sum(crowd.still_open(kind) for kind in ('idle', 'slowloris', 'silent_tls'))
        failures = crowd.open_failures
    ms = sorted(sample * 1000.0 for sample in samples)
    return {'name': name, 'p50': percentile(ms, 0.5), 'p99': percentile(ms, 0.99), 'max': ms[-1],
            'timeouts': sum(1 for sample in samples if sample >= args.timeout), 'samples': len(samples),
            'hostile': idle + slowloris + silent, 'still_open': still, 'open_failures': failures, 'open_s': opened}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rate', type=float, default=40.0, help='normal client requests per second')
    parser.add_argument('--seconds', type=float, default=3.0, help='measurement time per row (the TLS handshake '
                        'deadline is 5 s: keep it below that so the silent clients are still there)')
    parser.add_argument('--timeout', type=float, default=2.0, help='a request slower than this counts as this')
    parser.add_argument('--idle', type=int, default=200)
    parser.add_argument('--slowloris', type=int, default=200)
    parser.add_argument('--silent-tls', type=int, default=50)
    parser.add_argument('--peer-ref', default=DEFAULT_PEER_REF, help='git ref of the cheroot agent to attack as the peer')
    parser.add_argument('--no-peer', action='store_true')
    args = parser.parse_args()
    if not 0 < args.seconds <= 60 or not 0 < args.rate <= 200 or args.idle + args.slowloris + args.silent_tls > 2000:
        parser.error('keep it bounded: --seconds <= 60, --rate <= 200, at most 2000 hostile connections')
    use_staged_collection()
    warnings.simplefilter('ignore')  # the normal client does not check the self-signed certificate
    from tests.support.agent_proc import self_signed_pair, start_agent  # pylint: disable=import-outside-toplevel

    print('agent attack benchmark: %.0f req/s for %.1f s per row; attack = %d idle + %d slowloris + %d silent-TLS'
          % (args.rate, args.seconds, args.idle, args.slowloris, args.silent_tls))
    print('python %s, %s, %d CPUs, load average %.1f %.1f %.1f at start'
          % ((platform.python_version(), platform.platform(), os.cpu_count()) + os.getloadavg()))
    workdir = tempfile.mkdtemp(prefix='agent-attack-bench-')
    crowd = (args.idle, args.slowloris, args.silent_tls)
    rows = []
    try:
        cert, key = self_signed_pair(workdir)
        tls = {'tls_cert': cert, 'tls_key': key}
        dead_docker = 'unix://' + os.path.join(workdir, 'no-docker.sock')
        agent = start_agent(labels=['orchestra.bench.attack'], docker_url=dead_docker, config=tls)
        try:
            rows.append(measure('agent, quiet', agent, (0, 0, 0), args))
            rows.append(measure('agent, attack', agent, crowd, args))
        finally:
            agent.close()
        source = None if args.no_peer else old_agent_source(args.peer_ref, workdir)
        if source is not None:
            # `env` puts the old package first on the path (start_agent's own PYTHONPATH comes after it).
            old = start_agent(labels=['orchestra.bench.attack'], docker_url=dead_docker, config=tls,
                              prefix=['env', 'PYTHONPATH=' + source])
            try:
                rows.append(measure('cheroot agent, quiet', old, (0, 0, 0), args))
                rows.append(measure('cheroot agent, attack', old, crowd, args))
            finally:
                old.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print('load average %.1f %.1f %.1f at end (other work on the machine inflates the tail latencies)' % os.getloadavg())
    print('%-24s %9s %9s %9s %9s %9s %13s' % ('/v1/state', 'p50 ms', 'p99 ms', 'max ms', 'timeouts', 'hostile', 'still open'))
    for row in rows:
        values = (row['name'], row['p50'], row['p99'], row['max'], row['timeouts'], row['hostile'], row['still_open'])
        print('%-24s %9.2f %9.2f %9.2f %9d %9d %13d' % values)
    quiet, attack = rows[0], rows[1]
    print()
    print('attack / quiet: p50 %.2fx, p99 %.2fx (%d samples a row; hostile connections opened in %.1f s, %d failed to open)'
          % (attack['p50'] / quiet['p50'], attack['p99'] / quiet['p99'], attack['samples'], attack['open_s'],
             attack['open_failures']))
    if len(rows) == 4:
        print('cheroot agent under the same attack: p99 %.0f ms, %d of %d requests timed out (%.1f s)'
              % (rows[3]['p99'], rows[3]['timeouts'], rows[3]['samples'], args.timeout))
    print('target: p99 under attack < 50 ms: %s' % ('met' if attack['p99'] < 50 else 'MISSED'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
