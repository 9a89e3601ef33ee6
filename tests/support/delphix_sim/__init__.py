"""Thin shim: the simulator lives in tools/delphix_sim (its own package, `pip install ./tools/delphix_sim`).

Importing this package puts the checkout's copy first on sys.path, so the tests always exercise the
simulator of this checkout, installed or not.
"""
import os
import sys

SIM_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                          'tools', 'delphix_sim')
if SIM_SOURCE not in sys.path:
    sys.path.insert(0, SIM_SOURCE)
