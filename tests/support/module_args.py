"""`patch_module_args` on every supported ansible-core.

ansible-core 2.19 ships `ansible.module_utils.testing.patch_module_args`; 2.16 to 2.18
do not, and there a module reads its arguments from `basic._ANSIBLE_ARGS` (JSON bytes),
which is what the fallback sets. The unit tests import it from here so they run
unchanged in the version matrix (tests/support/core_matrix.py).
"""
import contextlib
import json
from unittest import mock

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    @contextlib.contextmanager
    def patch_module_args(args=None):
        """Expose args to AnsibleModule instances created within this context."""
        if not isinstance(args, (dict, type(None))):
            raise TypeError('The `args` arg must be a dict or None.')
        encoded = json.dumps({'ANSIBLE_MODULE_ARGS': args or {}}).encode()
        with mock.patch.object(basic, '_ANSIBLE_ARGS', encoded):
            yield

__all__ = ['patch_module_args']
