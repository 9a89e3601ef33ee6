# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client for the Delphix Masking Engine REST API (one instance per engine).

Facts it honours are in DELPHIX_MASKING_API.md: raw token in the Authorization header, one re-login on 401,
any 2xx, snake_case query parameters (camelCase expectedStatus/graceful on cancel), paged lists, log out when
done, and a start that never double-starts after a lost answer. Retries with backoff only where a retry is
safe (GETs, login); a POST whose answer is lost is reconciled through the job's executions by a start marker
(the job's highest executionId before the POST: ids only grow), never by comparing the engine's clock with ours.
"""

import hashlib
import threading
import time
import traceback
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.orchestra.fleet.plugins.module_utils.delphix_parse import (
    TERMINAL, Execution, backoff_delay, choose_after_marker, clock_offset, error_kind, highest_execution_id,
    is_page_out_of_range, more_pages, page_items, parse_execution, select_job, setting_values,
)

try:
    import requests
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised by ansible-test's import sanity test
    requests = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

__all__ = ['TERMINAL', 'Execution', 'MaskingEngineClient', 'DelphixError', 'DelphixAuthError', 'DelphixNotFound',
           'DelphixConflict', 'DelphixUnavailable', 'DelphixNotReached', 'DelphixAmbiguous', 'HAS_REQUESTS',
           'REQUESTS_IMPORT_ERROR', 'setting_values']

API_ROOT = '/masking/api'
PAGE_SIZE = 100
MAX_PAGES = 10000


class DelphixError(Exception):
    """An engine call failed. .status: HTTP code or None; .engine_message: the engine's errorMessage."""

    def __init__(self, message, status=None, engine_message=None, url=None):
        super(DelphixError, self).__init__(message)
        self.status = status
        self.engine_message = engine_message
        self.url = url


class DelphixAuthError(DelphixError):
    """Login refused, or 401 again right after a fresh login."""


class DelphixNotFound(DelphixError):
    """404, or a jobName that is not on this engine."""


class DelphixConflict(DelphixError):
    """409: e.g. the job is already running or queued on the engine."""


class DelphixUnavailable(DelphixError):
    """Transient: connection refused/reset, timeout, 5xx after the safe retries.

    .outcome_unknown is True when the request may have reached the engine (read timeout, reset, 5xx),
    so an unsafe call may or may not have taken effect.
    """

    def __init__(self, message, status=None, engine_message=None, url=None, outcome_unknown=True):
        super(DelphixUnavailable, self).__init__(message, status, engine_message, url)
        self.outcome_unknown = outcome_unknown


class DelphixNotReached(DelphixUnavailable):
    """Provably nothing was started: the start's POST never left (connection refused, DNS or TLS failure,
    connect timeout), or it failed before the POST (login, reading the start marker)."""

    def __init__(self, message, status=None, engine_message=None, url=None):
        super(DelphixNotReached, self).__init__(message, status, engine_message, url, outcome_unknown=False)


class DelphixAmbiguous(DelphixError):
    """A jobName matches several jobs and no environment narrows it."""


ERRORS = {'auth': DelphixAuthError, 'not_found': DelphixNotFound, 'conflict': DelphixConflict,
          'unavailable': DelphixUnavailable, 'error': DelphixError}

# Tokens survive client instances in one process (a queue step builds clients per engine repeatedly).
_TOKENS: Dict[tuple, str] = {}
_TOKENS_LOCK = threading.Lock()


def api_base(base_url, api_version=None):
    """http://host:8282[/masking/api] (+ api_version) -> the API base URL without a trailing slash."""
    base = base_url.rstrip('/')
    if not base.endswith(API_ROOT):
        base += API_ROOT
    if api_version:
        base += '/v' + str(api_version).lstrip('vV')
    return base


class MaskingEngineClient:
    """One masking engine: session, token, job-id cache; safe retries; lost-answer-safe start."""

    def __init__(self, base_url, username, password, timeout=30.0, verify=True, api_version=None, retries=3,
                 backoff=0.5, page_size=PAGE_SIZE, sleep=time.sleep):
        if not HAS_REQUESTS:
            raise DelphixError(missing_required_lib('requests'))
        self.base = api_base(base_url, api_version)
        self.username = username
        self._password = password
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.page_size = int(page_size)
        self._sleep = sleep
        self._session = requests.Session()
        self._session.verify = verify
        self._session.headers.update({'Accept': 'application/json'})
        self._cache_key = (self.base, username, hashlib.sha256(password.encode('utf-8')).hexdigest())
        self._login_lock = threading.Lock()
        self._job_ids: Dict[tuple, int] = {}
        # Seconds the engine's clock is ahead of ours, from the last answer's Date header: shown, never decided on.
        self.clock_offset: Optional[float] = None

    def __repr__(self):
        return 'MaskingEngineClient(%r, user=%r)' % (self.base, self.username)

    # ---- session ---------------------------------------------------------------------------
    @property
    def _token(self):
        with _TOKENS_LOCK:
            return _TOKENS.get(self._cache_key)

    def _set_token(self, token):
        with _TOKENS_LOCK:
            if token is None:
                _TOKENS.pop(self._cache_key, None)
            else:
                _TOKENS[self._cache_key] = token

    def login(self) -> None:
        """POST /login; caches the token for this engine and user."""
        with self._login_lock:
            try:
                body = self._call('POST', '/login', body={'username': self.username, 'password': self._password},
                                  safe=True, auth=False)
            except DelphixUnavailable as exc:
                exc.during_login = True   # whatever call needed this login was never sent
                raise
            token = body.get('Authorization') if isinstance(body, dict) else None
            if not token:
                raise DelphixAuthError('login to %s answered without an Authorization token' % self.base,
                                       url=self.base + '/login')
            self._set_token(token)

    def logout(self) -> None:
        """PUT /logout (each login is a session on the engine until then); best effort, never raises."""
        if self._token is None:
            return
        try:
            self._call('PUT', '/logout', safe=False, relogin=False)
        except DelphixError:
            pass   # expired already, or the engine is away: its token timeout ends the session
        finally:
            self._set_token(None)

    # ---- transport -------------------------------------------------------------------------
    def _send(self, method, url, params, body):
        headers = {}
        token = self._token
        if token:
            headers['Authorization'] = token  # raw token, no "Bearer"
        sent = time.time()
        response = self._session.request(method, url, params=params, json=body, headers=headers, timeout=self.timeout)
        offset = clock_offset(response.headers.get('Date'), sent, time.time())
        if offset is not None:
            self.clock_offset = offset
        return response

    def _call(self, method, path, params=None, body=None, safe=False, auth=True, relogin=True):
        """One API call -> parsed JSON (None for an empty 2xx). Raises the mapped DelphixError.

        safe: may be retried with backoff on transient failures. auth: needs a token (logs in first).
        """
        url = self.base + path
        retried, relogged = 0, not relogin
        while True:
            if auth and self._token is None:
                self.login()
            try:
                response = self._send(method, url, params, body)
            except requests.exceptions.RequestException as exc:
                failure = DelphixUnavailable('%s %s failed: %s' % (method, url, _short(exc)), url=url,
                                             outcome_unknown=_maybe_delivered(exc))
                if safe and retried < self.retries:
                    retried += 1
                    self._sleep(backoff_delay(retried, self.backoff))
                    continue
                raise failure
            if 200 <= response.status_code < 300:
                return _json_or_none(response, url)
            message = _engine_message(response)
            if response.status_code == 401 and auth and not relogged:
                relogged = True  # expired or revoked token: log in again, retry once
                self._set_token(None)
                continue
            kind = error_kind(response.status_code)
            if kind == 'unavailable' and safe and retried < self.retries:
                retried += 1
                self._sleep(backoff_delay(retried, self.backoff))
                continue
            text = '%s %s -> HTTP %d%s' % (method, url, response.status_code, ': ' + message if message else '')
            raise ERRORS[kind](text, status=response.status_code, engine_message=message, url=url)

    def _get(self, path, params=None):
        return self._call('GET', path, params=params, safe=True)

    def _list(self, path, params=None):
        """Every item of a paged list."""
        items: List[Any] = []
        page = 1
        while page <= MAX_PAGES:
            query = dict(params or {}, page_number=page, page_size=self.page_size)
            try:
                body = self._get(path, query)
            except DelphixError as exc:
                if page > 1 and is_page_out_of_range(exc.engine_message):
                    break  # the list shrank while we read it
                raise
            try:
                chunk, total = page_items(body)
            except ValueError as exc:
                raise DelphixError('%s: %s' % (self.base + path, exc), url=self.base + path)
            items.extend(chunk)
            if not more_pages(len(items), len(chunk), total, self.page_size):
                break
            page += 1
        return items

    # ---- catalogue -------------------------------------------------------------------------
    def system_information(self) -> Dict[str, Any]:
        return self._get('/system-information')

    def list_applications(self) -> List[Dict[str, Any]]:
        return self._list('/applications')

    def list_environments(self, application_id: Optional[int] = None) -> List[Dict[str, Any]]:
        return self._list('/environments', {'application_id': int(application_id)} if application_id is not None else None)

    def application_settings(self, setting_group: Optional[str] = None) -> List[Dict[str, Any]]:
        """GET /application-settings[?setting_group=] (every page): settingGroup, settingName, settingValue."""
        return self._list('/application-settings', {'setting_group': setting_group} if setting_group else None)

    def get_job(self, job_id: int) -> Dict[str, Any]:
        return self._get('/masking-jobs/%d' % int(job_id))

    def catalogue(self) -> List[Dict[str, Any]]:
        """Every masking job with where it lives: applications -> environments -> masking-jobs, every page of each.

        The job object carries no environment id, so jobs are listed per environment. Each entry is the engine's job
        object plus `environmentName`, `environmentId` and `applicationName`.
        """
        found = []
        for app in self.list_applications():
            for env in self.list_environments(app['applicationId']):
                for job in self.list_jobs(env['environmentId']):
                    found.append(dict(job, environmentName=env.get('environmentName'), environmentId=env['environmentId'],
                                      applicationName=app.get('applicationName')))
        return found

    def list_jobs(self, environment_id: Optional[int] = None) -> List[Dict[str, Any]]:
        return self._list('/masking-jobs', {'environment_id': environment_id} if environment_id is not None else None)

    def forget_jobs(self) -> None:
        """Forget resolved job ids (the engine's jobs changed: deleted, renamed or added)."""
        self._job_ids.clear()

    def resolve_job(self, job_name: str, environment: Optional[str] = None) -> int:
        """jobName (+ environment name or id) -> maskingJobId on THIS engine; cached per client."""
        key = (job_name, None if environment is None else str(environment))
        if key not in self._job_ids:
            self._job_ids[key] = self._resolve(job_name, key[1])
        return self._job_ids[key]

    def _resolve(self, job_name, environment):
        if environment is None:
            verdict, detail = select_job({'*': self.list_jobs()}, job_name)
            if verdict == 'ok':
                return detail
            if verdict == 'not_found':
                raise DelphixNotFound('masking job %r does not exist on %s' % (job_name, self.base), status=None)
        jobs_by_env: Dict[str, List[Dict[str, Any]]] = {}
        for env in self.list_environments():
            name = str(env.get('environmentName'))
            if environment is not None and environment not in (name, str(env.get('environmentId'))):
                continue
            jobs_by_env.setdefault(name, []).extend(self.list_jobs(env['environmentId']))
        verdict, detail = select_job(jobs_by_env, job_name)
        if verdict == 'ok':
            return detail
        where = ' in environment %r' % environment if environment is not None else ''
        if verdict == 'ambiguous':
            raise DelphixAmbiguous('masking job %r exists in several environments on %s (%s); name the environment'
                                   % (job_name, self.base, ', '.join(detail)))
        raise DelphixNotFound('masking job %r does not exist%s on %s' % (job_name, where, self.base))

    # ---- executions ------------------------------------------------------------------------
    def list_executions(self, job_id: Optional[int] = None, status: Optional[str] = None) -> List[Execution]:
        params: Dict[str, Any] = {}
        if job_id is not None:
            params['job_id'] = int(job_id)
        if status is not None:
            params['execution_status'] = status
        return [self._parse(item) for item in self._list('/executions', params)]

    def get_execution(self, execution_id: int) -> Execution:
        return self._parse(self._get('/executions/%d' % int(execution_id)))

    def execution_events(self, execution_id: int) -> List[Dict[str, Any]]:
        return self._list('/execution-events', {'execution_id': int(execution_id)})

    def execution_marker(self, job_id: int) -> int:
        """The job's start marker: its highest executionId on this engine now (every page), 0 when none."""
        return highest_execution_id(self.list_executions(job_id=job_id))

    def find_execution_after(self, job_id: int, marker: int) -> Optional[Execution]:
        """The execution a start made after `marker` was taken (the lowest id above it), or None."""
        return choose_after_marker(self.list_executions(job_id=job_id), marker)

    def start_execution(self, job_id: int, marker: Optional[int] = None, target_connector_id: Optional[int] = None,
                        source_connector_id: Optional[int] = None) -> Execution:
        """POST /executions without ever starting the job twice.

        marker: the job's highest executionId taken before the attempt (execution_marker); taken here, right
        before the POST, when not given. A caller that may need to reconcile later (another process, after a
        crash) records it first and passes it.
        - nothing was sent (login or the marker failed, connection refused, DNS/TLS failure, connect timeout):
          sent again after a backoff, then DelphixNotReached: provably nothing started;
        - the engine answered 5xx (the request is over): ours is adopted if the engine shows an execution above
          the marker, else the POST is sent again; DelphixUnavailable once the tries are spent;
        - no answer (read timeout, reset): the request may still be in flight, so nothing is sent again; the
          executions above the marker are searched a few times (backoff) and ours adopted, else
          DelphixUnavailable with outcome_unknown=True: call find_execution_after(job_id, marker) later,
          before any new start.
        409 (the job is already running or queued) -> DelphixConflict, unless it is our own earlier attempt.
        """
        body: Dict[str, Any] = {'jobId': int(job_id)}
        if target_connector_id is not None:
            body['targetConnectorId'] = int(target_connector_id)
        if source_connector_id is not None:
            body['sourceConnectorId'] = int(source_connector_id)
        try:
            if self._token is None:
                self.login()
            if marker is None:
                marker = self.execution_marker(job_id)
        except DelphixNotReached:
            raise
        except DelphixUnavailable as exc:
            raise self._not_reached(exc)
        marker = int(marker)
        attempt, answered_5xx = 0, False
        while True:
            try:
                answer = self._call('POST', '/executions', body=body)
            except DelphixConflict:
                # An earlier attempt answered 5xx may still have started the job (an engine may fail after acting):
                # the hold is ours if it is above the marker. After attempts that never left, it is someone else's.
                ours = self._reconcile(job_id, marker, None) if answered_5xx else None
                if ours is not None:
                    return ours
                raise
            except DelphixUnavailable as exc:
                never_sent = not exc.outcome_unknown or getattr(exc, 'during_login', False)
                if exc.outcome_unknown and exc.status is None and not never_sent:
                    return self._settle_lost_start(job_id, marker, exc)
                if not never_sent:   # answered 5xx: the request is over, the engine's list is the truth
                    answered_5xx = True
                    ours = self._reconcile(job_id, marker, exc)
                    if ours is not None:
                        return ours
                if attempt >= self.retries:
                    # Earlier attempts were all provably not started (never sent, or 5xx and nothing above the marker).
                    raise self._not_reached(exc) if never_sent else exc
                attempt += 1
                self._sleep(backoff_delay(attempt, self.backoff))
                continue
            try:
                return parse_execution(answer)
            except ValueError:
                ours = self._reconcile(job_id, marker, None)
                if ours is None:
                    raise DelphixError('POST %s/executions answered without an execution: %r' % (self.base, answer))
                return ours

    def _settle_lost_start(self, job_id, marker, lost):
        """A start whose answer never came: adopt its execution once the engine shows it, never POST again."""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(backoff_delay(attempt, self.backoff))
            ours = self._reconcile(job_id, marker, lost)
            if ours is not None:
                return ours
        raise self._unknown_start(job_id, marker, lost)

    def _reconcile(self, job_id, marker, failure):
        """find_execution_after, turning an unreachable engine into 'start outcome unknown'."""
        try:
            return self.find_execution_after(job_id, marker)
        except DelphixUnavailable as exc:
            raise self._unknown_start(job_id, marker, failure, exc)

    def _skew_note(self):
        if self.clock_offset is None or abs(self.clock_offset) < 2.0:
            return ''
        return ' (the engine clock is %+.0f s from ours by its Date header; not used to decide)' % self.clock_offset

    def _unknown_start(self, job_id, marker, failure, reconcile_error=None):
        also = '; looking for it failed too: %s' % reconcile_error if reconcile_error else ''
        what = failure if failure is not None else 'POST %s/executions' % self.base
        return DelphixUnavailable('%s%s; the job may have been started: reconcile with find_execution_after(%d, %d) '
                                  'before starting it again%s' % (what, also, int(job_id), int(marker), self._skew_note()),
                                  status=getattr(failure, 'status', None), engine_message=getattr(failure, 'engine_message', None),
                                  url=getattr(failure, 'url', None), outcome_unknown=True)

    @staticmethod
    def _not_reached(exc):
        return DelphixNotReached('%s; nothing was started' % exc, status=exc.status, engine_message=exc.engine_message,
                                 url=exc.url)

    def cancel_execution(self, execution_id: int, expected_status: Optional[str] = None,
                         graceful: Optional[bool] = None) -> Execution:
        """POST /executions/{id}/cancel?expectedStatus=RUNNING (guard QUEUED or RUNNING; graceful: API 5.1.43+).

        Both are QUERY parameters: a real engine ignores them in a body. 409 (not in the expected status,
        or already finished) -> DelphixConflict. A lost answer is settled by reading the execution back.
        """
        path = '/executions/%d/cancel' % int(execution_id)
        params: Dict[str, str] = {}
        if expected_status:
            params['expectedStatus'] = str(expected_status)
        if graceful is not None:
            params['graceful'] = 'true' if graceful else 'false'
        try:
            answer = self._call('POST', path, params=params or None)
        except (DelphixUnavailable, DelphixConflict) as exc:
            current = self.get_execution(execution_id)
            if current.status == 'CANCELLED':
                return current
            if isinstance(exc, DelphixUnavailable) and not current.terminal and not exc.outcome_unknown:
                answer = self._call('POST', path, params=params or None)
            else:
                raise
        try:
            return parse_execution(answer)
        except ValueError:
            return self.get_execution(execution_id)

    def _parse(self, obj):
        try:
            return parse_execution(obj)
        except ValueError as exc:
            raise DelphixError('%s: %s' % (self.base, exc))


NOT_SENT_MARKERS = ('NewConnectionError', 'NameResolutionError', 'Connection refused', 'Name or service not known',
                    'Temporary failure in name resolution', 'nodename nor servname', 'Failed to resolve')


def _maybe_delivered(exc):
    """False only when the request provably never reached the engine: refused, connect timeout, DNS or TLS failure
    (a TLS handshake that fails ends before any byte of the request is sent)."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = repr(exc)
        return not any(marker in text for marker in NOT_SENT_MARKERS)
    return True


def _short(exc):
    return str(exc)[:300]


def _engine_message(response):
    try:
        body = response.json()
    except ValueError:
        return (response.text or '').strip()[:255] or None
    if isinstance(body, dict) and body.get('errorMessage') is not None:
        return str(body['errorMessage'])
    return None


def _json_or_none(response, url):
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise DelphixError('%s answered HTTP %d with a body that is not JSON' % (url, response.status_code),
                           status=response.status_code, url=url)
