"""The simulator as a standalone process: command line, YAML config, fault flags, several engines."""
import json
import os
import signal
import subprocess
import sys
import time

import requests

from tests.integration.delphix.helpers import PASSWORD, USER, client_for
from tests.support.delphix_sim import SIM_SOURCE
from tests.support.delphix_sim.launcher import seed_config, start_simulator

YAML_CONFIG = """
engine:
  name: yaml-engine
  num_simul_jobs_allowed: 2
  max_memory_for_jobs: 4096
users:
  - {username: operator, password: op-secret}
applications:
  - name: billing
    environments:
      - name: dev
        purpose: MASK
        jobs:
          - {name: mask_invoices, outcome: SUCCEEDED, duration: 0.05, rows: 42, max_memory: 512}
"""


def test_command_line_with_yaml_config_and_fault_flags(tmp_path):
    config = tmp_path / 'engine.yml'
    config.write_text(YAML_CONFIG)
    env = dict(os.environ, PYTHONPATH=SIM_SOURCE)
    cmd = [sys.executable, '-m', 'delphix_sim', '--port', '0', '--config', str(config),
           '--fault-error-rate', '0.25', '--latency-ms', '5', '--lost-response-rate', '0.1', '--token-expiry-calls', '3',
           '--down-after', '600', '--down-for', '1', '--post-status', '200', '--clock-offset-s', '-90']
    with subprocess.Popen(cmd, cwd=SIM_SOURCE, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            ready = proc.stdout.readline()
            assert ready.startswith('DELPHIX_SIM READY port=')
            base = ready.split('url=')[1].strip()
            root = base[:-len('/masking/api')]
            knobs = requests.get(root + '/_sim/faults', timeout=5).json()
            assert (knobs['error_rate'], knobs['latency_ms'], knobs['lost_response_rate']) == (0.25, 5.0, 0.1)
            assert (knobs['token_expiry_calls'], knobs['down_after'], knobs['post_status']) == (3, 600.0, 200)
            requests.put(root + '/_sim/faults', json={'error_rate': None, 'lost_response_rate': None}, timeout=5)
            login = requests.post(base + '/login', json={'username': 'operator', 'password': 'op-secret'}, timeout=5)
            assert login.status_code == 200   # --post-status 200 over the spec's 201
            assert abs(requests.get(root + '/_sim/record', timeout=5).json()['clock_offset_s'] + 90) < 1e-6
            info = requests.get(base + '/system-information', headers={'Authorization': login.json()['Authorization']},
                                timeout=5).json()
            assert info['totalAllocatedMemoryForJobs'] == 4096
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0


def test_help_and_bad_config_exit_cleanly(tmp_path):
    env = dict(os.environ, PYTHONPATH=SIM_SOURCE)
    helped = subprocess.run([sys.executable, '-m', 'delphix_sim', '--help'], cwd=SIM_SOURCE, env=env,
                            stdout=subprocess.PIPE, text=True, timeout=30, check=True)
    assert '--lost-response-rate' in helped.stdout and '--down-for' in helped.stdout
    bad = tmp_path / 'bad.json'
    bad.write_text('{"engine": {"status_set": "ancient"}}')
    failed = subprocess.run([sys.executable, '-m', 'delphix_sim', '--port', '0', '--config', str(bad)],
                            cwd=SIM_SOURCE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=30, check=False)
    assert failed.returncode == 2 and 'status_set' in failed.stderr and 'Traceback' not in failed.stderr


def test_several_instances_are_several_engines(sims):
    jobs = [{'name': 'mask_a', 'duration': 0.05}, {'name': 'mask_b', 'duration': 0.05}]
    east, west = sims(seed_config('east', jobs)), sims(seed_config('west', jobs))
    assert east.port != west.port and east.pid != west.pid
    east_client, west_client = client_for(east), client_for(west)
    assert east_client.resolve_job('mask_a') != west_client.resolve_job('mask_a')
    started = east_client.start_execution(east_client.resolve_job('mask_a'))
    assert [e['executionId'] for e in east.record()['executions']] == [started.execution_id]
    assert west.record()['executions'] == []


def test_launcher_faults_and_record(sims):
    sim = sims(seed_config('knobs', [{'name': 'a', 'duration': 0.05}], slots=3, memory_mb=2048),
               faults={'latency_ms': 1, 'token_expiry_calls': 50})
    assert sim.faults()['token_expiry_calls'] == 50
    assert sim.set_faults({'latency_ms': None})['latency_ms'] == 0.0
    record = sim.record()
    assert (record['engine'], record['slots'], record['memory_budget']) == ('knobs', 3, 2048)
    assert record['max_concurrency'] == 0 and record['executions'] == []
    http = requests.Session()
    assert http.post(sim.url + '/login', json={'username': USER, 'password': PASSWORD}, timeout=5).ok
    bad = http.put(sim.root + '/_sim/faults', json={'nonsense': 1}, timeout=5)
    assert bad.status_code == 400


def test_stop_ends_the_process():
    sim = start_simulator(seed_config('short-lived', [{'name': 'a'}]))
    try:
        assert sim.alive()
    finally:
        sim.stop()
    assert not sim.alive() and sim.proc.returncode == 0
    try:
        requests.get(sim.root + '/_sim/health', timeout=2)
        answered = True
    except requests.exceptions.ConnectionError:
        answered = False
    assert not answered


def test_example_engines_for_the_demo(sims):
    """The sample configs under examples/ (for make demo and docs) load and serve."""
    examples = os.path.join(SIM_SOURCE, 'delphix_sim', 'examples')
    ids = {}
    for name in ('engine_east.json', 'engine_west.json'):
        with open(os.path.join(examples, name), encoding='utf-8') as handle:
            sim = sims(json.load(handle))
        ids[name] = client_for(sim).resolve_job('mask_customers', 'dev')
    assert ids['engine_east.json'] != ids['engine_west.json']


def test_simulator_exits_when_its_parent_dies(tmp_path):
    """A hard-killed test run leaves no engine behind (--parent-pid)."""
    config = tmp_path / 'engine.json'
    config.write_text(json.dumps(seed_config('orphan', [{'name': 'a'}])))
    pid_file = tmp_path / 'child.pid'
    script = ('import subprocess, sys, time\n'
              'child = subprocess.Popen([sys.executable, "-m", "delphix_sim", "--port", "0", "--config", %r,'
              ' "--parent-pid", str(__import__("os").getpid())], stdout=subprocess.PIPE, text=True)\n'
              'child.stdout.readline()\n'
              'open(%r, "w").write(str(child.pid))\n' % (str(config), str(pid_file)))
    env = dict(os.environ, PYTHONPATH=SIM_SOURCE)
    subprocess.run([sys.executable, '-c', script], cwd=SIM_SOURCE, env=env, check=True, timeout=60)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and os.path.exists('/proc/%d' % child) and not _zombie(child):
        time.sleep(0.1)
    gone = not os.path.exists('/proc/%d' % child) or _zombie(child)
    if not gone:
        os.kill(child, signal.SIGKILL)  # our own child: never leave it behind, then fail
    assert gone


def _zombie(pid):
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii') as handle:
            return handle.read().split(')')[-1].split()[0] == 'Z'
    except OSError:
        return False
