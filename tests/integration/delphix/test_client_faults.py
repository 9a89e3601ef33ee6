"""Every fault knob of the simulator, met by the client over real HTTP."""
import threading
import time

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import delphix as dx
from tests.integration.delphix.helpers import client_for, wait_terminal
from tests.support.delphix_sim.launcher import seed_config


def runs_of(sim, job_name):
    return sim.record()['per_job_name'].get(job_name, [])


# ---- error rate (500s) ------------------------------------------------------------------------
def test_500s_on_reads_are_retried(engine):
    engine.set_faults({'error_rate': 1.0, 'budget': 2, 'match': '^GET /system-information$'})
    assert client_for(engine).system_information()['version']
    assert engine.record()['faults']['errors'] == 2


def test_500s_beyond_the_retries_are_unavailable_with_the_message(engine):
    engine.set_faults({'error_rate': 1.0, 'match': '^GET /system-information$'})
    with pytest.raises(dx.DelphixUnavailable) as caught:
        client_for(engine, retries=1).system_information()
    assert caught.value.status == 500 and 'simulated' in caught.value.engine_message


def test_random_500s_everywhere_never_break_or_double_start(engine):
    engine.set_faults({'error_rate': 0.3, 'seed': 7})
    client = client_for(engine, retries=6, backoff=0.01)
    for name in ('lost_0', 'lost_1', 'lost_2'):
        started = client.start_execution(client.resolve_job(name))
        assert wait_terminal(client, started.execution_id).status == 'SUCCEEDED'
        assert runs_of(engine, name) == [started.execution_id]
    assert engine.record()['faults']['errors'] > 0


def test_500_on_start_is_reconciled_then_posted_again(engine):
    engine.set_faults({'error_rate': 1.0, 'budget': 1, 'match': '^POST /executions$'})
    client = client_for(engine)
    started = client.start_execution(client.resolve_job('lost_3'))
    assert runs_of(engine, 'lost_3') == [started.execution_id]


# ---- lost responses ---------------------------------------------------------------------------
def test_lost_start_answer_is_adopted_not_repeated(engine):
    client = client_for(engine)
    job_id = client.resolve_job('lost_4')
    marker = client.execution_marker(job_id)
    engine.set_faults({'lost_response_rate': 1.0, 'budget': 1, 'match': '^POST /executions$'})
    adopted = client.start_execution(job_id, marker=marker)
    assert runs_of(engine, 'lost_4') == [adopted.execution_id]
    assert engine.record()['faults']['lost'] == 1
    assert client.find_execution_after(job_id, marker).execution_id == adopted.execution_id


def test_lost_start_answer_held_until_the_client_times_out(engine):
    client = client_for(engine, timeout=0.5)
    job_id = client.resolve_job('lost_5')
    engine.set_faults({'lost_response_rate': 1.0, 'budget': 1, 'match': '^POST /executions$',
                       'lost_mode': 'hang', 'lost_hold_s': 1.5})
    adopted = client.start_execution(job_id)
    assert runs_of(engine, 'lost_5') == [adopted.execution_id]


def test_start_still_in_flight_when_the_client_gives_up_is_not_started_twice(engine):
    # The engine acts on the POST only after 0.8 s; the client stops waiting after 0.3 s. It must not post
    # again: it watches the job's executions and adopts the start once it lands (or reports it unknown).
    client = client_for(engine, timeout=0.3, retries=4, backoff=0.05)
    job_id = client.resolve_job('lost_6')
    engine.set_faults({'latency_ms': 800, 'match': '^POST /executions$'})
    marker = client.execution_marker(job_id)
    try:
        adopted = client.start_execution(job_id, marker=marker).execution_id
    except dx.DelphixUnavailable as exc:
        assert exc.outcome_unknown
        adopted = None
    engine.set_faults({'latency_ms': None, 'match': None})
    time.sleep(1.0)  # every POST still in flight has landed by now
    landed = runs_of(engine, 'lost_6')
    assert len(landed) == 1
    assert adopted in (None, landed[0])
    assert client.find_execution_after(job_id, marker).execution_id == landed[0]


def test_lost_cancel_answer_is_settled(engine):
    client = client_for(engine)
    started = client.start_execution(client.resolve_job('slow2'))
    engine.set_faults({'lost_response_rate': 1.0, 'budget': 1, 'match': '/cancel$'})
    assert client.cancel_execution(started.execution_id).status == 'CANCELLED'


