"""The engine model: catalogue, executions, capacity, tokens, and the execution record.

Thread-safe (one lock). Engine time is the engine's own clock: the host's wall clock plus
`clock_offset_s` (a real engine's clock is never the controller's), used for submitTime, startTime,
endTime, event timeStamps and the Date header. State is advanced lazily to "now" on every access by
replaying the events (run ends, queue admissions) in time order, so durations of a few milliseconds
are exact and the record of concurrency is exact too. Execution ids only grow.
"""
import itertools
import secrets
import threading
import time

NON_TERMINAL = ('QUEUED', 'RUNNING')
TERMINAL = ('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED')
# [V] API 5.1.47's execution_status filter: no WARNING (a filter by WARNING is a 400 on a real engine)
FILTER_STATUSES = ('CANCELLED', 'FAILED', 'QUEUED', 'RUNNING', 'SUCCEEDED', 'WAITING')
EXPIRED = 'Provided Authentication has expired. Please log in again.'
INVALID = 'Invalid authorization, check to make sure it has not expired.'


class EngineError(Exception):
    """An API error: HTTP status and the engine's errorMessage."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Job:
    def __init__(self, job_id, env, spec):
        self.id = job_id
        self.env = env
        self.name = spec['name']
        self.spec = spec


class Run:
    """One execution. Times are epoch seconds; status is the engine's internal status."""

    def __init__(self, execution_id, job, submit, body):
        self.id = execution_id
        self.job = job
        self.submit = submit
        self.start = None
        self.end = None
        self.status = 'QUEUED'
        self.outcome = job.spec['outcome']
        self.duration = max(0.0, float(job.spec['duration']))
        self.memory = int(job.spec['max_memory'] or 0)
        self.origin = 'api'        # 'outside': started through /_sim/executions (the engine's UI, another tool)
        self.source_connector = body.get('sourceConnectorId')
        self.target_connector = body.get('targetConnectorId')
        self.cancelled_progress = None

    def planned_end(self):
        return self.start + self.duration


