"""The pure decisions of the fenced workflow start (fenced.py), its request validation (payloads.py)
and the double-booking rule for workflows the agent started itself (workload.py)."""
import pytest

from orchestra_agent import claims, fenced, payloads, workload

LIVE = {'id': 'c' * 32, 'fencing': 7, 'owner': 'sched', 'secret_sha256': claims.digest('s3cret')}


def running(name, labels=None, status='running', exit_code=0):
    return workload.record_from_inspect({
        'Id': name + '-id', 'Name': '/' + name, 'Config': {'Image': 'img', 'Labels': labels or {}},
        'State': {'Status': status, 'ExitCode': exit_code, 'StartedAt': '2026-12-04T10:00:00.250000000Z',
                  'FinishedAt': '2026-12-04T10:00:02.750000000Z' if status == 'exited' else '0001-01-01T00:00:00Z'}})


def fenced_labels(claim_id, fence, workflow_id='wf-1'):
    return {workload.CLAIM_ID_LABEL: claim_id, workload.CLAIM_FENCE_LABEL: str(fence), workload.WORKFLOW_ID_LABEL: workflow_id}


@pytest.mark.parametrize('live, claim_id, secret_ok, fencing, code', [
    (None, 'c' * 32, False, 7, 'no_claim'),
    (LIVE, 'a' * 32, False, 6, 'stale_claim'),     # an older claim: it lapsed and the host was re-claimed
    (LIVE, 'a' * 32, False, 8, 'foreign_claim'),   # another holder's
    (LIVE, 'c' * 32, False, 7, 'foreign_claim'),   # the right id with a wrong secret
    (LIVE, 'c' * 32, True, 6, 'stale_claim'),
    (LIVE, 'c' * 32, True, 8, 'stale_claim'),
])
def test_claim_refusals(live, claim_id, secret_ok, fencing, code):
    refusal = fenced.claim_refusal(live, claim_id, secret_ok, fencing)
    assert (refusal.status, refusal.code) == (409, code)


def test_the_live_claim_with_its_secret_and_fence_goes_ahead():
    assert fenced.claim_refusal(LIVE, LIVE['id'], True, 7) is None


def fields(records, up=True):
    return workload.host_state(up, None if up else 'socket gone', records, frozenset(), LIVE, 'later')


def test_host_refusals():
    own = running('own', fenced_labels(LIVE['id'], 7))
    assert fenced.host_refusal(fields([own]), [own], LIVE['id']) is None
    by_hand = running('by-hand')
    refusal = fenced.host_refusal(fields([by_hand]), [by_hand], LIVE['id'])
    assert (refusal.code, refusal.message) == ('busy', 'host is busy: by-hand runs for another claim')
    failed = running('broken', status='exited', exit_code=3)
    assert fenced.host_refusal(fields([failed]), [failed], LIVE['id']).code == 'failed'
    assert fenced.host_refusal(fields([], up=False), [], LIVE['id']).code == 'docker_down'
    done = running('done', status='exited', exit_code=0)
    assert fenced.host_refusal(fields([done]), [done], LIVE['id']) is None


def test_image_allow_list():
    allow = ['orchestra-test/busybox:1', 'registry.example/wf/*']
    assert fenced.image_allowed('orchestra-test/busybox:1', allow)
    assert fenced.image_allowed('registry.example/wf/align:2.1', allow)
    assert not fenced.image_allowed('orchestra-test/busybox:2', allow)
    assert not fenced.image_allowed('registry.example/other:1', allow)
    assert not fenced.image_allowed('anything', [])


