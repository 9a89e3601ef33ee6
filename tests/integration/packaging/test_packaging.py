"""The collection as users get it: built tarball, installed, documented, EE-ready, Galaxy-ready."""
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml
from ansible.release import __version__ as ansible_core_version

from tests.support import core_matrix

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
BUILD = os.environ.get('ORCHESTRA_BUILD_DIR') or os.path.join(FLEET_ROOT, 'build')
# Top-level entries that are development or test machinery; none may be in the tarball.
NOT_SHIPPED = ('tests/', 'bench/', 'tools/', 'scripts/', '.ci/', 'build/', '.venv/', 'Makefile', '.gitignore',
               'changelogs/fragments/')
# A shipped file that reaches into the test tree: an import, a `python -m tests.…`, or a path.
TESTS_REFERENCE = re.compile(r'(?:^|[^\w./-])(?:(?:from|import)\s+tests\b|tests\.(?:support|integration|unit)\b'
                             r'|tests/(?:support|integration|unit)\b)', re.M)
pytestmark = pytest.mark.timeout(1200)


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          **kwargs)


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
    return {'tarball': tarballs[0], 'collections': collections, 'env': env,
            'root': collections / 'ansible_collections' / 'orchestra' / 'fleet'}


@pytest.fixture(scope='module')
def members(installed):
    with tarfile.open(installed['tarball']) as tar:
        return dict((member.name, tar.extractfile(member).read() if member.isfile() else None)
                    for member in tar.getmembers())


def source_plugins(kind):
    return sorted(os.path.splitext(os.path.basename(path))[0]
                  for path in glob.glob(os.path.join(FLEET_ROOT, 'plugins', kind, '*.py'))
                  if not os.path.basename(path).startswith('_'))


# ---------------------------------------------------------------- what the tarball holds

def test_tarball_holds_no_tests_bench_tools_or_dev_files(members):
    names = sorted(members)
    for unwanted in NOT_SHIPPED:
        found = [name for name in names if (name + '/').startswith(unwanted) or name == unwanted.rstrip('/')]
        assert not found, (unwanted, found[:5])
    assert not [name for name in names if '__pycache__' in name or name.endswith(('.pyc', '.tar.gz'))]
    assert not [name for name in names if '/tests/support' in '/' + name or name.startswith('bench')]
    for wanted in ('MANIFEST.json', 'FILES.json', 'meta/runtime.yml', 'README.md', 'LICENSE', 'CHANGELOG.rst',
                   'changelogs/changelog.yaml', 'requirements.txt', 'requirements-postgresql.txt',
                   'docs/docsite/extra-docs.yml', 'docs/docsite/links.yml'):
        assert wanted in names, wanted
    assert 'galaxy.yml' not in names


def test_license_is_the_full_gpl3_text(members):
    text = members['LICENSE'].decode()
    assert 'GNU GENERAL PUBLIC LICENSE' in text and 'Version 3, 29 June 2007' in text
    assert 'END OF TERMS AND CONDITIONS' in text and len(text) > 30000  # the full text, not a stub
    manifest = json.loads(members['MANIFEST.json'])['collection_info']
    assert manifest['license'] == ['GPL-3.0-or-later']


def test_no_shipped_playbook_role_or_plugin_reaches_into_tests(members):
    findings = []
    for name, data in sorted(members.items()):
        if data is None or not name.startswith(('playbooks/', 'roles/', 'plugins/', 'meta/')):
            continue
        try:
            text = data.decode('utf-8')
        except UnicodeDecodeError:
            continue
        for match in TESTS_REFERENCE.finditer(text):
            line = text.count('\n', 0, match.start()) + 1
            findings.append('%s:%d: %s' % (name, line, text.splitlines()[line - 1].strip()))
    assert not findings, 'shipped content depends on tests/:\n' + '\n'.join(findings)


def test_tests_reference_pattern_finds_what_it_must():
    """The scan above can fail: these are the forms a shipped file would use."""
    for text in ("cmd: [python, '-m', 'tests.support.demo_lab']", 'from tests.support import x', 'import tests',
                 '# see tests/support/demo_lab.py'):
        assert TESTS_REFERENCE.search(text), text
    for text in ('ansible.builtin.assert', 'contests.support', 'my_tests.unit', 'roles/agent/files/agent/tests_x'):
        assert not TESTS_REFERENCE.search(text), text


