"""The pure report renderer: rows -> one HTML string (lanes, queue depth, window, escaping, self-containment)."""
import re

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_report as report
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_views import job_dict, progress

NOW = 1800000000.0


def job(job_id, state, engine=None, submitted=0.0, started=None, finished=None, **extra):
    row = dict(id=job_id, job_name='mask_%d' % job_id, request_id='r-%d' % job_id, state=state, engine=engine,
               submitted_at=NOW + submitted, scheduled_at=None, started_at=None if started is None else NOW + started,
               finished_at=None if finished is None else NOW + finished, rows_masked=None, rows_total=None,
               error=None, reason=None, execution_id=None if started is None else 1000 + job_id)
    row.update(extra)
    return row


ENGINES = [dict(name='e1', url='https://e1:8282/masking/api', slots=2, slots_used=0),
           dict(name='e2', url='https://e2:8282/masking/api', slots=1, slots_used=1, unreachable_since=NOW + 50,
                last_error='connection refused', memory_mb=8192, memory_used_mb=2048)]


def bars(page):
    """{job id: engine, slot, state} of every bar: bars sit in their slot's group, which names engine and slot."""
    found = {}
    for group in re.finditer(r'<g class="slot" data-engine="([^"]*)" data-slot="(\d+)">(.*?)</g>', page):
        for drawn in re.finditer(r'<rect class="([A-Z_]+)" data-job="(\d+)"', group.group(3)):
            found[int(drawn.group(2))] = dict(engine=group.group(1), slot=int(group.group(2)), state=drawn.group(1))
    return found


def test_epoch_reads_iso_and_numbers():
    assert report.epoch('2027-01-15T08:00:00.000Z') == 1800000000.0
    assert report.epoch('2027-01-15T08:00:00+00:00') == 1800000000.0
    assert report.epoch('2027-01-15T08:00:00') == 1800000000.0   # no offset: UTC, as the queue writes
    assert report.epoch(12.5) == 12.5 and report.epoch(None) is None and report.epoch('') is None


def test_bars_land_on_their_engine_and_slot_lanes():
    jobs = [job(1, 'SUCCEEDED', 'e1', 0, 1, 10), job(2, 'FAILED', 'e1', 0, 2, 5), job(3, 'WARNING', 'e1', 0, 6, 9),
            job(4, 'RUNNING', 'e2', 0, 3), job(5, 'QUEUED', reason='all 3 slots full')]
    page = report.render(jobs, ENGINES, now=NOW + 20)
    placed = bars(page)
    assert placed == {1: dict(engine='e1', slot=1, state='SUCCEEDED'), 2: dict(engine='e1', slot=2, state='FAILED'),
                      3: dict(engine='e1', slot=2, state='WARNING'), 4: dict(engine='e2', slot=1, state='RUNNING')}
    assert 'over slots' not in page
    assert page.count('<tr class=') == 5            # the queued job is in the table, without a bar
    assert 'all 3 slots full' in page
    assert 'unreachable since' in page and 'connection refused' in page and '2048 / 8192 MB' in page


def test_more_runs_at_once_than_slots_are_marked():
    jobs = [job(1, 'SUCCEEDED', 'e2', 0, 1, 10), job(2, 'SUCCEEDED', 'e2', 0, 2, 9)]
    page = report.render(jobs, ENGINES, now=NOW + 20)
    assert bars(page)[2]['slot'] == 2 and 'slot 2 (over slots)' in page


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 50)), min_size=1, max_size=30))
def test_lanes_never_overlap_and_use_no_more_than_the_peak(intervals):
    jobs = [report.Job(job(i + 1, 'SUCCEEDED', 'e1', 0, start, start + length), NOW) for i, (start, length) in enumerate(intervals)]
    used = report.assign_lanes(jobs)

    def end(entry):   # an instant-long run still occupies MIN_RUN of its lane
        return max(entry.run_end, entry.started + report.MIN_RUN)
    by_lane = {}
    for entry in jobs:
        by_lane.setdefault(entry.lane, []).append((entry.started, end(entry)))
    for runs in by_lane.values():
        runs.sort()
        assert all(stop <= start for (_a, stop), (start, _b) in zip(runs, runs[1:]))
    # the most runs at once (at some run's start) is the number of lanes needed: no more are used
    points = sorted(set(entry.started for entry in jobs))
    peak = max(sum(1 for e in jobs if e.started <= p < end(e)) for p in points)
    assert used == peak


