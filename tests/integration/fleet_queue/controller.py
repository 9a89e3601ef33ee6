"""One controller of the fleet_queue suite: drives the shared queue store until the given jobs have ended.

    controller.py STORE IDS_FILE HOST,HOST,... MODE SECONDS CLAIM_TTL
MODE steps: schedule and poll steps in a loop, without the leader lease (many controllers at once, as
masking_poll workers run); MODE wait: FleetQueue.wait (the leader lease, as the workflow_job module waits).
"""
import json
import os
import sys
import time

from ansible_collections.orchestra.fleet.plugins.module_utils.fleet_queue import FleetQueue
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_states import TERMINAL_STATES


def main():
    store, ids_file, hosts, mode, seconds, claim_ttl = sys.argv[1:7]
    with open(ids_file, encoding='utf-8') as handle:
        ids = json.load(handle)
    queue = FleetQueue(store, hosts=hosts.split(','), token=os.environ['ORCHESTRA_FLEET_TOKEN'], claim_ttl=int(claim_ttl),
                       host_refresh_interval=5.0, dead_holder_grace=3.0)
    deadline = time.monotonic() + float(seconds)
    if mode == 'wait':
        jobs = queue.wait(ids, float(seconds), poll_interval=0.2)
    else:
        while time.monotonic() < deadline:
            result = queue.drive_once()
            jobs = queue.store.jobs(ids=ids)
            if all(job['state'] in TERMINAL_STATES for job in jobs):
                break
            if not result['schedule']['placed'] and not result['poll']['finished']:
                time.sleep(0.1)
        queue.close_drivers()
        jobs = [dict(job, claim_secret=None) for job in queue.store.jobs(ids=ids)]
    print(json.dumps({'states': sorted(set(job['state'] for job in jobs))}))


if __name__ == '__main__':
    main()
