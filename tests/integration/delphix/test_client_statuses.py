"""The client against a real simulator process over HTTP: every status, capacity, resolution, paging, auth."""
import threading

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import delphix as dx
from tests.integration.delphix.helpers import PASSWORD, USER, client_for, wait_status, wait_terminal
from tests.support.delphix_sim.launcher import seed_config


@pytest.mark.parametrize('job, status', [('fast_ok', 'SUCCEEDED'), ('fast_warn', 'WARNING'), ('fast_fail', 'FAILED')])
def test_outcomes(engine, job, status):
    client = client_for(engine)
    started = client.start_execution(client.resolve_job(job))
    assert started.status in ('QUEUED', 'RUNNING') and started.submit_time is not None
    done = wait_terminal(client, started.execution_id)
    assert done.status == status and done.terminal
    assert done.end_time is not None and done.start_time <= done.end_time
    assert done.succeeded is (status == 'SUCCEEDED')
    events = client.execution_events(done.execution_id)
    if status == 'WARNING':
        assert [e['eventType'] for e in events] == ['UNMASKED_DATA']
        assert events[0]['severity'] == 'WARNING'
    elif status == 'SUCCEEDED':
        assert events == [] and done.rows_masked == done.rows_total == 500
    else:
        assert done.rows_masked < done.rows_total == 800


def test_unknown_status_is_reported_never_success(engine):
    client = client_for(engine)
    started = client.start_execution(client.resolve_job('odd'))
    last = wait_status(client, started.execution_id, 'MYSTERY')
    assert last.status == 'MYSTERY'
    assert not last.terminal and not last.succeeded and not last.known_status
    assert last.to_dict()['status'] == 'MYSTERY'


def test_running_progress_then_cancel_running(engine):
    client = client_for(engine)
    job_id = client.resolve_job('slow')
    started = client.start_execution(job_id)
    try:
        assert started.status == 'RUNNING' and started.rows_total == -1  # still counting rows
        with pytest.raises(dx.DelphixConflict) as caught:
            client.start_execution(job_id)  # the engine refuses a second start
        assert 'already running' in caught.value.engine_message
        with pytest.raises(dx.DelphixConflict):
            client.cancel_execution(started.execution_id, expected_status='QUEUED')
    finally:
        cancelled = client.cancel_execution(started.execution_id, expected_status='RUNNING')
    assert cancelled.status == 'CANCELLED' and cancelled.terminal
    assert client.get_execution(started.execution_id).status == 'CANCELLED'
    # cancelling again is idempotent: it is cancelled, which is what was asked
    assert client.cancel_execution(started.execution_id).status == 'CANCELLED'
    done = client.start_execution(client.resolve_job('fast_ok'))
    wait_terminal(client, done.execution_id)
    with pytest.raises(dx.DelphixConflict) as caught:
        client.cancel_execution(done.execution_id)  # finished otherwise: the engine's 409 stands
    assert 'already finished' in caught.value.engine_message


def test_engine_side_queue_and_cancel_queued(sims):
    sim = sims(seed_config('one-slot', [{'name': 'a', 'duration': 60}, {'name': 'b', 'duration': 0.05}], slots=1))
    client = client_for(sim)
    first = client.start_execution(client.resolve_job('a'))
    second = client.start_execution(client.resolve_job('b'))
    assert (first.status, second.status) == ('RUNNING', 'QUEUED')
    assert second.start_time is None and 'startTime' not in second.raw  # null fields are omitted
    queued = client.list_executions(status='QUEUED')
    assert [e.execution_id for e in queued] == [second.execution_id]
    with pytest.raises(dx.DelphixConflict):
        client.cancel_execution(second.execution_id, expected_status='RUNNING')
    assert client.cancel_execution(second.execution_id, expected_status='QUEUED').status == 'CANCELLED'
    client.cancel_execution(first.execution_id)
    record = sim.record()
    assert [e['status'] for e in record['executions']] == ['CANCELLED', 'CANCELLED']
    assert record['max_concurrency'] == 1


def test_queued_job_starts_when_a_slot_frees(sims):
    sim = sims(seed_config('two-slots', [{'name': n, 'duration': 1.0} for n in 'abc'], slots=2))
    client = client_for(sim)
    job_ids = [client.resolve_job(n) for n in 'abc']
    runs = [client.start_execution(job_id) for job_id in job_ids]
    assert [r.status for r in runs] == ['RUNNING', 'RUNNING', 'QUEUED']
    assert all(wait_terminal(client, r.execution_id).status == 'SUCCEEDED' for r in runs)
    record = sim.record()
    assert record['max_concurrency'] == 2 and not record['overlaps']
    third = record['executions'][2]
    assert third['started'] >= min(e['ended'] for e in record['executions'][:2])


def test_memory_budget_keeps_jobs_queued(sims):
    jobs = [{'name': n, 'duration': 1.0, 'max_memory': 1024} for n in 'abc']
    sim = sims(seed_config('mem', jobs, slots=5, memory_mb=2048))
    client = client_for(sim)
    assert client.system_information()['totalAllocatedMemoryForJobs'] == 2048
    job_ids = [client.resolve_job(n) for n in 'abc']
    runs = [client.start_execution(job_id) for job_id in job_ids]
    assert [r.status for r in runs] == ['RUNNING', 'RUNNING', 'QUEUED']
    assert all(wait_terminal(client, r.execution_id).status == 'SUCCEEDED' for r in runs)
    assert sim.record()['max_memory_in_use'] == 2048