def test_queue_depth_counts_waiting_and_running():
    jobs = [report.Job(job(1, 'SUCCEEDED', 'e1', 0, 10, 20), NOW), report.Job(job(2, 'SUCCEEDED', 'e1', 0, 15, 30), NOW),
            report.Job(job(3, 'QUEUED', None, 25), NOW)]
    series = report.queue_depth(jobs, NOW, NOW + 40, bins=40)
    assert len(series) == 40
    assert series[5][1:] == (2, 0)       # both waiting
    assert series[12][1:] == (1, 1)      # one started
    assert series[17][1:] == (0, 2)
    assert series[27][1:] == (1, 1)      # the third waits on, the first ended
    assert series[35][1:] == (1, 0)
    # a job still waiting waits until now, not until the window's end
    series = report.queue_depth(jobs, NOW, NOW + 40, bins=40, now=NOW + 30)
    assert series[29][1:] == (1, 1) and series[35][1:] == (0, 0)


def test_text_from_engines_and_agents_is_escaped_and_nothing_is_loaded():
    evil = '<script>alert(1)</script><img src="http://evil.example/x">'
    jobs = [job(1, 'FAILED', 'e1', 0, 1, 2, error=evil)]
    hosts = [dict(name='h<1>', address='10.0.0.1', state='failed', reason=evil), 'bare-host']
    page = report.render(jobs, ENGINES, now=NOW + 5, hosts=hosts, title='<b>t</b>')
    assert '<script>alert' not in page and '<img' not in page and '<b>t</b>' not in page
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in page
    assert page.count('<script>') == 1                       # the page's own small script only
    assert not re.search(r'\b(?:src|href)=["\']|@import|url\(', page)   # loads nothing: no network, opens from disk
    assert 'data-host="bare-host" data-state="unknown"' in page


def test_fleet_section_only_with_hosts():
    assert 'Fleet hosts' not in report.render([], ENGINES, now=NOW)
    page = report.render([], ENGINES, now=NOW, hosts=[dict(name='w1', orchestra_state='lazy', orchestra_reason='idle')])
    assert 'Fleet hosts' in page and 'data-host="w1" data-state="lazy"' in page and 'idle' in page


def test_same_inputs_same_bytes():
    jobs = [job(1, 'SUCCEEDED', 'e1', 0, 1, 10)]
    assert report.render(jobs, ENGINES, now=NOW + 20) == report.render(jobs, ENGINES, now=NOW + 20)


def test_reference_time_is_the_last_change_of_a_quiet_queue():
    quiet = [job(1, 'SUCCEEDED', 'e1', 0, 1, 10)]
    assert report.reference_time(quiet, [], NOW + 999) == NOW + 10
    assert report.reference_time(quiet, ENGINES, NOW + 999) == NOW + 50    # e2 went down later
    active = quiet + [job(2, 'RUNNING', 'e1', 0, 3)]
    assert report.reference_time(active, [], NOW + 999) == NOW + 999
    assert report.reference_time([], [], NOW) == NOW


def test_window_selects_jobs_whose_life_overlaps_it():
    jobs = [job(1, 'SUCCEEDED', 'e1', 0, 1, 10), job(2, 'SUCCEEDED', 'e1', 100, 101, 110), job(3, 'RUNNING', 'e1', 5, 6)]
    shown, since, until = report.select(jobs, NOW + 200, since=NOW + 50, until=NOW + 150)
    assert sorted(entry.id for entry in shown) == [2, 3] and (since, until) == (NOW + 50, NOW + 150)
    assert report.summary(jobs, ENGINES, NOW + 200, NOW + 50, NOW + 150)['states'] == {'SUCCEEDED': 1, 'RUNNING': 1}


