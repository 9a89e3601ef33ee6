"""The store on SQLite: URLs, migrations, idempotent enqueue, compare-and-set transitions, leases, engines."""
import sqlite3

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_store
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    EngineBusy, InvalidRequest, MaskingQueueError, StoreUnavailable, UnknownEngine, UnknownJob)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_schema import MIGRATIONS
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_store import dialect_for, open_store


@pytest.fixture
def store(tmp_path):
    opened = open_store(str(tmp_path / 'q.db'))
    yield opened
    opened.close()


def test_store_urls(tmp_path):
    assert dialect_for('sqlite:////tmp/x/q.db').path == '/tmp/x/q.db'
    assert dialect_for('/tmp/q.db').name == 'sqlite'
    assert dialect_for("postgresql://u:pw@db.example/queue").describe() == "postgresql://u:********@db.example/queue"
    for bad in ('', None, 'sqlite:relative.db', 'mysql://x/y'):
        with pytest.raises(InvalidRequest):
            dialect_for(bad)
    with pytest.raises(StoreUnavailable, match='does not exist'):
        open_store(str(tmp_path / 'nope' / 'q.db'))


def test_sqlite_file_is_wal_and_versioned(store, tmp_path):
    conn = sqlite3.connect(str(tmp_path / 'q.db'))
    assert conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    assert conn.execute('SELECT version FROM schema_version').fetchall() == [(v,) for v, _d, _s in MIGRATIONS]
    assert store.schema_version() == masking_store.MIGRATIONS[-1][0]


def test_forward_migration_applies_once_and_keeps_data(tmp_path):
    path = str(tmp_path / 'q.db')
    first = open_store(path)
    first.enqueue('r1', 'mask_a', None, 0, None, None, now=1.0)
    first.close()
    latest = MIGRATIONS[-1][0]
    extra = (latest + 1, 'add a note column', ['ALTER TABLE jobs ADD COLUMN note TEXT'])
    second = open_store(path, migrations=MIGRATIONS + [extra])
    assert second.schema_version() == latest + 1
    assert second.migrate() == []      # nothing left to do
    assert second.job('r1')['job_name'] == 'mask_a'
    versions = second.read(lambda tx: tx.rows('SELECT version FROM schema_version ORDER BY version'))
    assert [r['version'] for r in versions] == [v for v, _d, _s in MIGRATIONS] + [latest + 1]
    second.close()
    with pytest.raises(StoreUnavailable, match='newer than this collection'):
        open_store(path)   # an older collection must not write into a newer schema


def test_enqueue_is_idempotent_by_request_id(store):
    created, job = store.enqueue('ticket-1', 'mask_a', None, 3, None, None, now=1.0)
    again, same = store.enqueue('ticket-1', 'mask_a', None, 3, None, None, now=2.0)
    assert created and not again and same['id'] == job['id'] and same['submitted_at'] == 1.0
    with pytest.raises(InvalidRequest, match='already belongs to masking job mask_a'):
        store.enqueue('ticket-1', 'mask_b', None, 0, None, None, now=3.0)
    assert store.job('ticket-1')['id'] == job['id']
    assert store.job(job['id'])['request_id'] == 'ticket-1'
    assert store.job(str(job['id']))['request_id'] == 'ticket-1'
    with pytest.raises(UnknownJob):
        store.job('ticket-2')
    assert [h['to_state'] for h in store.history([job['id']])] == ['QUEUED']


