"""ansible-inventory with orchestra.fleet.fleet against real agents, sshd and misbehaving servers in namespaces."""
import json
import os

import pytest


EXPECTED = {
    'lazy1': 'lazy', 'lazy2': 'lazy', 'busy': 'busy', 'failed': 'failed', 'claimed': 'claimed', 'sshonly': 'unprovisioned',
    'reset': 'unreachable', 'tarpit': 'unreachable', 'html': 'invalid', 'garbage': 'invalid', 'wrong_json': 'invalid',
}
REASONS = {
    'busy': '1 workload container', 'failed': 'exited 3', 'claimed': 'suite-holder', 'sshonly': 'SSH port 22 answers',
    'reset': 'reset', 'tarpit': 'agent port 9009: no complete answer within 1.0 s', 'html': 'text/html', 'garbage': 'not with HTTP',
    'wrong_json': 'wrong shape',
}


def test_every_host_lands_in_its_group_with_a_reason(fleet, ansible, tmp_path):
    data = ansible.inventory_list(ansible.subnet_inventory(tmp_path))
    hostvars = data['_meta']['hostvars']
    by_address = dict((host.address, name) for name, host in fleet.hosts.items())
    assert sorted(hostvars) == sorted(by_address)  # dead addresses of the /24 are not hosts
    for address, name in by_address.items():
        assert address in data.get(EXPECTED[name], {}).get('hosts', []), (name, hostvars[address])
        assert hostvars[address]['orchestra_state'] == EXPECTED[name]
        assert REASONS.get(name, '') in hostvars[address]['orchestra_reason'], (name, hostvars[address])
    claimed = hostvars[fleet.hosts['claimed'].address]
    assert claimed['orchestra_claim_owner'] == 'suite-holder' and claimed['orchestra_fencing'] >= 1
    lazy = hostvars[fleet.hosts['lazy1'].address]
    assert lazy['orchestra_agent_url'] == 'http://%s:9009' % fleet.hosts['lazy1'].address
    assert all(key.startswith('orchestra_') for key in lazy)


def test_graph_of_one_group(fleet, ansible, tmp_path):
    result = ansible.run([ansible.bin('ansible-inventory'), '-i', ansible.subnet_inventory(tmp_path), '--graph', 'lazy'])
    assert result.returncode == 0, result.stderr
    lines = [line.strip(' |-') for line in result.stdout.splitlines()]
    assert lines[0] == '@lazy:'
    assert sorted(lines[1:]) == sorted([fleet.hosts['lazy1'].address, fleet.hosts['lazy2'].address])


def test_hosts_whose_flags_hold_together_are_in_each_group(fleet, ansible, tmp_path):
    data = ansible.inventory_list(ansible.subnet_inventory(tmp_path))
    failed, busy = fleet.hosts['failed'].address, fleet.hosts['busy'].address
    assert data['_meta']['hostvars'][failed]['orchestra_state'] == 'failed'
    assert sorted(data['busy']['hosts']) == sorted([busy, failed])
    assert data['failed']['hosts'] == [failed]
    assert failed not in data.get('lazy', {}).get('hosts', [])


def test_hosts_file_hosts_and_env_injection(fleet, ansible, tmp_path):
    cache = tmp_path / 'orchestra.cache'
    cache.write_text('# written by the old tool\n%s\n%s\n' % (fleet.hosts['busy'].address, fleet.lab.address(250)))
    path = ansible.write_inventory(tmp_path / 'env.orchestra.yml')  # sources only from the environment (AWX style)
    data = ansible.inventory_list(path, ORCHESTRA_FLEET_HOSTS_FILE=str(cache), ORCHESTRA_FLEET_TIMEOUT='1',
                                  ORCHESTRA_FLEET_HOSTS='%s, %s' % (fleet.hosts['lazy1'].address, fleet.hosts['sshonly'].address))
    hostvars = data['_meta']['hostvars']
    assert hostvars[fleet.hosts['lazy1'].address]['orchestra_state'] == 'lazy'
    assert hostvars[fleet.hosts['busy'].address]['orchestra_state'] == 'busy'
    assert hostvars[fleet.hosts['sshonly'].address]['orchestra_state'] == 'unprovisioned'
    dead = hostvars[fleet.lab.address(250)]  # named in the cache file, so reported although dead
    assert dead['orchestra_state'] == 'unreachable' and 'timeout' in dead['orchestra_reason']
    assert len(hostvars) == 4


