"""The role's agent.json template renders orchestra_agent_workflow_images / _workflow_network into the
keys the agent reads, and the real agent's config loader accepts the result (no hosts needed).

ansible-playbook renders the role's own template with the role's own defaults and vars on localhost;
the systemd-host lifecycle (test_role_agent.py) checks the same keys in an installed agent.json.
"""
import json
import os
import subprocess
import sys

import pytest
import yaml

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                    'roles', 'agent')
sys.path.insert(0, os.path.join(ROLE, 'files', 'agent'))
from orchestra_agent import config  # noqa: E402  pylint: disable=wrong-import-position


def render(tmp_path, extra_vars):
    out = tmp_path / 'agent.json'
    playbook = tmp_path / 'render.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
        'tasks': [
            {'name': 'Role defaults', 'ansible.builtin.include_vars': os.path.join(ROLE, 'defaults', 'main.yml')},
            {'name': 'Role vars', 'ansible.builtin.include_vars': os.path.join(ROLE, 'vars', 'main.yml')},
            {'name': 'Render', 'ansible.builtin.template': {'src': os.path.join(ROLE, 'templates', 'agent.json.j2'),
                                                            'dest': str(out), 'mode': '0600'}},
        ]}]))
    vars_file = tmp_path / 'vars.json'
    # include_vars outranks play vars, so the test's values come in as extra vars (they outrank it).
    vars_file.write_text(json.dumps(dict(extra_vars, orchestra_agent_token='render-test-token')))
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='False',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False')
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
                           str(playbook), '-e', '@' + str(vars_file)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize('extra, images, network', [
    ({}, [], None),
    ({'orchestra_agent_workflow_images': ['orchestra-test/busybox:1', 'registry.example/wf/*'],
      'orchestra_agent_workflow_network': 'none'}, ['orchestra-test/busybox:1', 'registry.example/wf/*'], 'none'),
])
def test_workflow_images_render_into_a_config_the_agent_accepts(tmp_path, extra, images, network):
    rendered = render(tmp_path, extra)
    assert (rendered['workflow_images'], rendered['workflow_network']) == (images, network)
    settings = config.validate(config.merge(rendered, {}, {}))
    assert (settings.workflow_images, settings.workflow_network) == (images, network)
