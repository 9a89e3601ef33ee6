"""Masking queue end to end: enqueue-to-POST latency, makespan, and Delphix API calls per poll cycle.

Three measurements against real simulated engines (tests/support/delphix_sim, one process per engine,
loopback only), each printed next to its peer and as a ratio, in one run:

1. latency: waiting callers (separate processes, as ansible-playbook tasks are) enqueue short jobs at
   staggered times and wait; no cron, no scheduler daemon: the callers drive the queue themselves under
   the leader lease. Measured: from just before enqueue() to the moment the engine received the
   POST /executions (the simulator's own submit time). Peer: the old bash + cron design, where a request
   waits for the next cron run (every 60 s) and the start happens one or two cron runs later; modelled
   on the very same arrival times with a random cron phase (no one waits minutes in a benchmark).
2. makespan: 1,000 short jobs over 10 engines x 4 slots, driven by one waiting caller, against the ideal
   makespan (all slots busy all the time: waves x duration). The old design's makespan is modelled the
   same way (one wave of starts per cron run).
3. API calls per poll cycle: with every slot running a long job, the HTTP requests the engines receive
   during one poll step (ours: one list of running executions per engine, read from the simulators'
   request counters) against polling one GET per running job (what the old tool and dxm-toolkit do),
   issued with the same Delphix client and counted the same way.

    .venv/bin/python bench/queue_latency_bench.py [--callers 8] [--per-caller 5] [--jobs 1000]
           [--engines 10] [--slots 4] [--duration 2.0] [--cycles 5] [--skip-makespan]
"""
import argparse
import math
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

from bench_paths import use_staged_collection  # bench/ is sys.path[0]

USER = {'username': 'admin', 'password': 'Admin-12'}
CRON_PERIOD = 60.0


use_staged_collection()
# pylint: disable=wrong-import-position
from ansible_collections.orchestra.fleet.plugins.module_utils.delphix import MaskingEngineClient  # noqa: E402
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue  # noqa: E402
from tests.support.delphix_sim.launcher import seed_config, start_simulator  # noqa: E402


# ---- lab -------------------------------------------------------------------------------------
def start_engines(count, slots, jobs):
    handles = {}
    try:
        for index in range(count):
            name = 'eng%02d' % index
            handles[name] = start_simulator(seed_config(name, jobs, slots=slots, users=[dict(USER)]))
    except BaseException:
        stop_engines(handles)
        raise
    return handles


def stop_engines(handles):
    for handle in handles.values():
        handle.stop()


def new_queue(store, handles, slots, job_names):
    queue = MaskingQueue(store, credentials={'*': dict(USER)})
    for name, handle in sorted(handles.items()):
        queue.ensure_engine(name, handle.url, slots=slots, jobs=job_names)
    return queue


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(math.ceil(fraction * len(ordered))) - 1)]


def cron_wait(arrival, phase, periods):
    """Old design: the request is seen by the next cron run; the start happens `periods` runs after arrival."""
    next_run = phase + math.ceil((arrival - phase) / CRON_PERIOD) * CRON_PERIOD
    return next_run - arrival + (periods - 1) * CRON_PERIOD


# ---- 1. latency --------------------------------------------------------------------------------
def _caller(store, count, seed, results):
    """One waiting caller: enqueue, wait, repeat; reports (request id, enqueue time)."""
    rng = random.Random(seed)
    queue = MaskingQueue(store, credentials={'*': dict(USER)})
    for index in range(count):
        time.sleep(rng.uniform(0.0, 1.5))   # staggered arrivals, also while other jobs run
        request_id = 'caller%d-%d' % (seed, index)
        enqueued = time.time()
        _created, job = queue.enqueue('short_%d' % (index % 4), request_id=request_id)
        queue.wait([job['id']], timeout=120, poll_interval=1.0)
        results.put((request_id, enqueued))


