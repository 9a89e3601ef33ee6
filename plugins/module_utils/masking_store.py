# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The masking queue's persistent store: SQLite or PostgreSQL through one code path.

Every query is written once with `?` placeholders. The dialect layer is the
only place that knows which database is behind the connection, and it only
decides placeholders, the auto-increment key, how a write transaction takes
its lock and which errors are worth retrying:

- SQLite: one file in WAL mode; a write transaction is `BEGIN IMMEDIATE`, which
  takes the database's single write lock up front, so a read-then-write inside
  it can never be raced;
- PostgreSQL (psycopg 3): READ COMMITTED; the scheduler locks the engine rows
  with `SELECT ... FOR UPDATE` (in name order, so two schedulers never
  deadlock) before it counts slot use, so slot capacity holds under any number
  of concurrent schedulers; everything else relies on compare-and-set updates,
  which PostgreSQL re-checks after waiting for a row lock.

State changes are compare-and-set on (state, attempt) and write a history row
in the same transaction. Credentials never reach this module.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import random
import re
import sqlite3
import time

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    EngineBusy, InvalidRequest, MaskingQueueError, StoreUnavailable, UnknownEngine, UnknownJob)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_schema import MIGRATIONS

psycopg = None   # imported on first use of a PostgreSQL store: SQLite users neither need nor wait for it
PSYCOPG_IMPORT_ERROR = None


def _load_psycopg():
    """Import psycopg (3.x) once; False (with PSYCOPG_IMPORT_ERROR set) when it is not installed."""
    global psycopg, PSYCOPG_IMPORT_ERROR  # pylint: disable=global-statement
    if psycopg is None and PSYCOPG_IMPORT_ERROR is None:
        try:
            import psycopg as module  # pylint: disable=import-outside-toplevel
            psycopg = module
        except ImportError as import_error:  # pragma: no cover - depends on the controller
            PSYCOPG_IMPORT_ERROR = import_error
    return psycopg is not None


QUEUED, SCHEDULED, STARTING, RUNNING, ENGINE_QUEUED = 'QUEUED', 'SCHEDULED', 'STARTING', 'RUNNING', 'ENGINE_QUEUED'
SUCCEEDED, WARNING, FAILED, CANCELLED = 'SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED'
ACTIVE_STATES = (SCHEDULED, STARTING, RUNNING, ENGINE_QUEUED)   # these hold an engine slot
TERMINAL_STATES = (SUCCEEDED, WARNING, FAILED, CANCELLED)
STATES = (QUEUED,) + ACTIVE_STATES + TERMINAL_STATES

# Which transitions the state machine allows; the store refuses anything else.
TRANSITIONS = {
    QUEUED: (SCHEDULED, CANCELLED, FAILED),
    SCHEDULED: (STARTING, QUEUED, CANCELLED, FAILED),
    STARTING: (STARTING, RUNNING, ENGINE_QUEUED, QUEUED, SCHEDULED) + TERMINAL_STATES,
    RUNNING: (RUNNING, ENGINE_QUEUED) + TERMINAL_STATES,
    ENGINE_QUEUED: (ENGINE_QUEUED, RUNNING) + TERMINAL_STATES,
}

JOB_COLUMNS = ('id', 'request_id', 'job_name', 'environment', 'priority', 'engine_affinity', 'max_memory_mb', 'state',
               'attempt', 'reason', 'engine', 'owner', 'engine_job_id', 'execution_id', 'engine_status', 'not_before',
               'lease_until', 'next_try_at', 'start_failures', 'cancel_requested', 'rows_masked', 'rows_total', 'error',
               'submitted_at', 'scheduled_at', 'started_at', 'finished_at', 'updated_at')
JOB_FIELDS = ', '.join(JOB_COLUMNS)
ENGINE_COLUMNS = ('name', 'url', 'slots', 'memory_mb', 'enabled', 'drained', 'jobs', 'verify', 'last_error',
                  'unreachable_since', 'last_probe_at', 'created_at', 'updated_at')
ENGINE_FIELDS = ', '.join(ENGINE_COLUMNS)
UPDATABLE_JOB_FIELDS = frozenset(JOB_COLUMNS) - {'id', 'request_id', 'state', 'submitted_at'}

QUEUED_COLUMNS = ('id', 'job_name', 'environment', 'priority', 'engine_affinity', 'max_memory_mb', 'attempt')
IN_CHUNK = 900   # ids per IN (...) list: far below both databases' parameter limits


