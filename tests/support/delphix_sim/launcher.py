"""Kept for the suites that import the launcher from here; the code is delphix_sim.launcher (tools/delphix_sim)."""
from tests.support.delphix_sim import SIM_SOURCE  # noqa: F401  # pylint: disable=unused-import  # puts the package on sys.path
from delphix_sim.launcher import SimHandle, seed_config, start_simulator  # noqa: E402  # pylint: disable=wrong-import-position

__all__ = ['SimHandle', 'seed_config', 'start_simulator']
