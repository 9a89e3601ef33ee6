# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The queue's second kind of capacity: a fleet host, driven through its agent (masking_driver's interface).

A fleet host is an engine row of kind 'fleet' (slots = workflows at a time, 1 by default); a workflow job is
a job row of kind 'fleet' whose spec (image, command, env, labels, files) the agent's fenced start runs.
The lifecycle (masking_lifecycle.PollStep) drives it exactly as it drives a Delphix engine:

    start_marker(job)  claim the host through its agent -> the claim's fencing number (committed to the
                       row before the start, as a Delphix start marker is)
    start(job)         POST /v1/workflows with that claim and fence -> the execution id IS the fence
    reconcile(job)     the workflow started under the job's fence, if any (the agent lists it); before
                       answering "none", take a newer claim, so a late start with the old fence is refused
                       by the agent (the fence is checked at the resource, not by any clock)
    statuses / status  GET /v1/workflows/{id}; cancel: POST /v1/workflows/{id}/cancel
    settle(row)        release the host's claim before the job's end is recorded (the host turns lazy)

Only the start's own claim can start anything on the host, so a job runs at most once: every start
carries the fence its row recorded, a rival's claim raises the host's fence, and the agent refuses a
start with any fence but the current one. A host that cannot be claimed (not lazy, gone) provably
started nothing: the job goes back to the queue (EngineNotReached) and another host takes it.

The claim is renewed while the workflow runs (the agent reports a running workload whose claim lapsed
as a double booking) by whichever process follows the job, with the secret the row keeps.
"""

import json
import time

from ansible_collections.orchestra.fleet.plugins.module_utils import agent_client
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_driver import EngineDriver, ExecutionInfo
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import (
    DriverError, EngineJobNotFound, EngineNotReached, EngineUnavailable)

NAME_PREFIX = 'orchestra-wf-'
# The agent's workflow statuses -> the driver's execution statuses (masking_states.from_engine_status reads them).
STATUSES = {'running': 'RUNNING', 'succeeded': 'SUCCEEDED', 'failed': 'FAILED', 'cancelled': 'CANCELLED'}
DETAIL_CHARS = 400


class WorkflowRefused(EngineJobNotFound):
    """The agent refused the workflow itself (image not allowed, bad file): no retry can help; nothing ran."""

    error_kind = 'workflow_refused'


def workflow_name(job_id, fence):
    """The container name of a queue job's start under one fence: unique, and found again by the fence."""
    return '%s%s-f%d' % (NAME_PREFIX, job_id, int(fence))


def fence_of(item):
    """The fencing number a listed workflow was started under (its field, else its name), or None."""
    value = item.get('fencing')
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    name = item.get('name') or ''
    if name.startswith(NAME_PREFIX) and '-f' in name:
        tail = name.rsplit('-f', 1)[1]
        if tail.isdigit():
            return int(tail)
    return None


def execution_status(doc):
    status = str(doc.get('status') or 'unknown').lower()
    return STATUSES.get(status, status.upper())


def start_spec(job, fence):
    """The agent's workflow spec for a job row started under `fence` (agent_client.workflow_body adds the claim)."""
    spec = json.loads(job.get('spec') or '{}')
    labels = dict(spec.get('labels') or {})
    labels.update({'orchestra.queue.job': str(job['id']), 'orchestra.queue.request': str(job.get('request_id'))})
    return {'image': spec['image'], 'command': spec.get('command'), 'env': dict(spec.get('env') or {}), 'labels': labels,
            'files': list(spec.get('files') or []), 'name': workflow_name(job['id'], fence)}


def failure_text(doc):
    """The agent's words on a failed workflow: its exit code and the end of its log."""
    parts = []
    if doc.get('exit_code') is not None:
        parts.append('exit code %s' % doc['exit_code'])
    tail = (doc.get('log_tail') or '').strip()
    if tail:
        parts.append('log: %s' % tail[-DETAIL_CHARS:])
    return '; '.join(parts) or None