def test_the_agents_labels_win_over_the_users():
    labels = fenced.container_labels({'team': 'a', 'work': 'forged'}, [('work', None), ('site', 'x')], 'cid', 7, 'wf-1')
    assert labels == {'team': 'a', 'work': '', 'site': 'x', workload.CLAIM_ID_LABEL: 'cid',
                      workload.CLAIM_FENCE_LABEL: '7', workload.WORKFLOW_ID_LABEL: 'wf-1'}
    with pytest.raises(payloads.BadRequest) as refused:
        payloads.workflow_rules(payloads.workflow_start(start_body(
            labels={'orchestra.workflow.id': 'y', 'orchestra.other': 'z', 'orchestra.claim.id': 'x'})))
    assert (refused.value.code, refused.value.message) == (
        'reserved_label', 'labels the agent sets itself: orchestra.claim.id, orchestra.workflow.id')
    payloads.workflow_rules(payloads.workflow_start(start_body(labels={'orchestra.other': 'z'})))


def test_workflow_ids_are_url_safe_and_unique():
    ids = {fenced.new_workflow_id() for _index in range(100)}
    assert len(ids) == 100
    assert all(item.startswith('wf-') and len(item) == 35 and item[3:].isalnum() for item in ids)


def test_docker_times_and_log_tail():
    assert fenced.docker_time('2026-12-04T10:00:00.250000000Z') == pytest.approx(1796378400.25)
    assert fenced.docker_time('0001-01-01T00:00:00Z') is None
    assert fenced.docker_time('') is None
    assert fenced.bounded_tail(b''.join(b'line %d\n' % n for n in range(500))) == ''.join(
        'line %d\n' % n for n in range(400, 500))
    assert len(fenced.bounded_tail(b'x' * 100000).encode()) == fenced.LOG_TAIL_BYTES
    assert fenced.bounded_tail(b'\xff ok\n') == '\ufffd ok\n'


ENTRY = {'id': 'wf-1', 'claim_id': 'cid', 'fencing': 7, 'image': 'img', 'name': 'orchestra-wf-1', 'container_id': 'x-id',
         'cancelled': False}


def test_status_documents():
    done = fenced.status_document(ENTRY, running('x', status='exited', exit_code=0), frozenset(), 'ok\n', 0)
    assert (done['status'], done['exit_code'], done['elapsed_s'], done['reason']) == ('succeeded', 0, 2.5, None)
    assert (done['started_at'], done['finished_at']) == ('2026-12-04T10:00:00Z', '2026-12-04T10:00:02Z')
    failed_record = running('x', status='exited', exit_code=3)
    failed = fenced.status_document(ENTRY, failed_record, frozenset(), '', 0)
    assert (failed['status'], failed['acknowledged']) == ('failed', False)
    acked = fenced.status_document(ENTRY, failed_record, frozenset([workload.ack_key(failed_record)]), '', 0)
    assert acked['acknowledged'] is True
    cancelled = fenced.status_document(dict(ENTRY, cancelled=True), failed_record, frozenset(), '', 0)
    assert cancelled['status'] == 'cancelled'
    live = fenced.status_document(ENTRY, running('x'), frozenset(), '', fenced.docker_time('2026-12-04T10:00:10Z'))
    assert (live['status'], live['exit_code'], live['finished_at'], live['elapsed_s']) == ('running', None, None, 9.75)
    gone = fenced.status_document(ENTRY, None, frozenset(), '', 0)
    assert (gone['status'], gone['reason'], gone['elapsed_s']) == ('unknown', 'the container is gone', 0.0)
    down = fenced.status_document(ENTRY, None, frozenset(), '', 0, reason='docker: socket gone')
    assert down['reason'] == 'docker: socket gone'


def test_cancel_is_for_the_starting_claim_or_the_current_one():
    entry = dict(ENTRY, secret_sha256=claims.digest('first'))
    assert fenced.authorised_to_cancel(entry, None, 'cid', 'first')
    assert not fenced.authorised_to_cancel(entry, None, 'cid', 'wrong')
    assert fenced.authorised_to_cancel(entry, LIVE, LIVE['id'], 's3cret')
    assert not fenced.authorised_to_cancel(entry, LIVE, LIVE['id'], 'first')
    assert not fenced.authorised_to_cancel(entry, None, LIVE['id'], 's3cret')


