"""The lab of orchestra.fleet's demo playbook (playbooks/demo.yml, `make demo`): everything on loopback.

    python -m delphix_sim.demo up --dir DIR [--agent-source DIR]  # start, print the lab as JSON, return
    python -m delphix_sim.demo record --dir DIR                   # what each simulated engine saw, as JSON
    python -m delphix_sim.demo down --dir DIR                     # stop everything `up` started, remove DIR's state

`up` starts a supervisor process (`serve`) in its own session that owns two simulated Delphix
masking engines and, given the agent's source (the collection's roles/agent/files/agent), a local
orchestra agent; it writes DIR/lab.json once all of them answer, and returns. The supervisor stops its
children on SIGTERM (`down`) and by itself after --max-seconds, so a demo that dies half way never
leaves processes behind for long. `down` kills only the pids the lab recorded, and only while their
command line is still the lab's. The agent reports what the host's Docker engine says (or "unknown"
without one); the lab never starts a Docker engine itself.
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from .launcher import PACKAGE_PARENT, seed_config, start_simulator, stop_process

MARK = 'delphix_sim.demo'   # in the supervisor's command line: `down` signals only a process that still shows it
LAB_FILE = 'lab.json'
PID_FILE = 'supervisor.pid'
LOG_FILE = 'lab.log'
INVENTORY_FILE = 'fleet.orchestra.yml'
STORE_FILE = 'masking-queue.db'

# Both engines carry every job (with different job ids, as real engines do); what a job does is the
# engine's business, so outcomes live here: five succeed, one ends with warnings, one fails.
DEMO_JOBS = [
    {'name': 'mask_customers', 'outcome': 'SUCCEEDED', 'duration': 2.0, 'rows': 125000},
    {'name': 'mask_orders', 'outcome': 'SUCCEEDED', 'duration': 1.5, 'rows': 480000},
    {'name': 'mask_invoices', 'outcome': 'SUCCEEDED', 'duration': 2.5, 'rows': 310000},
    {'name': 'mask_payroll', 'outcome': 'SUCCEEDED', 'duration': 1.0, 'rows': 9000},
    {'name': 'mask_contacts', 'outcome': 'SUCCEEDED', 'duration': 1.5, 'rows': 64000},
    {'name': 'mask_legacy_crm', 'outcome': 'WARNING', 'duration': 1.0, 'rows': 22000},
    {'name': 'mask_archive', 'outcome': 'FAILED', 'duration': 0.5, 'rows': 700000},
]
DEMO_ENGINES = [('masking-east', 2), ('masking-west', 2)]
SIM_USER = {'username': 'admin', 'password': 'Admin-12'}   # the simulator's login, not a real secret


def default_dir():
    return os.environ.get('ORCHESTRA_DEMO_DIR') or os.path.join(tempfile.gettempdir(), 'orchestra-demo-%d' % os.getuid())


def cmdline(pid):
    """A process's command line ('' once it is gone), to tell our process from another that reused its pid."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
        return ''


def _write_json(path, data, mode=0o600):
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def inventory_text(agent):
    """The fleet inventory file for the local agent (orchestra.fleet.fleet plugin)."""
    lines = ['# Written by delphix_sim.demo for the orchestra.fleet demo: the local agent on loopback.',
             'plugin: orchestra.fleet.fleet',
             'hosts:',
             '  - 127.0.0.1',
             'port: %d' % agent['port'],
             'timeout: 3']
    if agent.get('token'):
        lines.append('token: %s' % agent['token'])
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------- the supervisor

def _log(line):
    # stdout is DIR/lab.log: it outlives `down`, so a test can check that every pid is gone.
    sys.stdout.write('%s %s\n' % (time.strftime('%H:%M:%S'), line))
    sys.stdout.flush()


