"""Request body validation: JSON text -> checked values, or a BadRequest naming the problem. Pure."""
import json
import re

MAX_OWNER = 128
MAX_NOTE = 1024
MAX_SECRET = 256
MAX_ACK_ITEMS = 100
MAX_ACK_ITEM = 256


class BadRequest(Exception):
    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def parse_json(raw, required):
    """Bytes -> JSON object; empty body -> {} unless required."""
    if not raw.strip():
        if required:
            raise BadRequest('bad_request', 'a JSON object body is required')
        return {}
    try:
        data = json.loads(raw.decode('utf-8'))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest('bad_json', 'body is not valid JSON: %s' % str(exc)[:200])
    if not isinstance(data, dict):
        raise BadRequest('bad_request', 'body must be a JSON object')
    return data


def _no_unknown(data, allowed):
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise BadRequest('bad_request', 'unknown field(s): %s' % ', '.join(unknown)[:200])


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _string(data, key, low, high, required):
    value = data.get(key)
    if value is None:
        if required:
            raise BadRequest('bad_request', '%s is required' % key)
        return None
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise BadRequest('bad_request', '%s must be a string of %d to %d characters' % (key, low, high))
    return value


def _int(data, key, low, high, required):
    value = data.get(key)
    if value is None:
        if required:
            raise BadRequest('bad_request', '%s is required' % key)
        return None
    if not _is_int(value) or not low <= value <= high:
        raise BadRequest('bad_request', '%s must be an integer from %d to %d' % (key, low, high))
    return value


def claim_create(data, max_ttl):
    """-> (owner, ttl, note)"""
    _no_unknown(data, ('owner', 'ttl', 'note'))
    return (_string(data, 'owner', 1, MAX_OWNER, True), _int(data, 'ttl', 1, max_ttl, True),
            _string(data, 'note', 0, MAX_NOTE, False))


def claim_update(data, max_ttl):
    """-> (secret, ttl or None, fencing or None)"""
    _no_unknown(data, ('secret', 'ttl', 'fencing'))
    return (_string(data, 'secret', 1, MAX_SECRET, True), _int(data, 'ttl', 1, max_ttl, False),
            _int(data, 'fencing', 0, 2 ** 63 - 1, False))


def claim_release(data, header_secret):
    """-> (secret or None, fencing or None); the secret may come from the X-Claim-Secret header instead.

    No secret at all is not malformed input but a missing credential: the claim store answers 403.
    """
    _no_unknown(data, ('secret', 'fencing'))
    secret = _string(data, 'secret', 1, MAX_SECRET, False)
    if header_secret is not None:
        if not 1 <= len(header_secret) <= MAX_SECRET:
            raise BadRequest('bad_request', 'X-Claim-Secret must be 1 to %d characters' % MAX_SECRET)
        if secret is None:
            secret = header_secret
    return secret, _int(data, 'fencing', 0, 2 ** 63 - 1, False)


def acknowledge(data):
    """-> list of container ids/names, or None for 'every failed container'."""
    _no_unknown(data, ('containers',))
    if 'containers' not in data:
        return None
    items = data['containers']
    if not isinstance(items, list) or len(items) > MAX_ACK_ITEMS:
        raise BadRequest('bad_request', 'containers must be a list of at most %d ids or names' % MAX_ACK_ITEMS)
    for item in items:
        if not isinstance(item, str) or not 1 <= len(item) <= MAX_ACK_ITEM:
            raise BadRequest('bad_request', 'containers must hold ids or names (1 to %d characters)' % MAX_ACK_ITEM)
    return items


# -- fenced workflow starts (POST /v1/workflows) ---------------------------------------------------
MAX_CLAIM_ID = 64
MAX_IMAGE = 512
MAX_COMMAND_ITEMS = 256
MAX_COMMAND_ITEM = 16384
MAX_ENV = 128
MAX_ENV_VALUE = 32768
MAX_ENV_NAME = 256
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
MAX_FILES = 32
MAX_FILE_PATH = 1024
ENV_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
CONTAINER_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')
# One path component: a conservative set, so the path means the same to Docker, the kernel and a shell.
PATH_PART = re.compile(r'^[A-Za-z0-9_.@+=,-]+$')
# Labels the agent sets on a workflow it starts and a request may not: they are the fence at the resource.
RESERVED_LABEL_PREFIXES = ('orchestra.claim.', 'orchestra.workflow.')
WORKFLOW_KEYS = ('claim_id', 'secret', 'fencing', 'image', 'command', 'env', 'labels', 'files', 'name')