def test_a_fenced_start_whose_claim_lapsed_is_busy_not_double_booked():
    rec = running('wf', fenced_labels('old', 4))
    fences = {'wf-1': ('old', 4)}
    fine = workload.host_state(True, None, [rec], frozenset(), None, None, fences)
    assert (fine['state'], fine['double_booking'], fine['reason']) == ('busy', None, '1 workload container running')
    # Not started by this agent (no registry entry, or other labels than it checked): a double booking as before.
    assert workload.double_booking([rec], None, {}) is not None
    assert workload.double_booking([rec], None, {'wf-1': ('old', 5)}) is not None
    # A live claim other than the workflow's is a double booking whoever started it.
    assert workload.double_booking([rec], LIVE, fences) is not None


def start_body(**extra):
    body = {'claim_id': 'c' * 32, 'secret': 's', 'fencing': 7, 'image': 'img'}
    body.update(extra)
    return body


def test_workflow_start_payload_defaults():
    assert payloads.workflow_start(start_body()) == {
        'claim_id': 'c' * 32, 'secret': 's', 'fencing': 7, 'image': 'img', 'command': None, 'env': {}, 'labels': {},
        'files': [], 'name': None}


@pytest.mark.parametrize('extra, code', [
    ({'fencing': None}, 'bad_request'),
    ({'fencing': True}, 'bad_request'),
    ({'image': ''}, 'bad_request'),
    ({'command': 'sh -c x'}, 'bad_request'),
    ({'command': ['ok', 3]}, 'bad_request'),
    ({'env': {'1X': 'v'}}, 'bad_request'),
    ({'env': {'X': 1}}, 'bad_request'),
    ({'labels': {'k': 'v' * 1025}}, 'bad_request'),
    ({'name': '-x'}, 'bad_request'),
    ({'files': [{'path': '/a'}]}, 'bad_request'),
    ({'files': [{'path': '/a', 'content': 'x', 'mode': 1}]}, 'bad_request'),
    ({'files': [{'path': '/', 'content': 'x'}]}, 'bad_path'),
    ({'files': [{'path': '/a//b', 'content': 'x'}]}, 'bad_path'),
    ({'files': [{'path': '/a/./b', 'content': 'x'}]}, 'bad_path'),
    ({'files': [{'path': '/a/../b', 'content': 'x'}]}, 'bad_path'),
    ({'files': [{'path': '/a/b/', 'content': 'x'}]}, 'bad_path'),
    ({'files': [{'path': '/a b', 'content': 'x'}]}, 'bad_path'),
    ({'files': [{'path': '/a', 'content': 'x'}, {'path': '/a', 'content': 'y'}]}, 'bad_path'),
    ({'files': [{'path': '/etc', 'content': 'x'}, {'path': '/etc/x.ini', 'content': 'y'}]}, 'bad_path'),
    # Sorted, /etc/a.ini lies between /etc/a and /etc/a/b: the check must not rely on neighbours.
    ({'files': [{'path': '/etc/a/b', 'content': 'x'}, {'path': '/etc/a.ini', 'content': 'y'},
                {'path': '/etc/a', 'content': 'z'}]}, 'bad_path'),
    ({'volumes': ['/:/host']}, 'bad_request'),
])
def test_workflow_start_payload_refusals(extra, code):
    with pytest.raises(payloads.BadRequest) as refused:
        payloads.workflow_rules(payloads.workflow_start(start_body(**extra)))
    assert refused.value.code == code


def test_sibling_paths_that_share_a_prefix_do_not_collide():
    files = [{'path': '/etc/a', 'content': 'x'}, {'path': '/etc/a.ini', 'content': 'y'}, {'path': '/etc/ab/c', 'content': 'z'}]
    request = payloads.workflow_start(start_body(files=files))
    payloads.workflow_rules(request)
    assert len(request['files']) == 3
