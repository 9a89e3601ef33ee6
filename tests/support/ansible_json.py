"""Read ansible-inventory / ansible JSON output the same way on every supported core.

ansible-core 2.19 writes an unsafe string as ``{"__ansible_unsafe": "..."}`` in
``--list`` output; older cores write the plain string. Tests compare values, so
they unwrap the markers first (keys too: a host var's name may be unsafe).
"""


def plain(value):
    """Return *value* with every ``{"__ansible_unsafe": ...}`` marker replaced by what it wraps."""
    if isinstance(value, dict):
        if set(value) == {'__ansible_unsafe'}:
            return value['__ansible_unsafe']
        return dict((plain(key), plain(item)) for key, item in value.items())
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