def _string_map(data, key, limit, max_value):
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > limit:
        raise BadRequest('bad_request', '%s must be an object of at most %d strings' % (key, limit))
    for name, text in value.items():
        if not isinstance(text, str) or len(text) > max_value or '\x00' in text:
            raise BadRequest('bad_request', '%s[%s] must be a string of at most %d characters' % (key, name[:60], max_value))
    return dict(value)


def _names(mapping, what, max_key, pattern=None):
    for name in mapping:
        if not 1 <= len(name) <= max_key or (pattern is not None and not pattern.match(name)):
            raise BadRequest('bad_request', '%s: bad name %r' % (what, name[:60]))


def _command(data):
    value = data.get('command')
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_COMMAND_ITEMS or not all(
            isinstance(item, str) and len(item) <= MAX_COMMAND_ITEM and '\x00' not in item for item in value):
        raise BadRequest('bad_request', 'command must be a list of at most %d strings (no shell is added), or null'
                         % MAX_COMMAND_ITEMS)
    return list(value)


def container_path(path):
    """A file's mount point, its shape: absolute, no empty parts, conservative characters."""
    if not isinstance(path, str) or not 2 <= len(path) <= MAX_FILE_PATH or not path.startswith('/'):
        raise BadRequest('bad_path', 'a file path must be absolute, 2 to %d characters' % MAX_FILE_PATH)
    for part in path[1:].split('/'):
        if not PATH_PART.match(part):
            raise BadRequest('bad_path', 'bad file path %r: no empty parts; letters, digits and _.@+=,- only' % path[:200])
    return path


def _files(data):
    value = data.get('files')
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_FILES:
        raise BadRequest('bad_request', 'files must be a list of at most %d {"path", "content"} objects' % MAX_FILES)
    files = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {'path', 'content'} or not isinstance(item['content'], str):
            raise BadRequest('bad_request', 'each file is {"path": "/abs/path", "content": "text"}')
        files.append({'path': container_path(item['path']), 'content': item['content']})
    return files


def workflow_start(data):
    """-> dict of the checked start request (claim_id, secret, fencing, image, command, env, labels, files, name)."""
    _no_unknown(data, WORKFLOW_KEYS)
    name = _string(data, 'name', 1, 128, False)
    if name is not None and not CONTAINER_NAME.match(name):
        raise BadRequest('bad_request', 'name must be a container name: [A-Za-z0-9][A-Za-z0-9_.-]*')
    return {
        'claim_id': _string(data, 'claim_id', 1, MAX_CLAIM_ID, True),
        'secret': _string(data, 'secret', 1, MAX_SECRET, True),
        'fencing': _int(data, 'fencing', 0, 2 ** 63 - 1, True),
        'image': _string(data, 'image', 1, MAX_IMAGE, True),
        'command': _command(data),
        'env': _string_map(data, 'env', MAX_ENV, MAX_ENV_VALUE),
        'labels': _string_map(data, 'labels', MAX_LABELS, MAX_LABEL_VALUE),
        'files': _files(data),
        'name': name,
    }


def workflow_rules(request):
    """The rules of a start request that its JSON schema cannot say; BadRequest names the first one broken.

    Paths must be normalised ('.' and '..' parts would let Docker resolve the mount point
    elsewhere), unique, and none inside another (a file cannot hold a mount point); environment
    names must be shell names; label keys 1 to 128 characters and not the agent's own (the fence). Checked after the image allow-list, so a host with
    fenced starts disabled answers every start with the same 403.
    """
    paths = set()
    for item in request['files']:
        path = item['path']
        if any(part in ('.', '..') for part in path.split('/')):
            raise BadRequest('bad_path', 'bad file path %r: no "." or ".." parts' % path[:200])
        if path in paths:
            raise BadRequest('bad_path', 'file path %s is given twice' % path[:200])
        paths.add(path)
    for path in sorted(paths):
        parts = path.split('/')
        for end in range(2, len(parts)):
            if '/'.join(parts[:end]) in paths:
                raise BadRequest('bad_path', 'file paths collide: %s is inside %s' % (path[:200], '/'.join(parts[:end])[:200]))
    _names(request['env'], 'env', MAX_ENV_NAME, ENV_NAME)
    _names(request['labels'], 'labels', MAX_LABEL_KEY)
    reserved = sorted(key for key in request['labels'] if key.startswith(RESERVED_LABEL_PREFIXES))
    if reserved:
        raise BadRequest('reserved_label', 'labels the agent sets itself: %s' % ', '.join(reserved)[:200])


def workflow_cancel(data):
    """-> (claim_id, secret)"""
    _no_unknown(data, ('claim_id', 'secret'))
    return _string(data, 'claim_id', 1, MAX_CLAIM_ID, True), _string(data, 'secret', 1, MAX_SECRET, True)
