"""Stage the checkout as build/collections/ansible_collections/orchestra/fleet.

ansible-test must run from a path ending in ansible_collections/NS/NAME and
resolves symlinks, so the tree is copied. Only files git would commit (tracked,
or untracked but not ignored) are copied, so the staged tree matches a clean
clone and never picks up venvs or test output. ansible-test lists files through
git, and build/ is ignored by the checkout's git, so the staged tree gets a git
repository of its own (its untracked, not-ignored files are what it tests).

The copy is incremental (changed files only, stale files removed) and runs
under a lock, so a test run reading the staged tree is not disturbed by another
restage, and restaging an unchanged checkout costs almost nothing.
"""
import fcntl
import filecmp
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, 'build', 'collections', 'ansible_collections', 'orchestra', 'fleet')
# Written by tools inside the staged tree; never part of the source.
STAGED_ONLY = ('.git', os.path.join('tests', 'output'))


def source_files():
    out = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard', '--deduplicate'],
        cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout
    names = [name for name in out.decode().split('\0') if name]
    return set(name for name in names if os.path.isfile(os.path.join(ROOT, name)))


def is_staged_only(rel_path):
    return any(rel_path == top or rel_path.startswith(top + os.sep) for top in STAGED_ONLY)


def staged_files():
    found = set()
    for top, dirs, files in os.walk(DEST):
        rel_top = os.path.relpath(top, DEST)
        dirs[:] = [d for d in dirs if not is_staged_only(os.path.normpath(os.path.join(rel_top, d)))]
        found.update(os.path.normpath(os.path.join(rel_top, name)) for name in files)
    return found


def stage():
    wanted = source_files()
    for name in staged_files() - wanted:
        os.unlink(os.path.join(DEST, name))
    copied = 0
    for name in sorted(wanted):
        source, target = os.path.join(ROOT, name), os.path.join(DEST, name)
        if os.path.exists(target) and filecmp.cmp(source, target, shallow=True):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
        copied += 1
    remove_empty_dirs()
    if not os.path.isdir(os.path.join(DEST, '.git')):
        subprocess.run(['git', 'init', '-q', DEST], check=True)
    return len(wanted), copied


def remove_empty_dirs():
    for top, dirs, files in os.walk(DEST, topdown=False):
        rel_top = os.path.relpath(top, DEST)
        if rel_top != '.' and not dirs and not files and not is_staged_only(rel_top):
            try:
                os.rmdir(top)
            except OSError:
                pass


def main():
    os.makedirs(DEST, exist_ok=True)
    with open(os.path.join(ROOT, 'build', 'stage.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        total, copied = stage()
    sys.stdout.write('setup: staged %d files (%d changed) at %s\n' % (total, copied, os.path.relpath(DEST, ROOT)))


if __name__ == '__main__':
    main()
