"""Workflows this agent started: their registry on disk, their files, and the Docker calls for them.

The decisions (who may start, what the labels are, what a status is) are in fenced.py; this
module only does what they decided. The registry (workflows.json in the state dir) keeps what
Docker does not: the digest of the starting claim's secret (to authorise its cancel later),
whether the agent cancelled it, and where its files are. Everything else is read from Docker.

Files are written into <state_dir>/workflows/<id>/ (0700, this agent's user), one file per
entry (0644, so any user in the container can read it), and bind-mounted read-only, each at
its own path. The directory goes when the container is gone.
"""
import logging
import os
import shutil
import threading
import time

from orchestra_agent import clock, fenced, persist, workload

LOG = logging.getLogger('orchestra_agent.workflows')
FILE_NAME = 'workflows.json'
FILES_DIR = 'workflows'
CANCEL_GRACE = 10
DOCKER_TIMEOUT = 10
# A registry entry whose container Docker no longer lists is forgotten after this long (seconds),
# so an entry written just before its container appears in the event-fed snapshot is kept.
FORGET_AFTER = 60.0
ENTRY_KEYS = frozenset(('id', 'name', 'image', 'claim_id', 'fencing', 'secret_sha256', 'cancelled', 'files_dir',
                        'container_id', 'created_at'))


def _docker_error(exc):
    import docker  # pylint: disable=import-outside-toplevel
    explanation = getattr(exc, 'explanation', None) or str(exc) or exc.__class__.__name__
    if isinstance(exc, docker.errors.ImageNotFound):
        return fenced.Refusal(409, 'image_missing', 'image not present in this host\'s Docker (the agent never pulls): %s'
                              % str(explanation)[:300])
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 409:
        return fenced.Refusal(409, 'name_conflict', str(explanation)[:300])
    return fenced.Refusal(502, 'docker_error', 'docker: %s' % str(explanation)[:300])


