"""Make `ansible_collections.orchestra.fleet` and `tests.support` importable.

The suites run from the staged copy build/collections/ansible_collections/orchestra/fleet
(scripts/run_tests.py does that), so the collections root is four levels up.
"""
import os
import sys

import pytest

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(FLEET_ROOT)))

if os.path.basename(os.path.dirname(os.path.dirname(FLEET_ROOT))) != 'ansible_collections':
    raise pytest.UsageError('run the tests from the staged collection: make test-fast, or '
                            'python scripts/run_tests.py --step units (see docs/testing.md)')
for path in (COLLECTIONS_ROOT, FLEET_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long-running; left out of make test-fast')