class Agent:
    """The collection's own agent (python -m orchestra_agent from its source folder) on a loopback port."""

    def __init__(self, source, state_dir, token, timeout=30.0, workflow_image=None):
        with socket.socket() as probe:
            probe.bind(('127.0.0.1', 0))
            self.port = probe.getsockname()[1]
        self.url = 'http://127.0.0.1:%d' % self.port
        os.makedirs(state_dir, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=source, PYTHONDONTWRITEBYTECODE='1', ORCHESTRA_AGENT_TOKEN=token)
        config = []
        if workflow_image:   # the one image the demo's workflows may run (the agent's allow-list)
            config_path = state_dir.rstrip(os.sep) + '.config.json'
            _write_json(config_path, {'workflow_images': [workflow_image], 'workflow_network': 'none'})
            config = ['--config', config_path]
        log = open(state_dir.rstrip(os.sep) + '.log', 'ab')  # pylint: disable=consider-using-with  # the child keeps it
        try:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped by stop()
                [sys.executable, '-m', 'orchestra_agent', '--listen', '127.0.0.1', '--port', str(self.port),
                 '--state-dir', state_dir, '--label', 'orchestra.demo'] + config,
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                request = urllib.request.Request(self.url + '/v1/health', headers={'Authorization': 'Bearer ' + token})
                with urllib.request.urlopen(request, timeout=1) as answer:  # nosec: our loopback agent
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError('the agent did not answer on %s (see %s.log)' % (self.url, state_dir.rstrip(os.sep)))

    def stop(self):
        stop_process(self.proc)


