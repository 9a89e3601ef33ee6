"""Run every test of the collection and close with one pytest-style summary line.

Steps, in order: ansible-test sanity, unit tests, each integration suite, the
controller version matrix (unit tests and a smoke integration under each older
ansible-core, see tests/support/core_matrix.py), ansible-lint (production profile). Every step writes JUnit XML or is counted as
one test; a step or suite that ran nothing counts as a failure, so a broken
harness can never pass silently.

    python scripts/run_tests.py            # everything (make test)
    python scripts/run_tests.py --fast     # units + integration tests not marked slow
    python scripts/run_tests.py --step integration --suite agent
    python scripts/run_tests.py --step matrix [--core 2.16]
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, 'build')
COLLECTIONS = os.path.join(BUILD, 'collections')
STAGED = os.path.join(COLLECTIONS, 'ansible_collections', 'orchestra', 'fleet')
LOGS = os.path.join(BUILD, 'test-logs')
VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
STEPS = ('sanity', 'units', 'integration', 'matrix', 'lint')

sys.path.insert(0, ROOT)
from tests.support import core_matrix  # noqa: E402  (the checkout's own helper, not the staged copy)


class Result:
    def __init__(self, name, passed=0, failed=0, skipped=0, note=''):
        self.name, self.passed, self.failed, self.skipped, self.note = name, passed, failed, skipped, note

    def line(self):
        text = '%-28s %4d passed, %d failed, %d skipped' % (self.name, self.passed, self.failed, self.skipped)
        return text + ('   (%s)' % self.note if self.note else '')


def test_env(bin_dir=VENV_BIN):
    env = dict(os.environ)
    env['PATH'] = bin_dir + os.pathsep + env.get('PATH', '')
    env['ANSIBLE_COLLECTIONS_PATH'] = COLLECTIONS
    env['ANSIBLE_INVENTORY_UNPARSED_FAILED'] = '1'
    env['ANSIBLE_NOCOLOR'] = '1'
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    env['ORCHESTRA_BUILD_DIR'] = BUILD
    return env


def run(cmd, log_name, env=None, cwd=STAGED, quiet=False):
    """Run cmd, streaming its output to the console (unless quiet) and to build/test-logs/."""
    os.makedirs(LOGS, exist_ok=True)
    log_path = os.path.join(LOGS, log_name.replace('/', '-').replace(' ', '-') + '.log')
    started = time.monotonic()
    print('\n==> %s  (log: %s)' % (' '.join(cmd), os.path.relpath(log_path, ROOT)), flush=True)
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or test_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for chunk in iter(proc.stdout.readline, b''):
            if not quiet:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            log.write(chunk)
        code = proc.wait()
    print('<== exit %d after %.0f s  (%s)' % (code, time.monotonic() - started, log_name), flush=True)
    return code


def junit_counts(paths):
    passed = failed = skipped = 0
    for path in paths:
        root = ET.parse(path).getroot()
        suites = [root] if root.tag == 'testsuite' else root.findall('testsuite')
        for suite in suites:
            for case in suite.iter('testcase'):
                if case.find('failure') is not None or case.find('error') is not None:
                    failed += 1
                elif case.find('skipped') is not None:
                    skipped += 1
                else:
                    passed += 1
    return passed, failed, skipped


def step_sanity(_args):
    junit_dir = os.path.join(STAGED, 'tests', 'output', 'junit')
    shutil.rmtree(junit_dir, ignore_errors=True)
    env = test_env()
    env['HOME'] = os.path.join(BUILD, 'home')  # holds the offline get-pip stand-in
    code = run(['ansible-test', 'sanity', '--local', '--requirements', '--python', '3.11',
                '--junit', '--color', 'no'], 'sanity', env=env)
    passed, failed, skipped = junit_counts(sorted(glob.glob(os.path.join(junit_dir, '*.xml'))))
    if code and not failed:
        failed = 1
    return [Result('sanity', passed, failed, skipped, 'exit %d' % code if code else ''), ignore_files_empty()]


def ignore_files_empty():
    """The project's rule: sanity findings are fixed, never ignored."""
    entries = []
    for path in sorted(glob.glob(os.path.join(STAGED, 'tests', 'sanity', 'ignore-*.txt'))):
        with open(path) as handle:
            entries += ['%s: %s' % (os.path.basename(path), line.strip()) for line in handle
                        if line.strip() and not line.lstrip().startswith('#')]
    for entry in entries:
        print('sanity ignore entry not allowed: ' + entry)
    return Result('sanity ignore files empty', passed=int(not entries), failed=int(bool(entries)),
                  note='%d entries' % len(entries) if entries else '')


def run_pytest(name, target, args, extra=(), python=sys.executable, quiet=False):
    """pytest on target (a path or a list of paths/node ids) under python; JUnit counts as a Result."""
    xml = os.path.join(LOGS, name.replace('/', '-').replace(' ', '-') + '.xml')
    if os.path.exists(xml):
        os.unlink(xml)
    targets = [target] if isinstance(target, str) else list(target)
    cmd = [python, '-m', 'pytest'] + targets + ['-p', 'no:cacheprovider', '-rfEs', '--import-mode=importlib',
                                                '--junitxml', xml, '-o', 'junit_family=xunit2']
    if args.fast:
        cmd += ['-m', 'not slow']
    cmd += list(extra)
    code = run(cmd, name, env=test_env(os.path.dirname(python)), quiet=quiet)
    if not os.path.exists(xml):
        return Result(name, failed=1, note='pytest exit %d, no report' % code)
    passed, failed, skipped = junit_counts([xml])
    note = ''
    if code not in (0, 5) and not failed:
        failed, note = 1, 'pytest exit %d' % code
    if passed == 0 and not (args.fast and code == 5):
        failed, note = failed + 1, 'ran nothing'
    return Result(name, passed, failed, skipped, note)


