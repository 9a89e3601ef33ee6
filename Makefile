# Two commands do all set-up on a fresh machine:
#   make demo   run the main job on loopback (local agent, simulated engines)
#   make test   run every test: sanity, units, integration suites, ansible-lint
PY := .venv/bin/python

.PHONY: setup demo test test-fast sanity units integration matrix lint build changelog docsite lab-down clean

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

# The controller version matrix alone (CORE=2.16 for one core).
matrix: setup
	@$(PY) scripts/run_tests.py --step matrix $(if $(CORE),--core $(CORE))

build: setup
	@cd build && ../.venv/bin/ansible-galaxy collection build --force collections/ansible_collections/orchestra/fleet

# Fold every changelog fragment into the release in galaxy.yml (the first release is
# 0.1.0) and regenerate CHANGELOG.rst; run after merging fragments (the packaging suite
# fails until you do). antsibull-changelog runs in the staged tree: it asks ansible-doc.
RELEASE := $(shell sed -n 's/^version: *//p' galaxy.yml)
changelog: setup
	@cd build/collections/ansible_collections/orchestra/fleet && \
	  PATH=$(CURDIR)/.venv/bin:$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/build/collections \
	  antsibull-changelog release --version $(RELEASE) --update-existing && \
	  cp changelogs/changelog.yaml $(CURDIR)/changelogs/changelog.yaml && cp CHANGELOG.rst $(CURDIR)/CHANGELOG.rst

# The docsite pages (docs/docsite/rst) from the Markdown guides under docs/.
docsite: setup
	@$(PY) scripts/docsite.py

lab-down:
	@$(PY) -m tests.support.lab.down

clean: lab-down
	rm -rf build
