"""The masking report of real runs (two simulated engines over real HTTP, real ansible-playbook), opened in a
real headless Chromium: no console error, every execution's bar on its engine's slot, the table agreeing
with masking_queue_info; and progress of a running job recorded by the poll step (rowsMasked / rowsTotal)."""
import html.parser
import json
import os
import subprocess
import time

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_report
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_queue import MaskingQueue

from tests.integration.masking_modules.helpers import BIN, USER
from tests.integration.report.browser import console_errors, logs_dir
from tests.integration.report.conftest import JOBS, SLOTS

BATCH = [job['name'] for job in JOBS if job['name'] != 'mask_slow']   # the demo's seven jobs
INVENTORY = """\
[lazy]
worker-1 ansible_host=10.99.0.11 orchestra_state=lazy orchestra_reason="idle for 12 min"
[failed]
worker-2 ansible_host=10.99.0.12 orchestra_state=failed orchestra_reason="workflow nightly exited 3"
[unreachable]
worker-3 ansible_host=10.99.0.13 orchestra_state=unreachable orchestra_reason="no answer on port 9009 within 2.0 s"
"""


class Dom(html.parser.HTMLParser):
    """The parts of the rendered DOM the tests check: bars, job rows with their cells, host rows, element texts."""

    def __init__(self):
        super().__init__()
        self.bars = []
        self.rows = {}
        self.hosts = {}
        self.texts = {}
        self._row = None
        self._cell = None
        self._id = None
        self._groups = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'g':
            self._groups.append(attrs)
        if tag == 'rect' and 'data-job' in attrs:
            # a bar's engine and slot are its slot group's (the lane it is drawn in)
            slot = [group for group in self._groups if 'data-slot' in group][-1]
            self.bars.append(dict(attrs, **{'data-engine': slot['data-engine'], 'data-slot': slot['data-slot'],
                                            'data-state': attrs['class']}))
        elif tag == 'tr' and 'data-job' in attrs:
            self._row = self.rows.setdefault(int(attrs['data-job']), [])
        elif tag == 'tr' and 'data-host' in attrs:
            self.hosts[attrs['data-host']] = attrs['data-state']
        elif tag == 'td' and self._row is not None:
            self._row.append('')
            self._cell = True
        if attrs.get('id'):
            self._id = attrs['id']
            self.texts[self._id] = ''

    def handle_endtag(self, tag):
        if tag == 'g':
            self._groups.pop()
        if tag == 'tr':
            self._row = None
        if tag == 'td':
            self._cell = None

    def handle_data(self, data):
        if self._row is not None and self._cell:
            self._row[-1] += data
        if self._id is not None:
            self.texts[self._id] += data


def parse(dom_text):
    dom = Dom()
    dom.feed(dom_text)
    return dom


def register_and_queue(engines, names):
    tasks = [{'name': 'Register %s' % name, 'orchestra.fleet.masking_engine': {
        'name': name, 'url': handle.url, 'slots': SLOTS, 'jobs': [job['name'] for job in JOBS]}}
        for name, handle in sorted(engines.items())]
    tasks.append({'name': 'Queue the batch', 'loop': names, 'orchestra.fleet.masking_job': {
        'job_name': '{{ item }}', 'request_id': 'report-{{ item }}', 'wait': False}})
    return tasks


def run_report_playbook(runner, dest, inventory, check=False):
    cmd = [os.path.join(BIN, 'ansible-playbook'), '-i', inventory, 'orchestra.fleet.report',
           '-e', json.dumps({'masking_store': runner.store, 'masking_report_dest': dest})]
    if check:
        cmd.append('--check')
    proc = subprocess.run(cmd, cwd=str(runner.workdir), env=runner.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=180, check=False)
    return proc.returncode, proc.stdout


