"""Acknowledged failures, persisted so a restart does not bring old failures back."""
import threading

from orchestra_agent import persist

FILE_NAME = 'acks.json'


class AckStore:
    def __init__(self, path):
        self._path = path
        self._lock = threading.Lock()
        data = persist.read_json(path, {'acknowledged': []})
        keys = data.get('acknowledged') if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise persist.StoreError('%s is not an acknowledgements file' % path)
        self._keys = frozenset(keys)

    @property
    def keys(self):
        """An immutable snapshot, safe to read without the lock."""
        return self._keys

    def add(self, new_keys, still_relevant):
        """Persist `new_keys`; forget keys of containers no longer there (`still_relevant(key)` is False)."""
        with self._lock:
            keys = frozenset(key for key in self._keys | set(new_keys) if still_relevant(key))
            if keys != self._keys:
                persist.write_json(self._path, {'acknowledged': sorted(keys)})
                self._keys = keys
