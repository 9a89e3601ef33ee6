"""Workflow jobs on fleet hosts through the queue, with fake agents (no network, no Docker).

The fake agent is no more lenient than the real one (docs/agent-openapi.yaml): a claim is refused while
the host is busy, claimed or failed; a start needs the CURRENT claim id, secret and fencing number (409
otherwise); a claim only lapses by its TTL on the agent's own clock, which the queue never reads.
"""
import itertools
import json

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_driver
from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_queue import FleetQueue, host_verdict, workflow_spec
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import InvalidRequest, NoCarrier, UnknownEngine
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import FLEET
from tests.support.fake_clock import Clock


class FakeAgent:
    """One host's agent: claims with fencing, fenced starts, workflows that end when the test says."""

    def __init__(self, name, clock):
        self.name = name
        self.clock = clock
        self.fencing = 0
        self.claim = None
        self.runs = {}           # id -> doc
        self.started = []        # (workflow id, fence)
        self.overlaps = 0
        self.gone = False
        self.failed_unacked = False
        self.ids = itertools.count(1)

    def _live(self):
        if self.claim is not None and self.claim['expires_at'] <= self.clock():
            self.claim = None
        return self.claim

    def running(self):
        return [w for w in self.runs.values() if w['status'] == 'running']

    def _check_up(self):
        if self.gone:
            raise agent_client.AgentUnreachable('connection refused', url='http://%s:9009' % self.name)

    # -- the AgentClient methods the driver uses --
    def create_claim(self, owner, ttl, note=None):
        self._check_up()
        if self.failed_unacked or self.running() or self._live() is not None:
            raise agent_client.AgentConflict('HTTP 409 conflict: host is not lazy', status=409, code='conflict', body={})
        self.fencing += 1
        self.claim = {'id': 'c%d' % self.fencing, 'secret': 's%d' % self.fencing, 'fencing': self.fencing,
                      'expires_at': self.clock() + ttl, 'owner': owner}
        return dict(self.claim)

    def renew_claim(self, claim_id, secret, ttl=None, fencing=None):
        self._check_up()
        live = self._live()
        if live is None or live['id'] != claim_id:
            raise agent_client.AgentNotFound('HTTP 404 not_found', status=404)
        live['expires_at'] = self.clock() + ttl
        return dict(live)

    def release_claim(self, claim_id, secret, fencing=None):
        self._check_up()
        live = self._live()
        if live is None or live['id'] != claim_id:
            raise agent_client.AgentNotFound('HTTP 404 not_found', status=404)
        if live['secret'] != secret:
            raise agent_client.AgentAuthError('HTTP 403 forbidden', status=403)
        self.claim = None
        return {}

    def state(self):
        self._check_up()
        if self.failed_unacked:
            return {'state': 'failed', 'reason': 'a failed workflow'}
        if self.running():
            return {'state': 'busy', 'reason': 'running'}
        return {'state': 'claimed' if self._live() else 'lazy', 'reason': ''}

    def request(self, method, path, body=None):
        self._check_up()
        if method == 'POST' and path == '/v1/workflows':
            live = self._live()
            held = None if live is None else (live['id'], live['secret'], live['fencing'])
            if held != (body['claim_id'], body['secret'], body['fencing']):
                raise agent_client.AgentConflict('HTTP 409 stale_claim: not the current claim', status=409, code='stale_claim')
            if self.running():
                raise agent_client.AgentConflict('HTTP 409 busy', status=409, code='busy')
            if body['image'] != 'allowed:1':
                raise agent_client.AgentAuthError('HTTP 403 image_not_allowed: not in the allow-list', status=403)
            workflow_id = 'w%d' % next(self.ids)
            doc = {'id': workflow_id, 'name': body['name'], 'status': 'running', 'exit_code': None, 'claim_id': live['id'],
                   'fencing': live['fencing'], 'log_tail': '', 'image': body['image'], 'source': 'docker'}
            self.runs[workflow_id] = doc
            self.started.append((workflow_id, live['fencing'], body['labels']['orchestra.queue.job']))
            return dict(doc, status='running')
        if method == 'GET' and path == '/v1/workflows':
            return {'workflows': [dict(doc) for doc in self.runs.values()]}
        if method == 'GET' and path.startswith('/v1/workflows/'):
            doc = self.runs.get(path.rsplit('/', 1)[1])
            if doc is None:
                raise agent_client.AgentNotFound('HTTP 404 not_found', status=404)
            return dict(doc)
        if method == 'POST' and path.endswith('/cancel'):
            doc = self.runs[path.split('/')[3]]
            if doc['claim_id'] != body['claim_id']:
                raise agent_client.AgentConflict('HTTP 409 foreign_claim', status=409)
            if doc['status'] == 'running':
                doc['status'] = 'cancelled'
            return dict(doc)
        raise agent_client.AgentNotFound('HTTP 404 no route %s %s' % (method, path), status=404)

    def start_workflow(self, claim, spec):
        body = agent_client.workflow_body(claim, spec)
        return self.request('POST', '/v1/workflows', body)

    def workflow_status(self, workflow_id):
        return self.request('GET', '/v1/workflows/' + workflow_id)

    def cancel_workflow(self, claim, workflow_id):
        return self.request('POST', '/v1/workflows/%s/cancel' % workflow_id, {'claim_id': claim['id'], 'secret': claim['secret']})

    def workflows(self):
        return self.request('GET', '/v1/workflows')['workflows']

    def finish_all(self, exit_code=0):
        for doc in self.running():
            doc['status'] = 'succeeded' if exit_code == 0 else 'failed'
            doc['exit_code'] = exit_code
            doc['log_tail'] = 'boom' if exit_code else 'ok'
            if exit_code:
                self.failed_unacked = True


