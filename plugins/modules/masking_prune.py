#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: masking_prune
short_description: Delete finished masking jobs and their history older than a number of days
version_added: 0.1.0
description:
  - The retention of the orchestra.fleet masking queue. Deletes jobs that ended (V(SUCCEEDED), V(WARNING), V(FAILED),
    V(CANCELLED)) more than O(older_than_days) days ago, with their transition history. Queued, scheduled and
    running jobs are never touched.
  - Run it from the C(orchestra.fleet.schedule) playbook (variable C(masking_retention_days)), cron or an AWX schedule.
  - A pruned request id is free again, so submitting it later queues a new run.
extends_documentation_fragment:
  - orchestra.fleet.masking
  - ansible.builtin.action_common_attributes
author:
  - orchestra.fleet developers (@orchestra-fleet)
options:
  older_than_days:
    description:
      - Delete jobs that finished more than this many days ago. V(0) deletes every finished job.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is deleted; RV(jobs) and RV(history) count what would be.
  diff_mode:
    support: none
'''

EXAMPLES = r'''
- name: Keep 30 days of finished masking jobs
  orchestra.fleet.masking_prune:
    older_than_days: 30
  delegate_to: localhost

- name: How much would a 7-day retention delete?
  orchestra.fleet.masking_prune:
    older_than_days: 7
  check_mode: true
  delegate_to: localhost
  register: would
'''

RETURN = r'''
jobs:
  description: Finished jobs deleted (in check mode, that would be deleted).
  returned: success
  type: int
  sample: 1200
history:
  description: History rows deleted with them.
  returned: success
  type: int
  sample: 6000
before:
  description: Jobs that finished before this moment (ISO-8601 UTC) were deleted.
  returned: success
  type: str
  sample: "2026-10-23T02:00:00.000Z"
'''

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    masking_module, argument_spec, open_queue, queue_errors, store_url_of)


def main():
    module = masking_module(argument_spec=argument_spec(older_than_days=dict(type='int', default=30)),
                            supports_check_mode=True)
    queue = open_queue(module, read_only=module.check_mode)
    with queue_errors(module, store_url=store_url_of(module)):
        pruned = queue.prune(module.params['older_than_days'], dry_run=module.check_mode)
    module.exit_json(changed=pruned['jobs'] > 0, **pruned)


if __name__ == '__main__':
    main()
