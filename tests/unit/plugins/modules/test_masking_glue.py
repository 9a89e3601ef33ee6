"""The pure decisions of plugins/module_utils/masking_module.py: store URLs, credentials, engine diffs, outcomes."""
import datetime

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_errors as errors
from ansible_collections.orchestra.fleet.plugins.module_utils import masking_module as mm


# ---- store option

def test_store_default_is_a_sqlite_file_under_home():
    url, path = mm.resolve_store(None, home='/home/u')
    assert path == '/home/u/.ansible/orchestra/masking-queue.db'
    assert url == path


@pytest.mark.parametrize('value, url, path', [
    ('/var/q.db', '/var/q.db', '/var/q.db'),
    ('sqlite:////var/q.db', '/var/q.db', '/var/q.db'),
    ('sqlite:///var/q.db', '/var/q.db', '/var/q.db'),
    ('postgresql://u@h:5432/db', 'postgresql://u@h:5432/db', None),
    ('postgres://u@h/db', 'postgresql://u@h/db', None),
])
def test_store_forms(value, url, path):
    assert mm.resolve_store(value) == (url, path)


def test_store_relative_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.InvalidRequest, match='relative'):
        mm.resolve_store('q.db')


def test_store_unknown_scheme_is_refused_without_leaking_the_password():
    with pytest.raises(errors.InvalidRequest) as caught:
        mm.resolve_store('mysql://u:s3cret@h/db')
    assert 's3cret' not in str(caught.value) and 'mysql://' in str(caught.value)


def test_store_password_is_found_and_redacted():
    url = 'postgresql://orchestra:s3cret@db:5432/q'
    assert mm.store_secret(url) == 's3cret'
    assert mm.redact_store(url) == 'postgresql://orchestra:********@db:5432/q'
    assert mm.store_secret('postgresql://orchestra@db/q') is None
    assert mm.redact_store('/var/q.db') == '/var/q.db'


# ---- credentials

def test_credentials_shared_and_per_engine():
    creds = mm.credentials_from('admin', 'pw', {'e2': {'username': 'u2', 'password': 'p2'}})
    assert creds == {'*': {'username': 'admin', 'password': 'pw'}, 'e2': {'username': 'u2', 'password': 'p2'}}
    assert mm.credentials_from() is None


@pytest.mark.parametrize('args', [('admin', None, None), (None, 'pw', None), (None, None, {'e1': 'notadict'}),
                                  (None, None, {'e1': {'username': 'u'}})])
def test_credentials_malformed_are_refused_without_the_secret(args):
    with pytest.raises(ValueError) as caught:
        mm.credentials_from(*args)
    assert 'pw' not in str(caught.value)


# ---- errors

@pytest.mark.parametrize('error, kind', [
    (errors.UnknownJob('x'), 'unknown_job'), (errors.UnknownEngine('x'), 'unknown_engine'),
    (errors.StoreUnavailable('x'), 'store_unavailable'), (errors.InvalidRequest('x'), 'bad_parameter'),
    (errors.EngineBusy('x'), 'engine_busy'), (errors.MaskingQueueError('x'), 'queue_error'),
    (errors.NoCarrier('x'), 'unknown_job'), (errors.EngineAuthError('x'), 'engine_auth'),
    (errors.MissingCredentials('x'), 'no_credentials'), (errors.EngineJobAmbiguous('x'), 'job_ambiguous'),
    (errors.DriverError('x'), 'engine_error'),
])
def test_error_kind(error, kind):
    assert mm.error_kind(error) == kind


def test_store_error_message_names_the_store_but_masks_the_password():
    message = mm.error_message(errors.StoreUnavailable('connection refused by s3cret host'),
                               'postgresql://u:s3cret@127.0.0.1:1/q')
    assert 'postgresql://u:********@127.0.0.1:1/q' in message
    assert 'connection refused' in message and 's3cret' not in message


