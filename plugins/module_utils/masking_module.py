# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue shared by the masking_* modules: options, opening the queue, mapping errors.

The modules stay thin adapters: they declare their own options on top of
common_argument_spec(), open the queue with open_queue() and run their one call
inside queue_errors(), which turns every queue error into a clear fail_json.
The decisions they need (what changes, how a finished job is judged, how long it
took) are pure functions here so they are tested without Ansible in the loop.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import contextlib
import datetime
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from urllib.parse import urlsplit, urlunsplit

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    EngineBusy, InvalidRequest, MaskingQueueError, StoreUnavailable, UnknownEngine, UnknownJob)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_placement import QueuedJob, make_engine, place
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_store import (
    ACTIVE_STATES as SLOT_STATES, QUEUED, STATES as ALL_STATES)

try:
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue
    QUEUE_IMPORT_ERROR = None
except ImportError:
    MaskingQueue = None
    QUEUE_IMPORT_ERROR = traceback.format_exc()

try:
    from ansible_collections.orchestra.fleet.plugins.module_utils.delphix import DelphixError
except ImportError:
    class DelphixError(Exception):
        """Stand-in: without the client no engine error can be raised."""


DEFAULT_STORE = '~/.ansible/orchestra/masking-queue.db'
# Not ended yet: waiting for a slot, or holding one.
ACTIVE_STATES = (QUEUED,) + tuple(SLOT_STATES)
ENGINE_FIELDS = ('url', 'slots', 'memory_mb', 'jobs', 'enabled', 'drained', 'verify')


def common_argument_spec():
    """The options of the orchestra.fleet.masking doc fragment, in the same words."""
    return dict(
        store=dict(type='str', fallback=(env_fallback, ['ORCHESTRA_QUEUE_STORE'])),
        username=dict(type='str', fallback=(env_fallback, ['ORCHESTRA_MASKING_USERNAME'])),
        password=dict(type='str', no_log=True, fallback=(env_fallback, ['ORCHESTRA_MASKING_PASSWORD'])),
        engine_credentials=dict(type='dict', no_log=True,
                                fallback=(env_fallback, ['ORCHESTRA_MASKING_ENGINE_CREDENTIALS'])),
    )


def argument_spec(**module_options):
    spec = common_argument_spec()
    spec.update(module_options)
    return spec


def secret_values(params):
    """Every secret string in the shared options.

    Ansible masks a no_log option's value, but when engine_credentials comes from its environment variable it
    masks only the JSON text, not the passwords inside the parsed dictionary; and a DSN password is not an
    option at all. These must be masked too.
    """
    secrets = set()
    if params.get('password'):
        secrets.add(params['password'])
    for entry in (params.get('engine_credentials') or {}).values():
        if isinstance(entry, dict):
            secrets.update(str(value) for value in entry.values() if value)
        elif entry:
            secrets.add(str(entry))
    try:
        secret = store_secret(resolve_store(params.get('store'))[0])
    except ValueError:
        secret = None
    if secret:
        secrets.add(secret)
    return secrets


def masking_module(**kwargs):
    """AnsibleModule with every secret of the shared options masked before anything can be returned."""
    module = AnsibleModule(**kwargs)
    module.no_log_values.update(secret_values(module.params))
    return module


# ---------------------------------------------------------------- store URL

def resolve_store(value, home=None):
    """Return (what to give open_store, sqlite file path or None) for the `store` option.

    Raises ValueError for a scheme the store does not speak.
    """
    value = (value or '').strip() or DEFAULT_STORE
    lowered = value.lower()
    if lowered.startswith('postgres://'):
        value = 'postgresql://' + value[len('postgres://'):]
        lowered = value.lower()
    if lowered.startswith('postgresql://'):
        return value, None
    if lowered.startswith('sqlite:///'):
        path = value[len('sqlite://'):]
    elif '://' in value:
        raise ValueError('unsupported queue store %r: use a SQLite path, sqlite:///abs/path.db or postgresql://...'
                         % redact_store(value))
    else:
        path = value
    if path.startswith('~'):
        path = os.path.join(home, path[2:]) if home else os.path.expanduser(path)
    path = os.path.abspath(path)
    if path.startswith('//'):
        path = '/' + path.lstrip('/')
    # A plain absolute path is the one form of a SQLite store no URL convention can misread.
    return path, path