def test_transitions_are_compare_and_set_with_history(store):
    _created, job = store.enqueue('r', 'mask_a', None, 0, None, None, now=1.0)
    assert store.transition(job['id'], 'QUEUED', 0, 'SCHEDULED', 2.0, engine='e1') is not None
    assert store.transition(job['id'], 'QUEUED', 0, 'SCHEDULED', 2.0, engine='e2') is None   # lost the race
    claimed = store.transition(job['id'], 'SCHEDULED', 0, 'STARTING', 3.0, attempt=1, not_before=3.0)
    assert claimed['attempt'] == 1 and claimed['not_before'] == 3.0
    assert store.transition(job['id'], 'STARTING', 0, 'RUNNING', 4.0) is None                  # stale attempt
    assert store.transition(job['id'], 'STARTING', 1, 'RUNNING', 4.0, execution_id=7)['execution_id'] == 7
    with pytest.raises(MaskingQueueError, match='illegal transition'):
        store.transition(job['id'], 'RUNNING', 1, 'QUEUED', 5.0)
    with pytest.raises(MaskingQueueError, match='unknown job fields'):
        store.transition(job['id'], 'RUNNING', 1, 'SUCCEEDED', 5.0, password='x')
    steps = [(h['from_state'], h['to_state'], h['attempt']) for h in store.history([job['id']])]
    assert steps == [(None, 'QUEUED', 0), ('QUEUED', 'SCHEDULED', 0), ('SCHEDULED', 'STARTING', 1), ('STARTING', 'RUNNING', 1)]


def test_schedule_applies_decisions_atomically(store):
    store.upsert_engine('e1', 1.0, url='http://e1', slots=1)
    ids = [store.enqueue('r%d' % i, 'mask_a', None, 0, None, None, now=1.0)[1]['id'] for i in range(3)]

    def decide(rows, engines):
        assert [e['slots_used'] for e in engines] == [0]
        assert [row[1] for row in rows] == ['mask_a'] * 3   # tuples in QUEUED_COLUMNS order
        return [(rows[0][0], 'e1')]
    placed, queued = store.schedule(decide, 2.0, owner='step-1')
    assert (placed, queued) == (1, 3)
    assert [j['state'] for j in store.jobs(ids=ids)] == ['SCHEDULED', 'QUEUED', 'QUEUED']
    assert store.engine('e1')['slots_used'] == 1
    assert store.engine('e1')['active_jobs'] == {('mask_a', None)}
    assert [h['to_state'] for h in store.history([ids[0]])] == ['QUEUED', 'SCHEDULED']
    assert store.queued_count() == 2


def test_engines_upsert_remove_and_busy_guard(store):
    changed, engine = store.upsert_engine('e1', 1.0, url='http://e1', slots=2, jobs=['a'])
    assert changed['jobs'] == (None, ['a']) and engine['jobs'] == ['a'] and engine['slots_used'] == 0
    assert store.upsert_engine('e1', 2.0, url='http://e1', slots=2) == ({}, store.engine('e1'))   # jobs=None keeps the list
    preview = store.upsert_engine('e1', 2.5, slots=4, dry_run=True)
    assert preview[0] == {'slots': (2, 4)} and preview[1]['slots'] == 4 and store.engine('e1')['slots'] == 2
    changed, engine = store.upsert_engine('e1', 3.0, url='http://e1', slots=3, drained=True)
    assert changed == {'slots': (2, 3), 'drained': (False, True)} and engine['jobs'] == ['a']
    with pytest.raises(InvalidRequest, match='url and slots are required'):
        store.upsert_engine('e2', 3.0, slots=1)
    _created, job = store.enqueue('r', 'a', None, 0, None, None, now=1.0)
    store.transition(job['id'], 'QUEUED', 0, 'SCHEDULED', 2.0, engine='e1')
    with pytest.raises(EngineBusy):
        store.delete_engine('e1', 4.0)
    with pytest.raises(EngineBusy):
        store.delete_engine('e1', 4.0, dry_run=True)
    assert store.delete_engine('e1', 4.0, force=True) is True
    assert store.delete_engine('e1', 5.0) is False
    with pytest.raises(UnknownEngine):
        store.engine('e1')


def test_engine_reachability_marks(store):
    store.upsert_engine('e1', 1.0, url='http://e1', slots=2)
    store.mark_engine_unreachable('e1', 'refused', 5.0)
    store.mark_engine_unreachable('e1', 'refused again', 6.0)
    engine = store.engine('e1')
    assert engine['unreachable_since'] == 5.0 and engine['last_error'] == 'refused again'
    store.mark_engine_reachable('e1', 7.0)
    assert store.engine('e1')['unreachable_since'] is None


