#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r'''
module: masking_report
short_description: Write the masking queue (and the fleet's hosts) as one self-contained HTML report
version_added: 0.1.0
description:
  - Writes one HTML file that shows, over a window of time, which engine slot ran which masking job and when
    (bars coloured by outcome, waits in the queue as dashed lines before them), the queue depth over time, the
    engines (slots used, memory, reachability, last error), the fleet's hosts by state with their reasons when
    O(hosts) is given, and a table of the jobs (state, reason, engine, rows, progress, waited, ran) that can be
    sorted and filtered.
  - The file is self-contained (inline CSS, SVG and a small inline script), loads nothing from the network, opens
    from disk or a mail attachment and prints.
  - Reads the queue only, like M(orchestra.fleet.masking_queue_info); never talks to the engines. It opens an
    existing queue store and never creates or migrates one.
  - When every job has ended, the report shows the queue as of its last change instead of the wall clock, so
    writing it again for a quiet queue reports no change.
  - Engines get one lane per slot; the queue records the engine of each execution, the lane is the lowest one
    free when the execution started.
extends_documentation_fragment:
  - orchestra.fleet.masking
  - ansible.builtin.action_common_attributes
  - ansible.builtin.files
author:
  - orchestra.fleet developers (@orchestra-fleet)
options:
  dest:
    description:
      - Path of the HTML file to write (on the host the module runs on, normally the controller). Its directory must exist.
    type: path
    required: true
  since:
    description:
      - Start of the window, ISO-8601 (V(2026-11-22T02:00:00Z)) or epoch seconds.
      - Unset, the window starts O(hours) before its end, or with the oldest job in the queue when O(hours) is unset too.
      - Mutually exclusive with O(hours).
    type: str
  until:
    description:
      - End of the window, ISO-8601 or epoch seconds. Unset, now (or, when every job has ended, the last change in the queue).
    type: str
  hours:
    description:
      - Length of the window in hours, ending at O(until).
    type: float
  hosts:
    description:
      - The fleet's hosts to show by state, for example
        C(query('orchestra.fleet.fleet_hosts', 'lazy', 'busy', 'failed', 'unreachable', details=true)).
      - Each entry is a dictionary with C(name), and optionally C(address), C(state) and C(reason)
        (C(orchestra_state) and C(orchestra_reason), as the inventory plugin's host variables, also work), or a host name.
      - Unset, the report has no fleet section.
    type: list
    elements: raw
  title:
    description:
      - Title of the page.
    type: str
    default: Masking queue report
attributes:
  check_mode:
    support: full
    details:
      - Builds the report and says whether the file would change, without writing it.
  diff_mode:
    support: none
'''

EXAMPLES = r'''
- name: Write the report of the last 24 hours
  orchestra.fleet.masking_report:
    store: /var/lib/orchestra/masking-queue.db
    dest: /var/www/reports/masking.html
    hours: 24
  delegate_to: localhost

- name: Report the queue and the fleet's hosts
  orchestra.fleet.masking_report:
    dest: "{{ playbook_dir }}/queue-report.html"
    hosts: "{{ query('orchestra.fleet.fleet_hosts', 'lazy', 'busy', 'failed', 'unreachable', subnets=['10.20.0.0/24'], details=true) }}"
  delegate_to: localhost
  register: report

- name: Say where it is
  ansible.builtin.debug:
    msg: "{{ report.dest }}: {{ report.jobs }} jobs, {{ report.size }} bytes"
'''

RETURN = r'''
dest:
  description: Path of the report.
  returned: always
  type: str
  sample: /var/www/reports/masking.html
size:
  description: Size of the report in bytes (what was written, or would be in check mode).
  returned: always
  type: int
  sample: 48211
jobs:
  description: Number of jobs in the window (the rows of the report's table).
  returned: always
  type: int
  sample: 7
engines:
  description: Number of engines in the report.
  returned: always
  type: int
  sample: 2
states:
  description: Number of jobs in the window per state.
  returned: always
  type: dict
  sample: {SUCCEEDED: 5, WARNING: 1, FAILED: 1}
window:
  description: The window the report covers, ISO-8601 UTC.
  returned: always
  type: dict
  contains:
    since:
      description: Start of the window.
      type: str
      sample: "2026-11-22T02:00:00.000Z"
    until:
      description: End of the window.
      type: str
      sample: "2026-11-22T03:00:00.000Z"
as_of:
  description: The moment the report shows the queue at (now, or the queue's last change when every job has ended).
  returned: always
  type: str
  sample: "2026-11-22T03:00:00.000Z"
store:
  description: The store in use, as the queue describes it (passwords masked).
  returned: always
  type: str
  sample: sqlite:////var/lib/orchestra/masking-queue.db
'''

import os
import tempfile
import time

from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_report as report
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_module import (
    masking_module, argument_spec, open_queue, queue_errors, store_url_of)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_views import iso


def current_bytes(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def write_atomically(path, data):
    """Write next to the destination and rename over it: a reader never sees half a report."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(prefix='.masking-report-', suffix='.html', dir=directory)
    try:
        with os.fdopen(handle, 'wb') as out:
            out.write(data)
        os.chmod(temp, 0o644 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main():
    module = masking_module(argument_spec=argument_spec(
        dest=dict(type='path', required=True),
        since=dict(type='str'),
        until=dict(type='str'),
        hours=dict(type='float'),
        hosts=dict(type='list', elements='raw'),
        title=dict(type='str', default='Masking queue report'),
    ), mutually_exclusive=[('since', 'hours')], add_file_common_args=True, supports_check_mode=True)
    params = module.params
    dest = params['dest']
    try:
        since, until = report.window(params['since'], params['until'], params['hours'])
    except ValueError as error:
        module.fail_json(msg=str(error), error_kind='bad_parameter')
    if not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        module.fail_json(msg='the directory of dest does not exist: %s' % os.path.dirname(os.path.abspath(dest)),
                         error_kind='bad_parameter')
    queue = open_queue(module, read_only=True)
    with queue_errors(module, store_url=store_url_of(module)):
        info = queue.info(jobs=True, engines=True)
    jobs, engines = info.get('jobs') or [], info.get('engines') or []
    now = report.reference_time(jobs, engines, time.time())
    end = until if until is not None else now
    if params['hours'] is not None:
        since = end - params['hours'] * 3600.0
    html, summary = report.build(jobs, engines, now=now, since=since, until=until, hosts=params['hosts'],
                                 title=params['title'], store=info.get('store'))
    data = to_bytes(html)
    changed = current_bytes(dest) != data
    if changed and not module.check_mode:
        write_atomically(dest, data)
    file_args = module.load_file_common_arguments(params, path=dest)
    if os.path.exists(dest):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(changed=changed, dest=dest, size=len(data), store=info.get('store'), as_of=iso(now),
                     jobs=summary['jobs'], engines=len(engines), states=summary['states'],
                     window=dict(since=iso(summary['since']), until=iso(summary['until'])))


if __name__ == '__main__':
    main()
