"""A simulated Delphix Masking Engine (test and demo support, not shipped to hosts).

Run one engine:  python -m tests.support.delphix_sim --port 8282 --config engine.json
From tests:      tests.support.delphix_sim.launcher.start_simulator(seed_config(...))
See docs/delphix-simulator.md for the config format and the fault knobs.
"""
