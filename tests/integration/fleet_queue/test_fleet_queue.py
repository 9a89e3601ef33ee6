"""The queue's fleet driver on real parts: real agents in network namespaces over one real Docker engine.

What Docker itself records (its event stream) decides the verdicts: every workflow ran exactly once, no
host ever ran two at once; the agents say every claim was released; the queue says none was lost.
"""
import json
import os
import signal
import time

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_driver import FleetDriverFactory
from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_queue import FleetQueue
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import EngineNotReached
from tests.integration.fleet_queue.conftest import start_controller
from tests.support.fleet_lab import DockerEvents, TOKEN, client, overlaps, runs_from_events, wait_state
from tests.support.lab.processes import stop_process


def store_url(fleet, name):
    path = os.path.join(fleet.workdir, '%s-%d.db' % (name, int(time.time() * 1000)))
    return 'sqlite:///' + path


def workflow(fleet, index, seconds='0.3', code=0):
    return {'name': 'wf-%03d' % index, 'image': fleet.image,
            'command': ['sh', '-c', 'cat /orchestra/workflow.ini; sleep %s; exit %d' % (seconds, code)],
            'files': [{'path': '/orchestra/workflow.ini', 'content': '[sample]\nid = %d\n' % index}]}


def new_queue(fleet, url, hosts, **options):
    options.setdefault('claim_ttl', 15)
    queue = FleetQueue(url, hosts=hosts, token=TOKEN, **options)
    queue.refresh_hosts()
    return queue


def released_everywhere(fleet, names):
    return dict((name, client(fleet.hosts[name].address).claims()) for name in names)


@pytest.mark.timeout(240)
def test_two_controllers_dispatch_60_workflows_on_8_hosts_one_killed_mid_dispatch(fleet_clean):
    fleet = fleet_clean
    names = sorted(fleet.hosts)
    addresses = [fleet.hosts[name].address for name in names]
    url = store_url(fleet, 'two')
    queue = new_queue(fleet, url, addresses)
    ids = [queue.enqueue_workflow(workflow(fleet, i), request_id='two-%d' % i)[1]['id'] for i in range(60)]
    ids_file = os.path.join(fleet.workdir, 'ids.json')
    with open(ids_file, 'w', encoding='utf-8') as handle:
        json.dump(ids, handle)
    events = DockerEvents()
    logs = [os.path.join(fleet.workdir, 'controller-%s.log' % who) for who in 'ab']
    first = start_controller(url, addresses, ids_file, logs[0])
    second = start_controller(url, addresses, ids_file, logs[1])
    try:
        # SIGKILL the first controller mid-dispatch: some of its starts are claimed, some running, some POSTed.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and queue.store.counts().get('SUCCEEDED', 0) < 12:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert second.wait(200) == 0, open(logs[1], encoding='utf-8').read()[-3000:]
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                stop_process(proc, 5)
        recorded = events.stop()
    jobs = queue.store.jobs(ids=ids)
    assert [job['state'] for job in jobs] == ['SUCCEEDED'] * 60, [(j['id'], j['state'], j['reason']) for j in jobs]
    runs = runs_from_events(recorded)
    started = sorted(int(run['job']) for run in runs.values() if run['start'] is not None)
    assert started == sorted(ids)                      # every workflow exactly once, by Docker's own record
    assert all(run['starts'] == 1 for run in runs.values())
    assert overlaps(runs) == []                        # no host ever ran two at once
    assert set(run['host'] for run in runs.values()) <= set(addresses)
    assert len(set(run['host'] for run in runs.values())) > 4   # the work was spread over the fleet
    # Claims released (the killed controller's lapse by their TTL; the survivor released the rest).
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and any(released_everywhere(fleet, names).values()):
        time.sleep(0.5)
    assert not any(released_everywhere(fleet, names).values())


def test_a_claim_that_expires_before_the_start_is_refused_at_the_host(fleet_clean):
    fleet = fleet_clean
    host = fleet.hosts['h1']
    factory = FleetDriverFactory('expiring', token=TOKEN, claim_ttl=2)
    driver = factory({'name': 'h1', 'url': agent_client.agent_url(host.address)})
    job = {'id': 991, 'request_id': 'expiring', 'spec': json.dumps(workflow(fleet, 991))}
    fence = driver.start_marker(job)
    time.sleep(3.0)                                     # the claim lapses on the agent (its own clock)
    rival = client(host.address).create_claim('rival', 30)
    assert rival['fencing'] > fence
    events = DockerEvents()
    with pytest.raises(EngineNotReached, match='nothing was started'):
        driver.start(dict(job, start_marker=fence))
    assert runs_from_events(events.stop()) == {}        # Docker started nothing
    client(host.address).release_claim(rival['id'], rival['secret'])
    # A take-over proves the old fence started nothing: it raises the fence first, then looks.
    assert driver.reconcile(dict(job, start_marker=fence)) is None
    assert client(host.address).claims() == []


def test_a_host_that_goes_away_gives_its_jobs_back_and_a_failure_is_recorded(fleet_clean):
    fleet = fleet_clean
    names = ['h2', 'h3', 'h4']
    addresses = [fleet.hosts[name].address for name in names]
    queue = new_queue(fleet, store_url(fleet, 'away'), addresses)
    gone = fleet.hosts['h4'].address
    fleet.agents['h4'].stop()                           # registered as usable, then its agent vanishes
    ids = [queue.enqueue_workflow(workflow(fleet, i), request_id='away-%d' % i)[1]['id'] for i in range(6)]
    _created, failing = queue.enqueue_workflow(workflow(fleet, 99, code=3), request_id='away-fails', host=addresses[0])
    events = DockerEvents()
    jobs = queue.wait(ids + [failing['id']], timeout=120, poll_interval=0.2)
    runs = runs_from_events(events.stop())
    by_id = dict((job['id'], job) for job in jobs)
    assert [by_id[i]['state'] for i in ids] == ['SUCCEEDED'] * 6
    assert all(by_id[i]['engine'] != gone for i in ids)
    failed = by_id[failing['id']]
    assert failed['state'] == 'FAILED' and failed['error_kind'] == 'job_failed' and 'exit code 3' in failed['error']
    assert '[sample]' in failed['error']                 # the end of its log
    assert sorted(int(run['job']) for run in runs.values()) == sorted(ids + [failing['id']])
    assert overlaps(runs) == []
    # The first placement filled all three hosts, the gone one too: its job came back, nothing had started.
    history = queue.info(jobs=False, engines=False, history_for=ids)['history']
    assert any(h['to_state'] == 'QUEUED' and gone in (h['detail'] or '') and 'nothing was started' in (h['detail'] or '')
               for entries in history.values() for h in entries), history
    # The failed workflow's host reports failed until acknowledged, as the agent always did.
    assert client(addresses[0]).state()['state'] == 'failed'
    assert not any(released_everywhere(fleet, names[:2]).values())
    wait_state(addresses[1], 'lazy')
