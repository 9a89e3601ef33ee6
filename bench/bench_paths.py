"""Let a benchmark import the collection as the tests do: from the staged copy, restaged first.

Restaging is incremental and cheap, and it means a benchmark always measures the checkout as
it is now. Run from inside a staged or installed tree (.../ansible_collections/orchestra/fleet),
that tree is used as it is.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_staged_collection():
    """Put the collections root and the collection root on sys.path; return the collection root."""
    parts = ROOT.split(os.sep)
    if len(parts) > 3 and parts[-3] == 'ansible_collections':
        collections_root, staged = os.sep.join(parts[:-3]), ROOT
    else:
        subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'stage.py')], check=True, stdout=subprocess.DEVNULL)
        collections_root = os.path.join(ROOT, 'build', 'collections')
        staged = os.path.join(collections_root, 'ansible_collections', 'orchestra', 'fleet')
    sys.path[:0] = [collections_root, staged]
    return staged
