"""Run the REAL orchestra agent as a subprocess for tests, benchmarks and the demo.

    handle = start_agent(labels=['my.suite'], token='s3cret')
    handle.get_json('/v1/state')                 # signed too when the agent runs with auth_reads
    handle.request('POST', '/v1/claims', {'owner': 'me', 'ttl': 60})   # signed, JSON
    handle.restart()      # same port, same state_dir: claims must survive
    handle.close()        # stop, and remove the state_dir if start_agent made it

`prefix` runs it through another command, e.g. ['ip', 'netns', 'exec', 'h1'];
`ip netns exec` execs the agent, so `.pid` is the agent's own pid; pass the
namespace's own address as `listen`, since the URL is built from it. With
port=None a free port is picked once (bound and released here) and kept for
restarts; the agent sets SO_REUSEADDR on a fixed port, so a restart can bind it
again at once (a port-0 listener cannot: its TIME_WAIT sockets would block it).
"""
import hashlib
import hmac
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from tests.support.lab.paths import lab_dir
from tests.support.lab.ports import free_port
from tests.support.lab.processes import stop_process

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT_SOURCE = os.path.join(COLLECTION_ROOT, 'roles', 'agent', 'files', 'agent')
WILDCARDS = ('0.0.0.0', '::', '')
OPEN_READS = ('/v1/health', '/healthy', '/v1/nonce')
MUTATIONS = ('POST', 'PUT', 'PATCH', 'DELETE')


def signature(token, method, target, agent_id, nonce, body):
    """The agent's request signature, written out here independently of the collection's client,
    so a test signed with it checks the protocol (docs/agent-openapi.yaml), not the client against itself."""
    text = '\n'.join(['orchestra-hmac-sha256-v1', method.upper(), target, agent_id, nonce,
                      hashlib.sha256(body or b'').hexdigest()])
    return hmac.new(token.encode('utf-8'), text.encode('utf-8'), hashlib.sha256).hexdigest()


class AgentStartError(RuntimeError):
    pass