def _placeholders(count):
    return ', '.join(['?'] * count)


def _chunks(items, size=IN_CHUNK):
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Dialect:
    """What differs between the databases, and nothing else."""

    name = None
    pk = None
    for_update = ''
    returning = False   # UPDATE ... RETURNING (saves a round trip per transition)

    def sql(self, text):
        return text

    def begin(self, cur, write):
        raise NotImplementedError

    def lock_engines(self, cur):
        """Serialise slot accounting between schedulers (inside a write transaction)."""

    def lock_migrations(self, cur):
        """Serialise schema migrations between processes (inside a write transaction)."""

    def is_transient(self, exc):
        return False

    def is_disconnect(self, exc):
        return False


class _SQLiteDialect(_Dialect):
    name = 'sqlite'
    pk = 'INTEGER PRIMARY KEY AUTOINCREMENT'   # ids never reused: FIFO by id stays true
    returning = sqlite3.sqlite_version_info >= (3, 35, 0)

    def __init__(self, path, busy_timeout=30.0):
        self.path = path
        self.busy_timeout = busy_timeout

    def connect(self):
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            raise StoreUnavailable('cannot open the queue database %s: directory %s does not exist' % (self.path, directory))
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute('PRAGMA busy_timeout = %d' % int(self.busy_timeout * 1000))
            conn.execute('PRAGMA journal_mode = WAL')
            conn.execute('PRAGMA synchronous = NORMAL')
        except sqlite3.Error as exc:
            raise StoreUnavailable('cannot open the queue database %s: %s' % (self.path, exc))
        return conn

    def describe(self):
        return 'sqlite:///%s' % self.path

    def begin(self, cur, write):
        # IMMEDIATE takes the write lock now, so what we read is still true when we write.
        cur.execute('BEGIN IMMEDIATE' if write else 'BEGIN')

    def is_transient(self, exc):
        return isinstance(exc, sqlite3.OperationalError) and ('locked' in str(exc) or 'busy' in str(exc))


class _PostgresDialect(_Dialect):
    name = 'postgresql'
    pk = 'BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY'
    for_update = ' FOR UPDATE'
    returning = True
    MIGRATION_LOCK = 7301522   # pg_advisory_xact_lock key: any constant unique to this schema

    def __init__(self, dsn, connect_timeout=10):
        if not _load_psycopg():
            raise StoreUnavailable('a PostgreSQL queue needs the Python package psycopg (3.x): %s' % PSYCOPG_IMPORT_ERROR)
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._cache = {}

    def connect(self):
        try:
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout)
        except psycopg.Error as exc:
            raise StoreUnavailable('cannot connect to the queue database %s: %s' % (self.describe(), _first_line(exc)))

    def describe(self):
        # Never echo a password that may sit in the DSN.
        return re.sub(r'://([^:/@]*):[^@]*@', r'://\1:***@', self.dsn)

    def sql(self, text):
        converted = self._cache.get(text)
        if converted is None:
            converted = self._cache[text] = text.replace('?', '%s')
        return converted

    def begin(self, cur, write):
        cur.execute('BEGIN')

    def lock_engines(self, cur):
        cur.execute('SELECT name FROM engines ORDER BY name FOR UPDATE')

    def lock_migrations(self, cur):
        cur.execute('SELECT pg_advisory_xact_lock(%d)' % self.MIGRATION_LOCK)

    def is_transient(self, exc):
        errors = psycopg.errors
        return isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable))

    def is_disconnect(self, exc):
        return isinstance(exc, psycopg.OperationalError)


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _db_errors():
    errors = (sqlite3.Error,)
    if psycopg is not None:
        errors += (psycopg.Error,)
    return errors


def dialect_for(url):
    """Pick the dialect from a store URL: sqlite:///abs/path.db, a plain path, or postgresql://..."""
    if not url or not isinstance(url, str):
        raise InvalidRequest('the queue store must be a path or a URL (sqlite:///path.db, postgresql://...)')
    if url.startswith(('postgresql://', 'postgres://')):
        return _PostgresDialect(url)
    if url.startswith('sqlite:///'):
        path = '/' + url[len('sqlite://'):].lstrip('/')   # sqlite:///abs and sqlite:////abs both mean /abs
    elif url.startswith('sqlite:'):
        raise InvalidRequest('a SQLite store URL is sqlite:///absolute/path.db, got %s' % url)
    elif '://' in url:
        raise InvalidRequest('unsupported queue store %s: use a file path, sqlite:///path.db or postgresql://...'
                             % url.split('://')[0])
    else:
        path = url
    return _SQLiteDialect(os.path.abspath(os.path.expanduser(path)))


