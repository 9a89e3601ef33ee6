"""`ansible-playbook orchestra.fleet.run_workflows` over a directory of INI files on the lab fleet (real
ansible-playbook, real agents, real Docker): all finish with the summary; a failing one fails the play."""
import json
import os
import subprocess
import sys

from tests.support.fleet_lab import TOKEN, client, wait_state

COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COMMAND = ['sh', '-c', 'grep -q "^id = " "$ORCHESTRA_WORKFLOW_INI" && ! grep -q fail "$ORCHESTRA_WORKFLOW_INI"']


def playbook(fleet, tmp_path, extra, *more):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.dirname(os.path.dirname(os.path.dirname(COLLECTION))),
               ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='False', ORCHESTRA_FLEET_TOKEN=TOKEN,
               ORCHESTRA_QUEUE_STORE=str(tmp_path / 'queue.db'))
    env.pop('ANSIBLE_CONFIG', None)
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', 'orchestra.fleet.run_workflows',
            '-e', json.dumps(extra)] + list(more)
    return subprocess.run(argv, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=240, check=False)


def write_inis(directory, names, failing=()):
    directory.mkdir()
    for name in names:
        (directory / ('%s.ini' % name)).write_text('[sample]\nid = %s\n%s' % (name, 'fail = yes\n' if name in failing else ''))
    return str(directory)


def test_run_workflows_over_a_directory_of_ini_files(fleet_clean, tmp_path):
    fleet = fleet_clean
    hosts = [fleet.hosts[name].address for name in ('h5', 'h6', 'h7')]
    names = ['sample-%02d' % i for i in range(8)]
    extra = {'workflows_dir': write_inis(tmp_path / 'inis', names), 'workflow_image': fleet.image,
             'workflow_command': COMMAND, 'workflow_hosts': hosts}
    checked = playbook(fleet, tmp_path, extra, '--check')
    assert checked.returncode == 0, checked.stdout[-4000:]
    result = playbook(fleet, tmp_path, extra)
    assert result.returncode == 0, result.stdout[-4000:]
    assert '8 workflow(s) in batch inis: 8 succeeded, 0 failed or cancelled' in result.stdout, result.stdout[-4000:]
    for name in names:
        assert name in result.stdout
    again = playbook(fleet, tmp_path, extra)   # the same batch again: request ids, nothing runs twice
    assert again.returncode == 0 and '8 succeeded' in again.stdout
    assert 'changed=0' in again.stdout.split('PLAY RECAP')[1]
    assert not any(client(host).claims() for host in hosts)


def test_run_workflows_fails_when_a_workflow_fails(fleet_clean, tmp_path):
    fleet = fleet_clean
    hosts = [fleet.hosts[name].address for name in ('h5', 'h6')]
    extra = {'workflows_dir': write_inis(tmp_path / 'mixed', ['ok-1', 'bad-1', 'ok-2'], failing=['bad-1']),
             'workflow_image': fleet.image, 'workflow_command': COMMAND, 'workflow_hosts': hosts}
    result = playbook(fleet, tmp_path, extra)
    assert result.returncode != 0
    assert '3 workflow(s) in batch mixed: 2 succeeded, 1 failed or cancelled' in result.stdout, result.stdout[-4000:]
    assert 'workflow bad-1' in result.stdout and 'exit code 1' in result.stdout
    failed = [host for host in hosts if client(host).state()['state'] == 'failed']
    assert len(failed) == 1   # the agent reports the host failed until acknowledged
    client(failed[0]).ack_failures()
    wait_state(failed[0], 'lazy')