class FleetHostDriver(EngineDriver):
    """One fleet host, through its agent (agent_client.AgentClient)."""

    def __init__(self, name, client, owner, claim_ttl=60, monotonic=time.monotonic):
        self.name = name
        self.client = client
        self.owner = owner
        self.claim_ttl = int(claim_ttl)
        self._monotonic = monotonic
        self._claims = {}   # fence -> {'id', 'secret', 'fencing', 'workflow_id', 'renewed'}
        self._docs = {}     # fence -> the agent's last status document

    # ---- what the lifecycle calls ------------------------------------------------------------
    def start_marker(self, job):
        """Claim the host for this job -> the claim's fencing number. Not lazy or not reached: nothing started."""
        try:
            claim = self.client.create_claim(self.owner, self.claim_ttl, note='queue job %s' % job.get('id'))
        except agent_client.AgentConflict as exc:
            raise EngineNotReached('host %s is not lazy: %s; nothing was started' % (self.name, exc.message), status=409)
        except agent_client.AgentError as exc:
            # A claim granted behind a lost answer only expires: nothing was started in any case.
            raise EngineNotReached('cannot claim host %s: %s' % (self.name, exc), status=exc.status)
        fence = int(claim['fencing'])
        self._claims[fence] = {'id': claim['id'], 'secret': claim['secret'], 'fencing': fence, 'workflow_id': None,
                               'renewed': self._monotonic()}
        return fence

    def start(self, job):
        fence = job.get('start_marker')
        claim = self._claims.get(int(fence)) if fence is not None else None
        if claim is None:
            raise DriverError('no claim of host %s for fence %s in this process' % (self.name, fence))
        try:
            doc = self.client.start_workflow(claim, start_spec(job, claim['fencing']))
        except agent_client.AgentTimeout as exc:
            raise EngineUnavailable('host %s: the start was sent, no answer: %s' % (self.name, exc))
        except agent_client.AgentUnreachable as exc:
            self._release(claim)
            raise EngineNotReached('host %s went away before the start: %s' % (self.name, exc))
        except agent_client.AgentConflict as exc:
            # The fence at the resource (our claim lapsed, a rival holds the host), or the host cannot run it now
            # (busy, failed, Docker down, image missing): nothing started, another host may take the job.
            self._release(claim)
            raise EngineNotReached('host %s refused the start (%s); nothing was started' % (self.name, exc.message), status=409)
        except agent_client.AgentHTTPError as exc:
            if exc.status >= 500:
                raise EngineUnavailable('host %s: %s' % (self.name, exc), status=exc.status)   # outcome unknown
            self._release(claim)
            if exc.status in (400, 403, 413, 415, 422):
                raise WorkflowRefused('host %s refused the workflow: %s' % (self.name, exc.message), status=exc.status)
            raise DriverError('host %s: %s' % (self.name, exc), status=exc.status)
        except agent_client.AgentError as exc:
            raise DriverError('host %s: %s' % (self.name, exc), status=exc.status)
        claim['workflow_id'] = doc.get('id')
        return self._info(fence, doc)

    def adopt_fields(self, _row, info):
        claim = self._claims.get(info.execution_id) or {}
        return {'claim_id': claim.get('id'), 'claim_secret': claim.get('secret'), 'workflow_id': claim.get('workflow_id')}

    def reconcile(self, job):
        """The workflow the job's start (under its recorded fence) created, or None: provably none will start."""
        fence = job.get('start_marker')
        if fence is None:
            return None
        found = self._listed(int(fence))
        if found is not None:
            return found
        try:
            newer = self.client.create_claim(self.owner, self.claim_ttl, note='fencing off queue job %s' % job.get('id'))
        except agent_client.AgentError as exc:
            found = self._listed(int(fence))
            if found is not None:
                return found
            raise EngineUnavailable('host %s: cannot prove yet that the start under fence %s never ran (%s)'
                                    % (self.name, fence, exc))
        # A newer fence holds the host: a late start with the old one is refused from now on. Look once more.
        found = self._listed(int(fence))
        self._release({'id': newer['id'], 'secret': newer['secret'], 'fencing': newer['fencing']})
        return found

    def following(self, rows):
        """Learn the claims of the rows about to be refreshed or cancelled; renew those due (a third of the TTL)."""
        now = self._monotonic()
        for row in rows:
            fence = row.get('execution_id')
            if fence is None or not row.get('claim_id'):
                continue
            claim = self._claims.setdefault(int(fence), {'id': row['claim_id'], 'secret': row.get('claim_secret'),
                                                         'fencing': int(fence), 'workflow_id': row.get('workflow_id'),
                                                         'renewed': None})
            if claim['renewed'] is None or now - claim['renewed'] >= self.claim_ttl / 3.0:
                try:
                    self.client.renew_claim(claim['id'], claim['secret'], ttl=self.claim_ttl, fencing=claim['fencing'])
                    claim['renewed'] = now
                except agent_client.AgentError:
                    pass   # ended meanwhile, or the host is away: the refresh says which

    def status(self, execution_id):
        fence = int(execution_id)
        workflow_id = (self._claims.get(fence) or {}).get('workflow_id')
        if workflow_id is None:
            found = self._listed(fence)
            if found is None:
                raise EngineJobNotFound('host %s has no workflow started under fence %d' % (self.name, fence))
            return found
        try:
            doc = self.client.workflow_status(workflow_id)
        except agent_client.AgentNotFound as exc:
            raise EngineJobNotFound('host %s: workflow %s: %s' % (self.name, workflow_id, exc.message), status=404)
        except agent_client.AgentHTTPError as exc:
            raise DriverError('host %s: %s' % (self.name, exc), status=exc.status)
        except agent_client.AgentError as exc:
            raise EngineUnavailable('host %s: %s' % (self.name, exc), status=exc.status)
        return self._info(fence, doc)

    def cancel(self, execution_id, expected_status=None):
        fence = int(execution_id)
        claim = self._claims.get(fence) or {}
        if not claim.get('workflow_id'):
            self.status(fence)   # learns the id from the agent's list
            claim = self._claims.get(fence) or {}
        try:
            doc = self.client.cancel_workflow(claim, claim.get('workflow_id'))
        except agent_client.AgentNotFound as exc:
            raise EngineJobNotFound('host %s: %s' % (self.name, exc.message), status=404)
        except agent_client.AgentHTTPError as exc:
            raise DriverError('host %s refused the cancel: %s' % (self.name, exc.message), status=exc.status)
        except agent_client.AgentError as exc:
            raise EngineUnavailable('host %s: %s' % (self.name, exc), status=exc.status)
        return self._info(fence, doc)

    def settle(self, row):
        """The workflow ended: give the host back (release its claim) before the queue records the end."""
        fence = row.get('execution_id')
        claim = self._claims.pop(int(fence), None) if fence is not None else None
        if claim is None and row.get('claim_id'):
            claim = {'id': row['claim_id'], 'secret': row.get('claim_secret'), 'fencing': fence}
        if claim is not None:
            self._release(claim)

    def probe(self):
        """A host taken out of placement comes back when its agent says it is lazy again."""
        try:
            doc = self.client.state()
        except agent_client.AgentError as exc:
            raise EngineUnavailable('host %s: %s' % (self.name, exc), status=exc.status)
        if doc.get('state') != 'lazy':
            raise EngineUnavailable('host %s is %s: %s' % (self.name, doc.get('state'), doc.get('reason')))

    def failure_detail(self, execution_id):
        doc = self._docs.get(int(execution_id))
        return failure_text(doc) if doc else None

    # ---- helpers -------------------------------------------------------------------------------
    def _info(self, fence, doc):
        self._docs[fence] = doc
        if len(self._docs) > 1000:
            self._docs.pop(next(iter(self._docs)))
        claim = self._claims.get(fence)
        if claim is not None and doc.get('id'):
            claim['workflow_id'] = doc['id']
        # No agent time is taken: the queue records its own times (no clock crosses machines).
        return ExecutionInfo(fence, None, execution_status(doc), None, None, None, None)

    def _listed(self, fence):
        """The workflow started under `fence`, from the agent's list (then its own document), or None."""
        try:
            listed = self.client.workflows()
        except agent_client.AgentError as exc:
            raise EngineUnavailable('host %s: cannot list its workflows: %s' % (self.name, exc), status=exc.status)
        for item in listed:
            if isinstance(item, dict) and item.get('source', 'docker') == 'docker' and fence_of(item) == fence:
                claim = self._claims.setdefault(fence, {'id': item.get('claim_id'), 'secret': None, 'fencing': fence,
                                                        'workflow_id': None, 'renewed': None})
                claim['workflow_id'] = item.get('id') or claim['workflow_id']
                if claim['workflow_id']:
                    return self.status(fence)
                return self._info(fence, item)
        return None

    def _release(self, claim):
        """Release a claim, best effort: one that cannot be released expires after its TTL."""
        if not claim.get('id') or not claim.get('secret'):
            return
        try:
            self.client.release_claim(claim['id'], claim['secret'])
        except agent_client.AgentError:
            pass


class FleetDriverFactory:
    """factory(engine_row, _credentials) -> FleetHostDriver for a fleet host (its agent URL is the row's url)."""

    def __init__(self, owner, token=None, verify=True, timeout=5.0, claim_ttl=60):
        self.owner = owner
        self.token = token       # an agent_client.AgentAuth or token text; memory only, never stored
        self.verify = verify
        self.timeout = float(timeout)
        self.claim_ttl = int(claim_ttl)
        self._sessions = agent_client.ThreadLocalSessions()

    def __call__(self, engine, _credentials=None):
        client = agent_client.AgentClient(engine['url'], token=self.token, timeout=self.timeout, verify=self.verify,
                                          session=self._sessions.get())
        return FleetHostDriver(engine['name'], client, self.owner, claim_ttl=self.claim_ttl)
