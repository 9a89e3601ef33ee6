"""Request body validation: JSON text -> checked values, or a BadRequest naming the problem. Pure."""
import json

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