class AgentHandle:
    def __init__(self, base_argv, env, listen, port, state_dir, log_path, token, tls, owns_state_dir, timeout,
                 auth_reads=False):
        self._base_argv = base_argv
        self._env = env
        self.listen = listen
        self.port = port
        self.state_dir = state_dir
        self.log_path = log_path
        self.token = token
        self.tls = tls
        self.auth_reads = auth_reads
        self._owns_state_dir = owns_state_dir
        self._timeout = timeout
        self.proc = None

    # -- addresses ---------------------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def host(self):
        if self.listen in WILDCARDS:
            return '127.0.0.1'
        return '[%s]' % self.listen if ':' in self.listen else self.listen

    @property
    def url(self):
        return '%s://%s:%d' % ('https' if self.tls else 'http', self.host, self.port)

    def signed_headers(self, method, path, body=b''):
        """X-Orchestra-Nonce and X-Orchestra-Signature for one request (a fresh nonce each call); {} without a token."""
        if not self.token:
            return {}
        issued = self.get_json('/v1/nonce')
        return {'X-Orchestra-Nonce': issued['nonce'],
                'X-Orchestra-Signature': signature(self.token, method, path, issued['agent_id'], issued['nonce'], body)}

    def request(self, method, path, json_body=None, data=None, headers=None, timeout=5, sign=True,
                content_type='application/json'):
        """One HTTP request -> requests.Response: JSON body, signed with the token (when sign and there is one)."""
        import requests  # pylint: disable=import-outside-toplevel  # only the callers of request() need it
        if json_body is not None:
            data = json.dumps(json_body).encode('utf-8')
        send = {}
        if content_type and (data is not None or method.upper() in MUTATIONS):
            send['Content-Type'] = content_type
        if sign:
            send.update(self.signed_headers(method, path, data if isinstance(data, bytes) else b''))
        send.update(headers or {})
        return requests.request(method, self.url + path, data=data, headers=send, timeout=timeout, verify=False)

    def logs(self):
        try:
            with open(self.log_path, encoding='utf-8', errors='replace') as handle:
                return handle.read()
        except OSError:
            return ''

    # -- life cycle -------------------------------------------------------------
    def _launch(self):
        if self.port is None:
            self.port = free_port()
        argv = list(self._base_argv) + ['--port', str(self.port)]
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, 'ab')  # pylint: disable=consider-using-with  # the child keeps it
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self._env,
                                         start_new_session=True)
        finally:
            log.close()
        self._wait_ready(offset)

    def _wait_ready(self, log_offset):
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AgentStartError('agent exited with %s:\n%s' % (self.proc.returncode, self.logs()[log_offset:][-3000:]))
            if _listening_logged(self.log_path, log_offset) and self.health(timeout=1) is not None:
                return
            time.sleep(0.05)
        self.stop()
        raise AgentStartError('agent did not answer /v1/health within %ss:\n%s' % (self._timeout, self.logs()[-3000:]))

    def get_json(self, path, timeout=5):
        """GET path (signed when the agent runs with auth_reads) -> parsed JSON; raises on HTTP errors."""
        signed = self.auth_reads and self.token and path.split('?')[0] not in OPEN_READS
        headers = self.signed_headers('GET', path) if signed else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        context = ssl._create_unverified_context() if self.tls else None  # pylint: disable=protected-access
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # nosec: loopback/test host
            return json.loads(response.read().decode('utf-8'))

    def health(self, timeout=2):
        """The /v1/health JSON, or None when the agent does not answer."""
        try:
            return self.get_json('/v1/health', timeout=timeout)
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def state(self):
        return self.get_json('/v1/state')

    def wait_state(self, predicate, timeout=30, interval=0.1):
        """Poll /v1/state until predicate(state) is true (bounded); return that state or raise AssertionError."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.state()
            if predicate(state):
                return state
            time.sleep(interval)
        raise AssertionError('agent state never matched within %ss; last: %r' % (timeout, state))

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after `timeout` s; returns the exit code (None if it was not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        return stop_process(proc, timeout)

    def restart(self):
        """Stop and start again on the same port with the same state_dir."""
        self.stop()
        self._launch()
        return self

    def close(self):
        self.stop()
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            for path in (self.log_path, self.state_dir.rstrip(os.sep) + '.config.json'):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()


def _listening_logged(log_path, offset):
    """Whether this run (log lines after `offset`) has logged its 'listening' event."""
    try:
        with open(log_path, 'rb') as handle:
            handle.seek(offset)
            tail = handle.read().decode('utf-8', 'replace')
    except OSError:
        return False
    for line in tail.splitlines():
        if '"listening"' in line:
            try:
                if json.loads(line).get('event') == 'listening':
                    return True
            except ValueError:
                continue
    return False


def self_signed_pair(directory, name='agent'):
    """A self-signed EC certificate for 127.0.0.1 and its key, written to directory; returns (cert, key)."""
    cert, key = os.path.join(directory, name + '.crt'), os.path.join(directory, name + '.key')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                    '-subj', '/CN=orchestra-agent-test', '-days', '2', '-addext', 'subjectAltName=IP:127.0.0.1',
                    '-keyout', key, '-out', cert], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def agent_env(env=None, token=None):
    merged = dict(os.environ if env is None else env)
    merged['PYTHONPATH'] = AGENT_SOURCE + (os.pathsep + merged['PYTHONPATH'] if merged.get('PYTHONPATH') else '')
    merged['PYTHONDONTWRITEBYTECODE'] = '1'
    merged.pop('ORCHESTRA_AGENT_TOKEN', None)
    if token:
        merged['ORCHESTRA_AGENT_TOKEN'] = token
    return merged


def start_agent(listen='127.0.0.1', port=None, state_dir=None, labels=(), token=None, docker_url=None,
                workflows_dir=None, extra_args=(), prefix=(), env=None, config=None, timeout=30, python=None):
    """Start the agent and wait (bounded) until /v1/health answers; returns an AgentHandle.

    `config` (dict) is written to a JSON config file and passed with --config
    (e.g. {'tls_cert': ..., 'tls_key': ..., 'auth_reads': True}); the URL is
    https when it names tls_cert. `python` overrides the interpreter.
    """
    owns_state_dir = state_dir is None
    if owns_state_dir:
        state_dir = tempfile.mkdtemp(prefix='agent-', dir=lab_dir('agent-proc'))
    os.makedirs(state_dir, exist_ok=True)
    log_path = state_dir.rstrip(os.sep) + '.log'
    argv = list(prefix) + [python or sys.executable, '-m', 'orchestra_agent', '--listen', listen, '--state-dir', state_dir]
    if config:
        config_path = state_dir.rstrip(os.sep) + '.config.json'
        with open(config_path, 'w', encoding='utf-8') as handle:
            json.dump(config, handle)
        argv += ['--config', config_path]
    for label in labels:
        argv += ['--label', label]
    if docker_url:
        argv += ['--docker-url', docker_url]
    if workflows_dir:
        argv += ['--workflows-dir', workflows_dir]
    argv += list(extra_args)
    handle = AgentHandle(argv, agent_env(env, token), listen, port, state_dir, log_path, token,
                         bool(config and config.get('tls_cert')), owns_state_dir, timeout,
                         auth_reads=bool(config and config.get('auth_reads')))
    try:
        handle._launch()  # pylint: disable=protected-access
    except BaseException:
        handle.close()
        raise
    return handle
