#!/usr/bin/env bash
# make demo: the main job on loopback (playbooks/demo.yml). See README.md.
# The demo's engines come from the Delphix simulator (tools/delphix_sim; the playbook uses this checkout's
# copy). The local agent reports the host's Docker engine: when none answers and we are root, the test
# lab's engine is started for the demo and stopped again afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$root/.venv/bin:$PATH
export ANSIBLE_COLLECTIONS_PATH=$root/build/collections
export ORCHESTRA_DEMO_DIR=${ORCHESTRA_DEMO_DIR:-$root/build/lab/demo}
staged=$root/build/collections/ansible_collections/orchestra/fleet
docker_started=
if ! docker info >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
    if (cd "$staged" && python -c 'from tests.support.lab import docker_engine; docker_engine.ensure_engine()'); then
        docker_started=1
    fi
fi
stop_docker() {
    if [ -n "$docker_started" ]; then
        (cd "$staged" && python -c 'from tests.support.lab import docker_engine; docker_engine.stop_engine()') || true
    fi
}
trap stop_docker EXIT
# The workflows the demo dispatches onto the local agent run this image (imported offline; none without Docker).
if [ -z "${ORCHESTRA_DEMO_WORKFLOW_IMAGE:-}" ] && docker info >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    if image=$(cd "$staged" && python -c 'from tests.support.lab import docker_engine; print(docker_engine.ensure_busybox_image())' 2>/dev/null); then
        export ORCHESTRA_DEMO_WORKFLOW_IMAGE=$image
    fi
fi
cd "$staged"
ansible-playbook orchestra.fleet.demo "$@"
