"""The Docker side: a snapshot of the workload containers, kept fresh by the event stream.

A background thread connects, opens the event stream FIRST and then lists and
inspects the workload containers, so no change between the listing and the
stream is lost; afterwards each container event re-inspects that one container.
A second thread pings the engine so a hung (not only a stopped) engine is
noticed. Any failure marks Docker unreachable (with the reason) and the
watcher reconnects with capped exponential backoff. Readers never wait on
Docker: they take the current immutable snapshot.
"""
import logging
import threading

from orchestra_agent import clock, workload

LOG = logging.getLogger('orchestra_agent.docker')
IGNORED_ACTION_PREFIXES = ('exec_', 'health_status', 'top', 'attach', 'resize', 'copy', 'archive-path')


class StreamEnded(ConnectionError):
    """The event stream closed (engine stopped, or the ping closed it after a failure)."""


class Snapshot:
    """What the agent knows about Docker at one moment (never mutated once published)."""

    __slots__ = ('up', 'error', 'synced_at', 'records')

    def __init__(self, up, error, synced_at, records):
        self.up, self.error, self.synced_at, self.records = up, error, synced_at, records


def short_error(exc):
    text = str(exc) or exc.__class__.__name__
    return text if len(text) <= 300 else text[:297] + '...'


def event_container_id(event):
    return event.get('id') or (event.get('Actor') or {}).get('ID')


def event_action(event):
    return event.get('Action') or event.get('status') or ''


class DockerWatcher:
    """Owns the Docker connection; `snapshot` is the only thing the HTTP side reads."""

    def __init__(self, docker_url, label_selectors, ping_interval=5.0, max_backoff=10.0, client_factory=None):
        self._url = docker_url
        self._selectors = label_selectors
        self._filters = {'label': [key if value is None else '%s=%s' % (key, value) for key, value in label_selectors]}
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._client_factory = client_factory or self._default_client
        self._stop = threading.Event()
        self._publish_lock = threading.Lock()
        self._client = None
        self._stream = None
        self._synced = False
        self.events_seen = 0
        self.reconnects = 0
        self.snapshot = Snapshot(False, 'not connected yet', None, {})
        self._threads = [threading.Thread(target=self._watch_loop, name='docker-watch', daemon=True),
                         threading.Thread(target=self._ping_loop, name='docker-ping', daemon=True)]

    def _default_client(self):
        import docker  # deferred so the pure modules import without the SDK
        return docker.DockerClient(base_url=self._url, version='auto', timeout=10)

    def start(self):
        for thread in self._threads:
            thread.start()

    def stop(self):
        self._stop.set()
        self._close_stream()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- publishing (the only writers of self.snapshot) ----------------------
    def _publish_down(self, error):
        with self._publish_lock:
            old = self.snapshot
            self.snapshot = Snapshot(False, error, old.synced_at, old.records)
        # Log the loss and every change of reason, not each identical retry.
        if old.up or old.error != error:
            LOG.warning('docker unreachable', extra={'fields': {'error': error}})

    def _publish_records(self, records):
        with self._publish_lock:
            was_up = self.snapshot.up
            self.snapshot = Snapshot(True, None, clock.now(), records)
        if not was_up:
            LOG.info('docker connected', extra={'fields': {'containers': len(records)}})

    def _publish_one(self, container_id, record):
        with self._publish_lock:
            old = self.snapshot
            if not old.up:
                return
            records = dict(old.records)
            if record is None:
                records.pop(container_id, None)
            else:
                records[container_id] = record
            self.snapshot = Snapshot(True, None, clock.now(), records)

    def observe(self, record):
        """Publish a record the agent just got from Docker itself (a container it started), ahead of its event."""
        if workload.labels_match(record['labels'], self._selectors):
            self._publish_one(record['id'], record)

    # -- the watcher -----------------------------------------------------------
    def _inspect(self, client, container_id):
        """The container's record, or None when it is gone or not a workload container."""
        import docker  # pylint: disable=import-outside-toplevel
        try:
            attrs = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        record = workload.record_from_inspect(attrs)
        return record if workload.labels_match(record['labels'], self._selectors) else None

    def _full_sync(self, client):
        records = {}
        for summary in client.api.containers(all=True, filters=self._filters):
            record = self._inspect(client, summary['Id'])
            if record is not None:
                records[record['id']] = record
        self._publish_records(records)

    def _handle_event(self, client, event):
        if event.get('Type', 'container') != 'container':
            return
        action = event_action(event)
        container_id = event_container_id(event)
        if not container_id or action.startswith(IGNORED_ACTION_PREFIXES):
            return
        self.events_seen += 1
        record = None if action == 'destroy' else self._inspect(client, container_id)
        self._publish_one(container_id, record)

    def _session(self):
        client = self._client_factory()
        self._client = client
        # Stream first, then list: events that happen during the listing wait in the stream.
        self._stream = client.api.events(decode=True, filters=dict(self._filters, type=['container']))
        # stop() sets the flag before it closes self._stream: one of the two always sees the other.
        if self._stop.is_set():
            return
        self._full_sync(client)
        self._synced = True
        for event in self._stream:
            if self._stop.is_set():
                return
            self._handle_event(client, event)
        if not self._stop.is_set():
            raise StreamEnded('docker event stream ended')

    def _close_stream(self):
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # pylint: disable=broad-except  # closing a dead stream may fail any way
                pass

    def _close_client(self):
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def _watch_loop(self):
        backoff = 0.5
        while not self._stop.is_set():
            self._synced = False
            try:
                self._session()
            except Exception as exc:  # pylint: disable=broad-except  # any failure means: reconnect
                if self._stop.is_set():
                    break
                # When the ping already closed the stream, its error is the better reason.
                if not (isinstance(exc, StreamEnded) and not self.snapshot.up):
                    self._publish_down(short_error(exc))
            finally:
                self._close_stream()
                self._close_client()
            if self._stop.is_set():
                break
            self.reconnects += 1
            self._stop.wait(backoff)
            # A session that got as far as a full sync starts the backoff over.
            backoff = 0.5 if self._synced else min(backoff * 2, self._max_backoff)

    def _ping_loop(self):
        while not self._stop.wait(self._ping_interval):
            client = self._client
            if client is None or not self.snapshot.up:
                continue
            try:
                client.api.ping()
            except Exception as exc:  # pylint: disable=broad-except
                self._publish_down(short_error(exc))
                self._close_stream()  # wakes the watcher, which reconnects
