# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The masking queue's persistent store: every read and write the queue makes on its tables.

The database underneath (dialects, connections, transactions, retries, outages) is masking_sql; the
states and the legal moves between them are masking_states; the schema is masking_schema. Here:
engines, jobs, the compare-and-set of a job's state (one builder for single and batched moves), the
scheduler's atomic step, the claim of scheduled jobs, leases, retention. State changes are
compare-and-set on (state, attempt) and write a history row in the same transaction; bulk moves are
checked against the same transition table. Credentials never reach this module.
"""

import json
import time

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    EngineBusy, ExecutionOwned, InvalidRequest, MaskingQueueError, StoreUnavailable, UnknownEngine, UnknownJob)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_placement import same_job
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_schema import MIGRATIONS
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_sql import DEFAULT_OUTAGE_TIMEOUT, Database, dialect_for
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import (
    ACTIVE_STATES, CANCELLED, ENGINE_QUEUED, FAILED, KINDS, MASKING, QUEUED, RUNNING, SCHEDULED, SLOT_STATES, STARTED_STATES,
    STARTING, STATES, SUCCEEDED, TERMINAL_STATES, TRANSITIONS, UNFINISHED_STATES, WARNING, check_transition, kind_of)

# The store's own names, and the state names callers have always imported from here (masking_states owns them).
__all__ = ['Store', 'open_store', 'dialect_for', 'same_request', 'engine_changes', 'JOB_COLUMNS', 'QUEUED_COLUMNS',
           'ACTIVE_STATES', 'SLOT_STATES', 'UNFINISHED_STATES', 'TERMINAL_STATES', 'STATES', 'TRANSITIONS', 'QUEUED',
           'SCHEDULED', 'STARTING', 'RUNNING', 'ENGINE_QUEUED', 'SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED']

JOB_COLUMNS = ('id', 'request_id', 'job_name', 'environment', 'priority', 'engine_affinity', 'max_memory_mb', 'state',
               'attempt', 'reason', 'engine', 'owner', 'engine_job_id', 'execution_id', 'engine_status', 'not_before',
               'start_marker', 'lease_until', 'next_try_at', 'start_failures', 'cancel_requested', 'rows_masked',
               'rows_total', 'error', 'error_kind', 'submitted_at', 'scheduled_at', 'started_at', 'finished_at', 'updated_at',
               'kind', 'spec', 'claim_id', 'claim_secret', 'workflow_id')
JOB_FIELDS = ', '.join(JOB_COLUMNS)
ENGINE_COLUMNS = ('name', 'url', 'slots', 'memory_mb', 'enabled', 'drained', 'jobs', 'verify', 'last_error',
                  'unreachable_since', 'last_probe_at', 'created_at', 'updated_at', 'kind', 'discovered', 'catalogue_at',
                  'foreign_executions', 'foreign_checked_at')
JSON_ENGINE_COLUMNS = ('jobs', 'discovered', 'foreign_executions')
ENGINE_FIELDS = ', '.join(ENGINE_COLUMNS)
ENGINE_SETTINGS = ('url', 'slots', 'memory_mb', 'jobs', 'enabled', 'drained', 'verify', 'discovered')
ENGINE_DEFAULTS = {'memory_mb': None, 'jobs': None, 'enabled': True, 'drained': False, 'verify': True, 'discovered': None}
UPDATABLE_JOB_FIELDS = frozenset(JOB_COLUMNS) - {'id', 'request_id', 'state', 'submitted_at', 'kind', 'spec'}
HISTORY_INSERT = ('INSERT INTO job_history (job_id, at, from_state, to_state, attempt, engine, execution_id, detail, actor) ')

QUEUED_COLUMNS = ('id', 'job_name', 'environment', 'priority', 'engine_affinity', 'max_memory_mb', 'attempt')
IN_CHUNK = 900   # ids per IN (...) list: far below both databases' parameter limits


def _placeholders(count):
    return ', '.join(['?'] * count)


def _chunks(items, size=IN_CHUNK):
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def open_store(url, migrations=None, create=True, outage_timeout=DEFAULT_OUTAGE_TIMEOUT):
    """Open the queue store at `url`: with create (the default) create or migrate it; without, open an existing one
    for reading only (a missing database is StoreUnavailable, nothing is created or migrated)."""
    return Store(dialect_for(url), migrations=migrations, create=create, outage_timeout=outage_timeout)


def same_request(job, job_name, environment):
    """Raise InvalidRequest when an existing entry's request id is reused for another job (the one check)."""
    if (job['job_name'], job['environment']) != (job_name, environment):
        raise InvalidRequest('request id %s already belongs to masking job %s%s (queue id %d), not %s%s'
                             % (job['request_id'], job['job_name'], ' in ' + job['environment'] if job['environment'] else '',
                                job['id'], job_name, ' in ' + environment if environment else ''))