# ---------------------------------------------------------------- versions

def test_requires_ansible_is_the_lowest_core_the_matrix_tests():
    with open(os.path.join(FLEET_ROOT, 'meta', 'runtime.yml')) as handle:
        spec = yaml.safe_load(handle)['requires_ansible']
    lowest = spec.split(',')[0].lstrip('>=').strip()
    tested = sorted(core_matrix.CORES + (core_matrix.MAIN_CORE,), key=lambda v: tuple(int(p) for p in v.split('.')))
    assert '.'.join(lowest.split('.')[:2]) == tested[0], (
        'runtime.yml claims %s but the matrix tests from %s: test the lowest version you claim' % (spec, tested[0]))
    majors = [int(v.split('.')[1]) for v in tested]
    assert majors == list(range(majors[0], majors[-1] + 1)), 'a core between the lowest and the main one is untested'
    assert ansible_core_version.startswith(core_matrix.MAIN_CORE + '.'), ansible_core_version


def test_masking_action_group_names_real_modules():
    with open(os.path.join(FLEET_ROOT, 'meta', 'runtime.yml')) as handle:
        group = yaml.safe_load(handle)['action_groups']['masking']
    missing = [name for name in group if name not in source_plugins('modules')]
    assert not missing, 'action group names modules that do not exist: %s' % missing


# ---------------------------------------------------------------- installed and documented

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


