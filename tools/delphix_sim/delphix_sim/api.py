"""The WSGI app: routing, the engine's JSON shapes, paging, errors, and the /_sim/ test endpoints.

Only /masking/api[/v5.1.N]/... is the engine's API. /_sim/... is TEST-ONLY (record, faults, health):
it is not part of any real engine and is never faulted.
"""
import json
import math
import re
import time
from datetime import datetime, timezone
from email.utils import formatdate
from urllib.parse import parse_qs

from .config import JOB_DEFAULTS
from .engine import EngineError, FILTER_STATUSES
from .faults import FaultError

API_PREFIX = re.compile(r'^/masking/api(?:/v(\d+\.\d+\.\d+))?(/.*)?$')
REASONS = {200: 'OK', 201: 'Created', 204: 'No Content', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
           404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 500: 'Internal Server Error',
           503: 'Service Unavailable'}
MAX_MESSAGE = 255


class Drop(Exception):
    """Close the connection without an answer (lost response, engine down)."""

    def __init__(self, hold=0.0):
        super().__init__('drop')
        self.hold = hold


def format_date(epoch, style='delphix'):
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    text = moment.strftime('%Y-%m-%dT%H:%M:%S.') + '%03d' % (moment.microsecond // 1000)
    return text + {'delphix': '+0000', 'iso-z': 'Z', 'iso-colon': '+00:00'}[style]


def compact(obj):
    """Null fields are omitted, as the engine does."""
    return {key: value for key, value in obj.items() if value is not None}


def version_tuple(text):
    return tuple(int(part) for part in text.split('.'))


class App:
    def __init__(self, engine, faults):
        self.engine = engine
        self.faults = faults
        self.routes = [
            ('POST', r'/login', self.login, False),
            ('PUT', r'/logout', self.logout, False),
            ('GET', r'/applications', self.applications, True),
            ('GET', r'/applications/(\d+)', self.application, True),
            ('GET', r'/environments', self.environments, True),
            ('GET', r'/environments/(\d+)', self.environment, True),
            ('GET', r'/masking-jobs', self.masking_jobs, True),
            ('GET', r'/masking-jobs/(\d+)', self.masking_job, True),
            ('POST', r'/executions', self.start, True),
            ('GET', r'/executions', self.executions, True),
            ('GET', r'/executions/(\d+)', self.execution, True),
            ('POST', r'/executions/(\d+)/cancel', self.cancel, True),
            ('GET', r'/execution-components', self.components, True),
            ('GET', r'/execution-events', self.events, True),
            ('GET', r'/system-information', self.system_information, True),
            ('GET', r'/application-settings', self.settings, True),
        ]

    # ---- WSGI entry ------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        path = environ.get('PATH_INFO', '')
        method = environ['REQUEST_METHOD']
        try:
            if path.startswith('/_sim/'):
                status, body = self.sim(method, path, environ)
            else:
                status, body = self.api(method, path, environ)
        except Drop as drop:
            environ['sim.drop'][0] = drop.hold
            status, body = 500, {'errorMessage': 'dropped'}
        headers = [('Date', formatdate(self.engine.now(), usegmt=True))]   # the engine's clock, not ours
        if status == 204 or body is None:
            start_response('%d %s' % (status, REASONS.get(status, '')), headers + [('Content-Length', '0')])
            return [b'']
        payload = json.dumps(body).encode()
        headers += [('Content-Type', 'application/json'), ('Content-Length', str(len(payload)))]
        start_response('%d %s' % (status, REASONS.get(status, '')), headers)
        return [payload]

    def api(self, method, path, environ):
        match = API_PREFIX.match(path)
        if not match:
            return 404, {'errorMessage': 'Not found: %s' % path[:200]}
        version, rest = match.group(1), match.group(2) or '/'
        if self.faults.is_down():
            if self.faults.knob('down_mode') == '503':
                return 503, {'errorMessage': 'The masking engine is starting up. Please try again later.'}
            raise Drop()
        with self.engine.lock:
            self.engine.stats['requests'] += 1
        call = '%s %s' % (method, rest)
        delay = self.faults.latency(call)
        if delay:
            time.sleep(delay)
        if version and version_tuple(version) > version_tuple(self.engine.settings['api_version']):
            return 404, {'errorMessage': 'API version v%s is not supported by this engine.' % version}
        fault = self.faults.draw(call)
        if fault == 'error':
            return 500, {'errorMessage': 'An internal error occurred (simulated fault).'}
        try:
            status, body = self.dispatch(method, rest, environ)
        except EngineError as exc:
            status, body = exc.status, {'errorMessage': exc.message[:MAX_MESSAGE]}
        if fault == 'lost':
            mode = self.faults.knob('lost_mode')
            raise Drop(float(self.faults.knob('lost_hold_s')) if mode == 'hang' else 0.0)
        return status, body

    def dispatch(self, method, rest, environ):
        path_known = False
        for verb, pattern, handler, needs_auth in self.routes:
            match = re.fullmatch(pattern, rest.rstrip('/') or '/')
            if not match:
                continue
            path_known = True
            if verb != method:
                continue
            if needs_auth:
                self.authenticate(environ)
            args = [int(group) for group in match.groups()]
            return handler(environ, *args)
        if path_known:
            raise EngineError(405, 'Method %s is not allowed on %s.' % (method, rest))
        raise EngineError(404, 'Not found: %s' % rest[:200])

    # ---- helpers ---------------------------------------------------------------------------
    def authenticate(self, environ):
        token = environ.get('HTTP_AUTHORIZATION')  # header names are case-insensitive; WSGI normalises them
        self.engine.check_token(token, self.faults.knob('token_expiry_calls'), self.faults.knob('token_timeout_s'))

    @staticmethod
    def body(environ):
        length = int(environ.get('CONTENT_LENGTH') or 0)
        raw = environ['wsgi.input'].read(length) if length else b''
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise EngineError(400, 'Malformed JSON request body.') from exc
        if not isinstance(data, dict):
            raise EngineError(400, 'The request body must be a JSON object.')
        return data

    @staticmethod
    def query(environ):
        return {key: values[-1] for key, values in parse_qs(environ.get('QUERY_STRING', '')).items()}

    @staticmethod
    def int_param(params, name, minimum=None):
        if name not in params:
            return None
        try:
            value = int(params[name])
        except ValueError as exc:
            raise EngineError(400, 'Invalid value for %s: %s' % (name, params[name][:50])) from exc
        if minimum is not None and value < minimum:
            raise EngineError(400, 'Invalid value for %s: must be at least %d.' % (name, minimum))
        return value

    def page(self, environ, items, render=None):
        params = self.query(environ)
        number = self.int_param(params, 'page_number', 1)
        size = self.int_param(params, 'page_size', 1)
        if size is None and number is not None:
            size = self.engine.settings['default_page_size'] or len(items) or 1
        elif size is None:
            size = self.engine.settings['default_page_size']
        if size is None:
            chosen = items
        else:
            number = number or 1
            last = max(1, int(math.ceil(len(items) / float(size))))
            if number > last:
                raise EngineError(400, 'The page number %d is outside of the acceptable range. The last page is %d.'
                                  % (number, last))
            chosen = items[(number - 1) * size:number * size]
        if render is not None:  # render only the page asked for: long histories stay cheap
            chosen = [render(item) for item in chosen]
        return 200, {'_pageInfo': {'numberOnPage': len(chosen), 'total': len(items)}, 'responseList': chosen}

    def post_status(self):
        return int(self.faults.knob('post_status') or self.engine.settings['post_status'])

    def date(self, epoch):
        return format_date(epoch, self.engine.settings['date_style'])

    def render(self, run):
        with self.engine.lock:
            return self._render(run)

    def _render(self, run):
        masked, total = self.engine.progress(run)
        return compact({
            'executionId': run.id, 'jobId': run.job.id, 'status': self.engine.public_status(run),
            'rowsMasked': masked, 'rowsTotal': total,
            'bytesProcessed': masked * 100 if masked is not None else None,
            'bytesTotal': total * 100 if total not in (None, -1) else None,
            'startTime': self.date(run.start), 'endTime': self.date(run.end), 'submitTime': self.date(run.submit),
            'sourceConnectorId': run.source_connector, 'targetConnectorId': run.target_connector,
            'connectorType': 'DATABASE' if run.target_connector is not None else None,
        })

    # ---- handlers --------------------------------------------------------------------------
    def login(self, environ):
        data = self.body(environ)
        username, password = data.get('username'), data.get('password')
        if not isinstance(username, str) or not isinstance(password, str):
            raise EngineError(400, 'username and password are required.')
        return self.post_status(), {'Authorization': self.engine.login(username, password)}

    def logout(self, environ):
        self.engine.logout(environ.get('HTTP_AUTHORIZATION'))
        return 204, None

    def applications(self, environ):
        return self.page(environ, list(self.engine.applications.values()))

    def application(self, _environ, app_id):
        if app_id not in self.engine.applications:
            raise EngineError(404, 'Application with id %d does not exist.' % app_id)
        return 200, self.engine.applications[app_id]

    def environments(self, environ):
        app_id = self.int_param(self.query(environ), 'application_id')
        envs = [e for e in self.engine.environments.values() if app_id is None or e['applicationId'] == app_id]
        return self.page(environ, envs)

    def environment(self, _environ, env_id):
        if env_id not in self.engine.environments:
            raise EngineError(404, 'Environment with id %d does not exist.' % env_id)
        return 200, self.engine.environments[env_id]

    def masking_jobs(self, environ):
        env_id = self.int_param(self.query(environ), 'environment_id')
        if env_id is not None and env_id not in self.engine.environments:
            raise EngineError(404, 'Environment with id %d does not exist.' % env_id)
        return self.page(environ, [self.engine.job_view(job) for job in self.engine.jobs_in(env_id)])

    def masking_job(self, _environ, job_id):
        job = self.engine.jobs.get(job_id)
        if job is None:
            raise EngineError(404, 'Masking job with id %d does not exist.' % job_id)
        return 200, self.engine.job_view(job)

    def start(self, environ):
        run = self.engine.start(self.body(environ))
        return self.post_status(), self.render(run)

    def executions(self, environ):
        params = self.query(environ)
        job_id = self.int_param(params, 'job_id')
        status = params.get('execution_status')
        if status is not None and status not in FILTER_STATUSES:
            raise EngineError(400, 'Invalid value for execution_status: %s' % status[:50])
        return self.page(environ, self.engine.runs(job_id, status), self.render)

    def execution(self, _environ, execution_id):
        return 200, self.render(self.engine.get(execution_id))

    def cancel(self, environ, execution_id):
        # [V] expectedStatus and graceful are QUERY parameters; a guard sent in the body is ignored, as on a real engine.
        self.body(environ)   # read (malformed JSON is still a 400) and dropped
        params = self.query(environ)
        expected = params.get('expectedStatus')
        if expected is not None and expected not in ('QUEUED', 'RUNNING'):
            raise EngineError(400, 'expectedStatus must be QUEUED or RUNNING.')
        if params.get('graceful') not in (None, 'true', 'false'):
            raise EngineError(400, 'Invalid value for graceful: %s' % params['graceful'][:50])
        if self.engine.settings['status_set'] == 'older':
            raise EngineError(404, 'Not found: /executions/%d/cancel' % execution_id)
        return 200, self.render(self.engine.cancel(execution_id, expected))

    def _run_param(self, environ):
        execution_id = self.int_param(self.query(environ), 'execution_id')
        if execution_id is None:
            raise EngineError(400, 'execution_id is required.')
        return self.engine.get(execution_id)

    def components(self, environ):
        run = self._run_param(environ)
        with self.engine.lock:
            masked, total = self.engine.progress(run)
        component = compact({'executionComponentId': run.id * 10 + 1, 'executionId': run.id,
                             'componentName': run.job.name.upper() + '_TABLE', 'status': self.engine.public_status(run),
                             'rowsMasked': masked, 'rowsTotal': total, 'startTime': self.date(run.start),
                             'endTime': self.date(run.end)})
        return self.page(environ, [component])

    def events(self, environ):
        run = self._run_param(environ)
        events = [compact(dict(event, timeStamp=self.date(event.get('timeStamp')))) for event in self.engine.events(run)]
        return self.page(environ, events)

    def system_information(self, _environ):
        settings = self.engine.settings
        return 200, compact({'version': settings['version'], 'build': settings['build'],
                             'buildTimestamp': settings['build'].rsplit('-', 1)[-1],
                             'totalAllocatedMemoryForJobs': self.engine.memory_budget(),
                             'totalAvailableCores': settings['total_available_cores']})

    def settings(self, environ):
        group = self.query(environ).get('setting_group')
        engine = self.engine.settings
        values = [('general', 'NumSimulJobsAllowed', engine['num_simul_jobs_allowed']),
                  ('general', 'MaximumMemoryForJobs', engine['max_memory_for_jobs']),
                  ('security', 'API_AUTHORIZATION_TIMEOUT', engine['token_timeout_s'])]
        chosen = [{'settingId': index + 1, 'settingGroup': g, 'settingName': n, 'settingValue': str(v)}
                  for index, (g, n, v) in enumerate(values) if v is not None and group in (None, g)]
        return self.page(environ, chosen)

    # ---- TEST-ONLY endpoints ---------------------------------------------------------------
    def sim(self, method, path, environ):
        if (method, path) == ('GET', '/_sim/health'):
            return 200, {'engine': self.engine.settings['name'], 'ok': True}
        if (method, path) == ('GET', '/_sim/record'):
            record = self.engine.record()
            record['faults'] = dict(self.faults.counts)
            return 200, record
        if path == '/_sim/faults' and method == 'GET':
            return 200, self.faults.snapshot()
        if path == '/_sim/faults' and method in ('PUT', 'POST'):
            try:
                return 200, self.faults.update(self.body(environ))
            except (FaultError, EngineError, ValueError, TypeError) as exc:
                return 400, {'errorMessage': str(exc)}
        try:
            return self.sim_change(method, path, environ)
        except (EngineError, KeyError, TypeError, ValueError) as exc:
            return getattr(exc, 'status', 400), {'errorMessage': getattr(exc, 'message', str(exc))}

    def sim_change(self, method, path, environ):
        """TEST-ONLY changes an operator makes on the engine itself (its UI, another tool), never through our client.

        POST /_sim/executions {"jobName", "environment"?} or {"jobId"}: start an execution "from outside";
        POST /_sim/jobs {"environment", "name", ...job keys}: add a job; PUT /_sim/jobs/{id} {"name"}: rename;
        DELETE /_sim/jobs/{id}: delete; PUT /_sim/users [{"username", "password"}]: replace the users;
        PUT /_sim/settings {"num_simul_jobs_allowed", "max_memory_for_jobs", "total_available_cores", ...}.
        """
        job_path = re.fullmatch(r'/_sim/jobs/(\d+)', path)
        if (method, path) == ('POST', '/_sim/executions'):
            data = self.body(environ)
            job = self.engine.find_job(data.get('jobId'), data.get('jobName'), data.get('environment'))
            body = dict((key, data[key]) for key in ('targetConnectorId', 'sourceConnectorId') if key in data)
            return 201, self.render(self.engine.start(dict(body, jobId=job.id), origin='outside'))
        if (method, path) == ('POST', '/_sim/jobs'):
            data = self.body(environ)
            environment = data.pop('environment')
            spec = dict(JOB_DEFAULTS)
            spec.update(data)
            return 201, self.engine.job_view(self.engine.add_job(environment, spec))
        if job_path and method == 'PUT':
            self.engine.rename_job(int(job_path.group(1)), self.body(environ).get('name'))
            return 200, self.engine.job_view(self.engine.find_job(int(job_path.group(1))))
        if job_path and method == 'DELETE':
            self.engine.delete_job(int(job_path.group(1)))
            return 204, None
        if (method, path) == ('PUT', '/_sim/users'):
            length = int(environ.get('CONTENT_LENGTH') or 0)
            users = json.loads(environ['wsgi.input'].read(length) or b'[]')
            if not isinstance(users, list) or not all(isinstance(u, dict) and u.get('username') for u in users):
                raise EngineError(400, 'a list of {"username", "password"} objects is expected')
            self.engine.set_users(users)
            return 200, {'users': sorted(u['username'] for u in users)}
        if (method, path) == ('PUT', '/_sim/settings'):
            return 200, self.engine.update_settings(self.body(environ))
        return 404, {'errorMessage': 'unknown test endpoint %s' % path}