class Fleet:
    def __init__(self, names, clock):
        self.agents = dict((name, FakeAgent(name, clock)) for name in names)

    def factory(self, owner):
        def build(engine, _credentials=None):
            return fleet_driver.FleetHostDriver(engine['name'], self.agents[engine['name']], owner, claim_ttl=30)
        return build


def make_queue(tmp_path, fleet, clock, owner='ctl-a:1:x', **options):
    queue = FleetQueue('sqlite:///' + str(tmp_path / 'q.db'), clock=clock, sleep=clock.sleep, owner=owner, **options)
    queue._factories[FLEET] = fleet.factory(queue.owner)
    for name in fleet.agents:
        queue.store.upsert_engine(name, clock(), kind=FLEET, url='http://%s:9009' % name, slots=1)
    return queue


SPEC = {'name': 'wf', 'image': 'allowed:1', 'command': ['sh', '-c', 'true']}


def spec(index, **extra):
    return dict(SPEC, name='wf-%d' % index, **extra)


def drive(queue, fleet, rounds=200, finish=True):
    for _round in range(rounds):
        queue.clock.sleep(1.0)
        queue.drive_once()
        if finish:
            for agent in fleet.agents.values():
                agent.finish_all()
        if not queue.store.unfinished_count():
            return


def test_every_workflow_runs_once_and_no_host_runs_two(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1', 'h2', 'h3'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    ids = [queue.enqueue_workflow(spec(i), request_id='r%d' % i)[1]['id'] for i in range(20)]
    drive(queue, fleet)
    jobs = [queue.job(i) for i in ids]
    assert [j['state'] for j in jobs] == ['SUCCEEDED'] * 20
    started = [entry[2] for agent in fleet.agents.values() for entry in agent.started]
    assert sorted(started) == sorted(str(i) for i in ids)           # each exactly once
    assert all(agent.claim is None for agent in fleet.agents.values())   # every claim released
    assert all(j['kind'] == 'fleet' and j['workflow_id'] for j in jobs)


def test_masking_queue_leaves_workflows_alone_and_fleet_leaves_masking(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    _created, job = queue.enqueue_workflow(spec(1))
    masking = MaskingQueue('sqlite:///' + str(tmp_path / 'q.db'), clock=clock, sleep=clock.sleep)
    masking.drive_once()
    assert queue.job(job['id'])['state'] == 'SCHEDULED'   # placed by any scheduler, started only by a fleet driver
    assert not fleet.agents['h1'].started
    with pytest.raises(NoCarrier):
        masking.enqueue('mask_a', request_id='m1')   # a fleet host never carries a masking job
    drive(queue, fleet)
    assert queue.job(job['id'])['state'] == 'SUCCEEDED'


def test_failed_workflow_is_recorded_and_host_stays_out_until_lazy(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1', 'h2'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    _c, bad = queue.enqueue_workflow(spec(1), host='h1')
    queue.drive_once()
    fleet.agents['h1'].finish_all(exit_code=3)
    drive(queue, fleet, rounds=3, finish=False)
    job = queue.job(bad['id'])
    assert job['state'] == 'FAILED' and job['error_kind'] == 'job_failed'
    assert 'exit code 3' in job['error'] and 'boom' in job['error']
    assert fleet.agents['h1'].claim is None
    _c, later = queue.enqueue_workflow(spec(2))
    drive(queue, fleet)
    assert queue.job(later['id'])['state'] == 'SUCCEEDED'
    assert queue.job(later['id'])['engine'] == 'h2'   # h1 is failed until acknowledged


def test_host_that_vanishes_before_the_start_gives_the_job_back(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1', 'h2'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    fleet.agents['h1'].gone = True
    ids = [queue.enqueue_workflow(spec(i))[1]['id'] for i in range(4)]
    drive(queue, fleet)
    assert [queue.job(i)['state'] for i in ids] == ['SUCCEEDED'] * 4
    assert all(queue.job(i)['engine'] == 'h2' for i in ids)
    history = queue.info(jobs=False, engines=False, history_for=ids)['history']
    assert any('nothing was started' in (h['detail'] or '') for entries in history.values() for h in entries)


def test_a_claim_that_expires_before_the_start_never_double_books(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    agent = fleet.agents['h1']
    _c, job = queue.enqueue_workflow(spec(1))
    queue.schedule_step()
    driver = queue.driver(queue.store.engines(['h1'])[0])
    row = queue.store.claim_scheduled('h1', 'tok', clock(), 30, 1, 'starting')[0]
    fence = driver.start_marker(row)
    clock.now += 31                                    # the claim lapses on the agent
    rival = agent.create_claim('rival', 60)            # and a rival claims the host
    with pytest.raises(Exception) as refused:
        driver.start(dict(row, start_marker=fence))
    assert 'nothing was started' in str(refused.value)
    assert not agent.started
    agent.release_claim(rival['id'], rival['secret'])


def test_reconcile_fences_off_a_lost_start_before_saying_none(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1'], clock)
    agent = fleet.agents['h1']
    driver = fleet.factory('me')({'name': 'h1'})
    fence = driver.start_marker({'id': 7})
    row = {'id': 7, 'request_id': 'r', 'start_marker': fence, 'spec': json.dumps(SPEC)}
    assert driver.start(row).status == 'RUNNING'
    again = fleet.factory('other')({'name': 'h1'})      # another process, after a lost answer
    assert again.reconcile(row).execution_id == fence
    # Nothing started under a fence: reconcile raises the fence first, so the old start can never run.
    agent.finish_all()
    agent.claim = None
    lost = {'id': 8, 'request_id': 'r8', 'start_marker': agent.fencing + 0, 'spec': json.dumps(SPEC)}
    fence2 = driver.start_marker(lost)
    lost['start_marker'] = fence2
    agent.claim['expires_at'] = clock() - 1            # its holder died; the claim lapsed
    assert again.reconcile(lost) is None
    assert agent.fencing > fence2
    with pytest.raises(Exception):
        driver.start(lost)                             # the late start of the dead holder is refused
    assert len(agent.started) == 1


def test_two_controllers_share_the_fleet_without_double_booking(tmp_path):
    clock = Clock()
    fleet = Fleet(['h%d' % i for i in range(4)], clock)
    first = make_queue(tmp_path, fleet, clock, owner='ctl-a:1:a')
    second = make_queue(tmp_path, fleet, clock, owner='ctl-b:2:b')
    ids = [first.enqueue_workflow(spec(i), request_id='r%d' % i)[1]['id'] for i in range(16)]
    for _round in range(200):
        first.poll_step(close_drivers=False)
        second.schedule_step()
        second.poll_step(close_drivers=False)
        first.schedule_step()
        clock.sleep(1.0)
        for agent in fleet.agents.values():
            assert len(agent.running()) <= 1
            agent.finish_all()
        if not first.store.unfinished_count():
            break
    assert [first.job(i)['state'] for i in ids] == ['SUCCEEDED'] * 16
    started = sorted(entry[2] for agent in fleet.agents.values() for entry in agent.started)
    assert started == sorted(str(i) for i in ids)


def test_enqueue_rules(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    created, job = queue.enqueue_workflow(spec(1), request_id='same')
    again, same = queue.enqueue_workflow(spec(1), request_id='same')
    assert created and not again and same['id'] == job['id']
    with pytest.raises(InvalidRequest, match='another spec'):
        queue.enqueue_workflow(dict(spec(1), command=['false']), request_id='same')
    with pytest.raises(UnknownEngine):
        queue.enqueue_workflow(spec(2), host='nope')
    created, preview = queue.enqueue_workflow(spec(3), dry_run=True)
    assert created and preview['id'] is None and queue.store.unfinished_count() == 1
    with pytest.raises(InvalidRequest):
        workflow_spec({'name': 'x', 'image': 'i', 'files': [{'path': 'relative', 'content': ''}]})
    with pytest.raises(InvalidRequest):
        workflow_spec({'name': 'x', 'image': 'i', 'command': 'sh -c true'})


def test_refused_image_fails_the_job_with_its_kind(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    _c, job = queue.enqueue_workflow(dict(spec(1), image='evil:1'))
    drive(queue, fleet, rounds=5)
    job = queue.job(job['id'])
    assert job['state'] == 'FAILED' and job['error_kind'] == 'workflow_refused'
    assert fleet.agents['h1'].claim is None


def test_cancel_a_running_workflow(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    _c, job = queue.enqueue_workflow(spec(1))
    queue.drive_once()
    assert queue.job(job['id'])['state'] == 'RUNNING'
    queue.cancel(job['id'])
    assert queue.job(job['id'])['state'] == 'CANCELLED'
    assert fleet.agents['h1'].claim is None


def test_host_verdicts():
    assert host_verdict({'name': 'a', 'state': 'lazy'}, False) is None
    assert host_verdict({'name': 'a', 'state': 'busy', 'reason': 'x'}, True) is None
    assert 'busy' in host_verdict({'name': 'a', 'state': 'busy', 'reason': 'x'}, False)
    assert 'failed' in host_verdict({'name': 'a', 'state': 'failed', 'reason': 'x'}, True)


def test_fence_of_reads_field_or_name():
    assert fleet_driver.fence_of({'fencing': 4}) == 4
    assert fleet_driver.fence_of({'name': fleet_driver.workflow_name(9, 12)}) == 12
    assert fleet_driver.fence_of({'name': 'other'}) is None


def test_spec_from_options_and_ini():
    from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_module import spec_from, summary_of
    spec, request_id, host, priority = spec_from({'name': 'a', 'ini': '[s]\nid = 1\n', 'request_id': 'b/a'},
                                                 {'image': 'img', 'command': ['run'], 'ini_path': '/w/x.ini', 'priority': 3})
    assert (request_id, host, priority) == ('b/a', None, 3)
    assert spec['files'] == [{'path': '/w/x.ini', 'content': '[s]\nid = 1\n'}]
    assert spec['env'] == {'ORCHESTRA_WORKFLOW_INI': '/w/x.ini'} and spec['image'] == 'img' and spec['command'] == ['run']
    assert workflow_spec(spec)['name'] == 'a'
    with pytest.raises(ValueError, match='unknown workflow keys'):
        spec_from({'nmae': 'typo'})
    summary = summary_of([{'state': 'SUCCEEDED'}, {'state': 'FAILED', 'job_name': 'x', 'engine': 'h', 'error': 'exit code 3'}])
    assert summary['total'] == 2 and summary['succeeded'] == 1
    assert summary['failed'] == [{'name': 'x', 'request_id': None, 'host': 'h', 'state': 'FAILED', 'error': 'exit code 3'}]


def test_queue_info_shows_both_kinds(tmp_path):
    clock = Clock()
    fleet = Fleet(['h1'], clock)
    queue = make_queue(tmp_path, fleet, clock)
    queue.store.upsert_engine('eng1', clock(), url='https://eng1', slots=2)
    queue.enqueue_workflow(spec(1))
    info = queue.info()
    assert sorted((e['name'], e['kind']) for e in info['engines']) == [('eng1', 'masking'), ('h1', 'fleet')]
    assert [j['kind'] for j in info['jobs']] == ['fleet']
    assert 'claim_secret' not in info['jobs'][0]
    with pytest.raises(InvalidRequest, match='already registered as a fleet'):
        queue.store.upsert_engine('h1', clock(), url='https://h1', slots=1)
