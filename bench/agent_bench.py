"""Benchmark: the orchestra agent vs the original design's method (`docker ps` on every request).

Side by side in one run, against the same 100 busybox workload containers:
  * the REAL agent (subprocess, event-fed cache), and
  * a peer: an equivalent tiny endpoint on the same server library (cheroot)
    that shells out to `docker ps --filter label=...` on every request, as the
    original tool did.
Measured: /v1/state latency p50/p99 at a fixed, open-loop request rate (one new
connection per request, as curl or an inventory scan does; sends stay on
schedule whatever the server does, so its queueing is not hidden), each server
process's RSS after N keep-alive requests, and CPU time per request. Prints both
and the ratios, plus a third latency row, the noise floor: a cheroot endpoint
answering a constant '{}', measured the same way in the same run, which shows how
much of the tail is the machine rather than either server.

    .venv/bin/python bench/agent_bench.py                      # defaults below
    .venv/bin/python bench/agent_bench.py --containers 100 --rate 10 --latency-requests 600 \
        --rss-requests 10000 --peer-rss-requests 1000

Run as root on the lab machine (it starts the shared lab dockerd if none runs).
Every container it creates carries a unique label, sleeps a bounded time and is
removed at the end; the agent and the peer are stopped by pid.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CONTAINER_LIFETIME = 1800  # seconds; containers end by themselves even if this script is killed


# -- the peer: the original design's method ------------------------------------------
def serve_peer(port, label):
    """A tiny JSON endpoint that runs `docker ps` per request (run in its own process).

    With label None it answers a constant '{}' instead: the noise floor of the
    server library and the machine, measured the same way in the same run.
    """
    from cheroot import wsgi  # pylint: disable=import-outside-toplevel

    def app(environ, start_response):
        if label is None:
            start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', '2')])
            return [b'{}']
        if environ.get('PATH_INFO') != '/v1/state':
            start_response('404 Not Found', [('Content-Type', 'application/json')])
            return [b'{"error": "not_found"}']
        result = subprocess.run(['docker', 'ps', '--filter', 'label=' + label, '--format', '{{.Names}}'],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        if result.returncode:
            body = {'state': 'unknown', 'reason': result.stderr.decode(errors='replace').strip()}
        else:
            names = result.stdout.decode().split()
            body = {'state': 'busy' if names else 'lazy', 'busy': bool(names), 'running': len(names)}
        payload = json.dumps(body).encode()
        start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(payload)))])
        return [payload]

    server = wsgi.Server(('127.0.0.1', port), app, numthreads=8)
    import signal  # pylint: disable=import-outside-toplevel
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.stop).start())
    server.prepare()
    sys.stderr.write('{"event": "listening", "port": %d}\n' % server.bind_addr[1])
    sys.stderr.flush()
    server.serve()


# -- measurement helpers ------------------------------------------------------------------
def rss_mb(pid):
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError('no VmRSS for pid %d' % pid)


def cpu_seconds(pid):
    """utime+stime of the process and of its reaped children (the docker CLI runs of the peer)."""
    with open('/proc/%d/stat' % pid) as handle:
        fields = handle.read().rsplit(')', 1)[1].split()
    ticks = os.sysconf('SC_CLK_TCK')
    return sum(int(value) for value in fields[11:15]) / float(ticks)


class Client:
    """One keep-alive http.client connection per worker thread, the same for both sides.

    http.client rather than requests: requests adds milliseconds of client-side
    CPU per call on this class of machine, which would drown the server's own time.
    """

    def __init__(self, url):
        host_port = url.split('://', 1)[1]
        self.host, self.port = host_port.rsplit(':', 1)[0], int(host_port.rsplit(':', 1)[1])
        self.local = threading.local()

    def get_state(self, fresh=False):
        """GET /v1/state; fresh=True opens a new connection for it (as curl or an inventory scan does)."""
        import http.client  # pylint: disable=import-outside-toplevel
        conn = None if fresh else getattr(self.local, 'conn', None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            if not fresh:
                self.local.conn = conn
        try:
            conn.request('GET', '/v1/state')
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            raise
        if fresh:
            conn.close()
        if response.status != 200:
            raise RuntimeError('GET /v1/state answered %d' % response.status)
        return json.loads(body)


def fixed_rate_latencies(client, rate, count, workers=16):
    """Open loop: request i is sent at start + i/rate on a new connection, whatever the earlier ones do.

    Latency = from the send (connect included) to the full answer, in ms. With
    `workers` senders a slow server still gets its requests on schedule, so its
    queueing shows in the figures; `late` counts sends the client itself made
    more than 5 ms late (a sign the machine was too busy to keep the rate).
    """
    latencies = [None] * count
    late = [0]
    start = time.perf_counter() + 0.2

    def one(index):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        if sent - due > 0.005:
            late[0] += 1
        client.get_state(fresh=True)
        latencies[index] = (time.perf_counter() - sent) * 1000.0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(count)))
    return latencies, late[0]


def closed_loop(client, count, workers=4):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda _: client.get_state(), range(count)))


def percentile(values, pct):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(pct / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[index]


# -- the run ------------------------------------------------------------------------------------
def start_containers(count, label):
    import docker  # pylint: disable=import-outside-toplevel
    from tests.support.lab import docker_engine  # pylint: disable=import-outside-toplevel
    docker_engine.ensure_engine()
    image = docker_engine.ensure_busybox_image()
    client = docker.DockerClient(base_url='unix://' + docker_engine.SOCKET, version='auto')
    created = []
    lock = threading.Lock()

    def run(_index):
        container = client.containers.run(image, ['sleep', str(CONTAINER_LIFETIME)], labels={label: 'bench'},
                                          network_mode='none', detach=True)
        with lock:
            created.append(container)

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(run, range(count)))
    except BaseException:
        remove_containers(created)
        raise
    return client, created


def remove_containers(containers):
    def remove(container):
        try:
            container.remove(force=True)
        except Exception:  # pylint: disable=broad-except  # already gone is fine
            pass

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(remove, containers))


def start_peer(label):
    from tests.support.lab.ports import free_port  # pylint: disable=import-outside-toplevel
    port = free_port()
    argv = [sys.executable, os.path.abspath(__file__), '--serve-peer', str(port)] + (['--label', label] if label else [])
    proc = subprocess.Popen(argv,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    line = proc.stderr.readline()
    if b'listening' not in line:
        proc.kill()
        raise RuntimeError('peer did not start: %r' % line)
    return proc, 'http://127.0.0.1:%d' % port


def stop_proc(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def summarize(name, latencies, late):
    return {'name': name, 'p50': percentile(latencies, 50), 'p99': percentile(latencies, 99),
            'mean': statistics.mean(latencies), 'max': max(latencies), 'late': late}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--containers', type=int, default=100)
    parser.add_argument('--rate', type=float, default=10.0, help='requests per second for the latency run')
    parser.add_argument('--latency-requests', type=int, default=600)
    parser.add_argument('--rss-requests', type=int, default=10000, help='requests before reading the agent RSS')
    parser.add_argument('--peer-rss-requests', type=int, default=1000,
                        help='requests before reading the peer RSS (each one runs docker ps, so fewer by default)')
    parser.add_argument('--no-noise-floor', dest='noise_floor', action='store_false',
                        help="skip the third latency row (a constant '{}' endpoint: the machine's own noise)")
    parser.add_argument('--serve-peer', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--label', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer, args.label)
        return 0
    for name in ('containers', 'latency_requests', 'rss_requests', 'peer_rss_requests'):
        if not 1 <= getattr(args, name) <= 100000:
            parser.error('--%s must be from 1 to 100000' % name.replace('_', '-'))
    if not 0.1 <= args.rate <= 1000:
        parser.error('--rate must be from 0.1 to 1000')

    from tests.support.agent_proc import start_agent  # pylint: disable=import-outside-toplevel
    label = 'orchestra.bench.agent-%s' % uuid.uuid4().hex[:10]
    print('agent benchmark: %d workload containers, %.1f req/s x %d requests for latency, RSS after %d (agent) / %d (peer)'
          % (args.containers, args.rate, args.latency_requests, args.rss_requests, args.peer_rss_requests))
    print('python %s, %s, %d CPUs, load average %.1f %.1f %.1f at start'
          % ((platform.python_version(), platform.platform(), os.cpu_count()) + os.getloadavg()))
    docker_client, containers = None, []
    agent = peer = None
    try:
        started = time.monotonic()
        docker_client, containers = start_containers(args.containers, label)
        print('started %d containers in %.1f s' % (len(containers), time.monotonic() - started))
        agent = start_agent(labels=[label], token='bench-token-%s' % uuid.uuid4().hex)
        agent.wait_state(lambda s: s['running'] == args.containers, timeout=120)
        peer, peer_url = start_peer(label)
        agent_client, peer_client = Client(agent.url), Client(peer_url)
        peer_state = peer_client.get_state()
        if peer_state.get('running') != args.containers:
            raise RuntimeError('peer sees %r, expected %d running' % (peer_state, args.containers))

        # Latency first, on fresh processes, one side after the other (never both at once).
        results = [summarize('agent', *fixed_rate_latencies(agent_client, args.rate, args.latency_requests)),
                   summarize('docker-ps peer', *fixed_rate_latencies(peer_client, args.rate, args.latency_requests))]
        if args.noise_floor:
            floor, floor_url = start_peer(None)
            try:
                results.append(summarize('noise floor', *fixed_rate_latencies(Client(floor_url), args.rate, args.latency_requests)))
            finally:
                stop_proc(floor)

        agent_rss_start, agent_cpu_start = rss_mb(agent.pid), cpu_seconds(agent.pid)
        closed_loop(agent_client, args.rss_requests)
        agent_rss, agent_cpu = rss_mb(agent.pid), (cpu_seconds(agent.pid) - agent_cpu_start) * 1000.0 / args.rss_requests
        peer_rss_start, peer_cpu_start = rss_mb(peer.pid), cpu_seconds(peer.pid)
        closed_loop(peer_client, args.peer_rss_requests)
        peer_rss, peer_cpu = rss_mb(peer.pid), (cpu_seconds(peer.pid) - peer_cpu_start) * 1000.0 / args.peer_rss_requests
        final = agent.state()
        assert final['running'] == args.containers and final['state'] == 'busy', final
    finally:
        if peer is not None:
            stop_proc(peer)
        if agent is not None:
            agent.close()
        if containers:
            remove_containers(containers)
        if docker_client is not None:
            docker_client.close()

    print()
    print('load average %.1f %.1f %.1f at end (other work on the machine inflates the tail latencies)' % os.getloadavg())
    print('%-16s %10s %10s %10s %10s %12s' % ('/v1/state', 'p50 ms', 'p99 ms', 'mean ms', 'max ms', 'late sends'))
    for row in results:
        print('%-16s %10.2f %10.2f %10.2f %10.2f %12d' % (row['name'], row['p50'], row['p99'], row['mean'], row['max'], row['late']))
    agent_row, peer_row = results[:2]
    if args.noise_floor:
        print("(noise floor: a cheroot endpoint answering a constant '{}', same method, same run)")
    print()
    print('latency ratio (peer / agent): p50 %.1fx, p99 %.1fx' % (peer_row['p50'] / agent_row['p50'], peer_row['p99'] / agent_row['p99']))
    print('RSS agent: %.1f MB at start of load, %.1f MB after %d requests' % (agent_rss_start, agent_rss, args.rss_requests))
    print('RSS peer:  %.1f MB at start of load, %.1f MB after %d requests (server process only; each request also '
          'forks a docker CLI)' % (peer_rss_start, peer_rss, args.peer_rss_requests))
    print('RSS ratio (peer / agent): %.2fx' % (peer_rss / agent_rss))
    print('CPU per request (load-independent; peer includes its docker CLI children, neither includes dockerd): '
          'agent %.3f ms, peer %.2f ms, ratio %.0fx' % (agent_cpu, peer_cpu, peer_cpu / max(agent_cpu, 1e-6)))
    print('targets: agent RSS <= 40 MB: %s; agent p99 <= 10 ms: %s'
          % ('met' if agent_rss <= 40 else 'MISSED', 'met' if agent_row['p99'] <= 10 else 'MISSED'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
