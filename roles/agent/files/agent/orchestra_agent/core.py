"""The agent's service layer: composes Docker snapshot, claims, acks and the workflows directory.

HTTP-free, so the same answers can be tested without a server.
"""
import logging
import os
import secrets
import socket

from orchestra_agent import __version__, acks, claims, clock, fenced, payloads, persist, runs, workload

LOG = logging.getLogger('orchestra_agent.core')


def directory_workflows(path):
    """Names in the workflows directory (hidden entries skipped); a missing directory is empty."""
    if not path:
        return []
    try:
        return sorted(entry.name for entry in os.scandir(path) if not entry.name.startswith('.'))
    except OSError:
        return []


IDENTITY_FILE = 'identity.json'


def load_identity(state_dir):
    """This agent's id: random, made once and kept in the state dir, so it survives restarts and upgrades.

    Signatures cover it: a request signed for one agent is refused by every other one.
    """
    path = os.path.join(state_dir, IDENTITY_FILE)
    data = persist.read_json(path, None)
    if data is None:
        data = {'agent_id': secrets.token_hex(16)}
        persist.write_json(path, data)
    if not isinstance(data, dict) or not isinstance(data.get('agent_id'), str) or not data['agent_id']:
        raise persist.StoreError('%s is not an identity file' % path)
    return data['agent_id']


class Agent:
    def __init__(self, settings, watcher, hostname=None):
        persist.ensure_dir(settings.state_dir)
        self.settings = settings
        self.watcher = watcher
        self.hostname = hostname or socket.gethostname()
        self.agent_id = load_identity(settings.state_dir)
        self.claims = claims.ClaimStore(os.path.join(settings.state_dir, claims.FILE_NAME))
        self.acks = acks.AckStore(os.path.join(settings.state_dir, acks.FILE_NAME))
        self.runs = runs.WorkflowRuns(settings, workload.selectors(settings.labels), watcher)

    def _state_fields(self, snapshot, claim):
        return workload.host_state(snapshot.up, snapshot.error, snapshot.records.values(), self.acks.keys,
                                   claim, clock.iso(claim['expires_at']) if claim else None, self.runs.fences)

    def state(self):
        snapshot = self.watcher.snapshot
        claim = self.claims.active()
        out = {'hostname': self.hostname, 'version': __version__}
        out.update(self._state_fields(snapshot, claim))
        out['docker'] = {'reachable': snapshot.up, 'error': snapshot.error, 'synced_at': clock.iso(snapshot.synced_at)}
        out['claim'] = claims.public(claim) if claim else None
        out['fencing'] = self.claims.fencing
        out['updated_at'] = clock.iso(clock.now())
        return out

    def health(self):
        return {'status': 'ok', 'version': __version__, 'docker': 'up' if self.watcher.snapshot.up else 'down',
                'agent_id': self.agent_id}

    def containers(self):
        keys = self.acks.keys
        records = sorted(self.watcher.snapshot.records.values(), key=lambda rec: rec['name'])
        return [workload.public_container(record, keys) for record in records]

    def workflows(self):
        return workload.workflows(self.watcher.snapshot.records.values(), self.acks.keys,
                                  directory_workflows(self.settings.workflows_dir))

    def create_claim(self, owner, ttl, note):
        def refusal(current_owner):
            # Decided under the claims lock, from the newest Docker snapshot.
            fields = self._state_fields(self.watcher.snapshot, None)
            return workload.claim_refusal(fields, current_owner)
        claim = self.claims.create(owner, ttl, note, refusal)
        LOG.info('claim created', extra={'fields': {'claim_id': claim['id'], 'owner': owner, 'fencing': claim['fencing'],
                                                    'expires_at': claim['expires_at']}})
        return claim

    def renew_claim(self, claim_id, secret, ttl, fencing):
        claim = self.claims.renew(claim_id, secret, ttl, fencing)
        LOG.info('claim renewed', extra={'fields': {'claim_id': claim_id, 'expires_at': claim['expires_at']}})
        return claim

    def release_claim(self, claim_id, secret, fencing):
        self.claims.release(claim_id, secret, fencing)
        LOG.info('claim released', extra={'fields': {'claim_id': claim_id}})

    def acknowledge(self, names_or_ids):
        """Acknowledge failed containers (all when None); returns the acknowledged container ids."""
        records = list(self.watcher.snapshot.records.values())
        failed = [rec for rec in records if workload.is_failure(rec)]
        if names_or_ids is not None:
            wanted = set(names_or_ids)
            failed = [rec for rec in failed if rec['name'] in wanted or rec['id'] in wanted
                      or any(rec['id'].startswith(item) for item in wanted if len(item) >= 12)]
        current = {workload.ack_key(rec) for rec in records}
        self.acks.add((workload.ack_key(rec) for rec in failed), lambda key: key in current)
        ids = sorted(rec['id'] for rec in failed)
        if ids:
            LOG.info('failures acknowledged', extra={'fields': {'containers': ids}})
        return ids

    # -- fenced workflows ----------------------------------------------------------------------------
    def start_workflow(self, request):
        """Start a workflow for the holder of the live claim (the request checked by payloads.workflow_start)."""
        if not fenced.image_allowed(request['image'], self.settings.workflow_images):
            raise fenced.Refusal(403, 'image_not_allowed', 'image %s is not in this agent\'s workflow_images allow-list%s'
                                 % (request['image'][:200], '' if self.settings.workflow_images else
                                    ' (empty: fenced starts are disabled on this host)'))
        payloads.workflow_rules(request)
        self.runs.forget_gone(self.watcher.snapshot)

        def start(live, secret_ok):
            refusal = fenced.claim_refusal(live, request['claim_id'], secret_ok, request['fencing'])
            snapshot = self.watcher.snapshot
            if refusal is None:
                refusal = fenced.host_refusal(self._state_fields(snapshot, live), snapshot.records.values(),
                                              request['claim_id'])
            if refusal is not None:
                # A stale or foreign fence is what the fence exists for: worth a line in the log.
                LOG.info('workflow start refused', extra={'fields': {'error': refusal.code, 'claim_id': request['claim_id'],
                                                                     'fencing': request['fencing'], 'reason': refusal.message}})
                raise refusal
            return self.runs.start(request, live)
        return self.claims.fenced(request['secret'], start)

    def _entry(self, workflow_id):
        entry = self.runs.get(workflow_id)
        if entry is None:
            raise fenced.Refusal(404, 'not_found', 'no workflow %s on this host (unknown, or its container is gone)'
                                 % workflow_id)
        return entry

    def workflow(self, workflow_id):
        return self.runs.status(self._entry(workflow_id), self.acks.keys)

    def cancel_workflow(self, workflow_id, claim_id, secret):
        entry = self._entry(workflow_id)
        allowed = self.claims.fenced(secret, lambda live, _ok: fenced.authorised_to_cancel(entry, live, claim_id, secret))
        if not allowed:
            raise fenced.Refusal(409, 'foreign_claim', 'claim %s neither started workflow %s nor holds this host'
                                 % (claim_id, workflow_id))
        stopped = self.runs.cancel(entry)
        if stopped is not None and workload.is_failure(stopped):
            # A cancel is deliberate: its non-zero exit must not turn the host failed.
            key = workload.ack_key(stopped)
            current = {workload.ack_key(rec) for rec in self.watcher.snapshot.records.values()} | {key}
            self.acks.add([key], lambda item: item in current)
        return self.workflow(workflow_id)
