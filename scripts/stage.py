"""Stage the checkout as build/collections/ansible_collections/orchestra/fleet.

ansible-test must run from a path ending in ansible_collections/NS/NAME and
resolves symlinks, so the tree is copied. Only files git would commit (tracked,
or untracked but not ignored) are copied, so the staged tree matches a clean
clone and never picks up venvs or test output. ansible-test lists files through
git, and build/ is ignored by the checkout's git, so the staged tree gets a git
repository of its own (its untracked, not-ignored files are what it tests).
"""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, 'build', 'collections', 'ansible_collections', 'orchestra', 'fleet')


def source_files():
    out = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard', '--deduplicate'],
        cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout
    names = [name for name in out.decode().split('\0') if name]
    return [name for name in names if os.path.isfile(os.path.join(ROOT, name))]


def stage():
    # tests/output is ansible-test's and pytest's; keep it across runs for its caches.
    keep = os.path.join(DEST, 'tests', 'output')
    if os.path.isdir(DEST):
        for entry in os.listdir(DEST):
            path = os.path.join(DEST, entry)
            if entry == 'tests':
                for sub in os.listdir(path):
                    subpath = os.path.join(path, sub)
                    if subpath != keep:
                        remove(subpath)
            elif entry != '.git':
                remove(path)
    if not os.path.isdir(os.path.join(DEST, '.git')):
        os.makedirs(DEST, exist_ok=True)
        subprocess.run(['git', 'init', '-q', DEST], check=True)
    files = source_files()
    for name in files:
        target = os.path.join(DEST, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), target)
    return len(files)


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


if __name__ == '__main__':
    count = stage()
    sys.stdout.write('setup: staged %d files at %s\n' % (count, os.path.relpath(DEST, ROOT)))
