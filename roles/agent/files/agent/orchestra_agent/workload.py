"""Pure decisions about workload containers and the host state; no I/O here.

A container record is a plain dict built from `docker inspect` output by
`record_from_inspect`; everything else takes records and returns answers.
"""
from orchestra_agent.config import parse_selector

RUNNING_STATUSES = ('running', 'paused', 'restarting')
ENDED_STATUSES = ('exited', 'dead')
ZERO_TIME_PREFIX = '0001-01-01'
STATE_ORDER = ('unknown', 'failed', 'busy', 'claimed', 'lazy')
# Labels run_workflow puts on a container it starts for a claim (the fence at the resource).
CLAIM_ID_LABEL = 'orchestra.claim.id'
CLAIM_FENCE_LABEL = 'orchestra.claim.fence'
# The id of a workflow the agent started itself (POST /v1/workflows).
WORKFLOW_ID_LABEL = 'orchestra.workflow.id'


def selectors(labels):
    """Config label selectors -> [(key, value or None)]."""
    return [parse_selector(label) for label in labels]


def labels_match(container_labels, label_selectors):
    """Every selector must match (Docker's own --filter label semantics); no selector = match."""
    container_labels = container_labels or {}
    for key, value in label_selectors:
        if key not in container_labels:
            return False
        if value is not None and container_labels[key] != value:
            return False
    return True


def _time_or_none(value):
    if not value or value.startswith(ZERO_TIME_PREFIX):
        return None
    return value


def record_from_inspect(attrs):
    """`docker inspect` JSON -> the record the agent keeps and serves."""
    state = attrs.get('State') or {}
    config = attrs.get('Config') or {}
    status = state.get('Status') or 'unknown'
    ended = status in ENDED_STATUSES
    return {
        'id': attrs.get('Id', ''),
        'name': (attrs.get('Name') or '').lstrip('/'),
        'image': config.get('Image') or attrs.get('Image', ''),
        'status': status,
        'exit_code': state.get('ExitCode') if ended else None,
        'oom_killed': bool(state.get('OOMKilled')),
        'labels': dict(config.get('Labels') or {}),
        'started_at': _time_or_none(state.get('StartedAt')),
        'finished_at': _time_or_none(state.get('FinishedAt')) if ended else None,
    }


def is_running(record):
    return record['status'] in RUNNING_STATUSES


def is_failure(record):
    """Exited non-zero or OOM-killed: a failed workflow (until acknowledged)."""
    if record['status'] not in ENDED_STATUSES:
        return False
    return record['oom_killed'] or record['exit_code'] not in (0, None)


def ack_key(record):
    """One acknowledgement covers one run: a restarted container that fails again needs a new one."""
    return '%s@%s' % (record['id'], record['finished_at'] or '')


def is_unacknowledged_failure(record, acks):
    return is_failure(record) and ack_key(record) not in acks


def describe_failure(record):
    if record['oom_killed']:
        return '%s was OOM-killed' % record['name']
    return '%s exited %s' % (record['name'], record['exit_code'])


def public_container(record, acks):
    out = dict(record)
    out['failed'] = is_failure(record)
    out['acknowledged'] = out['failed'] and ack_key(record) in acks
    return out


def workflow_status(record, acks):
    if is_running(record):
        return 'running'
    if is_failure(record):
        return 'failed'
    if record['status'] in ENDED_STATUSES:
        return 'succeeded'
    return 'present'


def workflows(records, acks, directory_names):
    """Docker workload containers and workflows-directory entries as one list."""
    items = []
    for record in sorted(records, key=lambda rec: rec['name']):
        item = {'name': record['name'], 'source': 'docker', 'status': workflow_status(record, acks),
                'container_id': record['id'], 'exit_code': record['exit_code'],
                'acknowledged': is_failure(record) and ack_key(record) in acks}
        labels = record.get('labels') or {}
        if WORKFLOW_ID_LABEL in labels:
            item['id'] = labels[WORKFLOW_ID_LABEL]
        if CLAIM_ID_LABEL in labels:
            item['claim_id'], item['fencing'] = labels[CLAIM_ID_LABEL], _fence(labels.get(CLAIM_FENCE_LABEL))
        items.append(item)
    for name in sorted(directory_names):
        items.append({'name': name, 'source': 'directory', 'status': 'present'})
    return items


