"""Pure decisions of the fenced workflow start: who may start, on which host state, with which labels,
and what a workflow's status is. No I/O here (runs.py does the Docker and disk side).
"""
import uuid
from datetime import datetime, timezone

from orchestra_agent import claims, clock, workload

WORKFLOW_ID_LABEL = workload.WORKFLOW_ID_LABEL
LOG_TAIL_LINES = 100
LOG_TAIL_BYTES = 16384


class Refusal(Exception):
    """A start or cancel is refused: HTTP status, error code, message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def new_workflow_id():
    """Stable, URL-safe, and never reused: 'wf-' and 32 hex digits."""
    return 'wf-' + uuid.uuid4().hex


def image_allowed(image, allow_list):
    """Exact match, or an entry ending in '*' that is a prefix of the image ('registry/app:*')."""
    for entry in allow_list:
        if image == entry or (entry.endswith('*') and image.startswith(entry[:-1])):
            return True
    return False


def claim_refusal(live, claim_id, secret_ok, fencing):
    """Why the start must be refused given the live claim (or None), as a Refusal; None to go ahead.

    `secret_ok` says whether the secret matches the live claim's. Stale means the caller's claim
    is over (it expired, was replaced by a newer fence, or names an older fencing number); foreign
    means it is somebody else's claim (or the secret is wrong). Pure.
    """
    if live is None:
        return Refusal(409, 'no_claim', 'no live claim on this host (claim %s expired or was released)' % claim_id)
    if live['id'] != claim_id:
        if fencing < live['fencing']:
            return Refusal(409, 'stale_claim', 'claim %s (fencing %d) is over: the host is held by fencing %d'
                           % (claim_id, fencing, live['fencing']))
        return Refusal(409, 'foreign_claim', 'the host is held by another claim (fencing %d)' % live['fencing'])
    if not secret_ok:
        return Refusal(409, 'foreign_claim', 'wrong secret for claim %s' % claim_id)
    if fencing != live['fencing']:
        return Refusal(409, 'stale_claim', 'fencing %d is not the claim\'s (%d)' % (fencing, live['fencing']))
    return None


def host_refusal(state_fields, records, claim_id):
    """Why this host cannot take a workflow for `claim_id` now (a Refusal), or None.

    The claim itself was checked; here: Docker must answer, no unacknowledged failure, and no
    running workload container that is not this claim's (another claim's, or one without claim
    labels, which somebody started by hand). Pure.
    """
    if state_fields['state'] == 'unknown':
        return Refusal(409, 'docker_down', state_fields['reason'])
    if state_fields['failed']:
        return Refusal(409, 'failed', 'host has failed workflows: %s' % state_fields['reason'])
    others = sorted(rec['name'] for rec in records
                    if workload.is_running(rec) and (rec.get('labels') or {}).get(workload.CLAIM_ID_LABEL) != claim_id)
    if others:
        return Refusal(409, 'busy', 'host is busy: %s runs for another claim' % ', '.join(others[:5]))
    return None


def container_labels(user_labels, selectors, claim_id, fencing, workflow_id):
    """The started container's labels: the user's, then the workload selectors (so the host counts
    busy) and the fence, which the user's cannot override."""
    labels = dict(user_labels)
    for key, value in selectors:
        labels[key] = '' if value is None else value
    labels[workload.CLAIM_ID_LABEL] = claim_id
    labels[workload.CLAIM_FENCE_LABEL] = str(fencing)
    labels[WORKFLOW_ID_LABEL] = workflow_id
    return labels


def default_name(workflow_id):
    return 'orchestra-' + workflow_id


def docker_time(text):
    """Docker's RFC 3339 time with nanoseconds -> seconds since the epoch (None for none or the zero time)."""
    if not text or text.startswith(workload.ZERO_TIME_PREFIX):
        return None
    main, _dot, rest = text.partition('.')
    fraction = ''.join(ch for ch in rest if ch.isdigit()) if rest else ''
    try:
        moment = datetime.strptime(main.rstrip('Z')[:19], '%Y-%m-%dT%H:%M:%S').replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return moment.timestamp() + (float('0.' + fraction) if fraction else 0.0)


def bounded_tail(raw, lines=LOG_TAIL_LINES, limit=LOG_TAIL_BYTES):
    """The last `lines` lines of a log, and at most `limit` bytes of them, as text (bad UTF-8 replaced)."""
    raw = raw or b''
    kept = raw.splitlines(True)[-lines:]
    data = b''.join(kept)[-limit:]
    return data.decode('utf-8', 'replace')


def status_of(record, cancelled):
    """Docker record (or None when the container is gone) -> the workflow status."""
    if record is None:
        return 'unknown'
    if workload.is_running(record):
        return 'running'
    if record['status'] not in workload.ENDED_STATUSES:
        return 'unknown'  # created but never started, or removing
    if cancelled:
        return 'cancelled'
    return 'failed' if workload.is_failure(record) else 'succeeded'


def status_document(entry, record, acks, log_tail, now, reason=None):
    """A registry entry + its container's record -> the GET /v1/workflows/{id} document. Pure."""
    status = status_of(record, entry.get('cancelled', False))
    started = docker_time(record.get('started_at')) if record else None
    finished = docker_time(record.get('finished_at')) if record else None
    if started is None:
        elapsed = 0.0
    else:
        elapsed = max(0.0, (finished if finished is not None else now) - started)
    if status == 'unknown' and reason is None:
        reason = 'the container is gone' if record is None else 'the container is %s' % record['status']
    return {
        'id': entry['id'],
        'status': status,
        'exit_code': record['exit_code'] if record else None,
        'started_at': clock.iso(started),
        'finished_at': clock.iso(finished),
        'elapsed_s': round(elapsed, 3),
        'log_tail': log_tail,
        'claim_id': entry['claim_id'],
        'fencing': entry['fencing'],
        'image': entry['image'],
        'name': entry['name'],
        'container_id': entry['container_id'],
        'acknowledged': bool(record) and workload.is_failure(record) and workload.ack_key(record) in acks,
        'reason': reason if status == 'unknown' else None,
    }


def authorised_to_cancel(entry, live, claim_id, secret):
    """The claim that started the workflow (its secret), or the host's current claim. Pure."""
    if claim_id == entry['claim_id'] and claims.secret_matches(secret, entry['secret_sha256']):
        return True
    return live is not None and live['id'] == claim_id and claims.secret_matches(secret, live['secret_sha256'])
