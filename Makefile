# Two commands do all set-up on a fresh machine:
#   make demo   run the main job on loopback (local agent, simulated engines)
#   make test   run every test: sanity, units, integration suites, ansible-lint
PY := .venv/bin/python

.PHONY: setup demo test test-fast sanity units integration lint build lab-down clean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	@$(PY) scripts/run_tests.py

test-fast: setup
	@$(PY) scripts/run_tests.py --fast

sanity units integration lint: setup
	@$(PY) scripts/run_tests.py --step $@ $(if $(SUITE),--suite $(SUITE))

build: setup
	@cd build && ../.venv/bin/ansible-galaxy collection build --force collections/ansible_collections/orchestra/fleet

lab-down:
	@$(PY) -m tests.support.lab.down

clean: lab-down
	rm -rf build
