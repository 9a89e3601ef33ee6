"""make lab-down: stop lab servers the test harness started (by recorded pid)."""
from tests.support.lab import docker_engine

if __name__ == '__main__':
    print('dockerd stopped' if docker_engine.stop_engine() else 'no lab dockerd recorded')
