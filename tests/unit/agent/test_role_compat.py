"""The agent role runs on every supported ansible-core (2.16 to 2.19), not only the newest.

Module options added in 2.19 make a task fail on older cores with "Unsupported parameters"
(issue 14: the role's ansible.builtin.find passed checksum_algorithm). The version matrix
runs the role on each core; this check catches such an option without one.
"""
import glob
import os

import yaml

ROLE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'roles', 'agent'))
# Options that ansible-core 2.16 to 2.18 do not have (added in 2.19), per module.
NEWER_THAN_2_16 = {'ansible.builtin.find': {'checksum_algorithm'}}


def tasks(node):
    if isinstance(node, list):
        for item in node:
            yield from tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ('block', 'rescue', 'always'):
            yield from tasks(node.get(key, []))


def test_role_tasks_use_no_option_older_cores_lack():
    found = []
    for path in sorted(glob.glob(os.path.join(ROLE, 'tasks', '*.yml'))):
        with open(path, encoding='utf-8') as handle:
            for task in tasks(yaml.safe_load(handle) or []):
                for module, options in NEWER_THAN_2_16.items():
                    args = task.get(module)
                    if isinstance(args, dict) and options & set(args):
                        found.append((os.path.basename(path), task.get('name'), sorted(options & set(args))))
    assert not found, found