def open_store(url, migrations=None):
    """Open (and create or migrate) the queue store at `url`."""
    return Store(dialect_for(url), migrations=migrations)


class _Tx:
    """One open transaction: run statements, get dicts back."""

    def __init__(self, dialect, cur):
        self._dialect = dialect
        self.cur = cur

    def execute(self, sql, params=()):
        self.cur.execute(self._dialect.sql(sql), tuple(params))
        return self.cur.rowcount

    def executemany(self, sql, rows):
        rows = [tuple(row) for row in rows]
        if rows:
            self.cur.executemany(self._dialect.sql(sql), rows)

    def rows(self, sql, params=()):
        self.cur.execute(self._dialect.sql(sql), tuple(params))
        names = [column[0] for column in self.cur.description]
        return [dict(zip(names, row)) for row in self.cur.fetchall()]

    def one(self, sql, params=()):
        found = self.rows(sql, params)
        return found[0] if found else None


class Store:
    """The queue's tables and every read and write the queue makes on them."""

    def __init__(self, dialect, migrations=None, retries=8):
        self.dialect = dialect
        self.migrations = MIGRATIONS if migrations is None else migrations
        self.retries = retries
        self._conn = None
        self._connect()
        self.migrate()

    # ---- connection and transactions ---------------------------------------------------------
    @property
    def kind(self):
        return self.dialect.name

    def describe(self):
        return self.dialect.describe()

    def _connect(self):
        self._conn = self.dialect.connect()

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def transaction(self, fn, write=True, lock_engines=False, atomic=True):
        """Run fn(tx) in one transaction and return its result; retried on lock conflicts and lost connections.

        atomic=False runs fn's statements in autocommit (each its own transaction): for single-statement
        reads, which saves the BEGIN/COMMIT round trips.
        """
        last = None
        for attempt in range(self.retries):
            if self._conn is None:
                self._connect()
            cur = self._conn.cursor()
            try:
                if not atomic:
                    return fn(_Tx(self.dialect, cur))
                self.dialect.begin(cur, write)
                try:
                    if lock_engines:
                        self.dialect.lock_engines(cur)
                    result = fn(_Tx(self.dialect, cur))
                    cur.execute('COMMIT')
                    return result
                except BaseException:
                    self._rollback(cur)
                    raise
            except MaskingQueueError:
                raise
            except _db_errors() as exc:
                last = exc
                if self.dialect.is_transient(exc):
                    time.sleep(min(1.0, 0.01 * (2 ** attempt)) * random.uniform(0.5, 1.5))
                    continue
                if self.dialect.is_disconnect(exc):
                    self.close()
                    time.sleep(min(2.0, 0.1 * (2 ** attempt)))
                    continue
                raise StoreUnavailable('queue database %s: %s' % (self.describe(), _first_line(exc)))
            finally:
                try:
                    cur.close()
                # a dead connection's cursor may fail to close: nothing to do about it
                except Exception:  # pylint: disable=broad-except
                    pass
        raise StoreUnavailable('queue database %s: gave up after %d tries: %s' % (self.describe(), self.retries, _first_line(last)))

    def _rollback(self, cur):
        try:
            cur.execute('ROLLBACK')
        except _db_errors():
            self.close()

    def read(self, fn, atomic=True):
        return self.transaction(fn, write=False, atomic=atomic)

    # ---- schema ------------------------------------------------------------------------------
    def schema_version(self):
        def current(tx):
            try:
                row = tx.one('SELECT MAX(version) AS version FROM schema_version')
            except _db_errors():
                return None
            return row['version'] if row else None
        if self.dialect.name == 'postgresql':
            # a failed statement aborts a PostgreSQL transaction: ask the catalogue first
            exists = self.read(lambda tx: tx.one("SELECT to_regclass('schema_version') AS t")['t'])
            if not exists:
                return None
        try:
            return self.read(current)
        except StoreUnavailable:
            return None

    def migrate(self):
        """Apply missing migrations, each in its own transaction, serialised between processes."""
        latest = self.migrations[-1][0] if self.migrations else 0
        if self.schema_version() == latest:
            return []

        def apply(tx):
            self.dialect.lock_migrations(tx.cur)
            tx.execute('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, description TEXT, '
                       'applied_at DOUBLE PRECISION NOT NULL)')
            row = tx.one('SELECT MAX(version) AS version FROM schema_version')
            have = (row or {}).get('version') or 0
            if have > latest:
                raise StoreUnavailable('the queue database %s has schema version %d, newer than this collection knows (%d): '
                                       'upgrade orchestra.fleet' % (self.describe(), have, latest))
            applied = []
            for version, description, statements in self.migrations:
                if version <= have:
                    continue
                for statement in statements:
                    tx.execute(statement.replace('{pk}', self.dialect.pk))
                tx.execute('INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)',
                           (version, description, time.time()))
                applied.append(version)
            return applied
        return self.transaction(apply)

    # ---- engines -----------------------------------------------------------------------------
    @staticmethod
    def _engine_row(row):
        if row is None:
            return None
        engine = dict(row)
        engine['enabled'] = bool(engine['enabled'])
        engine['drained'] = bool(engine['drained'])
        engine['verify'] = bool(engine['verify'])
        engine['jobs'] = json.loads(engine['jobs']) if engine['jobs'] is not None else None
        return engine

    def upsert_engine(self, name, url, slots, memory_mb=None, jobs=None, enabled=True, drained=False, verify=True,
                      now=None, keep_jobs=True):
        """Create or update an engine; returns (changed, engine). jobs=None keeps the current list (any job on create)."""
        now = time.time() if now is None else now

        def apply(tx):
            current = self._engine_row(tx.one('SELECT %s FROM engines WHERE name = ?%s' % (ENGINE_FIELDS, self.dialect.for_update),
                                              (name,)))
            wanted = {'url': url, 'slots': int(slots), 'memory_mb': memory_mb, 'enabled': bool(enabled),
                      'drained': bool(drained), 'verify': bool(verify)}
            if jobs is not None or not keep_jobs or current is None:
                wanted['jobs'] = jobs
            if current is None:
                tx.execute('INSERT INTO engines (name, url, slots, memory_mb, enabled, drained, jobs, verify, created_at, updated_at) '
                           'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                           (name, url, int(slots), memory_mb, int(bool(enabled)), int(bool(drained)),
                            json.dumps(wanted.get('jobs')) if wanted.get('jobs') is not None else None,
                            int(bool(verify)), now, now))
                return True
            changes = dict((key, value) for key, value in wanted.items() if current.get(key) != value)
            if not changes:
                return False
            sets, params = [], []
            for key, value in sorted(changes.items()):
                sets.append('%s = ?' % key)
                if key == 'jobs':
                    params.append(json.dumps(value) if value is not None else None)
                elif isinstance(value, bool):
                    params.append(int(value))
                else:
                    params.append(value)
            tx.execute('UPDATE engines SET %s, updated_at = ? WHERE name = ?' % ', '.join(sets), params + [now, name])
            return True
        changed = self.transaction(apply)
        return changed, self.engine(name)

    def delete_engine(self, name, force=False):
        def apply(tx):
            if tx.one('SELECT name FROM engines WHERE name = ?%s' % self.dialect.for_update, (name,)) is None:
                return False
            busy = tx.one('SELECT COUNT(*) AS n FROM jobs WHERE engine = ? AND state IN (%s)' % _placeholders(len(ACTIVE_STATES)),
                          (name,) + ACTIVE_STATES)['n']
            if busy and not force:
                raise EngineBusy('engine %s holds %d scheduled or running jobs: drain it first, or force the removal' % (name, busy))
            if busy:
                # Forced: scheduled jobs go back to the queue at the next poll step; started ones can no longer be
                # followed, so they end FAILED and say where their execution may still run.
                now = time.time()
                started = (STARTING, RUNNING, ENGINE_QUEUED)
                message = 'engine %s was removed from the queue while the job was on it' % name
                tx.execute('INSERT INTO job_history (job_id, at, from_state, to_state, attempt, engine, execution_id, detail, actor) '
                           'SELECT id, ?, state, ?, attempt, engine, execution_id, ?, NULL FROM jobs WHERE engine = ? AND state IN (%s)'
                           % _placeholders(len(started)), (now, FAILED, message, name) + started)
                tx.execute("UPDATE jobs SET state = ?, error = ? || COALESCE(CAST(execution_id AS TEXT), 'none yet') || ?, "
                           'reason = NULL, finished_at = ?, updated_at = ? WHERE engine = ? AND state IN (%s)' % _placeholders(len(started)),
                           (FAILED, message + ' (execution ', ' may still run there)', now, now, name) + started)
            tx.execute('DELETE FROM engines WHERE name = ?', (name,))
            return True
        return self.transaction(apply, lock_engines=True)

    def engine(self, name):
        found = self.engines([name])
        if not found:
            raise UnknownEngine('no engine named %s is registered in the queue' % name)
        return found[0]

    def engines(self, names=None):
        """Engines with their slot and memory use."""
        def query(tx):
            return self._engines_with_use(tx, names)
        return self.read(query)

    def _engines_with_use(self, tx, names=None):
        if names is None:
            rows = tx.rows('SELECT %s FROM engines ORDER BY name' % ENGINE_FIELDS)
        else:
            rows = []
            for chunk in _chunks(names):
                rows += tx.rows('SELECT %s FROM engines WHERE name IN (%s) ORDER BY name' % (ENGINE_FIELDS, _placeholders(len(chunk))),
                                chunk)
        engines = [self._engine_row(row) for row in rows]
        use = {}
        for row in tx.rows('SELECT engine, job_name, environment, max_memory_mb FROM jobs WHERE state IN (%s)'
                           % _placeholders(len(ACTIVE_STATES)), ACTIVE_STATES):
            entry = use.setdefault(row['engine'], {'slots_used': 0, 'memory_used_mb': 0, 'active_jobs': set()})
            entry['slots_used'] += 1
            entry['memory_used_mb'] += row['max_memory_mb'] or 0
            entry['active_jobs'].add((row['job_name'], row['environment']))
        for engine in engines:
            entry = use.get(engine['name'], {'slots_used': 0, 'memory_used_mb': 0, 'active_jobs': set()})
            engine.update(entry)
        return engines

    def mark_engine_unreachable(self, name, error, now):
        self.transaction(lambda tx: tx.execute(
            'UPDATE engines SET unreachable_since = COALESCE(unreachable_since, ?), last_error = ?, last_probe_at = ? WHERE name = ?',
            (now, error, now, name)))

    def mark_engine_reachable(self, name, now):
        # Only writes when something changes, so a healthy poll cycle costs no write.
        self.transaction(lambda tx: tx.execute(
            'UPDATE engines SET unreachable_since = NULL, last_error = NULL, last_probe_at = ? '
            'WHERE name = ? AND (unreachable_since IS NOT NULL OR last_error IS NOT NULL)', (now, name)))

    def note_engine_error(self, name, error, now):
        self.transaction(lambda tx: tx.execute('UPDATE engines SET last_error = ?, last_probe_at = ? WHERE name = ?',
                                               (error, now, name)))

    # ---- jobs --------------------------------------------------------------------------------
    def enqueue(self, request_id, job_name, environment, priority, engine_affinity, max_memory_mb, now, actor=None):
        """Insert a job unless its request id exists; returns (created, job)."""
        def apply(tx):
            created = tx.execute(
                'INSERT INTO jobs (request_id, job_name, environment, priority, engine_affinity, max_memory_mb, state, attempt, '
                'reason, submitted_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING',
                (request_id, job_name, environment, int(priority), engine_affinity, max_memory_mb, QUEUED,
                 None, now, now)) == 1
            job = tx.one('SELECT %s FROM jobs WHERE request_id = ?' % JOB_FIELDS, (request_id,))
            if created:
                self._history(tx, job['id'], now, None, QUEUED, 0, None, None, 'enqueued', actor)
            elif (job['job_name'], job['environment']) != (job_name, environment):
                raise InvalidRequest('request id %s already names job %s%s (queue id %d), not %s%s'
                                     % (request_id, job['job_name'], ' in ' + job['environment'] if job['environment'] else '',
                                        job['id'], job_name, ' in ' + environment if environment else ''))
            return created, job
        return self.transaction(apply)

    def job(self, key):
        """A job by queue id (int) or request id (str; a string of digits that is no request id is taken as an id)."""
        def query(tx):
            if isinstance(key, int) and not isinstance(key, bool):
                return tx.one('SELECT %s FROM jobs WHERE id = ?' % JOB_FIELDS, (key,))
            text = str(key)
            found = tx.one('SELECT %s FROM jobs WHERE request_id = ?' % JOB_FIELDS, (text,))
            if found is None and text.isdigit():
                found = tx.one('SELECT %s FROM jobs WHERE id = ?' % JOB_FIELDS, (int(text),))
            return found
        found = self.read(query, atomic=False)
        if found is None:
            raise UnknownJob('no masking job with id or request id %s in the queue' % key)
        return found

    def jobs(self, states=None, ids=None, engine=None, limit=None, order='id'):
        def query(tx):
            where, params = [], []
            if states:
                where.append('state IN (%s)' % _placeholders(len(states)))
                params += list(states)
            if engine is not None:
                where.append('engine = ?')
                params.append(engine)
            sql = 'SELECT %s FROM jobs' % JOB_FIELDS
            if ids is not None:
                found = []
                for chunk in _chunks(ids):
                    found += tx.rows(sql + ' WHERE ' + ' AND '.join(where + ['id IN (%s)' % _placeholders(len(chunk))]),
                                     params + list(chunk))
                return sorted(found, key=lambda j: j['id'])
            if where:
                sql += ' WHERE ' + ' AND '.join(where)
            if limit and order != 'priority':
                # the newest `limit` jobs, returned oldest first
                return list(reversed(tx.rows(sql + ' ORDER BY id DESC LIMIT %d' % int(limit), params)))
            sql += ' ORDER BY ' + ('priority DESC, id' if order == 'priority' else 'id')
            if limit:
                sql += ' LIMIT %d' % int(limit)
            return tx.rows(sql, params)
        return self.read(query, atomic=ids is None)

    def counts(self):
        return dict((row['state'], row['n']) for row in
                    self.read(lambda tx: tx.rows('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state'), atomic=False))

    def history(self, job_ids):
        def query(tx):
            found = []
            for chunk in _chunks(job_ids):
                found += tx.rows('SELECT job_id, at, from_state, to_state, attempt, engine, execution_id, detail, actor '
                                 'FROM job_history WHERE job_id IN (%s) ORDER BY job_id, id' % _placeholders(len(chunk)), chunk)
            return found
        return self.read(query)

    @staticmethod
    def _history(tx, job_id, now, from_state, to_state, attempt, engine, execution_id, detail, actor):
        tx.execute('INSERT INTO job_history (job_id, at, from_state, to_state, attempt, engine, execution_id, detail, actor) '
                   'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                   (job_id, now, from_state, to_state, attempt, engine, execution_id, detail, actor))

    def transition(self, job_id, from_state, expect_attempt, to_state, now, detail=None, actor=None, **fields):
        """Compare-and-set: move job_id from (from_state, attempt) to to_state, setting fields. Returns the new row or None."""
        if to_state not in TRANSITIONS.get(from_state, ()):
            raise MaskingQueueError('illegal transition %s -> %s for job %s' % (from_state, to_state, job_id))
        unknown = set(fields) - UPDATABLE_JOB_FIELDS
        if unknown:
            raise MaskingQueueError('unknown job fields: %s' % ', '.join(sorted(unknown)))

        def apply(tx):
            names = sorted(fields)
            sets = ', '.join(['state = ?', 'updated_at = ?'] + ['%s = ?' % name for name in names])
            params = [to_state, now] + [fields[name] for name in names] + [job_id, from_state, expect_attempt]
            where = 'UPDATE jobs SET %s WHERE id = ? AND state = ? AND attempt = ?' % sets
            if self.dialect.returning:
                row = tx.one(where + ' RETURNING ' + JOB_FIELDS, params)
            elif tx.execute(where, params) == 1:
                row = tx.one('SELECT %s FROM jobs WHERE id = ?' % JOB_FIELDS, (job_id,))
            else:
                row = None
            if row is None:
                return None
            if from_state != to_state or detail:
                self._history(tx, job_id, now, from_state, to_state, row['attempt'], row['engine'], row['execution_id'],
                              detail, actor)
            return row
        return self.transaction(apply)

    def transition_many(self, changes, now, actor=None):
        """Several compare-and-set transitions in one transaction.

        changes: [(job_id, from_state, expect_attempt, to_state, detail, fields)]. Returns the rows moved.
        """
        for _job_id, from_state, _attempt, to_state, _detail, fields in changes:
            if to_state not in TRANSITIONS.get(from_state, ()):
                raise MaskingQueueError('illegal transition %s -> %s' % (from_state, to_state))
            unknown = set(fields) - UPDATABLE_JOB_FIELDS
            if unknown:
                raise MaskingQueueError('unknown job fields: %s' % ', '.join(sorted(unknown)))

        def apply(tx):
            moved = []
            for job_id, from_state, expect_attempt, to_state, detail, fields in changes:
                names = sorted(fields)
                sets = ', '.join(['state = ?', 'updated_at = ?'] + ['%s = ?' % name for name in names])
                params = [to_state, now] + [fields[name] for name in names] + [job_id, from_state, expect_attempt]
                if tx.execute('UPDATE jobs SET %s WHERE id = ? AND state = ? AND attempt = ?' % sets, params) != 1:
                    continue
                row = tx.one('SELECT %s FROM jobs WHERE id = ?' % JOB_FIELDS, (job_id,))
                self._history(tx, job_id, now, from_state, to_state, row['attempt'], row['engine'], row['execution_id'],
                              detail, actor)
                moved.append(row)
            return moved
        return self.transaction(apply) if changes else []

    def claim_scheduled(self, engine, token, now, lease, limit, reason, actor=None):
        """SCHEDULED -> STARTING for up to `limit` jobs of `engine`, in one transaction -> the claimed rows.

        Records, before any POST: attempt + 1, not_before (now) and the claim's lease. `token` must be unique
        to this claim: it finds the rows this transaction moved (others may claim the same engine at once;
        the state = SCHEDULED check, re-evaluated under the row lock, keeps every job to one claimer).
        """
        def apply(tx):
            tx.execute('UPDATE jobs SET state = ?, attempt = attempt + 1, owner = ?, not_before = ?, lease_until = ?, reason = ?, '
                       'updated_at = ? WHERE state = ? AND engine = ? AND id IN ('
                       'SELECT id FROM jobs WHERE state = ? AND engine = ? AND cancel_requested = 0 '
                       'AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY priority DESC, id LIMIT %d)' % int(limit),
                       (STARTING, token, now, now + lease, reason, now, SCHEDULED, engine, SCHEDULED, engine, now))
            rows = tx.rows('SELECT %s FROM jobs WHERE owner = ? AND state = ? ORDER BY priority DESC, id' % JOB_FIELDS,
                           (token, STARTING))
            for row in rows:
                self._history(tx, row['id'], now, SCHEDULED, STARTING, row['attempt'], engine, None, 'starting', actor)
            return rows
        return self.transaction(apply)

    def update_fields(self, job_id, state, expect_attempt, now, **fields):
        """Compare-and-set on (state, attempt) that changes fields but not the state, and writes no history."""
        unknown = set(fields) - UPDATABLE_JOB_FIELDS
        if unknown:
            raise MaskingQueueError('unknown job fields: %s' % ', '.join(sorted(unknown)))
        names = sorted(fields)
        sets = ', '.join(['updated_at = ?'] + ['%s = ?' % name for name in names])
        return self.transaction(lambda tx: tx.execute(
            'UPDATE jobs SET %s WHERE id = ? AND state = ? AND attempt = ?' % sets,
            [now] + [fields[name] for name in names] + [job_id, state, expect_attempt])) == 1

    def request_cancel(self, job_id, now):
        states = (QUEUED,) + ACTIVE_STATES
        return self.transaction(lambda tx: tx.execute(
            'UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND cancel_requested = 0 AND state IN (%s)'
            % _placeholders(len(states)), [now, job_id] + list(states))) == 1

    def queued_count(self):
        return self.read(lambda tx: tx.one('SELECT COUNT(*) AS n FROM jobs WHERE state = ?', (QUEUED,)), atomic=False)['n']

    # ---- scheduling --------------------------------------------------------------------------
    def schedule(self, decide, now, owner, actor=None):
        """One scheduler step, atomically: lock, read engines+use and queued jobs, decide(jobs, engines), apply.

        decide(queued_rows, engines_with_use) -> assignments [(job_id, engine)]; queued_rows are tuples in
        QUEUED_COLUMNS order, highest priority first, FIFO within a priority. Returns (placed, queued_count).
        Reasons of waiting jobs are not written here: they are derived when read (see masking_queue), so a
        step over a long queue writes only the jobs it places.
        """
        def apply(tx):
            engines = self._engines_with_use(tx)
            # Plain tuples in QUEUED_COLUMNS order: a step may read 10,000 of them.
            tx.execute('SELECT %s FROM jobs WHERE state = ? AND (next_try_at IS NULL OR next_try_at <= ?) '
                       'ORDER BY priority DESC, id' % ', '.join(QUEUED_COLUMNS), (QUEUED, now))
            queued = tx.cur.fetchall()
            assignments = decide(queued, engines)
            for chunk in _chunks(assignments):
                # One statement per chunk: the engine comes from a CASE on the id. state = QUEUED is the
                # compare-and-set: a job cancelled since we read it stays cancelled. Only this transaction
                # can put a job into SCHEDULED (it holds the engine lock).
                cases = ' '.join(['WHEN ? THEN ?'] * len(chunk))
                params = [SCHEDULED]
                for job_id, engine in chunk:
                    params += [job_id, engine]
                params += [owner, now, now, QUEUED] + [job_id for job_id, _engine in chunk]
                tx.execute('UPDATE jobs SET state = ?, engine = CASE id %s END, owner = ?, scheduled_at = ?, reason = NULL, '
                           'updated_at = ? WHERE state = ? AND id IN (%s)' % (cases, _placeholders(len(chunk))), params)
            placed = 0
            if assignments:
                placed = tx.execute('INSERT INTO job_history (job_id, at, from_state, to_state, attempt, engine, execution_id, detail, actor) '
                                    'SELECT id, ?, ?, ?, attempt, engine, NULL, ?, ? FROM jobs WHERE owner = ? AND state = ?',
                                    (now, QUEUED, SCHEDULED, 'placed', actor, owner, SCHEDULED))
            return placed, len(queued)
        return self.transaction(apply, lock_engines=True)

    # ---- leases ------------------------------------------------------------------------------
    def acquire_lease(self, name, owner, ttl, now):
        """Take or renew lease `name` for `owner`; returns its fencing number, or None while someone else holds it."""
        def apply(tx):
            row = tx.one('SELECT owner, expires_at, fence FROM leases WHERE name = ?%s' % self.dialect.for_update, (name,))
            if row is None:
                if tx.execute('INSERT INTO leases (name, owner, expires_at, fence) VALUES (?, ?, ?, 1) ON CONFLICT (name) DO NOTHING',
                              (name, owner, now + ttl)) == 1:
                    return 1
                return None
            if row['owner'] == owner and row['expires_at'] >= now:
                tx.execute('UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND fence = ?',
                           (now + ttl, name, owner, row['fence']))
                return row['fence']
            if row['expires_at'] < now or row['owner'] is None:
                fence = row['fence'] + 1
                if tx.execute('UPDATE leases SET owner = ?, expires_at = ?, fence = ? WHERE name = ? AND fence = ?',
                              (owner, now + ttl, fence, name, row['fence'])) == 1:
                    return fence
            return None
        return self.transaction(apply)

    def claim_turn(self, name, owner, interval, now):
        """Take the turn `name` for `interval` seconds unless it was taken less than `interval` ago -> bool.

        How pollers share the refresh of an engine: one of them asks the engine, the others skip it.
        A read decides the common case (turn taken) without any write.
        """
        row = self.read(lambda tx: tx.one('SELECT owner, expires_at, fence FROM leases WHERE name = ?', (name,)), atomic=False)
        if row is not None and row['expires_at'] > now:
            return False

        def apply(tx):
            if row is None:
                return tx.execute('INSERT INTO leases (name, owner, expires_at, fence) VALUES (?, ?, ?, 1) '
                                  'ON CONFLICT (name) DO NOTHING', (name, owner, now + interval)) == 1
            return tx.execute('UPDATE leases SET owner = ?, expires_at = ?, fence = fence + 1 WHERE name = ? AND fence = ?',
                              (owner, now + interval, name, row['fence'])) == 1
        return self.transaction(apply)

    def release_lease(self, name, owner):
        self.transaction(lambda tx: tx.execute('UPDATE leases SET owner = NULL, expires_at = 0 WHERE name = ? AND owner = ?',
                                               (name, owner)))

    def lease(self, name):
        return self.read(lambda tx: tx.one('SELECT name, owner, expires_at, fence FROM leases WHERE name = ?', (name,)), atomic=False)
