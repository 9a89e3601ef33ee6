# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The queue facade for workflow jobs on the fleet: the masking queue's store, states, placement, lifecycle
and waiting, with fleet hosts as the capacity (fleet_driver) and the fleet's own sources for them.

    queue = FleetQueue(store_url, hosts=['10.0.0.5', '10.0.0.6'], token=auth)   # or subnets=[...]
    queue.refresh_hosts()                                   # discovery -> fleet host rows (also done while waiting)
    created, job = queue.enqueue_workflow({'name': 'sample-7', 'image': 'busybox:1', 'command': ['sh', '-c', 'true']},
                                          request_id='sample-7')
    queue.wait([job['id']], timeout=3600)

A fleet host is registered under the name it was given (an address or a host name) with `slots` =
workflows_per_host. Discovery (fleet_discovery, the inventory plugin's) finds which hosts answer and
what their agents say; a host that is failed, double-booked, unreachable or busy with work the queue
did not start is kept out of placement until its agent says it is lazy again (the lifecycle's probe).
A swept address that stops answering is kept out the same way; a workflow placed on a host that vanished
since is given back to the queue by its failed claim (nothing started) and placed on another host.
"""

import ipaddress
import json
import threading
import time
import uuid

from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_discovery
from ansible_collections.orchestra.fleet.plugins.module_utils.agent_client import agent_url
from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_driver import FleetDriverFactory
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_errors import InvalidRequest, NoCarrier, UnknownEngine
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue, _validate_int, _validate_name
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import (
    CANCELLED, FAILED, FLEET, QUEUED, SLOT_STATES, kind_of)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_store import same_request

FLEET_LEASE = 'driver:fleet'
WORKER_PAUSE = (0.05, 0.4)   # a host worker's pause after work, and the longest while nothing moves
MAX_NAME = 100
MAX_FILES = 32
MAX_FILE_BYTES = 256 * 1024
# Agent states that mean "keep it out of placement until it is lazy again" (busy/claimed: unless it runs our job).
NOT_USABLE = ('failed', 'double_booked', 'unknown', 'unreachable', 'invalid', 'unprovisioned')


def _text_map(value, what):
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise InvalidRequest('%s must be a mapping of names to strings, got %r' % (what, value))
    return dict((k, '' if v is None else str(v)) for k, v in value.items())


def workflow_spec(spec):
    """Validate a workflow spec -> its canonical dict (the agent checks again; this fails a typo at enqueue).

    name, image (required), command (list of strings or None), env, labels (string maps), files
    ([{path: absolute path in the container, content: text}], mounted read-only by the agent).
    """
    if not isinstance(spec, dict):
        raise InvalidRequest('a workflow spec must be a mapping, got %r' % (spec,))
    unknown = set(spec) - set(('name', 'image', 'command', 'env', 'labels', 'files'))
    if unknown:
        raise InvalidRequest('unknown workflow spec keys: %s' % ', '.join(sorted(unknown)))
    name = _validate_name(spec.get('name'), 'workflow name', MAX_NAME)
    image = _validate_name(spec.get('image'), 'workflow image', 300)
    command = spec.get('command')
    if command is not None:
        if isinstance(command, str) or not isinstance(command, (list, tuple)) or not all(isinstance(c, str) for c in command):
            raise InvalidRequest('workflow command must be a list of strings, got %r' % (command,))
        command = list(command)
    files = []
    for entry in spec.get('files') or ():
        if not isinstance(entry, dict) or set(entry) - set(('path', 'content')) or not isinstance(entry.get('path'), str):
            raise InvalidRequest('each workflow file is {path, content}, got %r' % (entry,))
        path, content = entry['path'], entry.get('content')
        if not path.startswith('/') or '..' in path.split('/'):
            raise InvalidRequest('a workflow file path must be absolute without "..": %r' % path)
        if not isinstance(content, str) or len(content.encode('utf-8')) > MAX_FILE_BYTES:
            raise InvalidRequest('the content of %s must be text of at most %d bytes' % (path, MAX_FILE_BYTES))
        files.append({'path': path, 'content': content})
    if len(files) > MAX_FILES:
        raise InvalidRequest('at most %d files per workflow, got %d' % (MAX_FILES, len(files)))
    return {'name': name, 'image': image, 'command': command, 'env': _text_map(spec.get('env'), 'workflow env'),
            'labels': _text_map(spec.get('labels'), 'workflow labels'), 'files': files}


def spec_text(spec):
    """The one serialisation of a spec (stored, and compared when a request id comes back)."""
    return json.dumps(spec, sort_keys=True, separators=(',', ':'))


def host_verdict(report, runs_ours):
    """A discovery report -> None (usable) or the reason the host stays out of placement. Pure."""
    state = report['state']
    if state == 'lazy':
        return None
    if state in ('busy', 'claimed') and runs_ours:
        return None   # our own workflow (or its claim): its slot is counted by the queue
    if state in ('busy', 'claimed') or state in NOT_USABLE:
        return 'host %s is %s: %s' % (report['name'], state, report.get('reason'))
    return 'host %s: %s' % (report['name'], report.get('reason') or state)


class FleetQueue(MaskingQueue):
    """Workflow jobs on fleet hosts, in the same store as masking jobs (driving only the fleet's)."""

    kinds = (FLEET,)
    leader_lease = FLEET_LEASE

    def __init__(self, store_url, hosts=(), subnets=(), hosts_file=None, exclude=(), port=None, scheme='http', token=None,
                 verify=True, workflows_per_host=1, claim_ttl=60, agent_timeout=5.0, discovery_timeout=2.0,
                 discovery_concurrency=32, host_refresh_interval=30.0, poll_workers=16, **queue_options):
        queue_options.setdefault('start_lease', 30.0)        # a claim and one POST: seconds, not minutes
        queue_options.setdefault('dead_holder_grace', 10.0)
        queue_options.setdefault('probe_interval', 2.0)      # a host kept out comes back soon after it turns lazy
        queue_options.setdefault('retry_delay', 1.0)
        queue_options.setdefault('refresh_interval', 0.2)    # a status GET per running workflow: cheap, and the host's next start waits on it
        super().__init__(store_url, **queue_options)
        self._store_url = store_url
        self.claim_ttl = int(claim_ttl)
        self.agent_timeout = float(agent_timeout)
        self.poll_workers = max(1, int(poll_workers))
        self.only_engines = None   # a worker drives only these hosts (see drive_once)
        self._background = False
        self._threads = []
        self._stop = threading.Event()
        self._permit_until = 0.0
        self._worker_error = None
        self.sources = dict(hosts=list(hosts or ()), subnets=list(subnets or ()), hosts_file=hosts_file,
                            exclude=list(exclude or ()))
        self.port = int(port or 9009)
        self.scheme = scheme
        self.token = token
        self.verify = verify
        self.discovery_timeout = float(discovery_timeout)
        self.discovery_concurrency = max(1, int(discovery_concurrency))
        self.workflows_per_host = _validate_int(workflows_per_host, 'workflows_per_host', minimum=1)
        self.host_refresh_interval = float(host_refresh_interval)
        self._refreshed_at = None
        self._factories[FLEET] = FleetDriverFactory(self.owner, token=token, verify=verify, timeout=agent_timeout,
                                                    claim_ttl=claim_ttl)

    def has_sources(self):
        return any(self.sources[key] for key in ('hosts', 'subnets', 'hosts_file'))

    # ---- capacity ------------------------------------------------------------------------------
    def refresh_hosts(self, dry_run=False):
        """Discover the sources' hosts and register them as fleet capacity -> {'hosts': [...], 'usable': n, 'changed': bool}."""
        if not self.has_sources():
            return {'hosts': [], 'usable': len(self.usable_hosts()), 'changed': False}
        try:
            targets = fleet_discovery.expand_sources(**self.sources)
        except fleet_discovery.FleetConfigError as exc:
            raise InvalidRequest(str(exc))
        reports = fleet_discovery.discover(targets, port=self.port, scheme=self.scheme, token=self.token, verify=self.verify,
                                           timeout=self.discovery_timeout, concurrency=self.discovery_concurrency, ssh_port=0)
        now = self.clock()
        self._refreshed_at = now
        registered = dict((e['name'], e) for e in self._store.engines() if kind_of(e) == FLEET)
        ours = set(row['engine'] for row in self._store.jobs(states=list(SLOT_STATES)) if kind_of(row) == FLEET)
        seen, changed, hosts = set(), False, []
        for report in reports:
            name = report['name']
            verdict = host_verdict(report, name in ours)
            entry = {'name': name, 'state': report['state'], 'reason': report.get('reason'), 'usable': verdict is None}
            hosts.append(entry)
            if report['state'] in ('unreachable', 'invalid', 'unprovisioned') and name not in registered:
                continue   # never an agent here: nothing to register
            seen.add(name)
            url = report.get('agent_url') or agent_url(report.get('address') or name, self.port, self.scheme)
            changes, _engine = self._store.upsert_engine(name, now, dry_run=dry_run, kind=FLEET, url=url,
                                                         slots=self.workflows_per_host)
            changed = changed or bool(changes)
            if dry_run:
                continue
            if verdict is None:
                self._store.mark_engine_reachable(name, now)
            else:
                self._store.mark_engine_unreachable(name, verdict[:300], now)
        if not dry_run:
            for name in sorted(set(registered) - seen):
                if self._in_subnets(name):   # swept, and no longer answers: out of placement until it is lazy again
                    self._store.mark_engine_unreachable(name, 'host %s did not answer the last discovery' % name, now)
        return {'hosts': hosts, 'usable': sum(1 for h in hosts if h['usable']), 'changed': changed}

    def _in_subnets(self, name):
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        for subnet in self.sources['subnets']:
            network = ipaddress.ip_network(str(subnet), strict=False)
            if address.version == network.version and address in network:
                return True
        return False

    def usable_hosts(self):
        return [e for e in self._store.engines() if kind_of(e) == FLEET and e['enabled'] and not e['drained']]

    # ---- driving -------------------------------------------------------------------------------
    # A fleet start waits for the agent's `docker create` and `start` (a third of a second here); one host after the
    # other, ten hosts would wait for each other, and a host turning lazy would wait for the others' starts. So while
    # a FleetQueue waits (and holds the fleet's leader lease), every host has a worker thread of its own: a FleetQueue
    # with its own store connection, drivers and owner that schedules and polls only its host(s) (`only_engines`), in a
    # loop of its own. The store's compare-and-set keeps them (and other processes) apart as it keeps processes apart.

    def wait(self, job_ids, timeout, **options):
        self._background = True
        try:
            return super().wait(job_ids, timeout, **options)
        finally:
            self._background = False
            self._stop_workers()

    def drive_once(self):
        """Refresh the fleet's hosts when due (so capacity follows the fleet as the queue runs), then drive: one
        schedule and one poll step, or, while waiting, the per-host workers (started here, kept going by each call)."""
        if self.has_sources() and (self._refreshed_at is None or self.clock() - self._refreshed_at >= self.host_refresh_interval):
            self.refresh_hosts()
        if not self._background or self.poll_workers <= 1:
            return super().drive_once()
        self._permit_until = time.monotonic() + 5.0   # workers stop by themselves when the waiter stops calling
        if not self._threads:
            self._start_workers()
        error, self._worker_error = self._worker_error, None
        if error is not None:
            raise error
        return {'schedule': {'placed': 0, 'pending': None}, 'poll': {'finished': 0}}

    def _start_workers(self):
        self._stop = threading.Event()
        for index in range(self.poll_workers):
            worker = FleetQueue(self._store_url, token=self.token, verify=self.verify, workflows_per_host=self.workflows_per_host,
                                claim_ttl=self.claim_ttl, agent_timeout=self.agent_timeout, owner='%s:w%d' % (self.owner, index),
                                poll_workers=1, clock=self.clock, sleep=self._sleep, start_lease=self.start_lease,
                                retry_delay=self.retry_delay, max_start_attempts=self.max_start_attempts,
                                probe_interval=self.probe_interval, refresh_interval=self.refresh_interval,
                                dead_holder_grace=self.dead_holder_grace, policy=self.policy)
            worker._factories[FLEET] = self._factories[FLEET]   # pylint: disable=protected-access  # one factory: tests swap it
            thread = threading.Thread(target=self._work, args=(worker, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self, worker, index):
        pause = WORKER_PAUSE[0]
        try:
            while not self._stop.is_set() and time.monotonic() < self._permit_until:
                hosts = sorted(e['name'] for e in worker.store.engines() if kind_of(e) == FLEET)
                worker.only_engines = set(hosts[index::self.poll_workers])
                moved = 0
                if worker.only_engines:
                    moved = worker.schedule_step()['placed']
                    stats = worker.poll_step(close_drivers=False)
                    moved += sum(stats.get(key, 0) for key in ('started', 'finished', 'requeued', 'recovered'))
                pause = WORKER_PAUSE[0] if moved else min(WORKER_PAUSE[1], pause * 2)
                self._stop.wait(pause)
        except Exception as exc:  # pylint: disable=broad-except  # handed to the waiting thread, which raises it
            self._worker_error = exc
        finally:
            worker.close()

    def _stop_workers(self):
        if self._threads:
            self._stop.set()
            for thread in self._threads:
                thread.join(30)
        self._threads = []

    # ---- jobs ----------------------------------------------------------------------------------
    def enqueue_workflow(self, spec, request_id=None, priority=0, host=None, rerun=False, dry_run=False):
        """Queue a workflow -> (created, job_dict); request ids, rerun and dry_run as MaskingQueue.enqueue.

        host: run it on this fleet host only (the old `orchestra schedule IP INI`).
        """
        spec = workflow_spec(spec)
        priority = _validate_int(priority, 'priority')
        if host is not None:
            host = _validate_name(str(host), 'host')
        text = spec_text(spec)
        existing = None
        if request_id is not None:
            request_id = _validate_name(str(request_id), 'request id', 200)
            existing = self._store.find_request(request_id)
        if existing is not None:
            if kind_of(existing) != FLEET:
                raise InvalidRequest('request id %s belongs to masking job %s, not a workflow' % (request_id, existing['job_name']))
            same_request(existing, spec['name'], None)
            if existing['spec'] != text:
                raise InvalidRequest('request id %s already belongs to workflow %s with another spec (queue id %d)'
                                     % (request_id, spec['name'], existing['id']))
            if not (rerun and existing['state'] in (FAILED, CANCELLED)):
                return False, self._job_out(existing)
        if not (dry_run and self.has_sources()):   # a dry run registers no host: the sources stand for them
            self.check_host(host)
        if dry_run:
            preview = dict(existing or {}, id=existing['id'] if existing else None, request_id=request_id, job_name=spec['name'],
                           environment=None, priority=priority, engine_affinity=host, max_memory_mb=None, state=QUEUED,
                           attempt=(existing or {}).get('attempt', 0), reason=None, engine=None, execution_id=None,
                           engine_status=None, rows_masked=None, rows_total=None, error=None, error_kind=None,
                           start_marker=None, cancel_requested=0, submitted_at=self.clock(), scheduled_at=None,
                           started_at=None, finished_at=None, next_try_at=None, kind=FLEET, workflow_id=None)
            return True, self._job_out(preview)
        if existing is not None:
            row = self._store.rerun(existing['id'], existing['attempt'], self.clock(), actor=self.owner, priority=priority,
                                    engine_affinity=host, claim_id=None, claim_secret=None, workflow_id=None)
            return row is not None, self._job_out(row if row is not None else self._store.job(existing['id']))
        created, row = self._store.enqueue(request_id if request_id is not None else _new_id(), spec['name'], None, priority,
                                           host, None, self.clock(), actor=self.owner, kind=FLEET, spec=text)
        return created, self._job_out(row)

    def check_host(self, host=None):
        """Raise unless the fleet has a host for the job: the named one, or any (a workflow must not wait forever)."""
        hosts = [e for e in self._store.engines() if kind_of(e) == FLEET]
        if host is not None and not any(e['name'] == host for e in hosts):
            raise UnknownEngine('no fleet host named %s is known to the queue (known: %s); add it to the hosts; nothing '
                                'was queued' % (host, ', '.join(e['name'] for e in hosts[:10]) or 'none'))
        if host is None and not hosts:
            raise NoCarrier('no fleet host is known to the queue: give hosts or subnets (or the inventory\'s lazy group); '
                            'nothing was queued')


def _new_id():
    return uuid.uuid4().hex
