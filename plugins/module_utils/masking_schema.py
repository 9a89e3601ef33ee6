# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The queue's schema, as an ordered list of forward migrations.

Rules: a migration is never edited once released; a change is a new entry at
the end. Statements are written once for both databases: `{pk}` is the only
per-dialect piece (an auto-increment primary key), booleans are 0/1 integers
and times are epoch seconds (DOUBLE PRECISION, which SQLite reads as REAL).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

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
]

LATEST = MIGRATIONS[-1][0]