def bench_latency(args, workdir):
    jobs = [{'name': 'short_%d' % i, 'duration': 0.5, 'rows': 100} for i in range(4)]
    handles = start_engines(2, 4, jobs)
    try:
        store = os.path.join(workdir, 'latency.db')
        new_queue(store, handles, 4, [job['name'] for job in jobs])
        results = multiprocessing.Queue()
        callers = [multiprocessing.Process(target=_caller, args=(store, args.per_caller, seed, results))
                   for seed in range(args.callers)]
        for proc in callers:
            proc.start()
        enqueued = dict(results.get(timeout=300) for _result in range(args.callers * args.per_caller))
        for proc in callers:
            proc.join(timeout=60)
        submitted = {}
        for name, handle in handles.items():
            for run in handle.record()['executions']:
                submitted[(name, run['executionId'])] = run['submitted']
        queue = MaskingQueue(store)
        latencies = []
        for job in queue.info(engines=False)['jobs']:
            latencies.append(submitted[(job['engine'], job['execution_id'])] - enqueued[job['request_id']])
        executions = sum(len(h.record()['executions']) for h in handles.values())
    finally:
        stop_engines(handles)
    rng = random.Random(7)
    arrivals = sorted(enqueued.values())
    phase = arrivals[0] - rng.uniform(0, CRON_PERIOD)
    old_one = [cron_wait(t, phase, 1) for t in arrivals]
    old_two = [cron_wait(t, phase, 2) for t in arrivals]
    p50 = statistics.median(latencies)
    print('\n[1] enqueue-to-POST latency, %d jobs from %d waiting caller processes, no cron'
          % (len(latencies), args.callers))
    print('    ours (measured)          p50 %6.3f s   p95 %6.3f s   max %6.3f s   executions on engines: %d for %d jobs'
          % (p50, percentile(latencies, 0.95), max(latencies), executions, len(latencies)))
    print('    old, 1 cron period       p50 %6.1f s   p95 %6.1f s   max %6.1f s   (model, same arrivals)'
          % (statistics.median(old_one), percentile(old_one, 0.95), max(old_one)))
    print('    old, 2 cron periods      p50 %6.1f s   p95 %6.1f s   max %6.1f s   (model: "up to two cron minutes")'
          % (statistics.median(old_two), percentile(old_two, 0.95), max(old_two)))
    print('    ratio old(1 period)/ours p50: %.0fx   target p50 <= 1 s: %s'
          % (statistics.median(old_one) / p50, 'met' if p50 <= 1.0 else 'NOT met'))
    return p50


# ---- 2. makespan -------------------------------------------------------------------------------
def bench_makespan(args, workdir):
    # An engine runs one execution of a job at a time, so the batch cycles through a few job names (a real fleet
    # carries a handful of masking jobs); each name resolves to its job id once per engine.
    names = ['job_%02d' % i for i in range(args.names)]
    jobs = [{'name': name, 'duration': args.duration, 'rows': 10} for name in names]
    handles = start_engines(args.engines, args.slots, jobs)
    try:
        store = os.path.join(workdir, 'makespan.db')
        queue = new_queue(store, handles, args.slots, names)
        started = time.time()
        ids = [queue.enqueue(names[i % len(names)])[1]['id'] for i in range(args.jobs)]
        enqueued = time.time() - started
        done = queue.wait(ids, timeout=max(600, 5 * args.jobs * args.duration), poll_interval=0.25)
        makespan = time.time() - started
        states = {}
        for job in done:
            states[job['state']] = states.get(job['state'], 0) + 1
        records = [h.record() for h in handles.values()]
        executions = sum(len(r['executions']) for r in records)
        calls = sum(r['requests'] for r in records)
        over = [r['engine'] for r in records if r['max_concurrency'] > args.slots]
    finally:
        stop_engines(handles)
    waves = math.ceil(args.jobs / float(args.engines * args.slots))
    ideal = waves * args.duration
    old = waves * max(CRON_PERIOD, args.duration)
    print('\n[2] makespan, %d jobs of %.1f s on %d engines x %d slots, one waiting caller drives'
          % (args.jobs, args.duration, args.engines, args.slots))
    print('    ideal (every slot always busy)  %7.1f s  (%d waves)' % (ideal, waves))
    print('    ours (measured)                 %7.1f s  (queueing took %.1f s of it)  states %s  executions %d'
          % (makespan, enqueued, states, executions))
    print('    old, one wave per cron minute   %7.1f s  (model)' % old)
    print('    overhead per wave: %.2f s   engine API calls: %d (%.1f per job)'
          % ((makespan - ideal) / waves, calls, calls / float(args.jobs)))
    print('    ratio ours/ideal: %.2fx (target <= 1.3x: %s)   ratio old/ours: %.0fx   engines above their slots: %s'
          % (makespan / ideal, 'met' if makespan / ideal <= 1.3 else 'NOT met', old / makespan, over or 'none'))
    return makespan / ideal


