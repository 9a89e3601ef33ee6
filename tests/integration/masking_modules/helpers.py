"""Helpers of the masking_modules suite: the engines' job catalogue and a real ansible-playbook runner."""
import json
import os
import subprocess
import sys
import textwrap

import yaml

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(FLEET_ROOT)))
BIN = os.path.dirname(os.path.abspath(sys.executable))
USER = {'username': 'admin', 'password': 'Admin-12'}

JOBS = [
    {'name': 'ok_job', 'outcome': 'SUCCEEDED', 'duration': 0.3, 'rows': 1200},
    {'name': 'ok_job_2', 'outcome': 'SUCCEEDED', 'duration': 0.3, 'rows': 300},
    {'name': 'warn_job', 'outcome': 'WARNING', 'duration': 0.2, 'rows': 50},
    {'name': 'fail_job', 'outcome': 'FAILED', 'duration': 0.2, 'rows': 70},
    {'name': 'long_job', 'outcome': 'SUCCEEDED', 'duration': 120.0, 'rows': 10},
]


def executions(handle, job_name):
    """Executions the simulator has seen for job_name, as (id, status) pairs."""
    return [(run['executionId'], run['status']) for run in handle.record()['executions'] if run['jobName'] == job_name]


def all_executions(engine_handles, job_name):
    found = []
    for handle in engine_handles.values():
        found += executions(handle, job_name)
    return found


class Runner:
    """Write a playbook around some tasks, run the real ansible-playbook, return rc, output and registered results."""

    def __init__(self, workdir, store):
        self.workdir = workdir
        self.store = store
        self.count = 0

    def env(self, extra=None):
        env = dict(os.environ)
        env.setdefault('ANSIBLE_COLLECTIONS_PATH', COLLECTIONS_ROOT)
        env['PATH'] = BIN + os.pathsep + env.get('PATH', '')
        env['ANSIBLE_NOCOLOR'] = '1'
        env['ANSIBLE_RETRY_FILES_ENABLED'] = '0'
        env['ANSIBLE_PIPELINING'] = '1'
        env['ANSIBLE_LOCALHOST_WARNING'] = '0'
        env['ANSIBLE_INVENTORY_UNPARSED_WARNING'] = '0'
        env['ANSIBLE_PYTHON_INTERPRETER'] = sys.executable
        env['HOME'] = str(self.workdir)
        for name in ('ORCHESTRA_QUEUE_STORE', 'ORCHESTRA_MASKING_USERNAME', 'ORCHESTRA_MASKING_PASSWORD',
                     'ORCHESTRA_MASKING_ENGINE_CREDENTIALS'):
            env.pop(name, None)
        env.update(extra or {})
        return env

    def start_play(self, tasks, defaults=None):
        """Start `tasks` in a real ansible-playbook of its own session (as a terminal or AWX runs it) -> (Popen, results path).

        The caller signals its process group (os.killpg) like Ctrl-C or an AWX cancel does, and waits for it.
        """
        cmd, results_path = self._write_play(tasks, (), defaults)
        proc = subprocess.Popen(cmd, cwd=str(self.workdir), env=self.env(), stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        return proc, results_path

    def play(self, tasks, register=(), check=False, defaults=None, extra_args=(), timeout=180):
        """Run `tasks` (YAML text or a list) on localhost; returns (rc, output, {registered name: result})."""
        cmd, results_path = self._write_play(tasks, register, defaults)
        cmd += list(extra_args)
        if check:
            cmd.append('--check')
        return self._run(cmd, results_path, timeout)

    def _write_play(self, tasks, register, defaults):
        self.count += 1
        if isinstance(tasks, str):
            tasks = yaml.safe_load(textwrap.dedent(tasks))
        results_path = os.path.join(str(self.workdir), 'results-%d.json' % self.count)
        defaults = dict({'store': self.store, 'username': USER['username'], 'password': USER['password']},
                        **(defaults or {}))
        collect = '{{ {%s} | to_json }}' % ', '.join("'%s': (%s | default(None))" % (name, name) for name in register)
        play = [{
            'name': 'masking_modules test %d' % self.count,
            'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
            'module_defaults': {'group/orchestra.fleet.masking': defaults},
            'tasks': [{'name': 'Tasks under test', 'block': tasks, 'always': [{
                'name': 'Save the registered results', 'check_mode': False,
                'ansible.builtin.copy': {'content': collect, 'dest': results_path, 'mode': '0600'}}]}],
        }]
        path = os.path.join(str(self.workdir), 'play-%d.yml' % self.count)
        with open(path, 'w', encoding='utf-8') as handle:
            yaml.safe_dump(play, handle, sort_keys=False)
        return [os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', path], results_path

    def playbook(self, name, extra_vars=None, env=None, timeout=180, extra_args=()):
        """Run one of the collection's playbooks (orchestra.fleet.NAME); returns (rc, output)."""
        cmd = [os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', 'orchestra.fleet.%s' % name] + list(extra_args)
        if extra_vars:
            cmd += ['-e', json.dumps(extra_vars)]
        proc = subprocess.run(cmd, cwd=str(self.workdir), env=self.env(env), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
        return proc.returncode, proc.stdout

    def _run(self, cmd, results_path, timeout):
        proc = subprocess.run(cmd, cwd=str(self.workdir), env=self.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
        results = {}
        if os.path.exists(results_path):
            with open(results_path, encoding='utf-8') as handle:
                results = json.load(handle)
        return proc.returncode, proc.stdout, results


def register_engines_tasks(engine_handles, slots=2):
    return [{'name': 'Register engine %s' % name, 'orchestra.fleet.masking_engine': {
        'name': name, 'url': handle.url, 'slots': slots, 'jobs': [job['name'] for job in JOBS]}}
        for name, handle in sorted(engine_handles.items())]
