# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The queue database underneath the store: store URLs, dialects, connections, transactions, retries.

Every query is written once with `?` placeholders. A dialect is the only place that knows which
database is behind the connection, and it only decides placeholders, the auto-increment key, how a
write transaction takes its lock, how to ask whether a table exists and which errors are worth retrying:

- SQLite: one file in WAL mode; a write transaction is `BEGIN IMMEDIATE`, which takes the database's
  single write lock up front, so a read-then-write inside it can never be raced;
- PostgreSQL (psycopg 3, optional): READ COMMITTED; the scheduler locks the engine rows with
  `SELECT ... FOR UPDATE` (in name order, so two schedulers never deadlock) before it counts slot use;
  everything else relies on compare-and-set updates, which PostgreSQL re-checks after a row lock.

Outages: a lost connection (server restart, network cut) is retried with backoff, reconnecting inside
the retry loop, for up to `outage_timeout` seconds (DEFAULT_OUTAGE_TIMEOUT) from the first failure;
then StoreUnavailable says for how long the database was gone. A transaction whose COMMIT answer was
lost runs again: every write is a compare-and-set or an insert guarded by a unique key, so a second run
of a write that did commit changes nothing.

Store URLs are parsed here and only here (parse_store), and passwords in them are redacted here (redact).
"""

import os
import random
import sqlite3
import time
from urllib.parse import quote, urlsplit, urlunsplit

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    InvalidRequest, MaskingQueueError, StoreUnavailable)

DEFAULT_STORE = '~/.ansible/orchestra/masking-queue.db'
DEFAULT_OUTAGE_TIMEOUT = 90.0   # seconds a step rides out an unreachable database before it fails
MASK = '********'

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


# ---------------------------------------------------------------- store URLs

def store_secret(url):
    """The password embedded in a store URL, if any (it must be masked in every output)."""
    try:
        return urlsplit(url).password if isinstance(url, str) and '://' in url else None
    except ValueError:
        return None


def redact(url):
    """The store URL with its password replaced by MASK, for messages and results."""
    secret = store_secret(url)
    if not secret:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.replace(':%s@' % secret, ':%s@' % MASK, 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_store(value, home=None, default=DEFAULT_STORE):
    """A store option or URL -> (url to open, SQLite file path or None).

    Accepted: a PostgreSQL DSN (postgresql:// or postgres://), sqlite:///abs/path.db (sqlite:////abs is the
    same file), an absolute path, or a path under ~. A relative path is refused: it would silently create a
    database in whatever directory the task happens to run in. Raises InvalidRequest otherwise.
    """
    if value is not None and not isinstance(value, str):
        raise InvalidRequest('the queue store must be a path or a URL (sqlite:///path.db, postgresql://...)')
    value = (value or '').strip() or default
    if not value:
        raise InvalidRequest('the queue store must be a path or a URL (sqlite:///path.db, postgresql://...)')
    lowered = value.lower()
    if lowered.startswith('postgres://'):
        return 'postgresql://' + value[len('postgres://'):], None
    if lowered.startswith('postgresql://'):
        return value, None
    if lowered.startswith('sqlite:///'):
        path = '/' + value[len('sqlite://'):].lstrip('/')
    elif lowered.startswith('sqlite:'):
        raise InvalidRequest('a SQLite store URL is sqlite:///absolute/path.db, got %s' % value)
    elif '://' in value:
        raise InvalidRequest('unsupported queue store %s: use an absolute SQLite path, sqlite:///abs/path.db or '
                             'postgresql://...' % redact(value))
    else:
        path = value
    if path.startswith('~'):
        path = os.path.join(home, path[2:]) if home else os.path.expanduser(path)
    if not os.path.isabs(path):
        raise InvalidRequest('the queue store path %s is relative: give an absolute path (or one under ~), so every '
                             'task uses the same file whatever its working directory' % path)
    path = os.path.normpath(path)
    return path, path


# ---------------------------------------------------------------- dialects

def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


class Dialect:
    """What differs between the databases, and nothing else."""

    name = None
    pk = None
    for_update = ''
    returning = False   # UPDATE ... RETURNING (saves a round trip per transition)

    def sql(self, text):
        return text

    def connect(self, create=True):
        raise NotImplementedError

    def describe(self):
        raise NotImplementedError

    def begin(self, cur, write):
        raise NotImplementedError

    def lock_engines(self, cur):
        """Serialise slot accounting between schedulers (inside a write transaction)."""

    def lock_migrations(self, cur):
        """Serialise schema migrations between processes (inside a write transaction)."""

    def has_table(self, cur, name):
        raise NotImplementedError

    def is_transient(self, exc):
        return False

    def is_disconnect(self, exc):
        return False

    def errors(self):
        return (sqlite3.Error,)


class SQLiteDialect(Dialect):
    name = 'sqlite'
    pk = 'INTEGER PRIMARY KEY AUTOINCREMENT'   # ids never reused: FIFO by id stays true
    returning = sqlite3.sqlite_version_info >= (3, 35, 0)

    def __init__(self, path, busy_timeout=30.0):
        self.path = path
        self.busy_timeout = busy_timeout

    def connect(self, create=True):
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            raise StoreUnavailable('cannot open the queue database %s: directory %s does not exist' % (self.path, directory))
        if not create and not os.path.exists(self.path):
            raise StoreUnavailable('there is no queue database at %s (nothing was created: check the store path)' % self.path)
        try:
            target = self.path if create else 'file:%s?mode=rw' % quote(self.path)
            conn = sqlite3.connect(target, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False,
                                   uri=not create)
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

    def has_table(self, cur, name):
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return cur.fetchone() is not None

    def is_transient(self, exc):
        return isinstance(exc, sqlite3.OperationalError) and ('locked' in str(exc) or 'busy' in str(exc))


class PostgresDialect(Dialect):
    name = 'postgresql'
    pk = 'BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY'
    for_update = ' FOR UPDATE'
    returning = True
    MIGRATION_LOCK = 7301522   # pg_advisory_xact_lock key: any constant unique to this schema

    def __init__(self, dsn, connect_timeout=5):
        if not _load_psycopg():
            raise StoreUnavailable('a PostgreSQL queue store (%s) needs the Python library psycopg 3, which is not '
                                   'installed where the task runs: pip install "psycopg[binary]" (%s)'
                                   % (redact(dsn), PSYCOPG_IMPORT_ERROR))
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._cache = {}

    def connect(self, create=True):
        # A connect failure is a psycopg.OperationalError: the store's retry loop treats it as an outage.
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout)

    def describe(self):
        return redact(self.dsn)

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

    def has_table(self, cur, name):
        # to_regclass answers NULL for a missing table instead of failing (a failure would abort the transaction)
        cur.execute('SELECT to_regclass(%s)', (name,))
        return cur.fetchone()[0] is not None

    def is_transient(self, exc):
        errors = psycopg.errors
        return isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable))

    # Refusals that no wait cures: unknown database, refused login.
    PERMANENT = frozenset(('3D000', '28P01', '28000'))

    def is_disconnect(self, exc):
        return isinstance(exc, psycopg.OperationalError) and getattr(exc, 'sqlstate', None) not in self.PERMANENT

    def errors(self):
        return (sqlite3.Error, psycopg.Error)


def dialect_for(url):
    """Pick the dialect from a store URL (see parse_store for the accepted forms)."""
    if not url or not isinstance(url, str):
        raise InvalidRequest('the queue store must be a path or a URL (sqlite:///path.db, postgresql://...)')
    url, path = parse_store(url, default=None)
    if path is None:
        return PostgresDialect(url)
    return SQLiteDialect(path)


# ---------------------------------------------------------------- transactions

class Tx:
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


class Database:
    """A connection to the queue database and the transactions run on it."""

    def __init__(self, dialect, retries=8, outage_timeout=DEFAULT_OUTAGE_TIMEOUT, create=True, sleep=time.sleep,
                 monotonic=time.monotonic):
        self.dialect = dialect
        self.retries = retries
        self.outage_timeout = float(outage_timeout)
        self.create = create
        self._sleep = sleep
        self._monotonic = monotonic
        self._conn = None

    @property
    def kind(self):
        return self.dialect.name

    def describe(self):
        return self.dialect.describe()

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except self.dialect.errors():
                pass
            finally:
                self._conn = None

    def transaction(self, fn, write=True, lock_engines=False, atomic=True):
        """Run fn(tx) in one transaction and return its result; retried on lock conflicts and lost connections.

        atomic=False runs fn's statements in autocommit (each its own transaction): for single-statement
        reads, which saves the BEGIN/COMMIT round trips.
        """
        conflicts = 0
        outage_since = None
        outages = 0
        while True:
            cur = None
            try:
                if self._conn is None:
                    self._conn = self.dialect.connect(create=self.create)   # inside the loop: a reconnect is retried too
                cur = self._conn.cursor()
                return self._run(cur, fn, write, lock_engines, atomic)
            except MaskingQueueError:
                raise
            except self.dialect.errors() as exc:
                if self.dialect.is_transient(exc) and conflicts < self.retries:
                    conflicts += 1
                    self._sleep(min(1.0, 0.01 * (2 ** conflicts)) * random.uniform(0.5, 1.5))
                    continue
                if not self.dialect.is_disconnect(exc) and not self.dialect.is_transient(exc):
                    raise StoreUnavailable('queue database %s: %s' % (self.describe(), _first_line(exc)))
                self.close()
                now = self._monotonic()
                if outage_since is None:
                    outage_since = now
                down_for = now - outage_since
                if down_for >= self.outage_timeout:
                    raise StoreUnavailable('cannot connect to the queue database %s: unreachable for %.0f s (the limit is '
                                           '%.0f s): %s' % (self.describe(), down_for, self.outage_timeout, _first_line(exc)))
                outages += 1
                pause = min(5.0, 0.1 * (2 ** min(outages, 6))) * random.uniform(0.5, 1.0)
                self._sleep(max(0.0, min(pause, self.outage_timeout - down_for)))
            finally:
                if cur is not None:
                    try:
                        cur.close()
                    # a dead connection's cursor may fail to close: nothing to do about it
                    except Exception:  # pylint: disable=broad-except
                        pass

    def _run(self, cur, fn, write, lock_engines, atomic):
        if not atomic:
            return fn(Tx(self.dialect, cur))
        self.dialect.begin(cur, write)
        try:
            if lock_engines:
                self.dialect.lock_engines(cur)
            result = fn(Tx(self.dialect, cur))
            cur.execute('COMMIT')
            return result
        except BaseException:
            self._rollback(cur)
            raise

    def _rollback(self, cur):
        try:
            cur.execute('ROLLBACK')
        except self.dialect.errors():
            self.close()

    def read(self, fn, atomic=True):
        return self.transaction(fn, write=False, atomic=atomic)
