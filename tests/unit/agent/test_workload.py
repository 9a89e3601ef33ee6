from orchestra_agent import workload


def inspect(name='job', status='running', exit_code=0, oom=False, labels=None, finished='2026-11-22T10:00:01.5Z'):
    return {
        'Id': name + '-id', 'Name': '/' + name, 'Image': 'sha256:abc',
        'Config': {'Image': 'orchestra-test/busybox:1', 'Labels': labels or {}},
        'State': {'Status': status, 'ExitCode': exit_code, 'OOMKilled': oom,
                  'StartedAt': '2026-11-22T10:00:00Z', 'FinishedAt': finished if status != 'running' else '0001-01-01T00:00:00Z'},
    }


def record(**kwargs):
    return workload.record_from_inspect(inspect(**kwargs))


def test_record_from_inspect_keeps_what_the_api_serves():
    rec = record(name='job-x', status='exited', exit_code=3)
    assert rec['id'] == 'job-x-id'
    assert rec['name'] == 'job-x'
    assert rec['image'] == 'orchestra-test/busybox:1'
    assert rec['exit_code'] == 3
    assert rec['finished_at'] == '2026-11-22T10:00:01.5Z'


def test_running_container_has_no_exit_code_or_finish_time():
    rec = record(status='running')
    assert rec['exit_code'] is None
    assert rec['finished_at'] is None
    assert workload.is_running(rec)
    assert not workload.is_failure(rec)


def test_failure_means_nonzero_exit_or_oom():
    assert workload.is_failure(record(status='exited', exit_code=3))
    assert workload.is_failure(record(status='exited', exit_code=0, oom=True))
    assert not workload.is_failure(record(status='exited', exit_code=0))
    assert not workload.is_failure(record(status='created', exit_code=0))


def test_labels_match_all_selectors():
    selectors = workload.selectors(['orchestra.workload', 'team=blue'])
    assert workload.labels_match({'orchestra.workload': '', 'team': 'blue'}, selectors)
    assert not workload.labels_match({'orchestra.workload': ''}, selectors)
    assert not workload.labels_match({'orchestra.workload': '', 'team': 'red'}, selectors)
    assert workload.labels_match({}, [])
    assert workload.labels_match(None, [])


def test_ack_covers_one_run_only():
    first = record(status='exited', exit_code=3, finished='2026-11-22T10:00:01Z')
    again = record(status='exited', exit_code=3, finished='2026-11-22T11:00:01Z')
    acks = {workload.ack_key(first)}
    assert not workload.is_unacknowledged_failure(first, acks)
    assert workload.is_unacknowledged_failure(again, acks)


def state(up=True, records=(), acks=(), claim=None, error=None):
    return workload.host_state(up, error, list(records), set(acks), claim, '2026-11-22T12:00:00Z' if claim else None)


def test_precedence_unknown_failed_busy_claimed_lazy():
    failed = record(name='bad', status='exited', exit_code=3)
    running = record(name='run')
    claim = {'owner': 'sched-a'}
    assert state(up=False, records=[failed, running], claim=claim, error='boom')['state'] == 'unknown'
    assert state(records=[failed, running], claim=claim)['state'] == 'failed'
    assert state(records=[running], claim=claim)['state'] == 'busy'
    assert state(claim=claim)['state'] == 'claimed'
    assert state()['state'] == 'lazy'


def test_reasons_say_why():
    assert state(up=False, error='connection refused')['reason'] == 'docker unreachable: connection refused'
    assert state(records=[record(name='job-x', status='exited', exit_code=3)])['reason'] == '1 failed workflow: job-x exited 3'
    oom = record(name='big', status='exited', exit_code=137, oom=True)
    assert 'big was OOM-killed' in state(records=[oom])['reason']
    two = state(records=[record(name='a'), record(name='b')])
    assert two['reason'] == '2 workload containers running'
    assert (two['busy'], two['running']) == (True, 2)
    assert state(claim={'owner': 'sched-a'})['reason'] == 'claimed by sched-a until 2026-11-22T12:00:00Z'
    assert state()['reason'] == 'no workload running'


def test_acknowledged_failure_does_not_fail_the_host():
    failed = record(name='bad', status='exited', exit_code=3)
    out = state(records=[failed], acks=[workload.ack_key(failed)])
    assert out['state'] == 'lazy'
    assert out['failed_workflows'] == 0


def test_unreachable_docker_is_never_lazy():
    assert state(up=False)['state'] == 'unknown'
    assert state(up=False)['reason'].startswith('docker unreachable')


def test_claim_refusals():
    assert workload.claim_refusal(state(up=False), None) == 'docker unreachable'
    assert workload.claim_refusal(state(records=[record()]), None) == 'host is busy'
    assert workload.claim_refusal(state(records=[record(status='exited', exit_code=1)]), None) == 'host has failed workflows'
    assert workload.claim_refusal(state(), 'sched-b') == 'host already claimed by sched-b'
    assert workload.claim_refusal(state(), None) is None


def test_workflows_merge_docker_and_directory():
    acks = set()
    items = workload.workflows([record(name='b', status='exited', exit_code=0), record(name='a')], acks, ['wf1'])
    assert [(item['name'], item['source'], item['status']) for item in items] == [
        ('a', 'docker', 'running'), ('b', 'docker', 'succeeded'), ('wf1', 'directory', 'present')]


CLAIM = {'id': 'live', 'owner': 'sched', 'fencing': 7}


def claimed(claim_id, fence, name='wf', status='running'):
    labels = {workload.CLAIM_ID_LABEL: claim_id}
    if fence is not None:
        labels[workload.CLAIM_FENCE_LABEL] = str(fence)
    return record(name=name, status=status, labels=labels)


def test_workload_of_the_live_claim_is_no_double_booking():
    assert workload.double_booking([claimed('live', 7), record(name='unlabelled')], CLAIM) is None
    # Ended containers of older claims are history, not a booking.
    assert workload.double_booking([claimed('old', 3, status='exited')], CLAIM) is None


def test_foreign_stale_or_orphaned_claims_are_double_bookings():
    foreign = workload.double_booking([claimed('rival', 8)], CLAIM)
    assert foreign['containers'] == [{'id': 'wf-id', 'name': 'wf', 'claim_id': 'rival', 'fence': 8}]
    assert 'the live claim is live (fencing 7)' in foreign['reason']
    stale = workload.double_booking([claimed('live', 6)], CLAIM)
    assert "its fence 6 is not the live claim's 7" in stale['reason']
    assert 'no claim is live' in workload.double_booking([claimed('gone', 5)], None)['reason']
    assert workload.double_booking([claimed('live', None)], CLAIM)['containers'][0]['fence'] is None
    both = workload.double_booking([claimed('live', 7, name='a'), claimed('rival', 8, name='b')], CLAIM)
    assert [item['name'] for item in both['containers']] == ['b']


def test_a_double_booked_host_is_never_lazy_nor_claimable():
    fields = workload.host_state(True, None, [claimed('rival', 8)], frozenset(), CLAIM, 'later')
    assert (fields['state'], fields['double_booking']['containers'][0]['claim_id']) == ('busy', 'rival')
    assert fields['reason'].startswith('double booking: ')
    assert workload.claim_refusal(fields, None).startswith('host is double-booked: ')
    fine = workload.host_state(True, None, [], frozenset(), None, None)
    assert (fine['state'], fine['double_booking']) == ('lazy', None)
