"""A simulated Delphix Masking Engine: the REST API over real HTTP, for tests and demos without an engine.

Run one engine:  delphix-sim --port 8282 --config engine.json   (or python -m delphix_sim ...)
Demo lab:        delphix-sim-demo up --dir DIR  (python -m delphix_sim.demo; two engines + the agent)
From Python:     delphix_sim.launcher.start_simulator(seed_config(...)) -> SimHandle
See docs/delphix-simulator.md for the config format, the engine clock and the fault knobs.
"""
__version__ = '0.2.0'