def test_leases_fence_and_expire(store):
    assert store.acquire_lease('driver', 'a', 10.0, now=100.0) == 1
    assert store.acquire_lease('driver', 'b', 10.0, now=105.0) is None     # held
    assert store.acquire_lease('driver', 'a', 10.0, now=108.0) == 1        # renewed
    assert store.acquire_lease('driver', 'b', 10.0, now=117.0) is None     # renewal moved the expiry to 118
    assert store.acquire_lease('driver', 'b', 10.0, now=119.0) == 2        # expired: taken over, fence grows
    assert store.acquire_lease('driver', 'a', 10.0, now=120.0) is None     # the old leader is fenced out
    store.release_lease('driver', 'b')
    assert store.acquire_lease('driver', 'a', 10.0, now=121.0) == 3


def test_cancel_flag_only_on_unfinished_jobs(store):
    _created, job = store.enqueue('r', 'a', None, 0, None, None, now=1.0)
    assert store.request_cancel(job['id'], 2.0) is True
    assert store.request_cancel(job['id'], 2.0) is False       # already requested
    store.transition(job['id'], 'QUEUED', 0, 'CANCELLED', 3.0)
    _created, other = store.enqueue('r2', 'a', None, 0, None, None, now=1.0)
    store.transition(other['id'], 'QUEUED', 0, 'FAILED', 3.0)
    assert store.request_cancel(other['id'], 4.0) is False


def test_limit_gives_the_newest_jobs_oldest_first(store):
    for index in range(5):
        store.enqueue('r%d' % index, 'a', None, 0, None, None, now=1.0)
    assert [j['request_id'] for j in store.jobs(limit=2)] == ['r3', 'r4']
    assert [j['request_id'] for j in store.jobs()] == ['r0', 'r1', 'r2', 'r3', 'r4']


def test_forced_removal_fails_started_jobs_clearly(store):
    store.upsert_engine('e1', 1.0, url='http://e1', slots=2)
    _created, job = store.enqueue('r', 'a', None, 0, None, None, now=1.0)
    store.transition(job['id'], 'QUEUED', 0, 'SCHEDULED', 2.0, engine='e1')
    store.transition(job['id'], 'SCHEDULED', 0, 'STARTING', 3.0, attempt=1)
    store.transition(job['id'], 'STARTING', 1, 'RUNNING', 4.0, execution_id=321)
    assert store.delete_engine('e1', 5.0, force=True)
    row = store.job('r')
    assert row['state'] == 'FAILED'
    assert row['error'] == 'engine e1 was removed from the queue while the job was on it (execution 321 may still run there)'
    assert store.history([job['id']])[-1]['to_state'] == 'FAILED'


def test_turns_let_one_process_act_per_interval(store):
    assert store.claim_turn('refresh:e1', 'a', 5.0, now=10.0) is True
    assert store.claim_turn('refresh:e1', 'b', 5.0, now=12.0) is False     # a took it 2 s ago
    assert store.claim_turn('refresh:e1', 'a', 5.0, now=14.0) is False     # not even a itself, before the interval ends
    assert store.claim_turn('refresh:e1', 'b', 5.0, now=15.5) is True
    assert store.claim_turn('refresh:e2', 'a', 5.0, now=15.5) is True      # turns are per name


# ---- issue 10: a missing optional library, outages ridden out with a bound, retention

def test_postgresql_without_psycopg_names_the_missing_library(monkeypatch):
    from ansible_collections.orchestra.fleet.plugins.module_utils import masking_sql
    monkeypatch.setattr(masking_sql, 'psycopg', None)
    monkeypatch.setattr(masking_sql, 'PSYCOPG_IMPORT_ERROR', ImportError("No module named 'psycopg'"))
    with pytest.raises(StoreUnavailable) as caught:
        open_store('postgresql://u:s3cret@db.example/queue')
    assert 'pip install "psycopg[binary]"' in str(caught.value) and 's3cret' not in str(caught.value)


