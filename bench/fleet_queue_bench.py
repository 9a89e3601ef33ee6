"""Fleet queue benchmark: workflows on real fleet hosts, the queue vs the loop a user writes today.

Run as root from the checkout after `make setup` (makes network namespaces on a bridge of its own, one
real agent and one real sshd per host over the one lab Docker engine; tears everything down at the end):

    .venv/bin/python bench/fleet_queue_bench.py                       # 200 workflows on 10 hosts
    .venv/bin/python bench/fleet_queue_bench.py --workflows 60 --naive-sample 3

(a) the queue: FleetQueue.wait over `--workflows` workflows (busybox `sleep --seconds`), as the
    orchestra.fleet.workflow_job module and the run_workflows playbook drive it (one controller, poll
    interval `--poll`). Docker's own event stream gives every container's start and end.
    - makespan: from the first enqueue to the last container's end;
    - ideal: the containers' summed run time (Docker's start..die) divided by the hosts (no scheduler can
      beat it); the ratio makespan / ideal is the scheduling overhead (target within 1.25x);
    - lazy-to-start delay: per host, from a container's end (the host turns lazy) to the next start there.
(b) the naive loop a user writes today: `ansible-playbook run_workflow.yml` once per workflow (claim a lazy
    host, `docker run` over SSH, wait, release), one at a time, and N at a time (N = the hosts, as parallel
    shell jobs). Each is measured on a sample (`--naive-sample` and `--parallel-sample` workflows) in the
    same run, and its makespan for all the workflows is extrapolated linearly from the sample (said so in
    the output).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'build', 'collections'))

from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_queue import FleetQueue  # noqa: E402
from tests.support.fleet_lab import (  # noqa: E402
    HOST_LABEL, TOKEN, DockerEvents, overlaps, remove_containers, runs_from_events, start_host_agent, wait_state)
from tests.support.lab import docker_engine  # noqa: E402
from tests.support.lab.paths import lab_dir  # noqa: E402
from tests.support.netns import NetnsLab, Sshd, make_client_key  # noqa: E402

COLLECTIONS = os.path.join(ROOT, 'build', 'collections')
PLAYBOOK = os.path.join(COLLECTIONS, 'ansible_collections', 'orchestra', 'fleet', 'playbooks', 'run_workflow.yml')


def percentile(values, pct):
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(pct / 100.0 * (len(ordered) - 1))))]


def seconds_of(nano):
    return nano / 1e9


def queue_run(lab_hosts, image, count, seconds, poll, workdir):
    addresses = [host.address for host in lab_hosts]
    store = 'sqlite:///' + os.path.join(workdir, 'bench-%d.db' % int(time.time()))
    queue = FleetQueue(store, hosts=addresses, token=TOKEN, claim_ttl=60)
    events = DockerEvents()
    started = time.time()
    queue.refresh_hosts()
    ids = [queue.enqueue_workflow({'name': 'bench-%03d' % i, 'image': image, 'command': ['sleep', str(seconds)]},
                                  request_id='bench-%d' % i)[1]['id'] for i in range(count)]
    jobs = queue.wait(ids, timeout=count * seconds * 4 + 120, poll_interval=poll)
    runs = runs_from_events(events.stop())
    with open(os.path.join(workdir, 'last-run.json'), 'w', encoding='utf-8') as handle:   # for a closer look
        json.dump({'runs': runs, 'history': queue.store.history(ids)}, handle)
    states = sorted(set(job['state'] for job in jobs))
    done = [run for run in runs.values() if run['start'] and run['die']]
    end = max(seconds_of(run['die']) for run in done)
    busy = sum(seconds_of(run['die'] - run['start']) for run in done)
    ideal = max(busy / len(addresses), max(seconds_of(run['die'] - run['start']) for run in done))
    # When the queue began the next start on the host (the claim, then the fenced POST): its history, same machine.
    claimed_at = {}
    for entry in queue.store.history(ids):
        if entry['to_state'] == 'STARTING' and entry['from_state'] == 'SCHEDULED':
            claimed_at[str(entry['job_id'])] = entry['at']
    gaps, to_claim = [], []
    by_host = {}
    for run in done:
        by_host.setdefault(run['host'], []).append(run)
    for host_runs in by_host.values():
        host_runs.sort(key=lambda run: run['start'])
        for earlier, later in zip(host_runs, host_runs[1:]):
            gaps.append(seconds_of(later['start'] - earlier['die']))
            if later['job'] in claimed_at:
                to_claim.append(claimed_at[later['job']] - seconds_of(earlier['die']))
    return {'states': states, 'runs': len(done), 'hosts_used': len(by_host), 'overlaps': len(overlaps(runs)),
            'makespan': end - started, 'ideal': ideal, 'ratio': (end - started) / ideal,
            'gap_p50': percentile(gaps, 50), 'gap_p90': percentile(gaps, 90), 'gap_max': max(gaps) if gaps else None,
            'claim_p50': percentile(to_claim, 50), 'claim_p90': percentile(to_claim, 90),
            'mean_run': busy / len(done)}


def ansible_env(key, workdir):
    env = dict(os.environ)
    env.update({
        'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS, 'ANSIBLE_INVENTORY_UNPARSED_FAILED': '1', 'ANSIBLE_HOST_KEY_CHECKING': 'False',
        'ANSIBLE_PRIVATE_KEY_FILE': key, 'ANSIBLE_REMOTE_USER': 'root', 'ANSIBLE_PIPELINING': 'True',
        'ANSIBLE_SSH_ARGS': '-o ControlMaster=auto -o ControlPersist=30s -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no',
        'ANSIBLE_SSH_CONTROL_PATH_DIR': os.path.join(workdir, 'cp'), 'ANSIBLE_PYTHON_INTERPRETER': '/usr/bin/python3',
        'ANSIBLE_RETRY_FILES_ENABLED': 'False', 'ANSIBLE_NOCOLOR': '1', 'ORCHESTRA_FLEET_TOKEN': TOKEN,
        'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')})
    env.pop('ANSIBLE_CONFIG', None)
    return env


def naive_one(inventory, env, image, seconds, index):
    extra = {'workflow_image': image, 'workflow_command': ['sleep', str(seconds)], 'workflow_name': 'naive-%d' % index,
             'workflow_labels': {HOST_LABEL: '{{ inventory_hostname }}'}, 'workflow_claim_ttl': 600}
    for _attempt in range(60):   # a loop a user writes: when no host is lazy now, try again shortly
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory, PLAYBOOK,
                                 '-e', json.dumps(extra)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=300, check=False)
        if result.returncode == 0:
            return True
        if 'no host claimed' not in result.stdout:
            sys.stderr.write(result.stdout[-2000:])
            return False
        time.sleep(0.5)
    return False


def naive_run(inventory, env, image, seconds, sample, parallel):
    started = time.time()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(lambda index: naive_one(inventory, env, image, seconds, index), range(sample)))
    return {'ok': sum(results), 'sample': sample, 'elapsed': time.time() - started}


def print_queue(args, ours):
    print('fleet queue benchmark: %d workflows (busybox sleep %.1f s) on %d hosts, one Docker engine, %d cores'
          % (args.workflows, args.seconds, args.hosts, os.cpu_count()))
    print('queue (FleetQueue.wait, poll %.1f s): states %s, %d runs on %d hosts, overlaps on a host: %d'
          % (args.poll, ','.join(ours['states']), ours['runs'], ours['hosts_used'], ours['overlaps']))
    print('  makespan %.1f s, ideal %.1f s (containers ran %.2f s on average) -> %.2fx ideal (target <= 1.25x)'
          % (ours['makespan'], ours['ideal'], ours['mean_run'], ours['ratio']))
    print('  host lazy -> the queue starts its next workflow (claim, then the fenced POST): p50 %.3f s, p90 %.3f s'
          % (ours['claim_p50'], ours['claim_p90']))
    print('  host lazy -> next container running (Docker start event; includes the agent\'s docker create + start): '
          'p50 %.3f s, p90 %.3f s, max %.3f s (target p50 < 1 s)' % (ours['gap_p50'], ours['gap_p90'], ours['gap_max']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--workflows', type=int, default=200)
    parser.add_argument('--hosts', type=int, default=10)
    parser.add_argument('--seconds', type=float, default=1.0, help='how long each workflow runs (busybox sleep)')
    parser.add_argument('--poll', type=float, default=0.2, help="the queue's poll interval while waiting")
    parser.add_argument('--naive-sample', type=int, default=4, help='workflows run by the one-at-a-time loop')
    parser.add_argument('--parallel-sample', type=int, default=20, help='workflows run by the N-at-a-time loop')
    parser.add_argument('--queue-only', action='store_true', help='measure the queue only (no naive loop, no ratios)')
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('run as root (network namespaces)')
    docker_engine.ensure_engine()
    image = docker_engine.ensure_busybox_image()
    workdir = lab_dir('fleet-queue-bench')
    lab = NetnsLab('fqb')
    agents = []
    lab.up()
    try:
        hosts = [lab.add_host('b%d' % i) for i in range(args.hosts)]
        key = make_client_key(workdir)
        for host in hosts:
            agents.append(start_host_agent(host, image))
            if not args.queue_only:
                Sshd(lab, host).start(key + '.pub')
        for host in hosts:
            wait_state(host.address, 'lazy')
        ours = queue_run(hosts, image, args.workflows, args.seconds, args.poll, workdir)
        if args.queue_only:
            print_queue(args, ours)
            return
        for host in hosts:
            remove_containers('%s=%s' % (HOST_LABEL, host.address))
            wait_state(host.address, 'lazy')
        inventory = os.path.join(workdir, 'bench.orchestra.yml')
        with open(inventory, 'w', encoding='utf-8') as handle:
            json.dump({'plugin': 'orchestra.fleet.fleet', 'hosts': [h.address for h in hosts], 'timeout': 2, 'token': TOKEN}, handle)
        env = ansible_env(key, workdir)
        serial = naive_run(inventory, env, image, args.seconds, args.naive_sample, 1)
        parallel = naive_run(inventory, env, image, args.seconds, args.parallel_sample, args.hosts)
    finally:
        for host in hosts:
            remove_containers('%s=%s' % (HOST_LABEL, host.address))
        for handle in agents:
            handle.close()
        lab.down()
    serial_all = serial['elapsed'] / serial['sample'] * args.workflows
    parallel_all = parallel['elapsed'] / parallel['sample'] * args.workflows
    print_queue(args, ours)
    print('naive, run_workflow.yml one at a time: %d of %d ok in %.1f s -> %.1f s for %d (extrapolated from the sample)'
          % (serial['ok'], serial['sample'], serial['elapsed'], serial_all, args.workflows))
    print('naive, run_workflow.yml %d at a time: %d of %d ok in %.1f s -> %.1f s for %d (extrapolated from the sample)'
          % (args.hosts, parallel['ok'], parallel['sample'], parallel['elapsed'], parallel_all, args.workflows))
    print('ratios: naive one at a time / queue = %.1fx; naive %d at a time / queue = %.1fx'
          % (serial_all / ours['makespan'], args.hosts, parallel_all / ours['makespan']))


if __name__ == '__main__':
    main()
