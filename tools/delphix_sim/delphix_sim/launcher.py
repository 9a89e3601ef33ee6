"""Start real simulator processes from tests: start_simulator(seed_config(...)) -> SimHandle."""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from .config import normalize, seed_config

__all__ = ["SimHandle", "seed_config", "start_simulator"]

# The directory holding the delphix_sim package (the source tree, or site-packages when installed).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = {'error_rate': '--fault-error-rate', 'latency_ms': '--latency-ms', 'lost_response_rate': '--lost-response-rate',
         'lost_mode': '--lost-mode', 'lost_hold_s': '--lost-hold-s', 'token_expiry_calls': '--token-expiry-calls',
         'token_timeout_s': '--token-timeout-s', 'down_after': '--down-after', 'down_for': '--down-for',
         'down_mode': '--down-mode', 'match': '--fault-match', 'budget': '--fault-budget', 'seed': '--fault-seed',
         'post_status': '--post-status'}


class SimHandle:
    """One running simulator process (one engine)."""

    def __init__(self, proc, port, config_path, host='127.0.0.1'):
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.host = host
        self.root = 'http://%s:%d' % (host, port)
        self.url = self.root + '/masking/api'
        self._config_path = config_path

    def _call(self, method, path, body=None, timeout=10.0):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.root + path, data=data, method=method,
                                         headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # nosec: loopback test endpoint
            return json.loads(answer.read().decode() or 'null')

    def record(self):
        """Every execution started (per job too), highest concurrency/memory seen, overlaps, fault counts."""
        return self._call('GET', '/_sim/record')

    def faults(self):
        return self._call('GET', '/_sim/faults')

    def set_faults(self, changes):
        """Change fault knobs at runtime; a None value resets that knob."""
        return self._call('PUT', '/_sim/faults', changes)

    # TEST-ONLY: what someone does on the engine itself, outside the queue (its UI, another tool)
    def start_outside(self, job_name, environment=None):
        """Start an execution of job_name as the engine's UI would -> the execution object."""
        body = {'jobName': job_name}
        if environment is not None:
            body['environment'] = environment
        return self._call('POST', '/_sim/executions', body)

    def add_job(self, environment, name, **spec):
        return self._call('POST', '/_sim/jobs', dict(spec, environment=environment, name=name))

    def rename_job(self, job_id, new_name):
        return self._call('PUT', '/_sim/jobs/%d' % int(job_id), {'name': new_name})

    def delete_job(self, job_id):
        return self._call('DELETE', '/_sim/jobs/%d' % int(job_id))

    def set_users(self, users):
        """Replace the engine's users: [{'username', 'password'}] (a changed password refuses the next login)."""
        return self._call('PUT', '/_sim/users', users)

    def set_settings(self, changes):
        """Change engine settings at run time: num_simul_jobs_allowed, max_memory_for_jobs, total_available_cores,
        total_allocated_memory_mb."""
        return self._call('PUT', '/_sim/settings', changes)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        stop_process(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._config_path and os.path.exists(self._config_path):
            os.unlink(self._config_path)
            self._config_path = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_process(proc, grace=10):
    """End a child we started: SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


def _read_ready_line(proc, timeout):
    """The port from the simulator's READY line; a thread guards the blocking read with a timeout."""
    found = {}

    def reader():
        for line in iter(proc.stdout.readline, ''):
            if line.startswith('DELPHIX_SIM READY'):
                found['port'] = int(line.split('port=')[1].split()[0])
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return found.get('port')


def start_simulator(config, port=None, faults=None, extra_args=(), timeout=20.0):
    """Spawn the real simulator process on 127.0.0.1 (a free port unless given) and wait until it answers."""
    normalize(config)  # fail here, with a clear message, on a bad config
    handle, config_path = tempfile.mkstemp(prefix='delphix-sim-', suffix='.json')
    with os.fdopen(handle, 'w') as out:
        json.dump(config, out)
    cmd = [sys.executable, '-m', 'delphix_sim', '--config', config_path, '--port', str(port or 0),
           '--parent-pid', str(os.getpid())]
    for name, value in (faults or {}).items():
        if value is not None:
            cmd += [FLAGS[name], str(value)]
    cmd += list(extra_args)
    env = dict(os.environ)
    env['PYTHONPATH'] = PACKAGE_PARENT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    proc = subprocess.Popen(cmd, cwd=PACKAGE_PARENT, env=env, stdout=subprocess.PIPE, text=True)  # pylint: disable=consider-using-with
    bound = _read_ready_line(proc, timeout)
    sim = SimHandle(proc, bound or 0, config_path)
    if bound is None:
        sim.stop()
        raise RuntimeError('delphix simulator did not start (exit code %s): %s' % (proc.poll(), ' '.join(cmd)))
    deadline = time.monotonic() + timeout
    while True:
        try:
            sim._call('GET', '/_sim/health', timeout=2.0)  # pylint: disable=protected-access
            return sim
        except OSError:
            if time.monotonic() > deadline or not sim.alive():
                sim.stop()
                raise
            time.sleep(0.05)
