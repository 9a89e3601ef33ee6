"""Agent settings: defaults, the JSON config file, CLI overrides, validation.

Everything here is pure apart from reading the config and token files, so a bad
setting is found before anything starts and reported as one clear line.
"""
import json
import os

DEFAULTS = {
    'listen': '0.0.0.0',
    'port': 9009,
    'token': None,
    'token_file': None,
    'auth_reads': False,
    'tls_cert': None,
    'tls_key': None,
    'docker_url': 'unix:///var/run/docker.sock',
    'labels': [],
    'workflows_dir': None,
    'state_dir': '/var/lib/orchestra-agent',
    'max_claim_ttl': 86400,
    'max_body_bytes': 65536,
    'log_level': 'info',
    'threads': 8,
    'max_connections': 512,
    'request_timeout': 10,
    'workflow_images': [],
    'workflow_network': None,
}
LOG_LEVELS = ('debug', 'info', 'warning', 'error')
TOKEN_ENV = 'ORCHESTRA_AGENT_TOKEN'


class ConfigError(Exception):
    """A setting is missing, malformed or contradictory; the message is one line."""


class Settings:
    """Validated settings; attribute names are the config keys (token resolved)."""

    def __init__(self, values):
        self.__dict__.update(values)

    def as_dict(self):
        return dict(self.__dict__)


def load_file(path):
    """Read the JSON config file into a dict (no validation yet)."""
    try:
        with open(path, encoding='utf-8') as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError('cannot read config %s: %s' % (path, exc.strerror or exc))
    except ValueError as exc:
        raise ConfigError('config %s is not valid JSON: %s' % (path, exc))
    if not isinstance(data, dict):
        raise ConfigError('config %s must hold a JSON object' % path)
    return data


def merge(file_values, overrides, env):
    """Defaults < config file < CLI overrides (None means 'not given'); the env token beats the file's."""
    unknown = sorted(set(file_values) - set(DEFAULTS))
    if unknown:
        raise ConfigError('unknown config key(s): %s' % ', '.join(unknown))
    values = dict(DEFAULTS)
    values.update(file_values)
    if env.get(TOKEN_ENV):
        values['token'], values['token_file'] = env[TOKEN_ENV], None
    for key, value in overrides.items():
        if value is None:
            continue
        if key == 'token_file':
            values['token'] = None
        values[key] = value
    return values


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(values, key, low, high):
    value = values[key]
    if not _is_int(value) or not low <= value <= high:
        raise ConfigError('%s must be an integer from %d to %d, got %r' % (key, low, high, value))


def _check_optional_str(values, key):
    value = values[key]
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError('%s must be a non-empty string or null, got %r' % (key, value))


def parse_selector(selector):
    """'key' or 'key=value' -> (key, value or None)."""
    if not isinstance(selector, str) or not selector or selector.startswith('='):
        raise ConfigError('label selector must be "key" or "key=value", got %r' % (selector,))
    key, sep, value = selector.partition('=')
    return (key, value) if sep else (key, None)


def read_token_file(path):
    try:
        with open(path, encoding='utf-8') as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise ConfigError('cannot read token_file %s: %s' % (path, exc.strerror or exc))
    if not token:
        raise ConfigError('token_file %s is empty' % path)
    return token


def validate(values):
    """Check every setting; return Settings with the token read from token_file if needed."""
    values = dict(values)
    for key in ('listen', 'docker_url', 'state_dir'):
        if not isinstance(values[key], str) or not values[key]:
            raise ConfigError('%s must be a non-empty string, got %r' % (key, values[key]))
    for key in ('token', 'token_file', 'tls_cert', 'tls_key', 'workflows_dir'):
        _check_optional_str(values, key)
    _check_int(values, 'port', 0, 65535)
    _check_int(values, 'max_claim_ttl', 1, 10 * 365 * 86400)
    _check_int(values, 'max_body_bytes', 1024, 64 * 1024 * 1024)
    _check_int(values, 'threads', 1, 256)
    _check_int(values, 'max_connections', 16, 65536)
    _check_int(values, 'request_timeout', 1, 3600)
    if not isinstance(values['auth_reads'], bool):
        raise ConfigError('auth_reads must be true or false, got %r' % (values['auth_reads'],))
    if values['log_level'] not in LOG_LEVELS:
        raise ConfigError('log_level must be one of %s, got %r' % (', '.join(LOG_LEVELS), values['log_level']))
    if not isinstance(values['labels'], list):
        raise ConfigError('labels must be a list of "key" or "key=value" selectors')
    for selector in values['labels']:
        parse_selector(selector)
    images = values['workflow_images']
    if not isinstance(images, list) or not all(isinstance(item, str) and item and item != '*' for item in images):
        raise ConfigError('workflow_images must be a list of image names (an entry may end in "*"; "*" alone is not '
                          'allowed), got %r' % (images,))
    _check_optional_str(values, 'workflow_network')
    if bool(values['tls_cert']) != bool(values['tls_key']):
        raise ConfigError('tls_cert and tls_key must be given together')
    if values['token'] and values['token_file']:
        raise ConfigError('give either token or token_file, not both')
    if values['token_file']:
        values['token'] = read_token_file(values['token_file'])
    if values['auth_reads'] and not values['token']:
        raise ConfigError('auth_reads needs a token (token, token_file or %s)' % TOKEN_ENV)
    for key in ('tls_cert', 'tls_key'):
        if values[key] and not os.path.isfile(values[key]):
            raise ConfigError('%s %s does not exist' % (key, values[key]))
    return Settings(values)
