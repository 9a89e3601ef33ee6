"""The controller version matrix: one venv per older ansible-core, created once and reused.

The project venv (.venv) runs ansible-core 2.19, the main core. Every older core that
meta/runtime.yml claims (2.16, 2.17, 2.18) gets a venv of its own under
build/cores/<version>/, holding that core, the collection's runtime requirements, the
optional PostgreSQL requirement, and the test requirements the smoke run needs (never
ansible-lint, ansible-builder or antsibull-*: they pull in the newest core). A venv is
rebuilt only when what goes into it changes (a hash of the package list is stamped).

    python -m tests.support.core_matrix            # create/refresh every matrix venv
    python -m tests.support.core_matrix 2.16       # one of them

ansible-core 2.20 and newer need Python 3.12, which this machine kind (Debian 12,
Python 3.11) cannot install: they are not in the matrix (docs/testing.md says so).
"""
import hashlib
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN_CORE = '2.19'
CORES = ('2.16', '2.17', '2.18')
# Test requirements the matrix smoke run imports (by distribution name); the rest of
# tests/requirements.txt serves steps the matrix does not repeat.
SMOKE_TEST_PACKAGES = ('pytest', 'pytest-timeout', 'docker', 'cheroot', 'h11', 'hypothesis', 'jsonschema', 'pyyaml')
REQUIREMENT_FILES = ('requirements.txt', 'requirements-postgresql.txt')
NAME = re.compile(r'^\s*([A-Za-z0-9][A-Za-z0-9._-]*)')


def venv_dir(core, root=ROOT):
    return os.path.join(root, 'build', 'cores', core)


def python_of(core, root=ROOT):
    return os.path.join(venv_dir(core, root), 'bin', 'python')


# The smoke integration each older core runs, over real parts (pytest node ids, relative
# to the collection root). Files other suites own are named here by path: one that does
# not exist (yet) is skipped with a visible note by scripts/run_tests.py, never silently.
SMOKE = (
    # ansible-doc of every plugin; `ansible-doc -l orchestra.fleet` without a support warning
    'tests/integration/core_smoke',
    # the inventory plugin against real agents in network namespaces
    'tests/integration/inventory/test_inventory_plugin.py::test_every_host_lands_in_its_group_with_a_reason',
    'tests/integration/inventory/test_inventory_plugin.py::test_constructed_groups_see_full_facts',
    # a Jinja payload in every agent field never executes on the controller (2.16-2.18 template by default)
    'tests/integration/inventory/test_unsafe.py',
    # the mask playbook against two simulated Delphix engines over HTTP
    'tests/integration/masking_modules/test_playbooks.py::test_mask_playbook_is_a_blocking_call_that_fails_when_a_job_fails',
    # the agent role in check mode on a systemd host over SSH
    'tests/integration/role_releases/test_role_releases.py::test_check_mode_on_a_fresh_host[bookworm]',
)


def smoke_targets(collection_root):
    """(node ids whose file exists, files that do not) under collection_root."""
    present, missing = [], []
    for node in SMOKE:
        path = node.split('::', 1)[0]
        if os.path.exists(os.path.join(collection_root, path)):
            present.append(node)
        else:
            missing.append(path)
    return present, missing


def _lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [line.split('#', 1)[0].strip() for line in handle if line.split('#', 1)[0].strip()]


def smoke_requirements(root=ROOT):
    """The requirement lines a matrix venv installs besides ansible-core (pure: reads files only).

    Local paths (a tool of this repository installed from its folder, e.g. tools/delphix_sim)
    are kept, so a test that imports such a tool finds it under every core.
    """
    wanted = ['./' + os.path.relpath(tool, root) for tool in local_tools(root)]
    for name in REQUIREMENT_FILES:
        wanted += _lines(os.path.join(root, name))
    for line in _lines(os.path.join(root, 'tests', 'requirements.txt')):
        match = NAME.match(line)
        local = line.startswith(('.', '/', '-e'))
        if local or (match and match.group(1).lower() in SMOKE_TEST_PACKAGES):
            wanted.append(line)
    return wanted


def local_tools(root=ROOT):
    """Tools of this repository with a pyproject.toml (e.g. tools/delphix_sim), as scripts/setup.sh installs them."""
    base = os.path.join(root, 'tools')
    names = sorted(os.listdir(base)) if os.path.isdir(base) else []
    return [os.path.join(base, name) for name in names if os.path.exists(os.path.join(base, name, 'pyproject.toml'))]


def _tree_digest(path):
    digest = hashlib.sha256()
    for top, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in ('__pycache__', 'build') and not d.endswith('.egg-info'))
        for name in sorted(files):
            full = os.path.join(top, name)
            digest.update(os.path.relpath(full, path).encode())
            with open(full, 'rb') as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def core_spec(core):
    return 'ansible-core==%s.*' % core


def stamp_of(core, root=ROOT):
    text = '\n'.join([sys.version, core_spec(core)] + smoke_requirements(root) + [_tree_digest(tool) for tool in local_tools(root)])
    return hashlib.sha256(text.encode()).hexdigest()


def _pip_args(line, root):
    """One requirement line as pip arguments (local paths resolved against the checkout)."""
    if line.startswith('-e'):
        return ['-e', os.path.join(root, line[2:].strip())]
    if line.startswith('.'):
        return [os.path.join(root, line)]
    return [line]


def ensure(core, root=ROOT, log=sys.stdout):
    """Create or refresh the venv of one core; return its python. Idempotent and cheap when current."""
    directory = venv_dir(core, root)
    stamp_path = os.path.join(directory, '.orchestra-stamp')
    want = stamp_of(core, root)
    python = python_of(core, root)
    try:
        with open(stamp_path) as handle:
            if handle.read().strip() == want and os.path.exists(python):
                return python
    except OSError:
        pass
    log.write('matrix: building venv for ansible-core %s in %s\n' % (core, os.path.relpath(directory, root)))
    log.flush()
    if not os.path.exists(python):
        subprocess.run([sys.executable, '-m', 'venv', directory], check=True)
    args = [core_spec(core)]
    for line in smoke_requirements(root):
        args += _pip_args(line, root)
    subprocess.run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check'] + args, check=True)
    with open(stamp_path, 'w') as handle:
        handle.write(want + '\n')
    return python


def installed_core(core, root=ROOT):
    """The exact ansible-core version a matrix venv holds."""
    out = subprocess.run([python_of(core, root), '-c', 'from ansible.release import __version__; print(__version__)'],
                         check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    return out.strip()


def ensure_all(cores=CORES, root=ROOT):
    """Build the missing venvs side by side (pip mostly waits on the network and unpacks)."""
    with ThreadPoolExecutor(max_workers=len(cores)) as pool:
        return dict(zip(cores, pool.map(lambda core: ensure(core, root), cores)))


if __name__ == '__main__':
    for version, interpreter in sorted(ensure_all(tuple(sys.argv[1:]) or CORES).items()):
        print('%s  %s  ansible-core %s' % (version, interpreter, installed_core(version)))