# ---- engines (the diff itself is the store's: tests/unit/plugins/module_utils/test_masking_store.py)

def test_job_entries_are_canonical():
    entries = ['b', {'name': 'a', 'environment': 'dev'}, {'name': 'c'}, ' b ', '*']
    assert mm.normalize_job_entries(entries) == ['*', {'name': 'a', 'environment': 'dev'}, 'b', 'c']
    assert mm.normalize_job_entries(None) is None
    for bad in ([''], [3], [{'environment': 'dev'}], [{'name': 'a', 'colour': 'red'}]):
        with pytest.raises(ValueError):
            mm.normalize_job_entries(bad)


def test_carriers_use_the_placement_rules():
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_placement import carriers, make_engine
    engines = [make_engine('e1', 1, jobs=['a']), make_engine('e2', 1, jobs=[{'name': 'b', 'environment': 'dev'}]),
               make_engine('e3', 1, jobs=None), make_engine('e4', 1, jobs=['*'])]
    assert carriers(engines, 'a') == ['e1', 'e3', 'e4']
    assert carriers(engines, 'b', 'dev') == ['e2', 'e3', 'e4']
    assert carriers(engines, 'b', 'prod') == ['e3', 'e4']
    assert carriers(engines, 'a', affinity='e2') == []
    assert carriers([make_engine('e1', 1, jobs=['a'])], 'zzz') == []


# ---- jobs

def test_timings_from_iso_strings():
    job = dict(submitted_at='2026-11-22T02:00:00Z', started_at='2026-11-22T02:00:01.5Z',
               finished_at='2026-11-22T02:01:01.5+00:00')
    assert mm.job_timings(job) == dict(queued_seconds=1.5, run_seconds=60.0, total_seconds=61.5)
    assert mm.job_timings(dict(submitted_at='2026-11-22T02:00:00Z')) == dict(
        queued_seconds=None, run_seconds=None, total_seconds=None)
    assert mm.parse_time('not a date') is None
    assert mm.parse_time(datetime.datetime(2026, 1, 1)).tzinfo is not None


JOB = dict(id=7, request_id='r7', job_name='mask_a', engine='e1', execution_id=42)


def test_outcomes():
    assert mm.job_outcome(dict(JOB, state='SUCCEEDED'))[0] is False
    error = 'execution 42 on engine e1 failed: ORA-00942: table does not exist'
    failed, message, _warnings = mm.job_outcome(dict(JOB, state='FAILED', error=error))
    assert failed and message == 'masking job mask_a (queue id 7, request r7) failed: ' + error
    failed, message, _warnings = mm.job_outcome(dict(JOB, state='FAILED'))
    assert failed and 'on e1, execution 42' in message and 'no message' in message
    failed, message, warnings = mm.job_outcome(dict(JOB, state='WARNING', error='UNMASKED_DATA'))
    assert not failed and warnings == [message] and 'UNMASKED_DATA' in message
    assert 'finished with warnings' in mm.job_outcome(dict(JOB, state='WARNING'))[1]
    assert mm.job_outcome(dict(JOB, state='WARNING'), warning_is_failure=True)[0] is True
    failed, message, _warnings = mm.job_outcome(dict(JOB, state='RUNNING'))
    assert failed and 'timed out' in message
    failed, message, _warnings = mm.job_outcome(dict(JOB, state='CANCELLED'), timed_out=True)
    assert failed and 'timed out' in message


def test_summary_counts_states_and_slots():
    info = dict(jobs=[dict(state='QUEUED'), dict(state='RUNNING'), dict(state='SUCCEEDED')],
                engines=[dict(name='e1', slots=4, slots_used=1, enabled=True, drained=False)])
    summary = mm.queue_summary(info)
    assert summary['active'] == 2 and summary['states']['SUCCEEDED'] == 1
    assert summary['engines'] == {'e1': dict(slots=4, slots_used=1, foreign_slots=0, enabled=True, drained=False)}
