"""Every plugin as the running ansible-core sees it: documented, loadable, no support warning.

Runs under the project venv (ansible-core 2.19) in the integration step and under each
older core of the version matrix (tests/support/core_matrix.py), which runs this file
with that core's python, so `ansible-doc` below is that core's.
"""
import glob
import json
import os
import subprocess
import sys

import pytest
import yaml
from ansible.release import __version__ as core_version

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)
# plugin folder -> ansible-doc type; doc_fragments and module_utils are not plugins of their own.
DOC_TYPES = {'modules': 'module', 'inventory': 'inventory', 'lookup': 'lookup', 'filter': 'filter', 'test': 'test',
             'callback': 'callback', 'connection': 'connection', 'become': 'become', 'cache': 'cache', 'vars': 'vars'}


def plugins():
    found = []
    for folder, doc_type in sorted(DOC_TYPES.items()):
        for path in sorted(glob.glob(os.path.join(FLEET_ROOT, 'plugins', folder, '*.py'))):
            name = os.path.splitext(os.path.basename(path))[0]
            if not name.startswith('_'):
                found.append((doc_type, 'orchestra.fleet.' + name))
    return found


def ansible_doc(*args):
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_DEPRECATION_WARNINGS='1')
    return subprocess.run([os.path.join(BIN, 'ansible-doc')] + list(args), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120, check=False)


def test_this_core_is_one_the_collection_claims():
    with open(os.path.join(FLEET_ROOT, 'meta', 'runtime.yml')) as handle:
        lowest = yaml.safe_load(handle)['requires_ansible'].split(',')[0].lstrip('>=').strip()
    assert tuple(int(part) for part in core_version.split('.')[:2]) >= tuple(int(part) for part in lowest.split('.')[:2])


@pytest.mark.parametrize('doc_type', sorted(set(kind for kind, _name in plugins())))
def test_ansible_doc_of_every_plugin(doc_type):
    names = [name for kind, name in plugins() if kind == doc_type]
    result = ansible_doc('-t', doc_type, '--json', *names)  # one call per type: each costs seconds on old cores
    assert result.returncode == 0, result.stderr
    assert 'WARNING' not in result.stderr, result.stderr
    docs = json.loads(result.stdout)
    assert sorted(docs) == sorted(names)
    for name in names:
        doc = docs[name]['doc']
        assert doc['short_description'] and doc.get('options') is not None, (name, doc)
        assert doc['module' if doc_type == 'module' else 'name'] == name.split('.')[-1], (name, doc)
        assert docs[name].get('examples'), name  # EXAMPLES render under this core too


def test_listing_the_collection_prints_no_support_warning():
    result = ansible_doc('-l', 'orchestra.fleet')
    assert result.returncode == 0, result.stderr
    assert 'does not support' not in result.stderr, result.stderr
    assert 'orchestra.fleet.masking_job' in result.stdout, result.stdout


def test_every_plugin_type_lists_under_this_core():
    kinds = sorted(set(doc_type for doc_type, _name in plugins()))
    for doc_type in kinds:
        result = ansible_doc('-t', doc_type, '-l', 'orchestra.fleet', '--json')
        assert result.returncode == 0 and 'does not support' not in result.stderr, result.stderr
        listed = sorted(json.loads(result.stdout))
        assert listed == sorted(name for kind, name in plugins() if kind == doc_type), (doc_type, listed)