class _FlakyDialect(masking_store.dialect_for.__globals__['SQLiteDialect']):
    """SQLite whose connect fails like a PostgreSQL server that is down, `failures` times."""

    def __init__(self, path, failures):
        super().__init__(path)
        self.failures = failures

    def connect(self, create=True):
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError('connection refused')
        return super().connect(create)

    def is_disconnect(self, exc):
        return 'connection refused' in str(exc)


def _database(tmp_path, failures, outage_timeout):
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_sql import Database
    clock = [0.0]

    def sleep(seconds):
        clock[0] += seconds
    return Database(_FlakyDialect(str(tmp_path / 'q.db'), failures), outage_timeout=outage_timeout, sleep=sleep,
                    monotonic=lambda: clock[0]), clock


def test_an_outage_shorter_than_the_bound_is_ridden_out(tmp_path):
    db, clock = _database(tmp_path, failures=12, outage_timeout=60.0)
    assert db.read(lambda tx: tx.one('SELECT 1 AS one'))['one'] == 1
    assert 5.0 < clock[0] < 60.0      # it waited with backoff, reconnecting inside the loop


def test_an_outage_longer_than_the_bound_fails_clearly(tmp_path):
    db, clock = _database(tmp_path, failures=10 ** 6, outage_timeout=60.0)
    with pytest.raises(StoreUnavailable, match='unreachable for 60 s'):
        db.read(lambda tx: tx.one('SELECT 1 AS one'))
    assert clock[0] == pytest.approx(60.0)


def test_read_only_open_never_creates(tmp_path):
    with pytest.raises(StoreUnavailable, match='no queue database'):
        open_store(str(tmp_path / 'q.db'), create=False)
    assert not (tmp_path / 'q.db').exists()
    open_store(str(tmp_path / 'q.db')).close()
    assert open_store(str(tmp_path / 'q.db'), create=False).schema_version() == MIGRATIONS[-1][0]


def test_prune_keeps_unfinished_and_recent_jobs(store):
    for index, state in enumerate(['CANCELLED', 'FAILED', 'QUEUED']):
        _created, job = store.enqueue('r%d' % index, 'a', None, 0, None, None, now=1.0)
        if state != 'QUEUED':
            store.transition(job['id'], 'QUEUED', 0, state, 2.0)
    _created, recent = store.enqueue('recent', 'a', None, 0, None, None, now=1.0)
    store.transition(recent['id'], 'QUEUED', 0, 'CANCELLED', 100.0)
    assert store.prune(50.0, dry_run=True) == {'jobs': 2, 'history': 4}
    assert store.prune(50.0) == {'jobs': 2, 'history': 4}
    assert sorted(j['request_id'] for j in store.jobs()) == ['r2', 'recent']
    assert store.history([1, 2]) == []


def test_state_counters_follow_every_kind_of_write(store):
    def actual():
        return dict((row['state'], row['n']) for row in store.read(
            lambda tx: tx.rows('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state')))
    store.upsert_engine('e1', 1.0, url='http://e1', slots=5)
    ids = [store.enqueue('r%d' % i, 'a', None, 0, None, None, now=1.0)[1]['id'] for i in range(6)]
    store.schedule(lambda rows, engines: [(row[0], 'e1') for row in rows[:3]], 2.0, owner='s')
    store.transition(ids[3], 'QUEUED', 0, 'CANCELLED', 3.0)
    store.rerun(ids[3], 0, 4.0)
    store.transition(ids[4], 'QUEUED', 0, 'FAILED', 5.0)
    assert store.counts() == actual()
    store.compact_counts(force=True)
    assert store.counts() == actual() == {'SCHEDULED': 3, 'QUEUED': 2, 'FAILED': 1}
    store.delete_engine('e1', 6.0, force=True)
    store.prune(10.0)
    assert store.counts() == actual()