def test_lost_reads_are_retried(engine):
    engine.set_faults({'lost_response_rate': 1.0, 'budget': 2, 'match': '^GET /executions'})
    assert isinstance(client_for(engine).list_executions(), list)


def test_many_starts_under_random_lost_answers_never_double_start(sims):
    jobs = [{'name': 'j%02d' % n, 'duration': 0.05} for n in range(20)]
    sim = sims(seed_config('lossy', jobs, slots=4), faults={'lost_response_rate': 0.3, 'seed': 11})
    results, failures = {}, []

    def worker(names):
        client = client_for(sim, retries=8, backoff=0.01, timeout=2.0)
        for name in names:
            job_id = client.resolve_job(name)
            try:
                marker = client.execution_marker(job_id)
                results[name] = client.start_execution(job_id, marker=marker).execution_id
            except dx.DelphixNotReached:
                continue   # provably never started
            except dx.DelphixUnavailable:
                failures.append((name, marker))

    threads = [threading.Thread(target=worker, args=([j['name'] for j in jobs[k::4]],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    sim.set_faults({'lost_response_rate': 0.0})
    checker = client_for(sim)
    for name, marker in failures:  # what a queue does for a start whose outcome it never learned
        found = checker.find_execution_after(checker.resolve_job(name), marker)
        if found is not None:
            results[name] = found.execution_id
    record = sim.record()
    assert record['faults']['lost'] > 0
    for name, ids in record['per_job_name'].items():
        assert len(ids) == 1, (name, ids)
        assert results.get(name) == ids[0]
    assert not record['overlaps'] and record['max_concurrency'] <= 4


# ---- latency --------------------------------------------------------------------------------
def test_latency_within_the_timeout_is_fine(engine):
    engine.set_faults({'latency_ms': 200})
    client = client_for(engine, timeout=2.0)
    assert client.system_information()['version']


def test_latency_beyond_the_timeout_is_unavailable_after_retries(engine):
    engine.set_faults({'latency_ms': 600, 'match': '^GET /system-information$'})
    client = client_for(engine, timeout=0.2, retries=1)
    client.login()
    requests_before = engine.record()['requests']
    with pytest.raises(dx.DelphixUnavailable):
        client.system_information()
    time.sleep(0.8)
    assert engine.record()['requests'] - requests_before >= 2  # tried, then retried once


# ---- tokens ---------------------------------------------------------------------------------
def test_token_expiry_after_n_calls(engine):
    engine.set_faults({'token_expiry_calls': 2})
    client = client_for(engine)
    logins = engine.record()['logins']
    for _call in range(7):
        assert client.system_information()['version']
    assert engine.record()['logins'] - logins >= 3


def test_token_expiry_by_time(engine):
    engine.set_faults({'token_timeout_s': 0.3})
    client = client_for(engine)
    client.login()
    time.sleep(0.5)
    assert client.list_executions() is not None  # 401 "expired" -> login again -> retried once


# ---- engine down ----------------------------------------------------------------------------
def test_engine_down_for_a_period_is_ridden_out_by_safe_retries(engine):
    client = client_for(engine, retries=6, backoff=0.1)
    client.login()
    engine.set_faults({'down_after': 0, 'down_for': 0.6})
    assert client.system_information()['version']
    assert engine.record()['faults']['down'] >= 1


def test_engine_down_start_fails_cleanly_and_nothing_started(engine):
    client = client_for(engine, retries=1, backoff=0.05)
    job_id = client.resolve_job('lost_7')
    marker = client.execution_marker(job_id)
    engine.set_faults({'down_after': 0, 'down_for': 30})
    with pytest.raises(dx.DelphixUnavailable):
        client.start_execution(job_id, marker=marker)
    engine.set_faults({'down_after': None, 'down_for': None})
    assert client.find_execution_after(job_id, marker) is None
    assert runs_of(engine, 'lost_7') == []


def test_engine_down_with_503(engine):
    client = client_for(engine, retries=0)
    client.login()
    engine.set_faults({'down_after': 0, 'down_for': 30, 'down_mode': '503'})
    with pytest.raises(dx.DelphixUnavailable) as caught:
        client.system_information()
    assert caught.value.status == 503 and caught.value.engine_message


def test_engine_goes_down_later(engine):
    client = client_for(engine, retries=0)
    engine.set_faults({'down_after': 1.0, 'down_for': 30})
    assert client.system_information()['version']
    time.sleep(1.2)
    with pytest.raises(dx.DelphixUnavailable):
        client.system_information()


def test_stopped_engine_is_unavailable_and_nothing_is_sent(sims):
    sim = sims(seed_config('gone', [{'name': 'a'}]))
    client = client_for(sim, retries=1, backoff=0.01)
    job_id = client.resolve_job('a')
    sim.stop()
    with pytest.raises(dx.DelphixNotReached) as caught:
        client.start_execution(job_id, marker=0)
    assert caught.value.outcome_unknown is False  # refused: the POST never reached an engine
    with pytest.raises(dx.DelphixNotReached):
        client.start_execution(job_id)   # taking the marker fails first: nothing was sent either


def test_an_engine_clock_minutes_off_changes_no_adoption(sims):
    # The lost answer's execution is adopted and an older finished run is not, with the engine 5 min ahead or behind.
    for offset in (300.0, -300.0):
        sim = sims(seed_config('skew%d' % offset, [{'name': 'a', 'duration': 0.05}], clock_offset_s=offset))
        client = client_for(sim)
        job_id = client.resolve_job('a')
        older = client.start_execution(job_id)
        assert wait_terminal(client, older.execution_id).status == 'SUCCEEDED'
        sim.set_faults({'lost_response_rate': 1.0, 'budget': 1, 'match': '^POST /executions$'})
        adopted = client.start_execution(job_id)
        assert runs_of(sim, 'a') == [older.execution_id, adopted.execution_id]
        assert client.clock_offset == pytest.approx(offset, abs=2.0)   # measured from the Date header, for reports


# ---- 200 / 201 --------------------------------------------------------------------------------
def test_posts_answering_200(engine):
    engine.set_faults({'post_status': 200})
    client = client_for(engine)
    started = client.start_execution(client.resolve_job('fast_ok'))
    assert wait_terminal(client, started.execution_id).status == 'SUCCEEDED'


# ---- provably not reached ---------------------------------------------------------------------
def test_a_tls_handshake_that_fails_started_nothing(engine):
    # https to a plain-HTTP engine: the handshake fails before any byte of the request is sent.
    client = dx.MaskingEngineClient(engine.url.replace('http://', 'https://'), 'admin', 'Admin-12', timeout=3.0,
                                    retries=1, backoff=0.01, verify=False)
    requests_before = engine.record()['requests']
    with pytest.raises(dx.DelphixNotReached) as caught:
        client.start_execution(77, marker=0)
    assert caught.value.outcome_unknown is False
    assert engine.record()['requests'] == requests_before   # not one API call reached the engine


def test_the_driver_reports_a_dead_engine_as_not_reached(sims):
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixDriverFactory  # pylint: disable=import-outside-toplevel
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (  # pylint: disable=import-outside-toplevel
        EngineNotReached, EngineUnavailable)
    sim = sims(seed_config('dead', [{'name': 'a'}]))
    driver = DelphixDriverFactory(timeout=2.0, retries=1, backoff=0.01)({'name': 'dead', 'url': sim.url},
                                                                        {'username': 'admin', 'password': 'Admin-12'})
    sim.stop()
    with pytest.raises(EngineNotReached):
        driver.start({'id': 1, 'job_name': 'a'})
    with pytest.raises(EngineNotReached):
        driver.start_marker({'id': 1, 'job_name': 'a'})
    with pytest.raises(EngineUnavailable) as caught:   # a reconcile that cannot look proves nothing
        driver.reconcile({'id': 1, 'job_name': 'a', 'start_marker': 0})
    assert not isinstance(caught.value, EngineNotReached)


def test_the_driver_logs_out_on_close(engine):
    from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import DelphixDriverFactory  # pylint: disable=import-outside-toplevel
    driver = DelphixDriverFactory(timeout=3.0)({'name': 'main', 'url': engine.url}, {'username': 'admin', 'password': 'Admin-12'})
    driver.probe()
    token = dx._TOKENS[driver.client._cache_key]  # pylint: disable=protected-access
    driver.close()
    driver.close()   # twice is fine, and never raises
    import requests  # pylint: disable=import-outside-toplevel
    assert requests.get(engine.url + '/system-information', headers={'Authorization': token}, timeout=5).status_code == 401