def test_report_of_real_runs_in_chromium(engines, runner, browser, tmp_path):
    tasks = register_and_queue(engines, BATCH) + [
        {'name': 'Drive the queue until it drains', 'orchestra.fleet.masking_poll': {
            'follow': True, 'timeout': 90, 'poll_interval': 0.2}},
        {'name': 'Read the queue', 'register': 'info', 'orchestra.fleet.masking_queue_info': {'limit': 0}},
    ]
    rc, out, results = runner.play(tasks, register=['info'], timeout=240)
    assert rc == 0, out
    jobs = results['info']['jobs']
    assert sorted(job['state'] for job in jobs) == ['FAILED'] + ['SUCCEEDED'] * 5 + ['WARNING'], jobs

    inventory = tmp_path / 'fleet.ini'
    inventory.write_text(INVENTORY)
    dest = str(tmp_path / 'report.html')
    rc, out = run_report_playbook(runner, dest, str(inventory))
    assert rc == 0, out
    assert 'masking report: %s (7 jobs, 2 engines' % dest in out, out
    assert 'written' in out

    dom_text, errors = browser.open(dest)
    assert errors == [], errors
    dom = parse(dom_text)
    # the inline script ran to its end (it writes the count of shown rows): no script error on the way
    assert dom.texts.get('qc') == '7 shown', dom.texts.get('qc')

    # every execution has exactly one bar, on its own engine, in a slot lane the engine has, in its state's class
    bars = dict((int(drawn['data-job']), drawn) for drawn in dom.bars)
    assert len(bars) == len(dom.bars) == 7
    for job in jobs:
        drawn = bars[job['id']]
        assert drawn['data-engine'] == job['engine'], (job, drawn)
        assert drawn['data-state'] == job['state'], (job, drawn)
        assert 1 <= int(drawn['data-slot']) <= SLOTS, (job, drawn)
    # two executions in one lane never overlap in time (the lane is a slot)
    lanes = {}
    for job in jobs:
        lanes.setdefault((job['engine'], bars[job['id']]['data-slot']), []).append(
            (masking_report.epoch(job['started_at']), masking_report.epoch(job['finished_at'])))
    for runs in lanes.values():
        runs.sort()
        for (_s1, end), (start, _e2) in zip(runs, runs[1:]):
            assert end <= start, runs
    # the failed and the warned job stand out: outlined bars, tinted rows, listed at the top
    assert {bars[j['id']]['class'] for j in jobs if j['state'] in ('FAILED', 'WARNING')} == {'FAILED', 'WARNING'}
    assert 'mask_payroll' in dom.texts['problems'] and 'mask_legacy_crm' in dom.texts['problems']

    # the table agrees with masking_queue_info: one row per job, same state, engine, execution and rows
    assert sorted(dom.rows) == sorted(job['id'] for job in jobs)
    for job in jobs:
        cells = dom.rows[job['id']]
        assert cells[1] == job['job_name'] and cells[2] == job['request_id']
        assert cells[3] == job['state'] and cells[5] == job['engine']
        assert cells[6] == str(job['execution_id'])
        assert cells[7].startswith('{:,}'.format(job['rows_masked'])), (cells, job)
        if job['state'] == 'FAILED':
            assert job['error'] in cells[4]
    # the fleet's hosts by state, with their reasons, from the inventory the playbook ran with
    assert dom.hosts == {'worker-1': 'lazy', 'worker-2': 'failed', 'worker-3': 'unreachable'}
    assert 'workflow nightly exited 3' in dom_text

    shot = browser.screenshot(dest, os.path.join(logs_dir(), 'report-real-runs.png'))
    assert os.path.getsize(shot) > 10000

    # the queue is quiet: writing again changes nothing; check mode writes nothing anywhere
    before = os.stat(dest).st_mtime_ns
    rc, out = run_report_playbook(runner, dest, str(inventory))
    assert rc == 0 and 'unchanged' in out and 'changed=0' in out, out
    assert os.stat(dest).st_mtime_ns == before
    other = str(tmp_path / 'check.html')
    rc, out, results = runner.play([{'name': 'Report in check mode', 'register': 'checked',
                                     'orchestra.fleet.masking_report': {'dest': other}}], register=['checked'], check=True)
    assert rc == 0, out
    assert results['checked']['changed'] is True and results['checked']['size'] > 1000
    assert not os.path.exists(other)


