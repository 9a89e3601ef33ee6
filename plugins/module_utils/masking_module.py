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

import contextlib
import datetime
import os
import signal
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, MaskingQueueError, UnknownEngine, UnknownJob)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_sql import (
    MASK, parse_store, redact as redact_store, store_secret)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import (
    STATES as ALL_STATES, UNFINISHED_STATES)

try:
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue
    QUEUE_IMPORT_ERROR = None
except ImportError:
    MaskingQueue = None
    QUEUE_IMPORT_ERROR = traceback.format_exc()

ENGINE_FIELDS = ('url', 'slots', 'memory_mb', 'jobs', 'enabled', 'drained', 'verify', 'discovered')
# What the modules import from here (errors they catch by name; the store-URL helpers are masking_sql's).
__all__ = ['ALL_STATES', 'UNFINISHED_STATES', 'UnknownEngine', 'UnknownJob', 'argument_spec', 'common_argument_spec',
           'credentials_from', 'engine_view', 'error_kind', 'error_message', 'find_engine', 'interruptible', 'job_outcome',
           'job_timings', 'masking_module', 'normalize_job_entries', 'open_queue', 'parse_time', 'queue_errors',
           'queue_summary', 'redact_store', 'resolve_store', 'secret_values', 'store_secret', 'store_url_of']


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
    """Every secret string in the shared options: passwords, and a password inside a store DSN.

    Ansible masks a no_log option's value, but when engine_credentials comes from its environment variable it
    masks only the JSON text, not the passwords inside the parsed dictionary; and a DSN password is not an
    option at all. These must be masked too. User names are not secrets.
    """
    secrets = set()
    if params.get('password'):
        secrets.add(params['password'])
    for entry in (params.get('engine_credentials') or {}).values():
        if isinstance(entry, dict):
            if entry.get('password'):
                secrets.add(str(entry['password']))
        elif entry:
            secrets.add(str(entry))
    secret = store_secret(params.get('store'))
    if secret:
        secrets.add(secret)
    return secrets


def masking_module(**kwargs):
    """AnsibleModule with every secret of the shared options masked, and nothing else.

    engine_credentials is no_log as a whole (so the invocation is logged without it), which makes Ansible mask
    every string inside it, user names too: they would garble engine names and URLs in results
    (`********_customers`). Only the passwords stay masked.
    """
    module = AnsibleModule(**kwargs)
    secrets = secret_values(module.params)
    names = set()
    for entry in (module.params.get('engine_credentials') or {}).values():
        if isinstance(entry, dict) and entry.get('username'):
            names.add(str(entry['username']))
    module.no_log_values.difference_update(names - secrets)
    module.no_log_values.update(secrets)
    return module


def resolve_store(value, home=None):
    """(what to give open_store, SQLite file path or None) for the `store` option (masking_sql.parse_store)."""
    return parse_store(value, home=home)


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
    """The stable word for the kind of failure, returned to playbooks as `error_kind` (each error class names it)."""
    return getattr(error, 'error_kind', 'engine_error')


def error_message(error, store_url=None):
    message = str(error) or error.__class__.__name__
    if error_kind(error) == 'store_unavailable' and store_url and redact_store(store_url) not in message:
        message = 'queue store %s is unavailable: %s' % (redact_store(store_url), message)
    engine_message = getattr(error, 'engine_message', None)
    if engine_message and engine_message not in message:
        message = '%s (engine said: %s)' % (message, engine_message)
    secret = store_secret(store_url) if store_url else None
    if secret:
        message = message.replace(secret, MASK)
    return message


@contextlib.contextmanager
def queue_errors(module, store_url=None, **result):
    """Turn queue, store and engine errors raised inside the block into fail_json with `error_kind`."""
    try:
        yield
    except (MaskingQueueError, DriverError) as error:
        module.fail_json(msg=error_message(error, store_url), error_kind=error_kind(error), **result)


class Terminated(SystemExit):
    """SIGTERM while a task waits (an AWX cancel, systemd stop): unwinds like Ctrl-C's KeyboardInterrupt."""


def _terminate(_signum, _frame):
    raise Terminated(143)


@contextlib.contextmanager
def interruptible():
    """Within the block, SIGTERM raises Terminated (SIGINT already raises KeyboardInterrupt), so a waiting
    task can cancel its jobs or say it left them, instead of dying silently."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def open_queue(module, read_only=False):
    """Build the MaskingQueue from the shared options; fails the module with a clear message.

    read_only opens an existing store and never creates (or migrates) one: a mistyped path is an error.
    """
    if QUEUE_IMPORT_ERROR:
        module.fail_json(msg='the orchestra.fleet masking queue could not be imported', exception=QUEUE_IMPORT_ERROR)
    params = module.params
    with queue_errors(module, store_url=store_url_of(module)):
        url, sqlite_path = resolve_store(params.get('store'))
        try:
            credentials = credentials_from(params.get('username'), params.get('password'), params.get('engine_credentials'))
        except ValueError as error:
            module.fail_json(msg=str(error), error_kind='bad_parameter')
        if sqlite_path and not read_only:
            try:
                os.makedirs(os.path.dirname(sqlite_path), exist_ok=True)
            except OSError as error:
                module.fail_json(msg='cannot create the directory of the queue store %s: %s' % (sqlite_path, error),
                                 error_kind='store_unavailable')
        return MaskingQueue(url, credentials=credentials, read_only=read_only)
    return None  # not reached: fail_json exits


def store_url_of(module):
    """The resolved store URL, for error messages (None if the option is unusable)."""
    try:
        return resolve_store(module.params.get('store'))[0]
    except MaskingQueueError:
        return None


# ---------------------------------------------------------------- engines

def find_engine(engines, name):
    for engine in engines or ():
        if engine.get('name') == name:
            return engine
    return None


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
    workflow = job.get('kind') == 'fleet'   # a workflow job on a fleet host (fleet_queue)
    what = 'workflow' if workflow else 'masking job'
    text = '%s %s (queue id %s, request %s)' % (what, job.get('job_name'), job.get('id'), job.get('request_id'))
    if not where:
        return text
    place = job.get('engine') or ('no host' if workflow else 'no engine')
    if job.get('execution_id') is not None:
        place += ', %s %s' % ('fence' if workflow else 'execution', job['execution_id'])
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
                                  foreign_slots=(engine.get('foreign') or {}).get('slots', 0),
                                  drained=engine.get('drained'), enabled=engine.get('enabled')))
        for engine in info.get('engines') or ())
    return dict(
        states=counts,
        active=sum(counts.get(state, 0) for state in UNFINISHED_STATES),
        engines=engines,
    )