class Engine:
    def __init__(self, config, clock=time.time):
        self.lock = threading.RLock()
        self.config = config
        self.settings = config['engine']
        offset = float(self.settings.get('clock_offset_s') or 0.0)
        self._clock = (lambda: clock() + offset) if offset else clock
        self.users = {u['username']: u['password'] for u in config['users']}
        self._build_catalogue(config['applications'])
        self._runs = {}
        self._queue = []          # runs waiting for a slot, FIFO
        self._running = {}        # execution id -> run
        self._exec_ids = itertools.count(int(self.settings['execution_id_base']))
        self._tokens = {}         # token -> {'issued': t, 'calls': n}
        self._time = clock()
        self.stats = {'max_concurrency': 0, 'max_memory_in_use': 0, 'overlaps': [], 'logins': 0,
                      'conflicts': 0, 'requests': 0}

    # ---- catalogue -------------------------------------------------------------------------
    def _build_catalogue(self, applications):
        self.applications, self.environments, self.jobs = {}, {}, {}
        app_ids, env_ids = itertools.count(1), itertools.count(1)
        job_ids = itertools.count(int(self.settings['job_id_base']))
        for app in applications:
            app_id = next(app_ids)
            self.applications[app_id] = {'applicationId': app_id, 'applicationName': app['name']}
            for env in app['environments']:
                env_id = next(env_ids)
                self.environments[env_id] = {'environmentId': env_id, 'environmentName': env['name'],
                                             'applicationId': app_id, 'purpose': env['purpose'], 'isWorkflowEnabled': False}
                for spec in env['jobs']:
                    job = Job(next(job_ids), env_id, spec)
                    self.jobs[job.id] = job

    def job_view(self, job):
        # The job object carries no environment id, as on a real engine.
        view = {'maskingJobId': job.id, 'jobName': job.name, 'rulesetId': job.id + 5000,
                'rulesetType': 'DATABASE', 'maxMemory': job.spec['max_memory'], 'minMemory': job.spec['min_memory'],
                'numInputStreams': job.spec['num_input_streams'], 'multiTenant': bool(job.spec['multi_tenant']),
                'onTheFlyMasking': bool(job.spec['on_the_fly']), 'feedbackSize': 50000,
                'failImmediately': bool(job.spec['fail_immediately']), 'createdBy': 'admin',
                'jobDescription': job.spec.get('description')}
        return {key: value for key, value in view.items() if value is not None}

    def jobs_in(self, environment_id=None):
        return [job for job in self.jobs.values() if environment_id is None or job.env == environment_id]

    def slots(self):
        allowed = int(self.settings['num_simul_jobs_allowed'])
        return allowed if allowed > 0 else max(1, int(self.settings['total_available_cores']) - 1)

    def memory_budget(self):
        """MB the running jobs' maxMemory may sum to: MaximumMemoryForJobs when set, else the memory the engine
        allocated for jobs (what /system-information reports as totalAllocatedMemoryForJobs): one number, enforced
        and reported alike."""
        memory = self.settings['max_memory_for_jobs']
        return int(memory) if memory is not None else int(self.settings['total_allocated_memory_mb'])

    # ---- TEST-ONLY changes (the /_sim/ endpoints): what an operator does in the engine's UI -------------
    def find_job(self, job_id=None, name=None, environment=None):
        """A job by id, or by name (and environment name when the name repeats); EngineError 404/409 otherwise."""
        with self.lock:
            if job_id is not None:
                job = self.jobs.get(job_id)
                if job is None:
                    raise EngineError(404, 'Masking job with id %s does not exist.' % job_id)
                return job
            found = [job for job in self.jobs.values() if job.name == name and (
                environment is None or self.environments[job.env]['environmentName'] == environment)]
            if not found:
                raise EngineError(404, 'Masking job %s does not exist.' % name)
            if len(found) > 1:
                raise EngineError(409, 'Masking job %s exists in several environments: name one.' % name)
            return found[0]

    def add_job(self, environment, spec):
        """Create a job in an existing environment (by name); ids keep growing, as on a real engine."""
        with self.lock:
            envs = [env_id for env_id, env in self.environments.items() if env['environmentName'] == environment]
            if not envs:
                raise EngineError(404, 'Environment %s does not exist.' % environment)
            if not spec.get('name') or len(spec['name']) > 50:
                raise EngineError(400, 'job names are 1..50 characters')
            job = Job(max(self.jobs or [int(self.settings['job_id_base']) - 1]) + 1, envs[0], spec)
            self.jobs[job.id] = job
            return job

    def rename_job(self, job_id, new_name):
        with self.lock:
            if not new_name or len(new_name) > 50:
                raise EngineError(400, 'job names are 1..50 characters')
            self.find_job(job_id).name = new_name

    def delete_job(self, job_id):
        with self.lock:
            self.find_job(job_id)
            del self.jobs[job_id]   # its executions stay in the history, as on an engine

    def set_users(self, users):
        """Replace the users (a changed password refuses the next login; issued tokens stay valid until they expire)."""
        with self.lock:
            self.users = {u['username']: u['password'] for u in users}

    SETTABLE = ('num_simul_jobs_allowed', 'max_memory_for_jobs', 'total_available_cores', 'total_allocated_memory_mb')

    def update_settings(self, changes):
        with self.lock:
            unknown = set(changes) - set(self.SETTABLE)
            if unknown:
                raise EngineError(400, 'unknown settings: %s' % ', '.join(sorted(unknown)))
            for key, value in changes.items():
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                    raise EngineError(400, '%s must be a whole number >= 0' % key)
                if value is None and key != 'max_memory_for_jobs':
                    raise EngineError(400, '%s cannot be null' % key)
            self.settings.update(changes)
            self.advance()   # more room admits queued executions now
            return {key: self.settings[key] for key in self.SETTABLE}

    # ---- tokens ----------------------------------------------------------------------------
    def login(self, username, password):
        with self.lock:
            if username not in self.users or self.users[username] != password:
                raise EngineError(401, 'Invalid username or password.')
            token = secrets.token_hex(16)
            self._tokens[token] = {'issued': self._clock(), 'calls': 0}
            self.stats['logins'] += 1
            return token

    def check_token(self, token, expiry_calls=None, timeout_s=None):
        with self.lock:
            entry = self._tokens.get(token or '')
            if entry is None:
                raise EngineError(401, INVALID)
            timeout = timeout_s if timeout_s is not None else self.settings['token_timeout_s']
            entry['calls'] += 1
            expired_by_time = timeout is not None and self._clock() - entry['issued'] > float(timeout)
            expired_by_calls = expiry_calls is not None and entry['calls'] > int(expiry_calls)
            if expired_by_time or expired_by_calls:
                del self._tokens[token]
                raise EngineError(401, EXPIRED)

    def logout(self, token):
        with self.lock:
            if self._tokens.pop(token or '', None) is None:
                raise EngineError(401, INVALID)

    # ---- time ------------------------------------------------------------------------------
    def now(self):
        """The engine's clock (epoch seconds), offset from the host's as configured."""
        return self._clock()

    def advance(self):
        """Replay run ends and admissions up to now."""
        with self.lock:
            now = self._clock()
            while self._running:
                ending = min(self._running.values(), key=lambda r: (r.planned_end(), r.id))
                if ending.planned_end() > now:
                    break
                self._finish(ending, ending.planned_end(), ending.outcome)
                self._admit(ending.planned_end())
            self._admit(now)
            self._time = now
            return now

    def _finish(self, run, when, status):
        run.end = when
        run.status = status
        self._running.pop(run.id, None)

    def _admit(self, when):
        budget = self.memory_budget()
        for run in list(self._queue):
            if len(self._running) >= self.slots():
                break
            in_use = sum(r.memory for r in self._running.values())
            if in_use + run.memory > budget:
                continue  # [I] a smaller job behind it may still fit
            self._queue.remove(run)
            run.start = when
            run.status = 'RUNNING'
            self._running[run.id] = run
            self._note_concurrency()

    def _note_concurrency(self):
        running = list(self._running.values())
        self.stats['max_concurrency'] = max(self.stats['max_concurrency'], len(running))
        self.stats['max_memory_in_use'] = max(self.stats['max_memory_in_use'], sum(r.memory for r in running))
        seen = {}
        for run in running:
            if run.job.id in seen:
                self.stats['overlaps'].append({'jobId': run.job.id, 'executionIds': [seen[run.job.id], run.id]})
            seen[run.job.id] = run.id

    # ---- executions ------------------------------------------------------------------------
    def start(self, body, origin='api'):
        with self.lock:
            now = self.advance()
            job_id = body.get('jobId')
            if not isinstance(job_id, int) or isinstance(job_id, bool):
                raise EngineError(400, 'jobId is required and must be an integer.')
            job = self.jobs.get(job_id)
            if job is None:
                raise EngineError(404, 'Masking job with id %d does not exist.' % job_id)
            if job.spec['multi_tenant'] and body.get('targetConnectorId') is None:
                raise EngineError(400, 'A targetConnectorId is required to run the multi-tenant job %s.' % job.name)
            active = [r for r in self._runs.values() if r.job.id == job_id and r.status in NON_TERMINAL]
            if active and self.settings['double_start'] == 'conflict':
                self.stats['conflicts'] += 1
                raise EngineError(409, 'Job %s (id %d) is already running or queued as execution %d.'
                                  % (job.name, job_id, active[0].id))
            run = Run(next(self._exec_ids), job, now, body)
            run.origin = origin
            self._runs[run.id] = run
            self._queue.append(run)
            self._admit(now)
            return run

    def get(self, execution_id):
        with self.lock:
            self.advance()
            run = self._runs.get(execution_id)
            if run is None:
                raise EngineError(404, 'Execution with id %d does not exist.' % execution_id)
            return run

    def runs(self, job_id=None, status=None):
        with self.lock:
            self.advance()
            found = [r for r in sorted(self._runs.values(), key=lambda r: r.id) if job_id is None or r.job.id == job_id]
            if status is not None:
                found = [r for r in found if self.public_status(r) == status]
            return found

    def cancel(self, execution_id, expected=None):
        with self.lock:
            now = self.advance()
            run = self.get(execution_id)
            shown = self.public_status(run)
            if expected is not None and shown != expected:
                raise EngineError(409, 'Execution %d is %s, not %s; it was not cancelled.' % (run.id, shown, expected))
            if run.status not in NON_TERMINAL:
                raise EngineError(409, 'Execution %d has already finished with status %s.' % (run.id, shown))
            if run.status == 'RUNNING':
                run.cancelled_progress = self.progress(run, now)
            else:
                self._queue.remove(run)
            self._finish(run, now, 'CANCELLED')
            self._admit(now)
            return run

    def progress(self, run, now=None):
        """(rowsMasked, rowsTotal) as the engine would report them now."""
        rows = int(run.job.spec['rows'])
        if run.start is None:
            return None, None  # queued, or cancelled while queued
        if run.cancelled_progress is not None:
            return run.cancelled_progress
        if run.status == 'FAILED':
            return rows // 2, rows
        if run.status != 'RUNNING':
            return rows, rows
        now = self._clock() if now is None else now
        share = 1.0 if run.duration <= 0 else min(1.0, (now - run.start) / run.duration)
        counting = float(self.settings['count_fraction'])
        if share < counting:
            return 0, -1
        return int(rows * (share - counting) / max(1e-9, 1.0 - counting)), rows

    def public_status(self, run):
        """The status as this API generation names it."""
        status = run.status
        if status == 'QUEUED':
            status = self.settings['queued_status']
        generation = self.settings['status_set']
        if generation in ('older', 'later') and status == 'WARNING':
            status = 'SUCCEEDED'
        if generation == 'older':
            status = {'QUEUED': 'RUNNING', 'WAITING': 'RUNNING', 'CANCELLED': 'FAILED'}.get(status, status)
        return status

    def events(self, run):
        if run.status == 'WARNING':
            return [{'executionEventId': run.id * 10 + 1, 'executionId': run.id, 'eventType': 'UNMASKED_DATA',
                     'severity': 'WARNING', 'cause': 'Non-conforming data left unmasked',
                     'exceptionDetail': '3 values in column CUSTOMER.EMAIL did not conform to the domain', 'count': 3,
                     'timeStamp': run.end}]
        if run.status == 'FAILED':
            return [{'executionEventId': run.id * 10 + 1, 'executionId': run.id, 'eventType': 'JOB_FAILURE',
                     'severity': 'ERROR', 'cause': 'Simulated job failure',
                     'exceptionDetail': 'ORA-01017: invalid username/password; logon denied', 'timeStamp': run.end}]
        return []

    # ---- the record ------------------------------------------------------------------------
    def record(self):
        with self.lock:
            self.advance()
            executions, per_job, per_job_name = [], {}, {}
            for run in sorted(self._runs.values(), key=lambda r: r.id):
                executions.append({'executionId': run.id, 'jobId': run.job.id, 'jobName': run.job.name,
                                   'environment': self.environments[run.job.env]['environmentName'],
                                   'status': run.status, 'submitted': run.submit, 'started': run.start,
                                   'ended': run.end, 'maxMemory': run.memory, 'origin': run.origin})
                per_job.setdefault(str(run.job.id), []).append(run.id)
                per_job_name.setdefault(run.job.name, []).append(run.id)
            return {'engine': self.settings['name'], 'slots': self.slots(), 'now': self._clock(),
                    'clock_offset_s': float(self.settings.get('clock_offset_s') or 0.0),
                    'memory_budget': self.memory_budget(), 'executions': executions,
                    'per_job': per_job, 'per_job_name': per_job_name, 'running': len(self._running), 'queued': len(self._queue),
                    'max_concurrency': self.stats['max_concurrency'],
                    'max_memory_in_use': self.stats['max_memory_in_use'],
                    'overlaps': list(self.stats['overlaps']), 'logins': self.stats['logins'],
                    'conflicts': self.stats['conflicts'], 'requests': self.stats['requests']}