def store_secret(url):
    """The password embedded in a store URL, if any (it must be masked in every output)."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_store(url):
    """The store URL with its password replaced, for messages."""
    secret = store_secret(url)
    if not secret:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.replace(':%s@' % secret, ':********@', 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# ---------------------------------------------------------------- credentials

def credentials_from(username=None, password=None, engine_credentials=None):
    """Build the MaskingQueue credentials mapping: {engine: {...}} plus "*" for the shared login.

    Raises ValueError naming the engine (never the secret) when an entry is malformed.
    """
    credentials = {}
    if username or password:
        if not (username and password):
            raise ValueError('username and password must be given together')
        credentials['*'] = {'username': username, 'password': password}
    for engine, entry in sorted((engine_credentials or {}).items()):
        if not isinstance(entry, dict) or not entry.get('username') or not entry.get('password'):
            raise ValueError('engine_credentials[%s] must be a dictionary with username and password' % engine)
        credentials[engine] = {'username': entry['username'], 'password': entry['password']}
    return credentials or None


# ---------------------------------------------------------------- errors

def error_kind(error):
    """A stable word for the kind of failure, returned to playbooks as `error_kind`."""
    if isinstance(error, UnknownJob):
        return 'unknown_job'
    if isinstance(error, UnknownEngine):
        return 'unknown_engine'
    if isinstance(error, StoreUnavailable):
        return 'store_unavailable'
    if isinstance(error, InvalidRequest):
        return 'bad_parameter'
    if isinstance(error, EngineBusy):
        return 'engine_busy'
    if isinstance(error, DelphixError):
        return 'engine_error'
    return 'queue_error'


def error_message(error, store_url=None):
    message = str(error) or error.__class__.__name__
    if isinstance(error, StoreUnavailable) and store_url and redact_store(store_url) not in message:
        message = 'queue store %s is unavailable: %s' % (redact_store(store_url), message)
    engine_message = getattr(error, 'engine_message', None)
    if engine_message and engine_message not in message:
        message = '%s (engine said: %s)' % (message, engine_message)
    secret = store_secret(store_url) if store_url else None
    if secret:
        message = message.replace(secret, '********')
    return message


@contextlib.contextmanager
def queue_errors(module, store_url=None, **result):
    """Turn queue, store and engine errors raised inside the block into fail_json with `error_kind`."""
    try:
        yield
    except (MaskingQueueError, DelphixError) as error:
        module.fail_json(msg=error_message(error, store_url), error_kind=error_kind(error), **result)


def open_queue(module):
    """Build the MaskingQueue from the shared options; fails the module with a clear message."""
    if QUEUE_IMPORT_ERROR:
        module.fail_json(msg='the orchestra.fleet masking queue could not be imported', exception=QUEUE_IMPORT_ERROR)
    params = module.params
    try:
        url, sqlite_path = resolve_store(params.get('store'))
        credentials = credentials_from(params.get('username'), params.get('password'), params.get('engine_credentials'))
    except ValueError as error:
        module.fail_json(msg=str(error), error_kind='bad_parameter')
    if sqlite_path:
        try:
            os.makedirs(os.path.dirname(sqlite_path), exist_ok=True)
        except OSError as error:
            module.fail_json(msg='cannot create the directory of the queue store %s: %s' % (sqlite_path, error),
                             error_kind='store_unavailable')
    with queue_errors(module, store_url=url):
        try:
            return MaskingQueue(url, credentials=credentials)
        except ImportError as error:
            module.fail_json(msg=missing_required_lib('psycopg') + ' (%s)' % error, error_kind='store_unavailable',
                             exception=traceback.format_exc())
    return None  # not reached: fail_json exits


def store_url_of(module):
    """The resolved store URL, for error messages (None if the option is unusable)."""
    try:
        return resolve_store(module.params.get('store'))[0]
    except ValueError:
        return None


# ---------------------------------------------------------------- engines

def find_engine(engines, name):
    for engine in engines or ():
        if engine.get('name') == name:
            return engine
    return None


def desired_engine(current, name, state, url=None, slots=None, memory_mb=None, jobs=None, enabled=None, verify=None):
    """The engine record the module asks for; options left unset keep the current value.

    Raises ValueError when a new engine lacks what it needs.
    """
    current = current or {}
    if not current and (not url or slots is None):
        raise ValueError('engine %s is not registered yet: url and slots are required to add it' % name)
    desired = dict(
        url=url if url is not None else current.get('url'),
        slots=slots if slots is not None else current.get('slots'),
        memory_mb=memory_mb if memory_mb is not None else current.get('memory_mb'),
        jobs=normalize_job_entries(jobs) if jobs is not None else normalize_job_entries(current.get('jobs')),
        enabled=enabled if enabled is not None else current.get('enabled', True),
        drained=(state == 'drained'),
        verify=verify if verify is not None else current.get('verify', True),
    )
    return desired


def engine_changes(current, desired):
    """Fields whose value differs: {field: (before, after)}; every field when the engine is new."""
    current = current or {}
    changes = {}
    for field in ENGINE_FIELDS:
        before = current.get(field)
        after = desired.get(field)
        if field == 'jobs':
            before = normalize_job_entries(before)
        if field == 'verify' and field not in current and current:
            continue  # the queue may not report it back; never a reason to write
        if before != after:
            changes[field] = (before, after)
    return changes


def engine_view(engine):
    """The engine fields a diff shows."""
    if not engine:
        return {}
    view = dict((field, engine.get(field)) for field in ENGINE_FIELDS if field in engine)
    view['jobs'] = normalize_job_entries(view.get('jobs'))
    return view


# ---------------------------------------------------------------- jobs

def parse_time(value):
    """ISO-8601 string (the queue's timestamps) -> aware datetime, or None."""
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        text = str(value).strip().replace('Z', '+00:00')
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment


def _seconds(start, end):
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def job_timings(job):
    """Seconds spent waiting in the queue, running on the engine, and in total (None while unknown)."""
    submitted = parse_time(job.get('submitted_at'))
    started = parse_time(job.get('started_at'))
    finished = parse_time(job.get('finished_at'))
    return dict(
        queued_seconds=_seconds(submitted, started),
        run_seconds=_seconds(started, finished),
        total_seconds=_seconds(submitted, finished),
    )


def describe_job(job, where=True):
    text = 'masking job %s (queue id %s, request %s)' % (job.get('job_name'), job.get('id'), job.get('request_id'))
    if not where:
        return text
    place = job.get('engine') or 'no engine'
    if job.get('execution_id') is not None:
        place += ', execution %s' % job['execution_id']
    return '%s on %s' % (text, place)


def job_outcome(job, warning_is_failure=False, timed_out=False):
    """Judge one job after waiting: (failed, message, warnings).

    The queue's error already names the engine and execution; the message then does not repeat them.
    """
    state = job.get('state')
    error = job.get('error')
    detail = error or job.get('reason')
    if state == 'SUCCEEDED':
        return False, '%s succeeded' % describe_job(job), []
    if state == 'WARNING':
        text = '%s finished with warnings' % describe_job(job) if not error else '%s: %s' % (describe_job(job, False), error)
        if warning_is_failure:
            return True, text + ' (warning_is_failure is set)', []
        return False, text, [text]
    if state == 'FAILED':
        if error:
            return True, '%s failed: %s' % (describe_job(job, False), error), []
        return True, '%s failed: the engine gave no message' % describe_job(job), []
    if state == 'CANCELLED':
        why = ' after the wait timed out' if timed_out else ''
        return True, '%s was cancelled%s%s' % (describe_job(job), why, ': %s' % detail if detail else ''), []
    # Not terminal: the wait ran out.
    return True, 'timed out waiting for %s: still %s%s' % (
        describe_job(job), state, ' (%s)' % detail if detail else ''), []


def carriers(engines, job_name, environment=None, engine_affinity=None):
    """Names of the registered engines that carry job_name (+environment), whatever their load or state.

    Asks the placement function itself, with every engine empty and usable, so "carries" means exactly
    what the scheduler will use.
    """
    probe = QueuedJob(0, job_name, environment, 0, engine_affinity, None, 0)
    names = []
    for engine in engines or ():
        candidate = make_engine(engine.get('name'), 1, jobs=engine.get('jobs'))
        if place([probe], [candidate]):
            names.append(engine.get('name'))
    return names


def normalize_job_entries(entries):
    """Engine `jobs` option -> canonical sorted list: "name" or {"name", "environment"}; None stays None.

    Raises ValueError for an entry that is neither.
    """
    if entries is None:
        return None
    canonical = {}
    for entry in entries:
        if isinstance(entry, dict):
            unknown = set(entry) - {'name', 'environment'}
            if unknown or not entry.get('name'):
                raise ValueError('each jobs entry is a job name or a dictionary with name and optional environment, '
                                 'got %r' % (entry,))
            name, environment = str(entry['name']), entry.get('environment')
        elif isinstance(entry, str) and entry.strip():
            name, environment = entry.strip(), None
        else:
            raise ValueError('each jobs entry is a job name or a dictionary with name and optional environment, '
                             'got %r' % (entry,))
        value = name if not environment else {'name': name, 'environment': str(environment)}
        canonical[(name, environment or '')] = value
    return [canonical[key] for key in sorted(canonical)]


def queue_summary(info):
    """Counts per job state (the whole queue when the queue reports them) and slot use per engine."""
    counts = dict((state, 0) for state in ALL_STATES)
    if info.get('counts') is not None:
        counts.update(info['counts'])
    else:
        for job in info.get('jobs') or ():
            counts[job.get('state')] = counts.get(job.get('state'), 0) + 1
    engines = dict(
        (engine.get('name'), dict(slots=engine.get('slots'), slots_used=engine.get('slots_used'),
                                  drained=engine.get('drained'), enabled=engine.get('enabled')))
        for engine in info.get('engines') or ())
    return dict(
        states=counts,
        active=sum(counts.get(state, 0) for state in ACTIVE_STATES),
        engines=engines,
    )