def _plural(count, word):
    return '%d %s%s' % (count, word, '' if count == 1 else 's')


def _fence(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def double_booking(records, claim, fenced_starts=None):
    """None, or {'reason', 'containers'} when running workload carries a claim that is not the live one.

    A container started for a claim carries its id and fencing number. Running under any
    other claim (a rival whose claim lapsed before its `docker run`), under the live claim's
    id with another fencing number, or with claim labels while no claim is live means two
    schedulers may have booked this host: it must never pass as lazy. Pure.

    `fenced_starts` maps the ids of workflows this agent started itself (POST /v1/workflows)
    to the (claim id, fence) it checked under the claims lock at the start. Such a workflow
    whose claim merely lapsed since (no claim is live: its holder stopped renewing, e.g. a
    killed controller) was never double-booked, and the host stays busy while it runs.
    """
    fenced_starts = fenced_starts or {}
    offenders = []
    for rec in sorted(records, key=lambda item: item['name']):
        labels = rec.get('labels') or {}
        if not is_running(rec) or CLAIM_ID_LABEL not in labels:
            continue
        claim_id, fence = labels[CLAIM_ID_LABEL], _fence(labels.get(CLAIM_FENCE_LABEL))
        if claim is None and fenced_starts.get(labels.get(WORKFLOW_ID_LABEL)) == (claim_id, fence):
            continue
        if claim is None:
            why = 'no claim is live'
        elif claim_id != claim['id']:
            why = 'the live claim is %s (fencing %s)' % (claim['id'], claim['fencing'])
        elif fence != claim['fencing']:
            why = 'its fence %s is not the live claim\'s %s' % (labels.get(CLAIM_FENCE_LABEL), claim['fencing'])
        else:
            continue
        offenders.append(({'id': rec['id'], 'name': rec['name'], 'claim_id': claim_id, 'fence': fence}, why))
    if not offenders:
        return None
    first, why = offenders[0]
    reason = 'double booking: %s runs for claim %s (fence %s), but %s' % (
        first['name'], first['claim_id'], first['fence'], why)
    if len(offenders) > 1:
        reason += ' (and %s more)' % _plural(len(offenders) - 1, 'container')
    return {'reason': reason, 'containers': [item for item, _why in offenders]}


def host_state(docker_up, docker_error, records, acks, claim, claim_until, fenced_starts=None):
    """Decide the host state with precedence unknown > failed > busy > claimed > lazy.

    `claim` is the live claim (already checked for expiry) or None; `claim_until`
    its expiry as text; `fenced_starts` as for double_booking. Returns the fields of
    /v1/state that depend on them.
    """
    records = list(records)
    running = [rec for rec in records if is_running(rec)]
    booking = double_booking(records, claim, fenced_starts) if docker_up else None
    failures = sorted((rec for rec in records if is_unacknowledged_failure(rec, acks)), key=lambda rec: rec['name'])
    if not docker_up:
        state, reason = 'unknown', 'docker unreachable: %s' % (docker_error or 'not connected yet')
    elif failures:
        state = 'failed'
        reason = '%s: %s' % (_plural(len(failures), 'failed workflow'), ', '.join(describe_failure(rec) for rec in failures))
    elif booking is not None:
        state, reason = 'busy', booking['reason']  # its containers run: never lazy, never only "claimed"
    elif running:
        state = 'busy'
        reason = '%s running' % _plural(len(running), 'workload container')
    elif claim is not None:
        state, reason = 'claimed', 'claimed by %s until %s' % (claim['owner'], claim_until)
    else:
        state, reason = 'lazy', 'no workload running'
    return {
        'state': state,
        'reason': reason,
        'busy': bool(running),
        'failed': bool(failures),
        'claimed': claim is not None,
        'running': len(running),
        'failed_workflows': len(failures),
        'double_booking': booking,
    }


def claim_refusal(state_fields, claim_owner):
    """Why a new claim must be refused (409 message), or None when the host is lazy."""
    state = state_fields['state']
    if state == 'unknown':
        return 'docker unreachable'
    if state == 'failed':
        return 'host has failed workflows'
    if state_fields.get('double_booking'):
        return 'host is double-booked: %s' % state_fields['double_booking']['reason']
    if state == 'busy':
        return 'host is busy'
    if claim_owner is not None:
        return 'host already claimed by %s' % claim_owner
    return None