def test_window_options():
    assert report.window('2027-01-15T08:00:00Z', '1800000060') == (NOW, NOW + 60)
    assert report.window(None, None, 2.0) == (None, None)
    for args in (('yesterday', None), (None, None, -1.0), ('1800000060', '1800000000'), ('1800000000', None, 1.0)):
        with pytest.raises(ValueError):
            report.window(*args)


def test_progress_of_a_running_job():
    row = dict(state='RUNNING', rows_masked=250, rows_total=1000, started_at=NOW, updated_at=NOW + 10)
    assert progress(row) == {'percent': 25.0, 'counting': False, 'rows_per_second': 25.0, 'eta_at': '2027-01-15T08:00:40.000Z',
                             'elapsed_seconds': None}
    counting = progress(dict(row, rows_masked=0, rows_total=-1))
    assert counting['counting'] is True and counting['percent'] is None and counting['eta_at'] is None
    assert progress(dict(row, state='SUCCEEDED', rows_masked=1000))['eta_at'] is None
    assert progress(dict(row, rows_masked=None, rows_total=None))['percent'] is None


def test_elapsed_time_is_the_progress_a_workflow_has():
    # An agent reports no rows: how long a workflow has run is what an operator can see of it.
    workflow = dict(state='RUNNING', kind='fleet', rows_masked=None, rows_total=None, started_at=NOW, updated_at=NOW)
    assert progress(workflow, now=NOW + 42.04)['elapsed_seconds'] == 42.0
    assert progress(workflow)['elapsed_seconds'] is None                       # no clock given: unknown, not zero
    assert progress(dict(workflow, state='SUCCEEDED', finished_at=NOW + 90), now=NOW + 500)['elapsed_seconds'] == 90.0
    assert progress(dict(workflow, state='QUEUED', started_at=None), now=NOW + 5)['elapsed_seconds'] is None


def test_report_shows_percent_and_time_left_of_a_running_job():
    row = job(1, 'RUNNING', 'e1', 0, 0, rows_masked=250, rows_total=1000, updated_at=NOW + 10, cancel_requested=0)
    view = job_dict(dict(row, **dict((k, row[k]) for k in row)))
    page = report.render([view], ENGINES, now=NOW + 12)
    assert '25 %' in page and '28 s left' in page
    counting = report.render([dict(view, rows_masked=0, rows_total=-1, progress=None)], ENGINES, now=NOW + 12)
    assert 'counting rows' in counting


def test_ten_thousand_jobs_stay_small():
    jobs = [job(i, 'SUCCEEDED', 'e%d' % (1 + i % 2), i, i + 1, i + 30, rows_masked=1000, rows_total=1000) for i in range(1, 10001)]
    page = report.render(jobs, ENGINES, now=NOW + 20000)
    assert len(page.encode()) < 8 * 1024 * 1024
    assert len(bars(page)) == 10000


@given(since=st.integers(min_value=1_700_000_000, max_value=1_800_000_000), span=st.integers(min_value=2, max_value=700_000))
@settings(max_examples=200, deadline=None)
def test_axis_labels_stay_inside_the_picture(since, span):
    # The demo's 10 s window put a tick 6 px from the right edge: "15:19:30" was cut to "15:19:3".
    right = report.LABEL_W + report.CHART_W + 10
    for x, label in report._ticks(since, since + span, report.CHART_W):
        assert report.LABEL_W <= x and x + len(label) * report.TICK_CHAR_W / 2.0 <= right, (x, label)


def test_a_tick_at_the_right_edge_keeps_no_label():
    # An 8.01 s window: the 2 s tick at 1008 lies 1.2 px inside the chart's end, and its label would be cut.
    ticks = report._ticks(1000.0, 1008.01, report.CHART_W)
    assert [label for _x, label in ticks] == ['00:16:42', '00:16:44', '00:16:46']
