#!/usr/bin/env bash
# make demo: the main job on loopback. Grows with the features; see README.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$root/.venv/bin:$PATH
export ANSIBLE_COLLECTIONS_PATH=$root/build/collections
cd "$root/build/collections/ansible_collections/orchestra/fleet"
if [ -f playbooks/demo.yml ]; then
    exec ansible-playbook orchestra.fleet.demo "$@"
fi
echo "orchestra.fleet demo: the demo playbook has not landed yet (it comes with the masking queue)."
echo "What the collection holds today:"
ansible-doc -l orchestra.fleet 2>/dev/null || true
ansible-doc -t inventory -l orchestra.fleet 2>/dev/null || true
