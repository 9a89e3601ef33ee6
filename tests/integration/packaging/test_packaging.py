"""The collection as users get it: built tarball, installed, documented, EE-ready."""
import glob
import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml
from ansible.module_utils.compat.version import LooseVersion
from ansible.release import __version__ as ansible_core_version

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """Build the tarball and install it into an empty collections path."""
    work = tmp_path_factory.mktemp('galaxy')
    run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', FLEET_ROOT, '--output-path', str(work)])
    tarballs = glob.glob(str(work / 'orchestra-fleet-*.tar.gz'))
    assert len(tarballs) == 1, tarballs
    collections = work / 'collections'
    run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '--force', tarballs[0], '-p', str(collections)])
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections))
    return {'tarball': tarballs[0], 'collections': collections, 'env': env}


def source_plugins(kind):
    return sorted(os.path.splitext(os.path.basename(path))[0]
                  for path in glob.glob(os.path.join(FLEET_ROOT, 'plugins', kind, '*.py'))
                  if not os.path.basename(path).startswith('_'))


def test_tarball_leaves_out_build_output(installed):
    with tarfile.open(installed['tarball']) as tar:
        names = tar.getnames()
    assert 'galaxy.yml' not in names and 'MANIFEST.json' in names
    for unwanted in ('.venv/', 'build/', 'tests/output/', '__pycache__', 'scripts/', '.ci/'):
        assert not [name for name in names if unwanted in name + '/'], unwanted
    assert 'meta/runtime.yml' in names and 'README.md' in names


def test_ansible_doc_lists_every_module(installed):
    modules = source_plugins('modules')
    assert modules, 'the collection has no modules yet'
    out = run([os.path.join(BIN, 'ansible-doc'), '-l', 'orchestra.fleet', '--json'], env=installed['env']).stdout
    listed = sorted(name.split('.')[-1] for name in json.loads(out))
    assert listed == modules


@pytest.mark.parametrize('kind', ['inventory', 'lookup'])
def test_ansible_doc_shows_other_plugins(installed, kind):
    plugins = source_plugins(kind)
    if not plugins:
        pytest.skip('no %s plugins in the collection yet' % kind)
    out = run([os.path.join(BIN, 'ansible-doc'), '-t', kind, '-l', 'orchestra.fleet', '--json'], env=installed['env']).stdout
    assert sorted(name.split('.')[-1] for name in json.loads(out)) == plugins


def test_requires_ansible_matches_tested_core():
    with open(os.path.join(FLEET_ROOT, 'meta', 'runtime.yml')) as handle:
        spec = yaml.safe_load(handle)['requires_ansible']
    lowest = spec.split(',')[0].lstrip('>=').strip()
    assert LooseVersion(ansible_core_version) >= LooseVersion(lowest)
    assert ansible_core_version.startswith('.'.join(lowest.split('.')[:2])), (
        'tests run ansible-core %s but runtime.yml claims %s: test the lowest version you claim' % (ansible_core_version, spec))


def test_masking_action_group_names_real_modules():
    with open(os.path.join(FLEET_ROOT, 'meta', 'runtime.yml')) as handle:
        group = yaml.safe_load(handle)['action_groups']['masking']
    missing = [name for name in group if name not in source_plugins('modules')]
    assert not missing, 'action group names modules that do not exist: %s' % missing


def test_execution_environment_dependencies_are_introspected(installed):
    out = run([os.path.join(BIN, 'ansible-builder'), 'introspect', str(installed['collections'])]).stdout
    for wanted in ('requests', 'psycopg', 'python3'):
        assert wanted in out, (wanted, out)