def engine_changes(current, wanted):
    """{setting: (before, after)} for every setting in `wanted` (None = keep) that differs; all of them for a new engine.

    The one place an engine diff is computed: the store applies it, a dry run returns it.
    """
    changes = {}
    for key in ENGINE_SETTINGS:
        if current is None:
            after = wanted.get(key) if wanted.get(key) is not None else ENGINE_DEFAULTS.get(key)
            changes[key] = (None, after)
        elif wanted.get(key) is not None and current.get(key) != wanted[key]:
            changes[key] = (current.get(key), wanted[key])
    return changes


def _db_value(key, value):
    if key in JSON_ENGINE_COLUMNS:
        return json.dumps(value) if value is not None else None
    if isinstance(value, bool):
        return int(value)
    return value


class Store(Database):
    """The queue's tables and every read and write the queue makes on them."""

    def __init__(self, dialect, migrations=None, retries=8, create=True, outage_timeout=DEFAULT_OUTAGE_TIMEOUT):
        super().__init__(dialect, retries=retries, outage_timeout=outage_timeout, create=create)
        self.migrations = MIGRATIONS if migrations is None else migrations
        if create:
            self.migrate()
        else:
            self._check_readable()

    # ---- schema ------------------------------------------------------------------------------
    def schema_version(self):
        def current(tx):
            if not self.dialect.has_table(tx.cur, 'schema_version'):
                return None
            row = tx.one('SELECT MAX(version) AS version FROM schema_version')
            return row['version'] if row else None
        return self.read(current)

    def _latest(self):
        return max(version for version, _description, _statements in self.migrations) if self.migrations else 0

    def applied_versions(self):
        """The migration numbers the database holds (empty before the first)."""
        def current(tx):
            if not self.dialect.has_table(tx.cur, 'schema_version'):
                return set()
            return set(row['version'] for row in tx.rows('SELECT version FROM schema_version'))
        return self.read(current)

    def _missing(self, applied):
        # By set, not by the highest number: migrations of parallel branches (3 and 4) may land in either order.
        return [version for version, _description, _statements in self.migrations if version not in applied]

    def _check_readable(self):
        have, latest = self.schema_version(), self._latest()
        if have is None:
            raise StoreUnavailable('%s holds no masking queue (no schema): check the store path; reading never creates one'
                                   % self.describe())
        missing = self._missing(self.applied_versions()) if have == latest else None
        if missing:
            raise StoreUnavailable('the queue database %s lacks schema migrations %s: run a task that writes '
                                   '(masking_schedule) to migrate it' % (self.describe(), ', '.join(map(str, missing))))
        if have != latest:
            raise StoreUnavailable('the queue database %s has schema version %d, this collection reads version %d: run a '
                                   'task that writes (masking_schedule) to migrate it, or upgrade orchestra.fleet'
                                   % (self.describe(), have, latest))

    def migrate(self):
        """Apply missing migrations, each in its own transaction, serialised between processes."""
        latest = self._latest()
        applied = self.applied_versions()
        if not self._missing(applied) and max(applied or [0]) <= latest:
            return []

        def apply(tx):
            self.dialect.lock_migrations(tx.cur)
            tx.execute('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, description TEXT, '
                       'applied_at DOUBLE PRECISION NOT NULL)')
            done = set(row['version'] for row in tx.rows('SELECT version FROM schema_version'))
            have = max(done) if done else 0
            if have > latest:
                raise StoreUnavailable('the queue database %s has schema version %d, newer than this collection knows (%d): '
                                       'upgrade orchestra.fleet' % (self.describe(), have, latest))
            applied = []
            for version, description, statements in self.migrations:
                if version in done:
                    continue
                for statement in statements:
                    if isinstance(statement, dict):   # where the two databases' SQL differs (triggers)
                        statement = statement[self.dialect.name]
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
        for key in ('enabled', 'drained', 'verify'):
            engine[key] = bool(engine[key])
        for key in JSON_ENGINE_COLUMNS:
            engine[key] = json.loads(engine[key]) if engine[key] is not None else None
        return engine

    def upsert_engine(self, name, now, dry_run=False, kind=MASKING, **wanted):
        """Create or update an engine -> (changes {setting: (before, after)}, engine with use).

        Settings left out or None keep their value (defaults for a new engine, which needs url and slots).
        With dry_run nothing is written and the engine is returned as it would be. `kind` is the kind of
        capacity (masking engine or fleet host): set when the row is created, never changed by an update.
        """
        unknown = set(wanted) - set(ENGINE_SETTINGS)
        if unknown:
            raise InvalidRequest('unknown engine settings: %s' % ', '.join(sorted(unknown)))

        def apply(tx):
            current = self._engine_row(tx.one('SELECT %s FROM engines WHERE name = ?%s' % (ENGINE_FIELDS, self.dialect.for_update),
                                              (name,)))
            if current is None and (wanted.get('url') is None or wanted.get('slots') is None):
                raise InvalidRequest('engine %s is not registered yet: url and slots are required to add it' % name)
            if current is not None and kind_of(current) != kind:
                raise InvalidRequest('%s is already registered as a %s, not a %s: names are shared by both kinds of capacity'
                                     % (name, kind_of(current), kind))
            changes = engine_changes(current, wanted)
            if dry_run or not changes:
                return changes, current
            if current is None:
                keys = list(ENGINE_SETTINGS)
                tx.execute('INSERT INTO engines (name, %s, kind, created_at, updated_at) VALUES (?, %s, ?, ?, ?)'
                           % (', '.join(keys), _placeholders(len(keys))),
                           [name] + [_db_value(key, changes[key][1]) for key in keys] + [kind, now, now])
            else:
                keys = sorted(changes)
                tx.execute('UPDATE engines SET %s, updated_at = ? WHERE name = ?' % ', '.join('%s = ?' % key for key in keys),
                           [_db_value(key, changes[key][1]) for key in keys] + [now, name])
            return changes, current
        changes, current = self.transaction(apply, write=not dry_run)
        if not dry_run:
            return changes, self.engine(name)
        base = self.engine(name) if current is not None else dict(
            name=name, slots_used=0, memory_used_mb=0, active_jobs=set(), last_error=None, unreachable_since=None,
            last_probe_at=None, kind=kind, catalogue_at=None, foreign_executions=None, foreign_checked_at=None)
        return changes, dict(base, **dict((key, after) for key, (_before, after) in changes.items()))

    def delete_engine(self, name, now, force=False, dry_run=False):
        """Remove an engine -> changed. Refuses (EngineBusy) while it holds slot-holding jobs, unless force."""
        def apply(tx):
            if tx.one('SELECT name FROM engines WHERE name = ?%s' % self.dialect.for_update, (name,)) is None:
                return False
            busy = tx.one('SELECT COUNT(*) AS n FROM jobs WHERE engine = ? AND state IN (%s)' % _placeholders(len(SLOT_STATES)),
                          (name,) + SLOT_STATES)['n']
            if busy and not force:
                raise EngineBusy('engine %s holds %d scheduled or running jobs: drain it first, or force the removal' % (name, busy))
            if dry_run:
                return True
            if busy:
                # Forced: scheduled jobs go back to the queue at the next poll step; started ones can no longer be
                # followed, so they end FAILED and say where their execution may still run.
                for state in STARTED_STATES:
                    check_transition(state, FAILED)
                message = 'engine %s was removed from the queue while the job was on it' % name
                marks = _placeholders(len(STARTED_STATES))
                tx.execute(HISTORY_INSERT + 'SELECT id, ?, state, ?, attempt, engine, execution_id, ?, NULL FROM jobs '
                           'WHERE engine = ? AND state IN (%s)' % marks, (now, FAILED, message, name) + STARTED_STATES)
                tx.execute("UPDATE jobs SET state = ?, error = ? || COALESCE(CAST(execution_id AS TEXT), 'none yet') || ?, "
                           'reason = NULL, finished_at = ?, updated_at = ? WHERE engine = ? AND state IN (%s)' % marks,
                           (FAILED, message + ' (execution ', ' may still run there)', now, now, name) + STARTED_STATES)
            tx.execute('DELETE FROM engines WHERE name = ?', (name,))
            return True
        return self.transaction(apply, write=not dry_run, lock_engines=not dry_run)

    def engine(self, name):
        found = self.engines([name])
        if not found:
            raise UnknownEngine('no engine named %s is registered in the queue' % name)
        return found[0]

    def engines(self, names=None):
        """Engines with their slot and memory use."""
        return self.read(lambda tx: self._engines_with_use(tx, names))

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
                           % _placeholders(len(SLOT_STATES)), SLOT_STATES):
            entry = use.setdefault(row['engine'], {'slots_used': 0, 'memory_used_mb': 0, 'active_jobs': set()})
            entry['slots_used'] += 1
            entry['memory_used_mb'] += row['max_memory_mb'] or 0
            entry['active_jobs'].add((row['job_name'], row['environment']))
        for engine in engines:
            engine.update(use.get(engine['name'], {'slots_used': 0, 'memory_used_mb': 0, 'active_jobs': set()}))
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

    def note_catalogue(self, name, now):
        """The engine's job list was read from it now (our clock: shown, and the refresh interval)."""
        self.transaction(lambda tx: tx.execute('UPDATE engines SET catalogue_at = ? WHERE name = ?', (now, name)))

    def set_foreign(self, name, foreign, now):
        """Record the executions on an engine that no queue job owns (a list of dicts), as listed now."""
        self.transaction(lambda tx: tx.execute(
            'UPDATE engines SET foreign_executions = ?, foreign_checked_at = ? WHERE name = ?',
            (_db_value('foreign_executions', list(foreign)), now, name)))

    def note_engine_error(self, name, error, now):
        self.transaction(lambda tx: tx.execute('UPDATE engines SET last_error = ?, last_probe_at = ? WHERE name = ?',
                                               (error, now, name)))

    # ---- jobs --------------------------------------------------------------------------------
    def enqueue(self, request_id, job_name, environment, priority, engine_affinity, max_memory_mb, now, actor=None,
                kind=MASKING, spec=None):
        """Insert a job unless its request id exists; returns (created, job). kind/spec: a workflow job's (JSON text)."""
        def apply(tx):
            created = tx.execute(
                'INSERT INTO jobs (request_id, job_name, environment, priority, engine_affinity, max_memory_mb, state, attempt, '
                'reason, submitted_at, updated_at, kind, spec) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?) '
                'ON CONFLICT (request_id) DO NOTHING',
                (request_id, job_name, environment, int(priority), engine_affinity, max_memory_mb, QUEUED,
                 None, now, now, kind, spec)) == 1
            job = tx.one('SELECT %s FROM jobs WHERE request_id = ?' % JOB_FIELDS, (request_id,))
            if created:
                self._history(tx, job['id'], now, None, QUEUED, 0, None, None, 'enqueued', actor)
            else:
                same_request(job, job_name, environment)
            return created, job
        return self.transaction(apply)

    def rerun(self, job_id, expect_attempt, now, actor=None, **fields):
        """Put a FAILED or CANCELLED entry back to QUEUED under the same request id (the `rerun` rule).

        The entry keeps its id, request id and history; what the last run left (engine, execution, error,
        times) is cleared. Compare-and-set on the attempt, so two reruns of one entry make one run.
        """
        reset = dict(engine=None, owner=None, engine_job_id=None, execution_id=None, engine_status=None, not_before=None,
                     start_marker=None, lease_until=None, next_try_at=None, start_failures=0, cancel_requested=0,
                     rows_masked=None, rows_total=None, error=None, reason=None, scheduled_at=None, started_at=None,
                     finished_at=None, submitted_at=now, attempt=expect_attempt + 1)
        reset.update(fields)

        def apply(tx):
            row = tx.one('SELECT state FROM jobs WHERE id = ? AND attempt = ?', (job_id, expect_attempt))
            if row is None or row['state'] not in (FAILED, CANCELLED):
                return None
            return self._cas(tx, job_id, row['state'], expect_attempt, QUEUED, now, reset, 'rerun requested', actor)
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

    def find_request(self, request_id):
        """The entry with this request id, or None."""
        return self.read(lambda tx: tx.one('SELECT %s FROM jobs WHERE request_id = ?' % JOB_FIELDS, (str(request_id),)),
                         atomic=False)

    def jobs(self, states=None, ids=None, engine=None, limit=None, order='id', newest_first=False):
        """Jobs by state, ids or engine. order='priority' is the scheduler's order. With limit, the newest `limit` jobs
        (returned oldest first unless newest_first)."""
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
            if order == 'priority':
                return tx.rows(sql + ' ORDER BY priority DESC, id' + (' LIMIT %d' % int(limit) if limit else ''), params)
            if limit or newest_first:
                rows = tx.rows(sql + ' ORDER BY id DESC' + (' LIMIT %d' % int(limit) if limit else ''), params)
                return rows if newest_first else list(reversed(rows))
            return tx.rows(sql + ' ORDER BY id', params)
        return self.read(query, atomic=ids is None)

    def counts(self):
        """Jobs per state, from the counters the triggers keep (no scan of the jobs: flat at 100,000+ jobs)."""
        rows = self.read(lambda tx: tx.rows('SELECT state, SUM(n) AS n FROM job_counts GROUP BY state'), atomic=False)
        return dict((row['state'], int(row['n'])) for row in rows if row['n'])

    COUNTS_FOLD_AT = 2000   # counter rows beyond which a writer folds them into one row per state

    def compact_counts(self, force=False):
        """Fold the counters' +1/-1 rows into one row per state, when many piled up -> whether it folded.

        DELETE ... RETURNING folds exactly the rows it removed, so a counter row that commits meanwhile is kept.
        """
        def apply(tx):
            row = tx.one('SELECT MIN(id) AS lo, MAX(id) AS hi FROM job_counts')
            if row['hi'] is None or (not force and row['hi'] - row['lo'] < self.COUNTS_FOLD_AT):
                return False
            sums = {}
            if self.dialect.returning:
                removed = tx.rows('DELETE FROM job_counts WHERE id <= ? RETURNING state, n', (row['hi'],))
            else:   # SQLite before 3.35: the write lock is held, nothing commits in between
                removed = tx.rows('SELECT state, n FROM job_counts WHERE id <= ?', (row['hi'],))
                tx.execute('DELETE FROM job_counts WHERE id <= ?', (row['hi'],))
            for entry in removed:
                sums[entry['state']] = sums.get(entry['state'], 0) + int(entry['n'])
            tx.executemany('INSERT INTO job_counts (state, n) VALUES (?, ?)', sorted((k, v) for k, v in sums.items() if v))
            return True
        return self.transaction(apply)

    def unfinished_count(self):
        return self.read(lambda tx: tx.one('SELECT COUNT(*) AS n FROM jobs WHERE state IN (%s)' % _placeholders(len(UNFINISHED_STATES)),
                                           UNFINISHED_STATES), atomic=False)['n']

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
        tx.execute(HISTORY_INSERT + 'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                   (job_id, now, from_state, to_state, attempt, engine, execution_id, detail, actor))

    # ---- compare-and-set ---------------------------------------------------------------------
    @staticmethod
    def _check_fields(fields):
        unknown = set(fields) - UPDATABLE_JOB_FIELDS
        if unknown:
            raise MaskingQueueError('unknown job fields: %s' % ', '.join(sorted(unknown)))

    def _cas(self, tx, job_id, from_state, expect_attempt, to_state, now, fields, detail, actor, history=True):
        """The one compare-and-set: UPDATE ... WHERE id AND state AND attempt, history row on a move. -> new row or None.

        An execution id may belong to one queue job per engine: adopting one that another job holds is refused
        (ExecutionOwned) before the write; a unique index on (engine, execution_id) backs it.
        """
        if from_state != to_state or history:
            check_transition(from_state, to_state, 'job %s' % job_id)
        if fields.get('execution_id') is not None:
            holder = tx.one('SELECT j.id FROM jobs j, jobs me WHERE me.id = ? AND j.id <> me.id AND j.execution_id = ? '
                            'AND j.engine = me.engine', (job_id, fields['execution_id']))
            if holder is not None:
                raise ExecutionOwned('execution %s already belongs to queue job %s' % (fields['execution_id'], holder['id']))
        names = sorted(fields)
        sets = ', '.join(['state = ?', 'updated_at = ?'] + ['%s = ?' % name for name in names])
        params = [to_state, now] + [fields[name] for name in names] + [job_id, from_state, expect_attempt]
        update = 'UPDATE jobs SET %s WHERE id = ? AND state = ? AND attempt = ?' % sets
        if self.dialect.returning:
            row = tx.one(update + ' RETURNING ' + JOB_FIELDS, params)
        elif tx.execute(update, params) == 1:
            row = tx.one('SELECT %s FROM jobs WHERE id = ?' % JOB_FIELDS, (job_id,))
        else:
            row = None
        if row is not None and history and (from_state != to_state or detail):
            self._history(tx, job_id, now, from_state, to_state, row['attempt'], row['engine'], row['execution_id'], detail, actor)
        return row

    def transition(self, job_id, from_state, expect_attempt, to_state, now, detail=None, actor=None, **fields):
        """Compare-and-set: move job_id from (from_state, attempt) to to_state, setting fields. Returns the new row or None."""
        check_transition(from_state, to_state, 'job %s' % job_id)
        self._check_fields(fields)
        return self.transaction(lambda tx: self._cas(tx, job_id, from_state, expect_attempt, to_state, now, fields, detail, actor))

    def transition_many(self, changes, now, actor=None):
        """Several compare-and-set transitions in one transaction.

        changes: [(job_id, from_state, expect_attempt, to_state, detail, fields)]. Returns the rows moved.
        """
        for job_id, from_state, _attempt, to_state, _detail, fields in changes:
            check_transition(from_state, to_state, 'job %s' % job_id)
            self._check_fields(fields)

        def apply(tx):
            moved = []
            for job_id, from_state, expect_attempt, to_state, detail, fields in changes:
                row = self._cas(tx, job_id, from_state, expect_attempt, to_state, now, fields, detail or '-', actor)
                if row is not None:
                    moved.append(row)
            return moved
        return self.transaction(apply) if changes else []

    def update_fields(self, job_id, state, expect_attempt, now, **fields):
        """Compare-and-set on (state, attempt) that changes fields but not the state, and writes no history."""
        self._check_fields(fields)
        return self.transaction(lambda tx: self._cas(tx, job_id, state, expect_attempt, state, now, fields, None, None,
                                                     history=False)) is not None

    def request_cancel(self, job_id, now):
        return self.transaction(lambda tx: tx.execute(
            'UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND cancel_requested = 0 AND state IN (%s)'
            % _placeholders(len(UNFINISHED_STATES)), [now, job_id] + list(UNFINISHED_STATES))) == 1

    def queued_count(self):
        return self.read(lambda tx: tx.one('SELECT COUNT(*) AS n FROM jobs WHERE state = ?', (QUEUED,)), atomic=False)['n']

    # ---- scheduling --------------------------------------------------------------------------
    def schedule(self, decide, now, owner, actor=None):
        """One scheduler step, atomically: lock, read engines+use and queued jobs, decide(jobs, engines), apply.

        decide(queued_rows, engines_with_use) -> assignments [(job_id, engine)]; queued_rows are tuples in
        QUEUED_COLUMNS order, highest priority first, FIFO within a priority. Returns (placed, queued_count).
        Reasons of waiting jobs are not written here: they are derived when read (see masking_views), so a
        step over a long queue writes only the jobs it places.
        """
        check_transition(QUEUED, SCHEDULED)

        def apply(tx):
            all_engines = self._engines_with_use(tx)
            queued, assignments = [], []
            for kind in KINDS:
                # Each kind of job goes only to its own kind of capacity (a workflow never to a masking engine).
                engines = [engine for engine in all_engines if kind_of(engine) == kind]
                # Plain tuples in QUEUED_COLUMNS order: a step may read 10,000 of them.
                tx.execute('SELECT %s FROM jobs WHERE state = ? AND kind = ? AND (next_try_at IS NULL OR next_try_at <= ?) '
                           'ORDER BY priority DESC, id' % ', '.join(QUEUED_COLUMNS), (QUEUED, kind, now))
                waiting = tx.cur.fetchall()
                queued += waiting
                if waiting and engines:
                    assignments += decide(waiting, engines)
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
                placed = tx.execute(HISTORY_INSERT + 'SELECT id, ?, ?, ?, attempt, engine, NULL, ?, ? FROM jobs '
                                    'WHERE owner = ? AND state = ?', (now, QUEUED, SCHEDULED, 'placed', actor, owner, SCHEDULED))
            return placed, len(queued)
        return self.transaction(apply, lock_engines=True)

    def claim_scheduled(self, engine, token, now, lease, limit, reason, actor=None):
        """SCHEDULED -> STARTING for up to `limit` jobs of `engine`, in one transaction -> the claimed rows.

        Records, before any POST: attempt + 1, not_before (now, for display only) and the claim's lease. `token`
        must be unique to this claim. At most one unresolved start (STARTING without an execution) per masking job
        and engine: a second one could not tell its execution from the first's, so it waits for the next claim.
        The engine row is locked first, so claims of one engine never interleave.
        """
        check_transition(SCHEDULED, STARTING)

        def apply(tx):
            tx.one('SELECT name FROM engines WHERE name = ?%s' % self.dialect.for_update, (engine,))
            # (engine, state) is the index that stays small; execution_id is checked here, not in SQL, so that
            # no plan walks every finished job of the engine that never had an execution
            busy = [(row['job_name'], row['environment']) for row in tx.rows(
                'SELECT job_name, environment, execution_id FROM jobs WHERE engine = ? AND state = ?', (engine, STARTING))
                if row['execution_id'] is None]
            candidates = tx.rows('SELECT id, job_name, environment FROM jobs WHERE state = ? AND engine = ? AND cancel_requested = 0 '
                                 'AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY priority DESC, id LIMIT %d'
                                 % (int(limit) * 4), (SCHEDULED, engine, now))
            chosen = []
            for row in candidates:
                if any(same_job(pair, (row['job_name'], row['environment'])) for pair in busy):
                    continue
                busy.append((row['job_name'], row['environment']))
                chosen.append(row['id'])
                if len(chosen) >= limit:
                    break
            if not chosen:
                return []
            tx.execute('UPDATE jobs SET state = ?, attempt = attempt + 1, owner = ?, not_before = ?, lease_until = ?, reason = ?, '
                       'updated_at = ? WHERE state = ? AND engine = ? AND id IN (%s)' % _placeholders(len(chosen)),
                       [STARTING, token, now, now + lease, reason, now, SCHEDULED, engine] + chosen)
            rows = tx.rows('SELECT %s FROM jobs WHERE owner = ? AND state = ? ORDER BY priority DESC, id' % JOB_FIELDS,
                           (token, STARTING))
            for row in rows:
                self._history(tx, row['id'], now, SCHEDULED, STARTING, row['attempt'], engine, None, 'starting', actor)
            return rows
        return self.transaction(apply)

    # ---- retention ---------------------------------------------------------------------------
    def prune(self, before, dry_run=False):
        """Delete finished jobs (and their history) that ended before `before` -> {'jobs': n, 'history': n}.

        "Ended" is the queue's own time of the final transition (updated_at, our clock), not the engine's end time.
        """
        marks = _placeholders(len(TERMINAL_STATES))
        select = 'SELECT id FROM jobs WHERE state IN (%s) AND updated_at < ?' % marks
        params = list(TERMINAL_STATES) + [before]

        def apply(tx):
            history = tx.one('SELECT COUNT(*) AS n FROM job_history WHERE job_id IN (%s)' % select, params)['n']
            if dry_run:
                return {'jobs': tx.one('SELECT COUNT(*) AS n FROM (%s) AS old' % select, params)['n'], 'history': history}
            tx.execute('DELETE FROM job_history WHERE job_id IN (%s)' % select, params)
            return {'jobs': tx.execute('DELETE FROM jobs WHERE id IN (%s)' % select, params), 'history': history}
        return self.transaction(apply, write=not dry_run)

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
        row = self.lease(name)
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