class WorkflowRuns:
    def __init__(self, settings, selectors, watcher):
        self._state_dir = settings.state_dir
        self._docker_url = settings.docker_url
        self._network = settings.workflow_network
        self._selectors = selectors
        self._watcher = watcher
        self._path = os.path.join(settings.state_dir, FILE_NAME)
        self._lock = threading.Lock()
        self._local = threading.local()
        data = persist.read_json(self._path, {'workflows': []})
        entries = data.get('workflows') if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(isinstance(item, dict) and ENTRY_KEYS <= set(item) for item in entries):
            raise persist.StoreError('%s is not a workflows file' % self._path)
        self._entries = {}
        self.fences = {}
        self._publish({item['id']: item for item in entries})

    # -- registry --------------------------------------------------------------------------------
    def get(self, workflow_id):
        return self._entries.get(workflow_id)

    def _publish(self, entries):
        self._entries = entries
        # What each start was fenced with (workload.double_booking): kept ready, /v1/state reads it often.
        self.fences = {key: (item['claim_id'], item['fencing']) for key, item in entries.items()}

    def _save(self, entries):
        persist.write_json(self._path, {'workflows': sorted(entries.values(), key=lambda item: item['created_at'])})
        self._publish(entries)

    def _put(self, entry):
        with self._lock:
            entries = dict(self._entries)
            entries[entry['id']] = entry
            self._save(entries)

    def _drop(self, workflow_id):
        with self._lock:
            entries = dict(self._entries)
            entry = entries.pop(workflow_id, None)
            if entry is not None:
                self._save(entries)
        if entry is not None:
            shutil.rmtree(entry['files_dir'], ignore_errors=True)

    def forget_gone(self, snapshot):
        """Drop entries (and their files) whose containers Docker no longer lists."""
        if not snapshot.up:
            return
        now = clock.now()
        for entry in list(self._entries.values()):
            if entry['container_id'] not in snapshot.records and now - entry['created_at'] > FORGET_AFTER:
                LOG.info('workflow forgotten (container gone)', extra={'fields': {'workflow_id': entry['id']}})
                self._drop(entry['id'])

    # -- Docker ------------------------------------------------------------------------------------
    def _client(self):
        # One client per thread: the SDK's HTTP session is not documented as thread-safe.
        client = getattr(self._local, 'client', None)
        if client is None:
            import docker  # pylint: disable=import-outside-toplevel  # the pure modules import without the SDK
            client = docker.DockerClient(base_url=self._docker_url, version='auto', timeout=DOCKER_TIMEOUT)
            self._local.client = client
        return client

    def _write_files(self, workflow_id, files):
        """Write each file's content; -> [(its host path, its container path)]."""
        directory = os.path.join(self._state_dir, FILES_DIR, workflow_id)
        persist.ensure_dir(directory)
        written = []
        try:
            for index, item in enumerate(files):
                host_path = os.path.join(directory, 'f%02d' % index)
                fd = os.open(host_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, 'wb') as handle:
                    handle.write(item['content'].encode('utf-8'))
                    os.fchmod(handle.fileno(), 0o644)  # the unit's UMask would hide it from the container's user
                written.append((host_path, item['path']))
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise persist.StoreError('cannot write workflow files in %s: %s' % (directory, exc))
        return directory, written

    def start(self, request, claim):
        """Create and start the container (the caller holds the claims lock and checked the fence)."""
        import docker  # pylint: disable=import-outside-toplevel
        workflow_id = fenced.new_workflow_id()
        name = request['name'] or fenced.default_name(workflow_id)
        directory, written = self._write_files(workflow_id, request['files'])
        client = self._client()
        labels = fenced.container_labels(request['labels'], self._selectors, claim['id'], claim['fencing'], workflow_id)
        mounts = [docker.types.Mount(target, source, type='bind', read_only=True) for source, target in written]
        entry = {'id': workflow_id, 'name': name, 'image': request['image'], 'claim_id': claim['id'],
                 'fencing': claim['fencing'], 'secret_sha256': claim['secret_sha256'], 'cancelled': False,
                 'files_dir': directory, 'container_id': None, 'created_at': clock.now()}
        try:
            created = client.api.create_container(
                request['image'], command=request['command'], environment=request['env'], labels=labels, name=name,
                host_config=client.api.create_host_config(mounts=mounts, network_mode=self._network))
        except docker.errors.DockerException as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise _docker_error(exc)
        entry['container_id'] = created['Id']
        try:
            self._put(entry)
        except persist.StoreError:
            # Not recorded, so never started: nothing may run that the agent cannot account for.
            self._remove_quietly(client, created['Id'])
            shutil.rmtree(directory, ignore_errors=True)
            raise
        try:
            client.api.start(created['Id'])
            attrs = client.api.inspect_container(created['Id'])
        except docker.errors.DockerException as exc:
            self._remove_quietly(client, created['Id'])
            self._drop(workflow_id)
            raise _docker_error(exc)
        record = workload.record_from_inspect(attrs)
        # Seen at once, not when the event arrives: a claim decided right after this must count it.
        observe = getattr(self._watcher, 'observe', None)
        if observe is not None:
            observe(record)
        LOG.info('workflow started', extra={'fields': {'workflow_id': workflow_id, 'container_id': created['Id'],
                                                       'image': request['image'], 'claim_id': claim['id'],
                                                       'fencing': claim['fencing']}})
        return {'id': workflow_id, 'container_id': created['Id'], 'name': name, 'status': 'running',
                'claim_id': claim['id'], 'fencing': claim['fencing'], 'image': request['image'],
                'started_at': clock.iso(fenced.docker_time(record['started_at']) or clock.now())}

    @staticmethod
    def _remove_quietly(client, container_id):
        try:
            client.api.remove_container(container_id, force=True)
        except Exception:  # pylint: disable=broad-except  # best effort after a failed start
            pass

    def inspect(self, entry):
        """(record or None when the container is gone, log tail, reason when Docker failed)."""
        import docker  # pylint: disable=import-outside-toplevel
        client = self._client()
        try:
            record = workload.record_from_inspect(client.api.inspect_container(entry['container_id']))
            raw = client.api.logs(entry['container_id'], stdout=True, stderr=True, tail=fenced.LOG_TAIL_LINES)
        except docker.errors.NotFound:
            return None, '', None
        except docker.errors.DockerException as exc:
            return None, '', 'docker: %s' % (str(exc)[:300] or exc.__class__.__name__)
        return record, fenced.bounded_tail(raw), None

    def status(self, entry, acks):
        record, tail, reason = self.inspect(entry)
        return fenced.status_document(entry, record, acks, tail, time.time(), reason)

    def cancel(self, entry):
        """Stop the container; -> the record of the stopped container when this call stopped it, else None."""
        import docker  # pylint: disable=import-outside-toplevel
        client = self._client()
        try:
            attrs = client.api.inspect_container(entry['container_id'])
            if not workload.is_running(workload.record_from_inspect(attrs)):
                return None
            marked = dict(entry, cancelled=True)
            self._put(marked)  # before the stop: an exit seen by anyone from now on reads "cancelled"
            client.api.stop(entry['container_id'], timeout=CANCEL_GRACE)
            record = workload.record_from_inspect(client.api.inspect_container(entry['container_id']))
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise _docker_error(exc)
        LOG.info('workflow cancelled', extra={'fields': {'workflow_id': entry['id'], 'exit_code': record['exit_code']}})
        return record
