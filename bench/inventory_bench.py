"""Discovery benchmark: orchestra.fleet.fleet vs community.general.nmap vs the original CLI's method.

Run as root from the checkout (makes network namespaces on a bridge of its own, starts
real agents in them, tears everything down at the end):

    .venv/bin/python bench/inventory_bench.py            # both scenarios
    .venv/bin/python bench/inventory_bench.py --only a   # the /24 only

(a) a /24: 20 real agents, 6 misbehaving servers on the agent port (tarpit, drip, reset,
    HTML, a 10 MB body, garbage; tests/support/misbehaving.py) and every other address dead
    (the bridge's own address, the control node, is excluded for every method).
    `ansible-inventory --graph` with this collection's plugin (at its default `timeout` of
    2 s and at `--lan-timeout`, a LAN setting) and with community.general.nmap (same subnet,
    same port, discovery only), side by side, `--repeat` rounds, interleaved; the original
    CLI's method (serial HTTP GET /busy with a 2 s timeout) is measured on a sample of live
    and dead addresses and extrapolated to the whole subnet. A tarpit or drip server holds
    our plugin for one `timeout` (the whole run shares one deadline); nmap only scans ports.
(b) a /16: 50 real agents spread over the range; the plugin only (nmap is not a target
    here), plus the extrapolated original method.

Wall time, CPU (user+sys of the process tree) and peak RSS come from wait4() on each run.
The `ansible` package (for community.general.nmap) lives only in build/bench-venv; the
plugin runs under that venv's ansible-core too, so both use the same Ansible.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.agent_proc import start_agent  # noqa: E402
from tests.support.lab import docker_engine  # noqa: E402
from tests.support.netns import NetnsLab  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, 'build', 'bench-collections'))

BENCH_VENV = os.path.join(ROOT, 'build', 'bench-venv')
BENCH_COLLECTIONS = os.path.join(ROOT, 'build', 'bench-collections')
PORT = 9009
MISBEHAVING = ('tarpit', 'drip', 'reset', 'html', 'bigbody', 'garbage')


# ------------------------------------------------------------------ set-up

def ensure_bench_venv():
    python = os.path.join(BENCH_VENV, 'bin', 'python')
    if not os.path.exists(os.path.join(BENCH_VENV, 'bin', 'ansible-inventory')):
        subprocess.run([sys.executable, '-m', 'venv', BENCH_VENV], check=True)
        subprocess.run([python, '-m', 'pip', 'install', '-q', 'ansible>=12,<13', 'requests'], check=True)
    return os.path.join(BENCH_VENV, 'bin')


def stage_collection():
    """Copy the checkout's tracked files to a collections dir of the benchmark's own."""
    dest = os.path.join(BENCH_COLLECTIONS, 'ansible_collections', 'orchestra', 'fleet')
    shutil.rmtree(dest, ignore_errors=True)
    names = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT, check=True,
                           stdout=subprocess.PIPE).stdout.decode().split('\0')
    for name in names:
        if name and os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(dest, name))
    return BENCH_COLLECTIONS


def start_misbehaving(lab, modes):
    """One namespace per misbehaving server, at the top of the subnet (the agents start at .2)."""
    hosts = []
    for index, mode in enumerate(modes):
        host = lab.add_host('m%d' % index, addresses=[str(lab.subnet.broadcast_address - 1 - index)])
        lab.misbehaving(host, mode, port=PORT)
        hosts.append((mode, host.address))
    return hosts


def start_fleet(lab, count, spread):
    """One namespace holding `count` addresses of the lab subnet (every `spread`-th), a real agent on each."""
    net = lab.subnet
    step = max(1, (net.num_addresses - 4) // count) if spread else 1
    addresses = [str(net.network_address + 2 + i * step) for i in range(count)]
    host = lab.add_host('fleet', addresses=addresses)
    agents = []
    batch = 10  # start in small batches: 2 shared cores
    for first in range(0, count, batch):
        for address in addresses[first:first + batch]:
            agents.append(start_agent(listen=address, port=PORT, labels=['orchestra.bench.host=%s' % address], prefix=host.prefix,
                                      timeout=120))
    return addresses, agents


# ------------------------------------------------------------------ measuring

def run_measured(argv, env, repeat):
    rows = []
    for _round in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, code, out, err = measure_wait4(argv, env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if code != 0:
            raise RuntimeError('%s failed (%d): %s' % (' '.join(argv), code, err[-2000:]))
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rows.append((wall, cpu, out))
    return rows


def measure_wait4(argv, env):
    """Run argv; returns (wall, exit code, stdout, stderr) and records the child's own peak RSS."""
    out_file = tempfile.TemporaryFile()
    err_file = tempfile.TemporaryFile()
    began = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=out_file, stderr=err_file)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    measure_wait4.last_rss_mib = usage.ru_maxrss / 1024.0
    out_file.seek(0)
    err_file.seek(0)
    return wall, proc.returncode, out_file.read().decode(), err_file.read().decode()