# ---- 3. API calls per poll cycle ---------------------------------------------------------------
def requests_seen(handles):
    return sum(h.record()['requests'] for h in handles.values())


def bench_api_calls(args, workdir):
    names = ['long_%02d' % i for i in range(args.slots)]
    jobs = [{'name': name, 'duration': 600.0, 'rows': 10} for name in names]
    handles = start_engines(args.engines, args.slots, jobs)
    try:
        store = os.path.join(workdir, 'calls.db')
        queue = new_queue(store, handles, args.slots, names)
        for _engine in handles:
            for name in names:
                queue.enqueue(name)
        queue.schedule_step()
        queue.poll_step()   # starts every job (and logs in)
        running = [job for job in queue.info(engines=False)['jobs'] if job['state'] == 'RUNNING']
        ours = []
        for _cycle in range(args.cycles):
            time.sleep(1.0)   # a poll cycle apart (the queue refreshes an engine at most every refresh_interval)
            before = requests_seen(handles)
            queue.poll_step()
            ours.append(requests_seen(handles) - before)   # /_sim/record calls are not counted
        clients = dict((name, MaskingEngineClient(h.url, USER['username'], USER['password'])) for name, h in handles.items())
        for client in clients.values():
            client.login()
        peer = []
        for _cycle in range(args.cycles):
            before = requests_seen(handles)
            for job in running:
                clients[job['engine']].get_execution(job['execution_id'])
            peer.append(requests_seen(handles) - before)
    finally:
        stop_engines(handles)
    ours_mean, peer_mean = statistics.mean(ours), statistics.mean(peer)
    print('\n[3] Delphix API calls per poll cycle, %d running jobs on %d engines' % (len(running), args.engines))
    print('    ours (list running executions per engine)  %5.1f calls/cycle  (cycles: %s)' % (ours_mean, ours))
    print('    one GET per running job (old tool, dxmc)   %5.1f calls/cycle  (cycles: %s)' % (peer_mean, peer))
    print('    ratio peer/ours: %.1fx fewer calls' % (peer_mean / ours_mean if ours_mean else float('inf')))
    return peer_mean / ours_mean if ours_mean else float('inf')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--callers', type=int, default=8)
    parser.add_argument('--per-caller', type=int, default=5)
    parser.add_argument('--jobs', type=int, default=1000)
    parser.add_argument('--engines', type=int, default=10)
    parser.add_argument('--slots', type=int, default=4)
    parser.add_argument('--duration', type=float, default=2.0, help='seconds per job in the makespan run')
    parser.add_argument('--names', type=int, default=10, help='distinct job names in the makespan run')
    parser.add_argument('--cycles', type=int, default=5)
    parser.add_argument('--skip-makespan', action='store_true')
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix='queue-latency-bench-')
    print('masking queue benchmark: SQLite store in %s, simulated engines on loopback, %d CPUs, load %.1f'
          % (workdir, os.cpu_count() or 0, os.getloadavg()[0]))
    try:
        bench_latency(args, workdir)
        if not args.skip_makespan:
            bench_makespan(args, workdir)
        bench_api_calls(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