def serve(directory, max_seconds, agent_source=None, workflow_image=None):
    """Own the lab's processes until SIGTERM or max_seconds; always stop them on the way out."""
    sims, agent = [], None
    stopping = {'now': False}

    def on_signal(_signum, _frame):
        stopping['now'] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        engines = []
        for name, slots in DEMO_ENGINES:
            sim = start_simulator(seed_config(name, DEMO_JOBS, slots=slots, users=[dict(SIM_USER)]))
            sims.append(sim)
            engines.append({'name': name, 'url': sim.url, 'slots': slots, 'pid': sim.pid,
                            'jobs': [job['name'] for job in DEMO_JOBS]})
            _log('started simulated engine %s pid=%d url=%s' % (name, sim.pid, sim.url))
        agent_info, agent_note = None, None
        if not agent_source or not os.path.isdir(os.path.join(agent_source, 'orchestra_agent')):
            agent_note = 'no agent source given (--agent-source: the collection\'s roles/agent/files/agent)'
        else:
            try:
                token = secrets.token_hex(16)
                agent = Agent(agent_source, os.path.join(directory, 'agent-state'), token, workflow_image=workflow_image)
                agent_info = {'url': agent.url, 'port': agent.port, 'pid': agent.pid, 'token': token,
                              'workflow_image': workflow_image}
                _log('started agent pid=%s url=%s' % (agent.pid, agent.url))
            except Exception as error:  # pylint: disable=broad-except  # the demo shows the rest without an agent
                agent_note = 'the local agent did not start: %s' % str(error).splitlines()[0][:300]
        inventory = None
        if agent_info:
            inventory = os.path.join(directory, INVENTORY_FILE)
            with open(os.open(inventory, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w', encoding='utf-8') as out:
                out.write(inventory_text(agent_info))
        lab = {'supervisor_pid': os.getpid(), 'engines': engines, 'agent': agent_info, 'agent_note': agent_note,
               'inventory': inventory, 'store': os.path.join(directory, STORE_FILE), 'credentials': dict(SIM_USER),
               'jobs': DEMO_JOBS, 'dir': directory, 'expires_at': time.time() + max_seconds}
        _write_json(os.path.join(directory, LAB_FILE), lab)
        deadline = time.monotonic() + max_seconds
        while not stopping['now'] and time.monotonic() < deadline:
            if any(not sim.alive() for sim in sims):
                break
            time.sleep(0.2)
    finally:
        if agent is not None:
            agent.stop()
        for sim in sims:
            sim.stop()
        _log('stopped the lab (supervisor pid=%d)' % os.getpid())
        try:
            os.unlink(os.path.join(directory, LAB_FILE))
        except OSError:
            pass


# ---------------------------------------------------------------- up / down / record

def _alive(pid):
    return bool(pid) and os.path.exists('/proc/%d' % pid) and 'Z' not in _proc_state(pid)


def _proc_state(pid):
    try:
        with open('/proc/%d/stat' % pid, encoding='utf-8') as handle:
            return handle.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return 'X'


def _kill_if_ours(pid, marker, sig):
    """Signal pid only while its command line still shows it is the lab's process (pids get reused)."""
    if _alive(pid) and marker in cmdline(pid):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    return not any(_alive(pid) for pid in pids)


def read_lab(directory):
    try:
        with open(os.path.join(directory, LAB_FILE), encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def down(directory):
    """Stop the lab of `directory`, whatever state it is in; returns what was stopped."""
    lab = read_lab(directory) or {}
    pid = lab.get('supervisor_pid')
    if pid is None:
        try:
            with open(os.path.join(directory, PID_FILE), encoding='utf-8') as handle:
                pid = int(handle.read().strip() or 0)
        except (OSError, ValueError):
            pid = None
    children = [e.get('pid') for e in lab.get('engines') or []] + [(lab.get('agent') or {}).get('pid')]
    children = [child for child in children if child]
    if pid:
        _kill_if_ours(pid, MARK, signal.SIGTERM)
        if not _wait_gone([pid], 20):
            _kill_if_ours(pid, MARK, signal.SIGKILL)
    for child in children:   # the supervisor normally stopped them; this is for a supervisor that was killed
        _kill_if_ours(child, 'delphix_sim', signal.SIGKILL)
        _kill_if_ours(child, 'orchestra_agent', signal.SIGKILL)
    _wait_gone(children, 10)
    for name in (LAB_FILE, PID_FILE, INVENTORY_FILE, STORE_FILE, STORE_FILE + '-wal', STORE_FILE + '-shm'):
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass
    shutil.rmtree(os.path.join(directory, 'agent-state'), ignore_errors=True)
    for name in ('agent-state.log',):
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass
    return {'stopped': [p for p in [pid] + children if p], 'dir': directory}


def up(directory, max_seconds, agent_source=None, timeout=60.0, workflow_image=None):
    """Start the supervisor and return the lab once every part answers."""
    os.makedirs(directory, exist_ok=True)
    down(directory)   # a lab left over from an interrupted run
    env = dict(os.environ)
    env['PYTHONPATH'] = PACKAGE_PARENT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    extra = ['--agent-source', os.path.abspath(agent_source)] if agent_source else []
    extra += ['--workflow-image', workflow_image] if workflow_image else []
    log = open(os.path.join(directory, LOG_FILE), 'ab')  # pylint: disable=consider-using-with  # the child keeps it
    try:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with  # outlives this command on purpose
            [sys.executable, '-m', MARK, 'serve', '--dir', directory, '--max-seconds', str(max_seconds)] + extra,
            cwd=PACKAGE_PARENT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()
    with open(os.path.join(directory, PID_FILE), 'w', encoding='utf-8') as handle:
        handle.write(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lab = read_lab(directory)
        if lab and lab.get('supervisor_pid') == proc.pid:
            return lab
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    down(directory)
    with open(os.path.join(directory, LOG_FILE), encoding='utf-8', errors='replace') as handle:
        tail = handle.read()[-3000:]
    raise RuntimeError('the demo lab did not come up within %ds:\n%s' % (timeout, tail))


def record(directory):
    """Per engine: executions, highest concurrency and whether any execution overlapped its own job."""
    lab = read_lab(directory)
    if not lab:
        raise RuntimeError('no demo lab is running in %s' % directory)
    result = {}
    for engine in lab['engines']:
        root = engine['url'][:-len('/masking/api')]
        with urllib.request.urlopen(root + '/_sim/record', timeout=10) as answer:  # nosec: the lab's loopback simulator
            rec = json.loads(answer.read().decode('utf-8'))
        result[engine['name']] = {'slots': rec['slots'], 'max_concurrency': rec['max_concurrency'],
                                  'executions': len(rec['executions']), 'per_job_name': rec['per_job_name'],
                                  'overlaps': rec['overlaps']}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m delphix_sim.demo', description=__doc__.splitlines()[0])
    parser.add_argument('action', choices=('up', 'down', 'record', 'serve'))
    parser.add_argument('--dir', default=None, help='state directory (default $ORCHESTRA_DEMO_DIR, else a per-user temp dir)')
    parser.add_argument('--agent-source', default=None, help="the orchestra agent's source folder (roles/agent/files/agent)")
    parser.add_argument('--max-seconds', type=float, default=600.0, help='the lab stops by itself after this long')
    parser.add_argument('--workflow-image', default=None, help="the image the local agent may start workflows from")
    args = parser.parse_args(argv)
    directory = os.path.abspath(args.dir or default_dir())
    if args.action == 'serve':
        serve(directory, args.max_seconds, args.agent_source, args.workflow_image)
        return 0
    if args.action == 'up':
        result = up(directory, args.max_seconds, args.agent_source, workflow_image=args.workflow_image)
    elif args.action == 'down':
        result = down(directory)
    else:
        result = record(directory)
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
