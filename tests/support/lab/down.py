"""make lab-down: remove what the lab left behind (test hosts, then the dockerd it started, by recorded pid)."""
from tests.support import systemd_hosts
from tests.support.lab import docker_engine

if __name__ == '__main__':
    if docker_engine.engine_answers():
        systemd_hosts.remove_leftovers()
    print('dockerd stopped' if docker_engine.stop_engine() else 'no lab dockerd recorded')