def summarize(name, argv, env, repeat):
    rows, peaks = [], []
    for _round in range(repeat):
        rows += run_measured(argv, env, 1)
        peaks.append(measure_wait4.last_rss_mib)
    return {'name': name, 'wall': statistics.median(r[0] for r in rows), 'cpu': statistics.median(r[1] for r in rows),
            'rss': max(peaks), 'runs': len(rows), 'output': rows[-1][2]}


def graph_hosts(output, group=None):
    """Host names in `ansible-inventory --graph` output (of one group when given)."""
    hosts, current = set(), None
    for line in output.splitlines():
        text = line.rsplit('--', 1)[-1].strip()
        if text.startswith('@'):
            current = text[1:].rstrip(':')
        elif text and (group is None or current == group):
            hosts.add(text)
    return hosts


def original_method(live, dead, sample):
    """The original CLI: GET http://IP:9009/busy one address after another, 2 s timeout. Sampled, then extrapolated."""
    def probe(address):
        began = time.monotonic()
        try:
            with urllib.request.urlopen('http://%s:%d/busy' % (address, PORT), timeout=2) as response:  # nosec: lab address
                response.read()
        except (OSError, urllib.error.URLError):
            pass
        return time.monotonic() - began
    live_times = [probe(a) for a in live[:sample]]
    dead_times = [probe(a) for a in dead[:sample]]
    return statistics.mean(live_times), statistics.mean(dead_times), len(live_times), len(dead_times)


# ------------------------------------------------------------------ scenarios

def neighbour_table_overflows():
    from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_discovery import neighbour_table_overflows as count
    return count()


def inventory_env(bin_dir, collections):
    env = dict(os.environ)
    env.update(ANSIBLE_COLLECTIONS_PATH=collections + os.pathsep + os.path.join(BENCH_VENV, 'lib'),
               ANSIBLE_INVENTORY_UNPARSED_FAILED='1', ANSIBLE_NOCOLOR='1', PATH=bin_dir + os.pathsep + env.get('PATH', ''))
    env.pop('ANSIBLE_CONFIG', None)
    env.pop('ORCHESTRA_FLEET_TOKEN', None)
    return env


def write_config(directory, name, config):
    path = os.path.join(directory, name)
    with open(path, 'w') as handle:
        json.dump(config, handle)
    return path


def scenario(label, lab, agents_count, bin_dir, collections, repeat, with_nmap, sample, workdir, tune_arp=False,
             misbehaving=(), lan_timeout=None):
    addresses, agents = start_fleet(lab, agents_count, spread=lab.subnet.prefixlen < 24)
    try:
        odd = start_misbehaving(lab, misbehaving)
        # The original method is sampled with the kernel's default ARP behaviour, as its users ran it.
        live_mean, dead_mean, live_n, dead_n = original_method(addresses, list(dead_addresses(lab, addresses)), sample)
        if tune_arp:
            lab.tune_arp(probes=1, retrans_ms=100)  # per-device, the lab bridge only (docs/inventory.md)
        env = inventory_env(bin_dir, collections)
        total = lab.subnet.num_addresses - 2 - 1  # usable addresses minus the excluded control node
        fleet_cfg = write_config(workdir, 'bench%s.orchestra.yml' % label, {
            'plugin': 'orchestra.fleet.fleet', 'subnets': [str(lab.subnet)], 'exclude': [lab.gateway], 'port': PORT})
        inventory = os.path.join(bin_dir, 'ansible-inventory')
        commands = [('orchestra.fleet.fleet', [inventory, '-i', fleet_cfg, '--graph'])]
        if lan_timeout:
            lan_cfg = write_config(workdir, 'bench%s-lan.orchestra.yml' % label, {
                'plugin': 'orchestra.fleet.fleet', 'subnets': [str(lab.subnet)], 'exclude': [lab.gateway], 'port': PORT,
                'timeout': lan_timeout})
            commands.append(('orchestra.fleet.fleet timeout=%s' % lan_timeout, [inventory, '-i', lan_cfg, '--graph']))
        if with_nmap:
            nmap_cfg = write_config(workdir, 'bench%s.nmap.yml' % label, {
                'plugin': 'community.general.nmap', 'address': str(lab.subnet), 'exclude': [lab.gateway],
                'port': str(PORT), 'open': True, 'dns_resolve': False})
            commands.append(('community.general.nmap', [inventory, '-i', nmap_cfg, '--graph']))
            # The floor both pay: ansible-inventory starting up with a one-host static inventory.
            commands.append(('(ansible-inventory start-up)', [inventory, '-i', 'localhost,', '--graph']))
        drops_before = neighbour_table_overflows()
        # Interleaved rounds, so that load from anything else on the machine hits every method alike.
        runs = dict((name, []) for name, _argv in commands)
        for _round in range(repeat):
            for name, argv in commands:
                runs[name].append(summarize(name, argv, env, 1))
        drops = neighbour_table_overflows() - drops_before if drops_before is not None else 'unknown'
        results = []
        for name, _argv in commands:
            rows = runs[name]
            results.append({'name': name, 'wall': statistics.median(r['wall'] for r in rows), 'output': rows[-1]['output'],
                            'cpu': statistics.median(r['cpu'] for r in rows), 'rss': max(r['rss'] for r in rows), 'runs': len(rows)})
        odd_addresses = set(address for _mode, address in odd)
        for row in results:
            if row['name'].startswith('orchestra.fleet.fleet'):
                found = graph_hosts(row['output'], 'lazy')
                flagged = (graph_hosts(row['output'], 'unreachable') | graph_hosts(row['output'], 'invalid')) & odd_addresses
                row['classified'] = '%d/%d agents lazy, %d/%d misbehaving unreachable/invalid, ARP table overflows: %s' % (
                    len(found & set(addresses)), len(addresses), len(flagged), len(odd_addresses), drops)
            elif row['name'] == 'community.general.nmap':
                row['classified'] = '%d/%d agents and %d/%d misbehaving found, not classified' % (
                    len(graph_hosts(row['output']) & set(addresses)), len(addresses),
                    len(graph_hosts(row['output']) & odd_addresses), len(odd_addresses))
            else:
                row['classified'] = 'no scan'
        extrapolated = live_mean * len(addresses) + dead_mean * (total - len(addresses))
        results.append({'name': 'original CLI (serial, 2 s)', 'wall': extrapolated, 'cpu': None, 'rss': None, 'runs': 0,
                        'classified': 'extrapolated from %d live (%.3f s) + %d dead (%.2f s) probes' % (
                            live_n, live_mean, dead_n, dead_mean)})
        return results, total, len(addresses)
    finally:
        for agent in agents:
            agent.close()


