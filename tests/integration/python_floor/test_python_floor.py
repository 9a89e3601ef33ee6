"""The lowest Python tests/config.yml claims for modules and module_utils, for real.

tests/config.yml says `python_requires: '>=3.9'`. Python 3.9 is Debian 11's (bullseye)
system Python, so the unit tests of plugins/module_utils run inside a bullseye
container (the cached image of tests/support/systemd_hosts.py, no network) under its
/usr/bin/python3, with pytest and the test requirements installed from a wheelhouse
built here for CPython 3.9, and the main core's `ansible` package on the path (the
module_utils a 2.19 controller ships to a Python 3.9 target).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import pytest
import yaml

import ansible
from tests.support import core_matrix, systemd_hosts
from tests.support.lab import docker_engine
from tests.support.lab.paths import lab_dir

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ANSIBLE_PACKAGE = os.path.dirname(os.path.abspath(ansible.__file__))
MOUNT = '/c/ansible_collections/orchestra/fleet'
# pip download evaluates environment markers for the running Python (3.11), not the target one,
# so the backports pytest, hypothesis and psycopg need below 3.11 are named here.
BACKPORTS = ['pyyaml', 'exceptiongroup', 'tomli', 'typing-extensions']

pytestmark = pytest.mark.timeout(1200)


def claimed_floor():
    with open(os.path.join(FLEET_ROOT, 'tests', 'config.yml')) as handle:
        spec = yaml.safe_load(handle)['modules']['python_requires']
    assert spec.startswith('>='), spec
    return spec[2:].strip()


def release_with_python(version):
    releases = [name for name, python in systemd_hosts.RELEASES.items() if python == version]
    if not releases:
        pytest.fail('no Debian release of tests/support/systemd_hosts.py ships Python %s' % version)
    return releases[0]


@pytest.fixture(scope='module')
def wheelhouse():
    """Wheels for CPython <floor> of what the module_utils unit tests import."""
    version = claimed_floor()
    path = tempfile.mkdtemp(prefix='py%s-wheels-' % version, dir=lab_dir())
    wanted = [line for line in core_matrix.smoke_requirements() if not line.startswith(('.', '/', '-e'))]
    subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--disable-pip-version-check', '--only-binary', ':all:',
                    '--dest', path, '--python-version', version, '--implementation', 'cp',
                    '--abi', 'cp' + version.replace('.', ''), '--abi', 'abi3', '--abi', 'none',
                    '--platform', 'manylinux2014_x86_64', '--platform', 'manylinux_2_17_x86_64', '--platform', 'linux_x86_64',
                    ] + BACKPORTS + wanted, check=True)
    yield path, wanted + BACKPORTS
    shutil.rmtree(path, ignore_errors=True)


def test_tests_config_claims_no_python_2():
    assert claimed_floor().split('.')[0] == '3'


def test_module_utils_unit_tests_pass_on_the_lowest_claimed_python(wheelhouse):
    version = claimed_floor()
    image = systemd_hosts.image(release_with_python(version))
    docker_engine.ensure_engine()
    wheels, requirements = wheelhouse
    out = tempfile.mkdtemp(prefix='py-floor-out-', dir=lab_dir())
    script = ' && '.join([
        'python3 -c "import sys; print(\'PYTHON %d.%d\' % sys.version_info[:2])"',
        'python3 -m venv /tmp/venv',
        '/tmp/venv/bin/pip install -q --no-index --find-links /wheels ' + ' '.join("'%s'" % r for r in requirements),
        'cd %s' % MOUNT,
        'PYTHONPATH=/ansible-lib PYTHONDONTWRITEBYTECODE=1 /tmp/venv/bin/python -m pytest tests/unit/plugins/module_utils'
        ' -p no:cacheprovider --import-mode=importlib -q --junitxml /out/junit.xml -o junit_family=xunit2',
    ])
    name = 'orchestra-pyfloor-%d' % os.getpid()
    try:
        proc = subprocess.run(['docker', 'run', '--rm', '--name', name, '--network', 'none',
                               '-v', '%s:%s:ro' % (FLEET_ROOT, MOUNT), '-v', '%s:/wheels:ro' % wheels,
                               '-v', '%s:/ansible-lib/ansible:ro' % ANSIBLE_PACKAGE, '-v', '%s:/out' % out,
                               image, 'sh', '-c', script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=1100, check=False)
        assert 'PYTHON %s' % version in proc.stdout, proc.stdout[-3000:]
        assert proc.returncode == 0, proc.stdout[-6000:]
        root = ET.parse(os.path.join(out, 'junit.xml')).getroot()
        suite = root if root.tag == 'testsuite' else root.find('testsuite')
        tests, failures, errors = (int(suite.get(key)) for key in ('tests', 'failures', 'errors'))
        print('module_utils unit tests on Python %s: %d tests, %d failures, %d errors, %s skipped'
              % (version, tests, failures, errors, suite.get('skipped')))
        assert tests > 0 and failures == 0 and errors == 0
    finally:
        subprocess.run(['docker', 'rm', '-f', name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(out, ignore_errors=True)
