#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: masking_schedule
short_description: Run one scheduler step of the masking queue
version_added: 0.1.0
description:
  - Places queued masking jobs onto engines with free slots (higher priority first, first come first served within a
    priority, least loaded engine that carries the job) and records for every job left queued why it waits.
  - Placing only reserves slots in the queue; M(orchestra.fleet.masking_poll) starts the placed jobs on the engines.
  - Safe to run from many processes at once. Run it from cron or an AWX schedule for unattended queues, or use the
    C(orchestra.fleet.schedule) playbook. Callers of M(orchestra.fleet.masking_job) with O(orchestra.fleet.masking_job#module:wait=true)
    run these steps themselves.
  - Does not talk to the engines, so no engine credentials are needed.
extends_documentation_fragment:
  - orchestra.fleet.masking
  - ansible.builtin.action_common_attributes
author:
  - orchestra.fleet developers (@orchestra-fleet)
options: {}
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
'''

EXAMPLES = r'''
- name: Place queued masking jobs
  orchestra.fleet.masking_schedule:
    store: /var/lib/orchestra/masking-queue.db
  delegate_to: localhost
  register: step

- name: Say what happened
  ansible.builtin.debug:
    msg: "placed {{ step.placed }}, still pending {{ step.pending }}"
'''

RETURN = r'''
placed:
  description: Jobs placed on an engine by this step.
  returned: always
  type: int
  sample: 3
pending:
  description: Jobs still queued after this step (each with its reason, see M(orchestra.fleet.masking_queue_info)).
  returned: always
  type: int
  sample: 1
step:
  description: Everything the scheduler step reported, for example the assignments it made.
  returned: always
  type: dict
  sample: {placed: 3, pending: 1}
'''

from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    masking_module, argument_spec, open_queue, queue_errors, store_url_of)


def main():
    module = masking_module(argument_spec=argument_spec(), supports_check_mode=False)
    queue = open_queue(module)
    with queue_errors(module, store_url=store_url_of(module)):
        step = queue.schedule_step()
    placed = int(step.get('placed') or 0)
    module.exit_json(changed=placed > 0, placed=placed, pending=int(step.get('pending') or 0), step=step)


if __name__ == '__main__':
    main()