def test_antsibull_docs_lint_is_clean(installed):
    """Plugin docs, extra docs (the docsite guides) and links as docs.ansible.com would render them."""
    env = dict(installed['env'], PATH=BIN + os.pathsep + os.environ.get('PATH', ''))
    result = subprocess.run([os.path.join(BIN, 'antsibull-docs'), 'lint-collection-docs', '--plugin-docs',
                             '--validate-collection-refs', 'all', str(installed['root'])], env=env, timeout=900,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout


def test_docsite_lists_every_guide_and_is_generated_from_the_markdown(installed):
    with open(os.path.join(FLEET_ROOT, 'docs', 'docsite', 'extra-docs.yml')) as handle:
        pages = [page for section in yaml.safe_load(handle)['sections'] for page in section['toctree']]
    assert len(pages) >= 4
    for page in pages:
        assert (installed['root'] / 'docs' / 'docsite' / 'rst' / (page + '.rst')).is_file(), page
    check = subprocess.run([sys.executable, os.path.join(FLEET_ROOT, 'scripts', 'docsite.py'), '--check'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert check.returncode == 0, check.stdout


def test_changelog_has_the_release_and_every_fragment(installed):
    with open(os.path.join(FLEET_ROOT, 'galaxy.yml')) as handle:
        version = str(yaml.safe_load(handle)['version'])
    with open(os.path.join(FLEET_ROOT, 'changelogs', 'changelog.yaml')) as handle:
        changelog = yaml.safe_load(handle)
    assert version in changelog['releases'], 'no release section for %s: run make changelog' % version
    released = set(name for release in changelog['releases'].values() for name in release.get('fragments', []))
    fragments = set(os.path.basename(path) for path in glob.glob(os.path.join(FLEET_ROOT, 'changelogs', 'fragments', '*.y*ml')))
    assert fragments <= released, 'fragments not in a release (run make changelog): %s' % sorted(fragments - released)
    assert 'release_summary' in changelog['releases'][version]['changes']
    # CHANGELOG.rst is what antsibull-changelog generates from changelog.yaml, byte for byte.
    work = installed['collections'].parent / 'changelog-check'
    shutil.rmtree(str(work), ignore_errors=True)
    os.makedirs(str(work))
    for name in ('galaxy.yml', 'CHANGELOG.rst'):
        shutil.copy2(os.path.join(FLEET_ROOT, name), str(work))
    shutil.copytree(os.path.join(FLEET_ROOT, 'changelogs'), str(work / 'changelogs'))
    run([os.path.join(BIN, 'antsibull-changelog'), 'generate'], cwd=str(work))
    with open(os.path.join(FLEET_ROOT, 'CHANGELOG.rst')) as mine, open(str(work / 'CHANGELOG.rst')) as generated:
        assert mine.read() == generated.read(), 'CHANGELOG.rst is stale: run make changelog'
    run([os.path.join(BIN, 'antsibull-changelog'), 'lint'], cwd=FLEET_ROOT)


# ---------------------------------------------------------------- execution environment

def test_execution_environment_needs_only_requests_and_no_system_packages(installed):
    out = run([os.path.join(BIN, 'ansible-builder'), 'introspect', str(installed['collections'])]).stdout
    data = yaml.safe_load(out.split('---', 1)[1])
    assert [line.split()[0] for line in data['python']] == ['requests>=2.28'], data
    assert not data.get('system'), 'system packages an EE base image already has are redundant: %s' % data['system']


def test_postgresql_driver_is_an_optional_documented_requirement(members):
    assert b'psycopg' not in members['requirements.txt']
    assert b'psycopg[binary]' in members['requirements-postgresql.txt']
    assert b'requirements-postgresql.txt' in members['meta/execution-environment.yml']
    assert b'requirements-postgresql.txt' in members['README.md']


# ---------------------------------------------------------------- Galaxy / Automation Hub

def galaxy_importer_python():
    """galaxy-importer in a venv of its own (it pins attrs<24 and flake8<7): created once, reused."""
    spec = os.path.join(HERE, 'galaxy-importer.txt')
    venv = os.path.join(BUILD, 'tools', 'galaxy-importer')
    python = os.path.join(venv, 'bin', 'python')
    with open(spec, 'rb') as handle:
        want = hashlib.sha256(handle.read() + sys.version.encode()).hexdigest()
    stamp = os.path.join(venv, '.orchestra-stamp')
    if not (os.path.exists(python) and os.path.exists(stamp) and open(stamp).read().strip() == want):
        run([sys.executable, '-m', 'venv', venv])
        run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '-r', spec], timeout=900)
        with open(stamp, 'w') as handle:
            handle.write(want + '\n')
    return python


@pytest.fixture(scope='module')
def galaxy_import(installed, tmp_path_factory):
    """galaxy-importer on the built tarball, offline: flake8, ansible-doc and ansible-lint on, ansible-test off."""
    python = galaxy_importer_python()
    work = tmp_path_factory.mktemp('importer')
    config = work / 'galaxy-importer.cfg'
    config.write_text('[galaxy-importer]\nRUN_ANSIBLE_TEST = False\nRUN_FLAKE8 = True\nRUN_ANSIBLE_DOC = True\n'
                      'RUN_ANSIBLE_LINT = True\nOFFLINE_ANSIBLE_LINT = True\nCHECK_CHANGELOG = True\n')
    env = dict(os.environ, GALAXY_IMPORTER_CONFIG=str(config),
               PATH=os.path.dirname(python) + os.pathsep + os.environ.get('PATH', ''))
    env.pop('ANSIBLE_COLLECTIONS_PATH', None)
    # Galaxy runs the importer in a plain environment: no inventory, so no fail-on-unparsed-inventory
    # (the test runner sets it for the suites; ansible-lint's syntax check runs without an inventory).
    env.pop('ANSIBLE_INVENTORY_UNPARSED_FAILED', None)
    proc = subprocess.run([python, '-m', 'galaxy_importer.main', installed['tarball']], cwd=str(work), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=900,
                          check=False)
    result_path = work / 'importer_result.json'
    return proc.returncode, proc.stdout, json.loads(result_path.read_text()) if result_path.exists() else None


def test_galaxy_importer_accepts_the_tarball(galaxy_import):
    code, output, result = galaxy_import
    assert code == 0 and 'Importer processing completed successfully' in output, output[-4000:]
    assert result and result['metadata']['name'] == 'fleet'
    contents = set('%s:%s' % (item['content_type'], item['name']) for item in result['contents'])
    for module in source_plugins('modules'):
        assert 'module:%s' % module in contents
    assert 'role:agent' in contents


def test_galaxy_importer_reports_no_findings(galaxy_import):
    """flake8 and ansible-lint findings show on the collection's Galaxy page: there must be none."""
    _code, output, _result = galaxy_import
    findings = [line for line in output.splitlines() if line.startswith(('WARNING', 'ERROR'))]
    assert not findings, '\n'.join(findings)
