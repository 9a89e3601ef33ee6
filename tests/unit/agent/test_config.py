import json

import pytest

from orchestra_agent import config


def settings(file_values=None, overrides=None, env=None):
    return config.validate(config.merge(file_values or {}, overrides or {}, env or {}))


def test_defaults_match_the_contract():
    values = settings().as_dict()
    assert values['port'] == 9009
    assert values['listen'] == '0.0.0.0'
    assert values['labels'] == []
    assert values['token'] is None
    assert values['max_body_bytes'] == 65536
    assert (values['workflow_images'], values['workflow_network']) == ([], None)  # fenced starts off by default


def test_cli_overrides_beat_the_file_and_none_means_not_given():
    values = settings({'port': 1234, 'listen': '10.0.0.1'}, {'port': 5555, 'listen': None})
    assert values.port == 5555
    assert values.listen == '10.0.0.1'


def test_env_token_beats_the_file_token():
    assert settings({'token': 'from-file'}, env={config.TOKEN_ENV: 'from-env'}).token == 'from-env'


def test_token_file_is_read_and_stripped(tmp_path):
    path = tmp_path / 'token'
    path.write_text('s3cret\n')
    assert settings({'token_file': str(path)}).token == 's3cret'


def test_cli_token_file_replaces_config_token(tmp_path):
    path = tmp_path / 'token'
    path.write_text('cli')
    assert settings({'token': 'conf'}, {'token_file': str(path)}).token == 'cli'


@pytest.mark.parametrize('values, fragment', [
    ({'bogus': 1}, 'unknown config key'),
    ({'port': 70000}, 'port must be'),
    ({'port': True}, 'port must be'),
    ({'threads': 0}, 'threads must be'),
    ({'labels': 'a'}, 'labels must be a list'),
    ({'labels': ['=x']}, 'label selector'),
    ({'labels': ['']}, 'label selector'),
    ({'tls_cert': '/x'}, 'tls_cert and tls_key'),
    ({'token': 'a', 'token_file': '/b'}, 'either token or token_file'),
    ({'auth_reads': True}, 'auth_reads needs a token'),
    ({'auth_reads': 'yes'}, 'auth_reads must be'),
    ({'log_level': 'loud'}, 'log_level must be'),
    ({'token': ''}, 'token must be'),
    ({'token_file': '/nonexistent/token'}, 'cannot read token_file'),
    ({'tls_cert': '/nonexistent/c', 'tls_key': '/nonexistent/k'}, 'does not exist'),
    ({'max_body_bytes': 10}, 'max_body_bytes'),
    ({'workflow_images': 'busybox'}, 'workflow_images must be'),
    ({'workflow_images': ['*']}, 'workflow_images must be'),
    ({'workflow_images': ['']}, 'workflow_images must be'),
    ({'workflow_network': ''}, 'workflow_network must be'),
])
def test_bad_settings_are_one_clear_line(values, fragment):
    with pytest.raises(config.ConfigError) as info:
        settings(values)
    assert fragment in str(info.value)
    assert '\n' not in str(info.value)


def test_load_file_rejects_non_object_and_bad_json(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{nope')
    with pytest.raises(config.ConfigError, match='not valid JSON'):
        config.load_file(str(bad))
    listing = tmp_path / 'list.json'
    listing.write_text(json.dumps([1]))
    with pytest.raises(config.ConfigError, match='JSON object'):
        config.load_file(str(listing))
    with pytest.raises(config.ConfigError, match='cannot read config'):
        config.load_file(str(tmp_path / 'missing.json'))


def test_selectors_parse():
    assert config.parse_selector('a.b') == ('a.b', None)
    assert config.parse_selector('a=b=c') == ('a', 'b=c')
    assert config.parse_selector('a=') == ('a', '')
