# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The queue's schema, as an ordered list of forward migrations.

Rules: a migration is never edited once released; a change is a new entry at
the end. Statements are written once for both databases where SQL allows: `{pk}`
is the per-dialect auto-increment primary key, booleans are 0/1 integers and
times are epoch seconds (DOUBLE PRECISION, which SQLite reads as REAL). Where the
two databases' SQL differs (triggers), a statement is a mapping dialect name -> SQL.
"""

MIGRATIONS = [
    (1, 'initial schema', [
        """CREATE TABLE engines (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            slots INTEGER NOT NULL,
            memory_mb INTEGER,
            enabled INTEGER NOT NULL DEFAULT 1,
            drained INTEGER NOT NULL DEFAULT 0,
            jobs TEXT,
            verify INTEGER NOT NULL DEFAULT 1,
            last_error TEXT,
            unreachable_since DOUBLE PRECISION,
            last_probe_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE jobs (
            id {pk},
            request_id TEXT NOT NULL UNIQUE,
            job_name TEXT NOT NULL,
            environment TEXT,
            priority INTEGER NOT NULL DEFAULT 0,
            engine_affinity TEXT,
            max_memory_mb INTEGER,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            engine TEXT,
            owner TEXT,
            engine_job_id BIGINT,
            execution_id BIGINT,
            engine_status TEXT,
            not_before DOUBLE PRECISION,
            lease_until DOUBLE PRECISION,
            next_try_at DOUBLE PRECISION,
            start_failures INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            rows_masked BIGINT,
            rows_total BIGINT,
            error TEXT,
            submitted_at DOUBLE PRECISION NOT NULL,
            scheduled_at DOUBLE PRECISION,
            started_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            updated_at DOUBLE PRECISION NOT NULL)""",
        'CREATE INDEX jobs_by_state ON jobs (state, priority, id)',
        'CREATE INDEX jobs_by_engine ON jobs (engine, state)',
        'CREATE INDEX jobs_by_owner ON jobs (owner)',
        """CREATE TABLE job_history (
            id {pk},
            job_id BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            engine TEXT,
            execution_id BIGINT,
            detail TEXT,
            actor TEXT)""",
        'CREATE INDEX job_history_by_job ON job_history (job_id, id)',
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            owner TEXT,
            expires_at DOUBLE PRECISION NOT NULL,
            fence BIGINT NOT NULL)""",
    ]),
    (2, 'start markers, failure kinds, one owner per execution, retention index', [
        # The job's highest execution id on its engine before the POST: only a newer execution can be its own.
        'ALTER TABLE jobs ADD COLUMN start_marker BIGINT',
        # Why a FAILED job failed, as the error_kind modules return (job_failed only when the engine ran it).
        'ALTER TABLE jobs ADD COLUMN error_kind TEXT',
        # Older versions could let two jobs adopt one execution: keep it on the first, say so on the others.
        """UPDATE jobs SET error = COALESCE(error || ' ', '') || '(execution ' || CAST(execution_id AS TEXT)
               || ' also claimed by an earlier queue job; cleared by schema migration 2)', execution_id = NULL
           WHERE id IN (SELECT later.id FROM jobs later JOIN jobs earlier ON later.engine = earlier.engine
                        AND later.execution_id = earlier.execution_id AND later.id > earlier.id)""",
        'CREATE UNIQUE INDEX jobs_execution_owner ON jobs (engine, execution_id)',
        'CREATE INDEX jobs_by_age ON jobs (updated_at)',
        # Counts per state without a scan of every job (cheap at 100,000+ jobs): triggers append +1/-1 rows,
        # writers fold them from time to time (Store.compact_counts). Appending never contends for a row lock.
        'CREATE TABLE job_counts (id {pk}, state TEXT NOT NULL, n BIGINT NOT NULL)',
        {'sqlite': 'CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs BEGIN '
                   'INSERT INTO job_counts (state, n) VALUES (NEW.state, 1); END',
         'postgresql': """CREATE FUNCTION orchestra_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
                          BEGIN
                            IF TG_OP IN ('UPDATE', 'DELETE') THEN INSERT INTO job_counts (state, n) VALUES (OLD.state, -1); END IF;
                            IF TG_OP IN ('UPDATE', 'INSERT') THEN INSERT INTO job_counts (state, n) VALUES (NEW.state, 1); END IF;
                            RETURN NULL;
                          END $$"""},
        {'sqlite': 'CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN '
                   'INSERT INTO job_counts (state, n) VALUES (OLD.state, -1); END',
         'postgresql': 'CREATE TRIGGER jobs_counted AFTER INSERT OR DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION orchestra_count_jobs()'},
        {'sqlite': 'CREATE TRIGGER jobs_counted_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN '
                   'INSERT INTO job_counts (state, n) VALUES (OLD.state, -1); '
                   'INSERT INTO job_counts (state, n) VALUES (NEW.state, 1); END',
         'postgresql': 'CREATE TRIGGER jobs_counted_moves AFTER UPDATE OF state ON jobs FOR EACH ROW '
                       'WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION orchestra_count_jobs()'},
        'INSERT INTO job_counts (state, n) SELECT state, COUNT(*) FROM jobs GROUP BY state',
    ]),
    (3, 'engines that describe themselves: discovered fields, job list read time, load started outside the queue', [
        # Which of slots / memory_mb / jobs came from the engine (JSON list; NULL: none): only those are refreshed.
        'ALTER TABLE engines ADD COLUMN discovered TEXT',
        # When the queue last read the engine's job list (our clock: for display and the refresh interval only).
        'ALTER TABLE engines ADD COLUMN catalogue_at DOUBLE PRECISION',
        # RUNNING/QUEUED executions no queue job owns, as last listed (JSON list), and when they were listed.
        'ALTER TABLE engines ADD COLUMN foreign_executions TEXT',
        'ALTER TABLE engines ADD COLUMN foreign_checked_at DOUBLE PRECISION',
    ]),
    # The runner applies whichever known migration a database lacks, whatever order branches landed in.
    (4, 'two kinds of capacity: fleet hosts beside masking engines, workflow jobs beside masking jobs', [
        "ALTER TABLE engines ADD COLUMN kind TEXT NOT NULL DEFAULT 'masking'",
        "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'masking'",
        # A workflow job's container spec (JSON: image, command, env, labels, files); NULL for a masking job.
        'ALTER TABLE jobs ADD COLUMN spec TEXT',
        # The host claim a workflow runs under, so whichever controller sees it end can release it. The secret
        # only renews or releases that one claim (useless once released or expired); the agent token is never stored.
        'ALTER TABLE jobs ADD COLUMN claim_id TEXT',
        'ALTER TABLE jobs ADD COLUMN claim_secret TEXT',
        # The agent's id of the workflow (its fencing number is the job's execution_id).
        'ALTER TABLE jobs ADD COLUMN workflow_id TEXT',
        'CREATE INDEX jobs_by_kind ON jobs (kind, state, priority, id)',
    ]),
]