def dead_addresses(lab, live):
    live = set(live)
    for offset in range(2, lab.subnet.num_addresses - 1):
        address = str(lab.subnet.network_address + offset)
        if address not in live:
            yield address
            if offset > 40:
                return


def print_table(title, results, total, agents, misbehaving=()):
    print('\n%s: %d addresses scanned, %d agents%s' % (title, total, agents,
                                                       ', misbehaving: %s' % ', '.join(misbehaving) if misbehaving else ''))
    print('%-30s %10s %9s %10s  %s' % ('method (median of runs)', 'wall s', 'cpu s', 'peak MiB', 'hosts'))
    for row in results:
        cpu = '-' if row['cpu'] is None else '%.2f' % row['cpu']
        rss = '-' if row['rss'] is None else '%.0f' % row['rss']
        print('%-30s %10.2f %9s %10s  %s' % (row['name'], row['wall'], cpu, rss, row['classified']))
    for mine in [row for row in results if row['name'].startswith('orchestra.fleet.fleet')]:
        for row in results:
            if not row['name'].startswith(('(', 'orchestra.fleet.fleet')):
                print('  %s is %.2fx faster than %s' % (mine['name'], row['wall'] / mine['wall'], row['name']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', choices=('a', 'b'))
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--sample', type=int, default=3, help='probes per kind for the original method')
    parser.add_argument('--lan-timeout', type=float, default=0.5,
                        help='(a) also run the plugin with this `timeout` (a LAN setting; 0 to skip)')
    parser.add_argument('--no-misbehaving', action='store_true', help='(a) without the six misbehaving servers')
    parser.add_argument('--default-arp', action='store_true',
                        help='(b) keep the kernel default ARP probing on the lab bridge (3 probes 1 s apart) instead of 1 x 100 ms')
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('run as root: the benchmark makes network namespaces')
    docker_engine.ensure_engine()
    bin_dir = ensure_bench_venv()
    collections = stage_collection()
    workdir = tempfile.mkdtemp(prefix='inventory-bench-')
    try:
        if args.only in (None, 'a'):
            with NetnsLab('bna') as lab:
                odd = () if args.no_misbehaving else MISBEHAVING
                results, total, agents = scenario('a', lab, 20, bin_dir, collections, args.repeat, True, args.sample, workdir,
                                                  misbehaving=odd, lan_timeout=args.lan_timeout or None)
            print_table('(a) /24', results, total, agents, odd)
        if args.only in (None, 'b'):
            with NetnsLab('bnb', ['10.79.0.0/16', '10.81.0.0/16', '10.83.0.0/16']) as lab:
                results, total, agents = scenario('b', lab, 50, bin_dir, collections, 1, False, args.sample, workdir,
                                                  tune_arp=not args.default_arp)
            print_table('(b) /16', results, total, agents)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
