"""The one place the agent writes to disk: JSON files replaced atomically."""
import json
import os
import tempfile


class StoreError(Exception):
    """A state file cannot be read or written."""


def read_json(path, default):
    """The file's JSON, or `default` when it does not exist; a corrupt file is an error, never ignored."""
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        raise StoreError('cannot read %s: %s' % (path, exc))


def write_json(path, data):
    """Write temp file + fsync + rename + fsync(dir): readers see the old or the new file, never half."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=directory)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as handle:
                json.dump(data, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_path, path)
        except BaseException:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StoreError('cannot write %s: %s' % (path, exc))


def ensure_dir(path):
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError('cannot create state_dir %s: %s' % (path, exc))
    if not os.access(path, os.W_OK):
        raise StoreError('state_dir %s is not writable' % path)