def test_concurrency_cap_with_many_parallel_starts(sims):
    jobs = [{'name': 'job_%02d' % n, 'duration': 0.2} for n in range(30)]
    sim = sims(seed_config('busy', jobs, slots=3))
    started, errors = [], []

    def worker(names):
        client = client_for(sim)
        for name in names:
            try:
                started.append(client.start_execution(client.resolve_job(name)))
            except dx.DelphixError as exc:  # collected, asserted below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=([j['name'] for j in jobs[k::5]],)) for k in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(started) == 30
    client = client_for(sim)
    assert all(wait_terminal(client, e.execution_id).status == 'SUCCEEDED' for e in started)
    record = sim.record()
    assert record['max_concurrency'] == 3
    assert sorted(len(ids) for ids in record['per_job_name'].values()) == [1] * 30


def test_job_names_resolve_per_engine_and_environment(engine, sims):
    other = sims(seed_config('other', [{'name': 'fast_ok', 'duration': 0.05}, {'name': 'dup', 'environment': 'dev'}]))
    main, second = client_for(engine), client_for(other)
    assert main.resolve_job('fast_ok') != second.resolve_job('fast_ok')
    with pytest.raises(dx.DelphixAmbiguous):
        main.resolve_job('dup')
    dev, prod = main.resolve_job('dup', 'dev'), main.resolve_job('dup', 'prod')
    assert dev != prod
    assert second.resolve_job('dup') == second.resolve_job('dup', 'dev')
    with pytest.raises(dx.DelphixNotFound):
        second.resolve_job('dup', 'prod')
    with pytest.raises(dx.DelphixNotFound):
        main.resolve_job('no_such_job')
    started = main.start_execution(prod)
    assert started.job_id == prod


def test_pagination_reads_every_page(sims):
    sim = sims(seed_config('pages', [{'name': 'p', 'duration': 0.0}] + [{'name': 'x%d' % n} for n in range(7)]))
    client = client_for(sim, page_size=2)
    job_id = client.resolve_job('p')  # 8 jobs over 4 pages
    assert len(client.list_jobs()) == 8
    ids = [client.start_execution(job_id).execution_id for _run in range(5)]
    # each run is terminal at once (duration 0), so the engine accepts the next start
    assert [e.execution_id for e in client.list_executions(job_id=job_id)] == ids
    assert len(client.list_executions(job_id=job_id, status='SUCCEEDED')) == 5
    with pytest.raises(dx.DelphixError) as caught:
        client._get('/executions', {'page_number': 9, 'page_size': 2})  # pylint: disable=protected-access
    assert 'is outside of the acceptable range. The last page is 3' in caught.value.engine_message
    assert caught.value.status == 400


def test_multi_tenant_job_needs_a_target_connector(engine):
    client = client_for(engine)
    job_id = client.resolve_job('tenant')
    with pytest.raises(dx.DelphixError) as caught:
        client.start_execution(job_id)
    assert caught.value.status == 400 and 'targetConnectorId' in caught.value.engine_message
    started = client.start_execution(job_id, target_connector_id=4)
    assert started.raw['targetConnectorId'] == 4


def test_unknown_ids_are_not_found(engine):
    client = client_for(engine)
    with pytest.raises(dx.DelphixNotFound) as caught:
        client.get_execution(99999999)
    assert 'does not exist' in caught.value.engine_message
    with pytest.raises(dx.DelphixNotFound):
        client.start_execution(99999999)


def test_wrong_password_is_an_auth_error(engine):
    client = dx.MaskingEngineClient(engine.url, USER, 'not-' + PASSWORD, timeout=3, backoff=0.05)
    with pytest.raises(dx.DelphixAuthError) as caught:
        client.system_information()
    assert caught.value.status == 401 and caught.value.engine_message


def test_logout_and_automatic_login_again(engine):
    client = client_for(engine)
    client.login()
    logins = engine.record()['logins']
    client.logout()
    assert client.system_information()['version']
    assert engine.record()['logins'] == logins + 1


@pytest.mark.parametrize('status_set, queued_status, expected_queued, warning_shown', [
    ('older', 'QUEUED', 'RUNNING', 'SUCCEEDED'),
    ('later', 'QUEUED', 'QUEUED', 'SUCCEEDED'),
    ('newest', 'WAITING', 'WAITING', 'WARNING')])
def test_api_generations(sims, status_set, queued_status, expected_queued, warning_shown):
    jobs = [{'name': 'hold', 'duration': 60}, {'name': 'warn', 'duration': 0.05, 'outcome': 'WARNING'}]
    sim = sims(seed_config('gen', jobs, slots=1, status_set=status_set, queued_status=queued_status))
    client = client_for(sim)
    hold = client.start_execution(client.resolve_job('hold'))
    waiting = client.start_execution(client.resolve_job('warn'))
    assert waiting.status == expected_queued and not waiting.terminal
    if status_set == 'older':
        with pytest.raises(dx.DelphixNotFound):  # no cancel endpoint on the oldest engines
            client.cancel_execution(hold.execution_id)
        return
    client.cancel_execution(hold.execution_id)
    assert wait_terminal(client, waiting.execution_id).status == warning_shown


def test_pinned_api_version(engine):
    assert client_for(engine, api_version='5.1.40').system_information()['version']
    with pytest.raises(dx.DelphixNotFound):
        client_for(engine, api_version='9.9.9').system_information()