def test_constructed_groups_see_full_facts(fleet, ansible, tmp_path):
    path = ansible.subnet_inventory(tmp_path, subnets=[], exclude=[],
                                    **{'hosts': [fleet.hosts['busy'].address, fleet.hosts['lazy1'].address],
                                       'keyed_groups': [{'key': 'orchestra_agent.version', 'prefix': 'agent'}],
                                       'groups': {'has_work': 'orchestra_agent.running | default(0) > 0'},
                                       'compose': {'docker_seen': 'orchestra_agent.docker.reachable'}})
    data = ansible.inventory_list(path)
    assert data['has_work']['hosts'] == [fleet.hosts['busy'].address]
    assert sorted(data['agent_0_1_0']['hosts']) == sorted([fleet.hosts['busy'].address, fleet.hosts['lazy1'].address])
    assert data['_meta']['hostvars'][fleet.hosts['busy'].address]['docker_seen'] is True
    assert 'orchestra_agent' not in data['_meta']['hostvars'][fleet.hosts['busy'].address]  # host vars stay lean


def test_cache_read_does_not_reset_ttl_and_flush_reprobes(fleet, ansible, tmp_path):
    cache_dir = tmp_path / 'cache'
    path = ansible.subnet_inventory(tmp_path, subnets=[], exclude=[], hosts=[fleet.hosts['lazy1'].address], cache=True,
                                    cache_plugin='ansible.builtin.jsonfile', cache_connection=str(cache_dir), cache_timeout=600)
    ansible.inventory_list(path)
    files = list(cache_dir.iterdir())
    assert len(files) == 1
    first = files[0].stat().st_mtime_ns
    os.utime(files[0], ns=(first - 10 ** 9, first - 10 ** 9))  # pretend it was written a second ago
    written = files[0].stat().st_mtime_ns
    # A cached read answers from the file even though the content is stale on purpose.
    stored = json.loads(files[0].read_text())
    wrapped = isinstance(stored, dict) and '__payload__' in stored  # ansible-core 2.19 jsonfile envelope
    entry = json.loads(stored['__payload__']) if wrapped else stored
    entry[0]['reason'] = 'from the cache'
    files[0].write_text(json.dumps({'__payload__': json.dumps(entry)} if wrapped else entry))
    os.utime(files[0], ns=(written, written))
    cached = ansible.inventory_list(path)
    assert cached['_meta']['hostvars'][fleet.hosts['lazy1'].address]['orchestra_reason'] == 'from the cache'
    assert files[0].stat().st_mtime_ns == written  # reading did not extend the TTL
    help_text = ansible.run([ansible.bin('ansible-inventory'), '--help']).stdout
    if '--flush-cache' in help_text:
        flushed = ansible.inventory_list(path, '--flush-cache')
        assert flushed['_meta']['hostvars'][fleet.hosts['lazy1'].address]['orchestra_reason'] == 'no workload running'
    else:  # ansible-core 2.16: only ansible-playbook has --flush-cache (docs/inventory.md)
        play = tmp_path / 'noop.yml'
        play.write_text('- hosts: localhost\n  gather_facts: false\n  tasks: []\n')
        result = ansible.run([ansible.bin('ansible-playbook'), '-i', path, '--flush-cache', str(play)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert 'from the cache' not in files[0].read_text()
    assert files[0].stat().st_mtime_ns > written


@pytest.mark.parametrize('options, message', [
    ({'subnets': ['10.78.0.0/33']}, 'not a valid CIDR'),
    ({'subnets': ['10.78.0.0/24'], 'bogus_option': 1}, 'unknown option(s) bogus_option'),
    ({'hosts': ['10.78.0.5'], 'exclude': ['10.78.0.0/24']}, 'conflicting sources'),
    ({'hosts_file': '/nonexistent/orchestra.cache'}, 'cannot read /nonexistent/orchestra.cache'),
    ({}, 'no source'),
])
def test_bad_configuration_fails_the_run(fleet, ansible, tmp_path, options, message):
    path = ansible.write_inventory(tmp_path / 'bad.orchestra.yml', **options)
    env = ansible.env()
    for key in [k for k in env if k.startswith('ORCHESTRA_FLEET_') and k != 'ORCHESTRA_FLEET_TOKEN']:
        env.pop(key)
    result = ansible.run([ansible.bin('ansible-inventory'), '-i', path, '--list'], env)
    assert result.returncode != 0
    # ansible-core 2.16 wraps its warnings to the terminal width; compare the words.
    assert message in ' '.join(result.stderr.split()), result.stderr