def step_units(args):
    return [run_pytest('units', 'tests/unit', args)]


def integration_suites():
    base = os.path.join(STAGED, 'tests', 'integration')
    return sorted(name for name in os.listdir(base)
                  if glob.glob(os.path.join(base, name, 'test_*.py')))


def step_integration(args):
    suites = args.suite or integration_suites()
    return [run_pytest('integration/' + suite, 'tests/integration/' + suite, args,
                       extra=['--timeout', '1800']) for suite in suites]


# Seconds between the start of one core's run and the next: the runs go side by side, and
# staggering keeps their lab set-ups (namespace subnets, engines, systemd hosts) apart.
MATRIX_STAGGER = 20


def matrix_core(core, python, args, delay):
    """Unit tests, then the smoke integration, under one older core (output in build/test-logs/)."""
    time.sleep(delay)
    version = core_matrix.installed_core(core)
    if not version.startswith(core + '.'):
        return [Result('matrix %s venv' % core, failed=1, note='holds ansible-core %s' % version)]
    results = [run_pytest('matrix %s units' % core, 'tests/unit', args, python=python, quiet=True)]
    targets, missing = core_matrix.smoke_targets(STAGED)
    smoke = run_pytest('matrix %s smoke' % core, targets, args, extra=['--timeout', '900'], python=python, quiet=True)
    notes = ['ansible-core %s' % version] + ([smoke.note] if smoke.note else [])
    if missing:
        print('matrix %s: not in the tree, skipped: %s' % (core, ', '.join(missing)), flush=True)
        smoke.skipped += len(missing)
        notes.append('missing, skipped: ' + ', '.join(os.path.basename(path) for path in missing))
    smoke.note = '; '.join(notes)
    return results + [smoke]


def step_matrix(args):
    """Unit tests and the smoke integration under each older core, side by side (2.19 is the project venv's)."""
    if args.fast:
        return []
    cores = args.core or list(core_matrix.CORES)
    started = time.monotonic()
    print('\n==> matrix: ansible-core %s side by side; logs in build/test-logs/matrix-*' % ', '.join(cores), flush=True)
    try:
        pythons = core_matrix.ensure_all(tuple(cores))
    except Exception as exc:  # a venv that cannot be built fails the step loudly, with the reason
        return [Result('matrix venvs', failed=1, note=str(exc)[:120])]
    with ThreadPoolExecutor(max_workers=len(cores)) as pool:
        runs = [pool.submit(matrix_core, core, pythons[core], args, index * MATRIX_STAGGER)
                for index, core in enumerate(cores)]
        results = [result for run_ in runs for result in run_.result()]
    print('<== matrix after %.0f s' % (time.monotonic() - started), flush=True)
    return results


def step_lint(_args):
    env = test_env()
    # ansible-lint syntax-checks playbooks without an inventory; that must not count as a broken source.
    del env['ANSIBLE_INVENTORY_UNPARSED_FAILED']
    code = run(['ansible-lint', '--profile', 'production', '--offline', '--nocolor'], 'lint', env=env)
    return [Result('ansible-lint', passed=int(code == 0), failed=int(code != 0))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--fast', action='store_true', help='units and integration tests not marked slow')
    parser.add_argument('--step', action='append', choices=STEPS, help='run only these steps (repeatable)')
    parser.add_argument('--suite', action='append', help='run only these integration suites (repeatable)')
    parser.add_argument('--serial', action='store_true',
                        help='run the version matrix after the integration suites, not beside them')
    parser.add_argument('--core', action='append', choices=core_matrix.CORES,
                        help='matrix step: only these older ansible-core versions (repeatable)')
    args = parser.parse_args()
    steps = args.step or (['units', 'integration'] if args.fast else list(STEPS))
    # Always test what is in the checkout now: restage (a few hundred small files).
    subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'stage.py')], check=True)
    results = []
    started = time.monotonic()
    # The matrix mostly waits (on hosts booting, SSH, engines, pip): it runs beside the
    # integration suites unless --serial. Both only use labs they create (own namespaces,
    # subnets picked under a lock, free ports, their own containers), so they cannot collide.
    beside = 'matrix' in steps and 'integration' in steps and not args.serial
    matrix_run = None
    for step in steps:
        if beside and step == 'integration':
            matrix_run = ThreadPoolExecutor(max_workers=1).submit(step_matrix, args)
        if beside and step == 'matrix':
            results += matrix_run.result()
            continue
        results += globals()['step_' + step](args)
    print('\n==================== summary ====================')
    for result in results:
        print(result.line())
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    skipped = sum(r.skipped for r in results)
    print('total time %.0f s' % (time.monotonic() - started))
    print('%d passed, %d failed, %d skipped' % (passed, failed, skipped))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