def test_progress_of_a_running_job(engines, tmp_path, browser):
    """Before the poll step recorded rows of running executions, a running job showed rows_masked null until it ended."""
    store = 'sqlite:///%s' % (tmp_path / 'queue.db')
    queue = MaskingQueue(store, credentials={'*': dict(USER)}, refresh_interval=0.2)
    for name, handle in sorted(engines.items()):
        queue.ensure_engine(name, handle.url, slots=SLOTS, jobs=[job['name'] for job in JOBS])
    _created, job = queue.enqueue('mask_slow', request_id='report-progress-%d' % os.getpid())
    seen_counting = False
    first = running = None
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            queue.schedule_step()
            queue.poll_step()
            current = queue.job(job['id'])
            if current['state'] == 'RUNNING' and current['rows_total'] == -1:
                seen_counting = True
                assert current['progress']['counting'] is True and current['progress']['percent'] is None
            if current['state'] == 'RUNNING' and (current['rows_masked'] or 0) > 0 and (current['rows_total'] or 0) > 0:
                first = first or current
                if current['progress']['percent'] >= 40:
                    running = current
                    break
            time.sleep(0.2)
        assert running is not None, 'no progress recorded while running: %r' % queue.job(job['id'])
        progress = running['progress']
        assert 0 < progress['percent'] < 100, progress
        assert progress['rows_per_second'] > 0 and progress['eta_at'] is not None, progress
        # the rate is observed from the start (row counting included), so the first estimates are long and
        # they converge as the run goes on: past 40 % of an 8 s run the end is expected within the next 15 s
        eta = masking_report.epoch(progress['eta_at'])
        assert time.time() - 1 < eta < time.time() + 15, progress
        assert first['progress']['percent'] <= progress['percent']
        # masking_queue_info returns the queue's job dicts as they are: progress included
        listed = [entry for entry in queue.info(engines=False)['jobs'] if entry['id'] == job['id']][0]
        assert listed['progress']['percent'] is not None

        info = queue.info()
        page = masking_report.render(info['jobs'], info['engines'], now=time.time())
        path = str(tmp_path / 'running.html')
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(page)
        dom_text, errors = browser.open(path)
        assert errors == []
        dom = parse(dom_text)
        assert [drawn['data-state'] for drawn in dom.bars] == ['RUNNING']
        assert '%' in dom.rows[job['id']][8], dom.rows[job['id']]
        browser.screenshot(path, os.path.join(logs_dir(), 'report-running.png'), height=900)
    finally:
        queue.cancel(job['id'])
        for _try in range(20):
            queue.poll_step()
            if queue.job(job['id'])['state'] in ('CANCELLED', 'SUCCEEDED', 'FAILED'):
                break
            time.sleep(0.2)
        queue.close()
    assert seen_counting or running['rows_total'] > 0


def test_console_check_catches_a_broken_page(browser, tmp_path):
    """The console check itself: a page whose script throws, logs or reaches for the network is caught."""
    path = tmp_path / 'broken.html'
    path.write_text('<html><body><img src="http://127.0.0.1:9/x.png"><script>console.log("x"); null.f();</script></body></html>')
    _dom, errors = browser.open(str(path))
    assert any('Uncaught' in line for line in errors), errors
    assert console_errors('[1:1:1201/1:INFO:CONSOLE:1] "Uncaught TypeError: x", source: file:///r.html (1)')


def test_demo_writes_a_report_of_its_seven_jobs(runner, browser, tmp_path):
    """make demo's playbook: the report of its run shows both engines' slots with the seven jobs as bars."""
    demo_dir = str(tmp_path / 'demo')
    rc, out = runner.playbook('demo', {'demo_dir': demo_dir}, timeout=300)
    assert rc == 0, out
    path = os.path.join(demo_dir, 'masking-report.html')
    assert 'report (open it in a browser): %s' % path in out, out
    dom_text, errors = browser.open(path)
    assert errors == [], errors
    dom = parse(dom_text)
    assert len(dom.bars) == 7 and len(dom.rows) == 7
    engines = set(drawn['data-engine'] for drawn in dom.bars)
    assert len(engines) == 2, engines
    for engine in engines:   # every slot of both engines has its lane, bars or not
        assert 'data-engine="%s" data-slot="1"' % engine in dom_text and 'data-engine="%s" data-slot="2"' % engine in dom_text
    assert sorted(drawn['data-state'] for drawn in dom.bars) == ['FAILED'] + ['SUCCEEDED'] * 5 + ['WARNING']
    assert dom.texts.get('qc') == '7 shown'
    browser.screenshot(path, os.path.join(logs_dir(), 'report-demo.png'))


def test_a_missing_store_is_an_error_and_writes_nothing(runner, tmp_path):
    dest = str(tmp_path / 'nothing.html')
    rc, out, results = runner.play([{'name': 'Report of a store that does not exist', 'register': 'missing',
                                     'ignore_errors': True, 'orchestra.fleet.masking_report': {'dest': dest}}],
                                   register=['missing'], defaults={'store': str(tmp_path / 'typo.db')})
    assert rc == 0, out
    assert results['missing']['failed'] is True and results['missing']['error_kind'] == 'store_unavailable', results
    assert not os.path.exists(dest) and not os.path.exists(str(tmp_path / 'typo.db'))
