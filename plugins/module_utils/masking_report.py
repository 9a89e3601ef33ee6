# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The queue and the fleet as one self-contained HTML page (pure: dicts in, one string out).

    html = render(jobs, engines, now=time.time(), since=now - 86400, until=now, hosts=fleet_hosts)

jobs are the queue's job dicts (masking_views.job_dict: ISO-8601 times) or store rows (epoch
seconds); engines are engine dicts with slots_used. hosts are dicts as the fleet_hosts lookup returns
with details=true (name, address, state, reason) or bare names.

The page has inline CSS and SVG and a small inline script (sorting and filtering the jobs table);
it loads nothing, so it opens from disk, from a mail attachment, and prints (the script is only
a convenience: everything is in the markup). Every execution bar carries data-job, data-engine,
data-slot and data-state, so a browser test can check where it was drawn.

Slots: the queue records which engine ran a job, not which of its slots; lanes are assigned here,
each execution to the lowest lane free at its start (interval partitioning), so an engine never
needs more lanes than it ran executions at once. Lanes beyond the engine's slots are marked.
"""

import datetime
import html

OUTCOME_COLOURS = {
    'SUCCEEDED': '#2e9e58', 'WARNING': '#e0a100', 'FAILED': '#d63a3a', 'CANCELLED': '#8a8f98',
    'RUNNING': '#2f6fd6', 'ENGINE_QUEUED': '#8a5cd6', 'STARTING': '#7fb2f0', 'SCHEDULED': '#b7d0f5',
    'QUEUED': '#c9ccd1',
}
STATE_ORDER = ('QUEUED', 'SCHEDULED', 'STARTING', 'ENGINE_QUEUED', 'RUNNING', 'SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED')
ON_ENGINE = ('STARTING', 'RUNNING', 'ENGINE_QUEUED', 'SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED')
HOST_STATE_ORDER = ('lazy', 'busy', 'claimed', 'failed', 'double_booked', 'unknown', 'unprovisioned', 'unreachable', 'invalid')
HOST_COLOURS = {'lazy': '#2e9e58', 'busy': '#2f6fd6', 'claimed': '#8a5cd6', 'failed': '#d63a3a', 'double_booked': '#d63a3a',
                'unknown': '#8a8f98', 'unprovisioned': '#8a8f98', 'unreachable': '#e0a100', 'invalid': '#e0a100'}

LABEL_W = 170       # px left of the timeline for lane labels
CHART_W = 1000      # px of timeline
TICK_CHAR_W = 7     # px per character of an axis label (11 px sans-serif digits), to keep labels inside
LANE_H = 18
DEPTH_H = 90
PROBLEMS_LISTED = 8  # failed and warned jobs listed at the top
MIN_RUN = 0.001     # s: the least a run occupies its lane
DEPTH_BINS = 500    # the queue-depth chart has at most this many steps, whatever the number of jobs

CSS = """
*{box-sizing:border-box}body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;
background:#f5f6f8}header{background:#1d2330;color:#fff;padding:14px 24px}header h1{font-size:19px;margin:0 0 4px}
header .meta{color:#b8c0cc;font-size:12px}main{padding:12px 24px 40px}section{background:#fff;border:1px solid #dde1e6;
border-radius:6px;margin:14px 0;padding:12px 16px}h2{font-size:15px;margin:0 0 8px}.badges{display:flex;flex-wrap:wrap;gap:6px}
.b{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;color:#fff;background:#8a8f98;white-space:nowrap}
.b.z{opacity:.35}.legend{font-size:12px;color:#4a5260;margin:4px 0 8px}.legend i{display:inline-block;width:12px;height:10px;
margin:0 4px 0 10px;vertical-align:-1px;border-radius:2px}svg{display:block;max-width:100%;height:auto}svg text{font-size:11px;
fill:#4a5260}svg .eng{font-weight:600;fill:#1d2330}svg .over{fill:#d63a3a}svg .grid{stroke:#eceef1}svg .lane{fill:#fafbfc}
svg .wait{fill:none;stroke:#9aa1ab;stroke-width:2;stroke-dasharray:3 2}.slot rect[data-job]{stroke:#fff;stroke-width:.5;rx:2px}
.slot rect.FAILED,.slot rect.WARNING{stroke:#1d2330;stroke-width:1.2}%ssvg .now{stroke:#d63a3a;stroke-dasharray:4 3}
table{border-collapse:collapse;width:100%;font-size:12px}th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #eceef1;
vertical-align:top;white-space:nowrap}td.why{white-space:normal}th{background:#f0f2f5;position:sticky;top:0;cursor:pointer;user-select:none;white-space:nowrap}
th[data-num]{text-align:right}th.s-asc:after{content:" \\25B2"}th.s-desc:after{content:" \\25BC"}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.FAILED td{background:#fdecec}tr.WARNING td{background:#fdf6e0}td.why,#jobs td:nth-child(5){max-width:420px;
color:#4a5260;white-space:normal}td.n,#jobs td:nth-child(1),#jobs td:nth-child(n+7):nth-child(-n+11){text-align:right;
font-variant-numeric:tabular-nums}.st,#jobs td:nth-child(4){font-weight:600}.st.FAILED,tr.FAILED td:nth-child(4){color:#b02a2a}
.st.WARNING,tr.WARNING td:nth-child(4){color:#9a6d00}.st.SUCCEEDED,tr.SUCCEEDED td:nth-child(4){color:#1f7a42}
.st.RUNNING,tr.RUNNING td:nth-child(4){color:#2457a8}
.pb{display:inline-block;width:60px;height:8px;background:#e3e6ea;border-radius:4px;overflow:hidden;vertical-align:middle}
.pb i{display:block;height:100%;background:#2f6fd6}.tools{margin:0 0 8px}.tools input,.tools select{font:inherit;padding:3px 6px;
margin-right:8px}.muted{color:#8a8f98}.err{color:#b02a2a}.scroll{max-height:560px;overflow:auto}
@media print{body{background:#fff}header{background:#fff;color:#000;border-bottom:2px solid #000}header .meta{color:#333}
section{border:none;page-break-inside:avoid;padding:4px 0}.tools{display:none}.scroll{max-height:none;overflow:visible}
th{position:static}*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""

CSS = CSS.replace('%s', ''.join('.slot rect.%s{fill:%s}' % item for item in sorted(OUTCOME_COLOURS.items())))

# Sort by clicking a header (numbers by their data-v), filter by text and state. Small on purpose.
SCRIPT = """
(function(){var t=document.getElementById('jobs');if(!t)return;var b=t.tBodies[0],q=document.getElementById('q'),
s=document.getElementById('qs'),c=document.getElementById('qc');
function f(){var w=q.value.toLowerCase(),z=s.value,n=0;for(var i=0;i<b.rows.length;i++){var r=b.rows[i],
k=(!z||r.className==z)&&(!w||r.textContent.toLowerCase().indexOf(w)>=0);r.style.display=k?'':'none';if(k)n++}
c.textContent=n+' shown'}
q.addEventListener('input',f);s.addEventListener('change',f);
Array.prototype.forEach.call(t.tHead.rows[0].cells,function(h,i){h.addEventListener('click',function(){
var d=h.className=='s-asc'?-1:1;Array.prototype.forEach.call(t.tHead.rows[0].cells,function(x){x.className=''});
h.className=d>0?'s-asc':'s-desc';var num=h.hasAttribute('data-num'),rs=Array.prototype.slice.call(b.rows);
function v(c){var t=c.getAttribute('data-v');return parseFloat(t===null?c.textContent.replace(/,/g,''):t)}
rs.sort(function(x,y){var a=x.cells[i],e=y.cells[i];if(num){a=v(a);e=v(e);a=isNaN(a)?-1e18:a;e=isNaN(e)?-1e18:e;
return (a-e)*d}
return a.textContent.localeCompare(e.textContent)*d});var fr=document.createDocumentFragment();
rs.forEach(function(r){fr.appendChild(r)});b.appendChild(fr)})});f()})();
"""


def epoch(value):
    """ISO-8601 text (as the queue returns) or epoch seconds -> epoch seconds (None stays None)."""
    if value is None or value == '':
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if text.endswith('Z'):
        text = text[:-1] + '+00:00'
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def when(seconds):
    """Epoch -> short UTC text for the page."""
    if seconds is None:
        return ''
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S')


def duration(seconds):
    if seconds is None:
        return ''
    seconds = max(0.0, seconds)
    if seconds < 10:
        return '%.1f s' % seconds
    if seconds < 120:
        return '%d s' % round(seconds)
    if seconds < 7200:
        return '%d min %02d s' % divmod(int(round(seconds)), 60)
    return '%d h %02d min' % (int(seconds // 3600), int(seconds % 3600 // 60))


_ESCAPED = {}


def _e(value):
    """HTML-escaped text; repeated values (job and engine names, reasons) are escaped once."""
    if value is None:
        return ''
    try:
        return _ESCAPED[value]
    except KeyError:
        text = html.escape(str(value), quote=True)
        if len(_ESCAPED) < 50000:
            _ESCAPED[value] = text
        return text
    except TypeError:   # unhashable: escape it as it is
        return html.escape(str(value), quote=True)


class Job:
    """One job as the page needs it: epoch times, and where its run starts and ends on the timeline."""

    __slots__ = ('raw', 'id', 'state', 'engine', 'submitted', 'started', 'finished', 'run_end', 'lane', 'masked', 'total',
                 'progress', 'eta')

    def __init__(self, raw, now):
        self.raw = raw
        self.id = raw.get('id')
        self.state = raw.get('state') or 'QUEUED'
        self.engine = raw.get('engine')
        self.submitted = epoch(raw.get('submitted_at'))
        self.started = epoch(raw.get('started_at'))
        self.finished = epoch(raw.get('finished_at'))
        # A run still going ends "now" on the timeline; an ended one without a start time has no bar.
        self.run_end = self.finished if self.finished is not None else (now if self.started is not None else None)
        self.lane = None
        self.masked = raw.get('rows_masked')
        self.total = raw.get('rows_total')
        self.progress, self.eta = job_progress(self, now)

    @property
    def has_run(self):
        return self.engine is not None and self.started is not None and self.state in ON_ENGINE

    def waited(self, now):
        """Seconds between submission and start (so far, while still waiting)."""
        if self.submitted is None:
            return None
        if self.started is not None:
            return self.started - self.submitted
        if self.finished is not None:
            return self.finished - self.submitted
        return now - self.submitted

    def ran(self):
        if self.started is None or self.run_end is None:
            return None
        return self.run_end - self.started


def job_progress(job, now):
    """(percent or None, seconds left or None) from the rows recorded while running and the observed rate."""
    masked, total = job.masked, job.total
    percent = None
    if masked is not None and total and total > 0:
        percent = min(100.0, 100.0 * masked / total)
    elif job.state in ('SUCCEEDED', 'WARNING') and job.finished is not None:
        percent = 100.0
    eta = None
    progress = job.raw.get('progress') or {}
    eta_at = epoch(progress.get('eta_at')) if isinstance(progress, dict) else None
    if job.state == 'RUNNING':
        if eta_at is not None:
            eta = max(0.0, eta_at - now)
        elif percent is not None and masked and job.started is not None and now > job.started:
            eta = max(0, total - masked) / (masked / (now - job.started))
    return percent, eta


def assign_lanes(jobs):
    """Give every run on one engine the lowest lane free at its start -> number of lanes used (pure)."""
    ends = []
    for job in sorted(jobs, key=lambda j: (j.started, j.run_end, j.id or 0)):
        # a run of no measurable length still takes its instant (it is drawn): half-open [start, end) of MIN_RUN
        until = max(job.run_end, job.started + MIN_RUN)
        for lane, end in enumerate(ends):
            if end <= job.started:
                ends[lane] = until
                job.lane = lane
                break
        else:
            job.lane = len(ends)
            ends.append(until)
    return len(ends)


def queue_depth(jobs, since, until, bins=DEPTH_BINS, now=None):
    """Per time bin over [since, until]: (bin start, most jobs waiting, most jobs running) (pure, one sweep).

    A job still waiting waits until `now` (the chart shows nothing after it)."""
    now = until if now is None else now
    events = []
    for job in jobs:
        if job.submitted is None:
            continue
        wait_end = job.started if job.started is not None else (job.finished if job.finished is not None else now)
        events.append((job.submitted, 0, 1))
        events.append((wait_end, 0, -1))
        if job.started is not None and job.run_end is not None:
            events.append((job.started, 1, 1))
            events.append((job.run_end, 1, -1))
    events.sort(key=lambda e: (e[0], e[2]))   # ends before starts at the same instant
    span = max(until - since, 1e-9)
    bins = max(1, int(bins))
    waiting_max = [0] * bins
    running_max = [0] * bins
    level = [0, 0]
    current = 0
    index = 0
    count = len(events)
    while index < count and events[index][0] <= since:   # the level when the window opens
        level[events[index][1]] += events[index][2]
        index += 1
    waiting_max[0], running_max[0] = level
    for moment, kind, step in events[index:]:
        if moment > until:
            break
        position = min(bins - 1, int((moment - since) / span * bins))
        while current < position:   # carry the level into the bins the sweep passes
            current += 1
            waiting_max[current] = max(waiting_max[current], level[0])
            running_max[current] = max(running_max[current], level[1])
        level[kind] += step
        waiting_max[current] = max(waiting_max[current], level[0])
        running_max[current] = max(running_max[current], level[1])
    after = min(bins, int((now - since) / span * bins) + 1) if now < until else bins
    while current < bins - 1:
        current += 1
        waiting_max[current] = level[0] if current < after else 0
        running_max[current] = level[1] if current < after else 0
    return [(since + i * span / bins, waiting_max[i], running_max[i]) for i in range(bins)]


def _ticks(since, until, width):
    """Time-axis ticks: (x, label) at a round step giving about 8 labels."""
    span = until - since
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
    step = next((s for s in steps if span / s <= 8), steps[-1])
    first = (int(since // step) + 1) * step
    fmt = '%H:%M:%S' if step < 60 else ('%H:%M' if step < 86400 else '%m-%d')
    ticks = []
    moment = first
    while moment < until and len(ticks) < 40:
        x = LABEL_W + (moment - since) / span * width
        label = datetime.datetime.fromtimestamp(moment, tz=datetime.timezone.utc).strftime(fmt)
        # A centred label must fit inside the picture: one too close to the right edge would be cut in half.
        if x + len(label) * TICK_CHAR_W / 2.0 <= LABEL_W + width + 10:
            ticks.append((x, label))
        moment += step
    return ticks


def _badge(text, colour, zero=False):
    return '<span class="b%s" style="background:%s">%s</span>' % (' z' if zero else '', colour, _e(text))


def _legend():
    return '<div class="legend">%s<i style="background:none;border-top:2px dashed #9aa1ab;height:0"></i>waiting in the queue</div>' % ''.join(
        '<i style="background:%s"></i>%s' % (OUTCOME_COLOURS[state], state.lower().replace('_', ' '))
        for state in ('SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED', 'RUNNING', 'ENGINE_QUEUED', 'STARTING'))


def timeline_svg(jobs, engines, since, until, now):
    """One lane per engine slot; a bar per execution (coloured by outcome), its wait as a dashed line before it."""
    span = max(until - since, 1e-9)

    def x_of(moment):
        return LABEL_W + (min(max(moment, since), until) - since) / span * CHART_W

    by_engine = {}
    for job in jobs:
        if job.has_run and job.run_end >= since and job.started <= until:
            by_engine.setdefault(job.engine, []).append(job)
    names = [engine.get('name') for engine in engines]
    names += sorted(name for name in by_engine if name not in names)   # removed engines still ran jobs
    slots = dict((engine.get('name'), int(engine.get('slots') or 0)) for engine in engines)
    parts = []
    y = 22
    for name in names:
        runs = by_engine.get(name, [])
        used = assign_lanes(runs)
        lanes = max(used, slots.get(name, 0), 1)
        parts.append('<g class="engine" data-engine="%s"><text class="eng" x="4" y="%d">%s</text>' % (_e(name), y + 12, _e(name)))
        y += 18
        in_lane = [[] for _lane in range(lanes)]
        for job in runs:
            in_lane[job.lane].append(job)
        for lane in range(lanes):
            over = lane >= slots.get(name, 0) and name in slots
            # one group per slot: its bars inherit engine and slot (data-engine, data-slot) from it
            parts.append('<g class="slot" data-engine="%s" data-slot="%d"><rect class="lane" x="%d" y="%d" width="%d" height="%d"/>'
                         '<text%s x="14" y="%d">slot %d%s</text>' % (
                             _e(name), lane + 1, LABEL_W, y, CHART_W, LANE_H - 2, ' class="over"' if over else '', y + 12,
                             lane + 1, ' (over slots)' if over else ''))
            waits = []
            bars = []
            for job in in_lane[lane]:
                x0, x1 = x_of(job.started), x_of(job.run_end)
                if job.submitted is not None and x0 - x_of(job.submitted) >= 1:
                    waits.append('M%.1f %dH%.1f' % (x_of(job.submitted), y + LANE_H - 4, x0))
                bars.append('<rect class="%s" data-job="%s" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s #%s: %s, '
                            'waited %s, ran %s</title></rect>' % (
                                job.state, job.id, x0, y + 1, max(x1 - x0, 1.5), LANE_H - 6, _e(job.raw.get('job_name')),
                                job.id, job.state, duration(job.waited(now)), duration(job.ran())))
            if waits:
                parts.append('<path class="wait" d="%s"/>' % ''.join(waits))
            parts.extend(bars)
            parts.append('</g>')
            y += LANE_H
        parts.append('</g>')
        y += 6
    height = y + 4
    axis = ['<line class="grid" x1="%.1f" x2="%.1f" y1="16" y2="%d"/><text x="%.1f" y="12" text-anchor="middle">%s</text>' % (
        x, x, height, x, label) for x, label in _ticks(since, until, CHART_W)]
    if since <= now <= until:
        axis.append('<line class="now" x1="%.1f" x2="%.1f" y1="14" y2="%d"/>' % (x_of(now), x_of(now), height))
    return '<svg id="timeline" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="executions per engine slot">%s%s</svg>' % (
        LABEL_W + CHART_W + 10, height, LABEL_W + CHART_W + 10, height, ''.join(axis), ''.join(parts))


def depth_svg(jobs, since, until, now):
    """Jobs waiting (area) and running (line) over the window, the most in each bin."""
    series = queue_depth(jobs, since, until, now=now)
    peak = max([1] + [max(w, r) for _t, w, r in series])
    step_w = CHART_W / float(len(series))

    def y_of(value):
        return 14 + DEPTH_H - value / float(peak) * DEPTH_H

    def path(index):
        points = []
        for i, entry in enumerate(series):
            points.append('%.1f,%.1f %.1f,%.1f' % (LABEL_W + i * step_w, y_of(entry[index]), LABEL_W + (i + 1) * step_w,
                                                   y_of(entry[index])))
        return ' '.join(points)
    base = 14 + DEPTH_H
    waiting = '<polygon fill="#c9ccd1" points="%.1f,%.1f %s %.1f,%.1f"/>' % (LABEL_W, base, path(1), LABEL_W + CHART_W, base)
    running = '<polyline fill="none" stroke="#2f6fd6" stroke-width="1.5" points="%s"/>' % path(2)
    axis = ''.join('<line class="grid" x1="%.1f" x2="%.1f" y1="14" y2="%d"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (
        x, x, base, x, base + 14, label) for x, label in _ticks(since, until, CHART_W))
    labels = ('<text x="4" y="24">peak %d</text><text x="4" y="%d">0</text>'
              '<text x="4" y="54" style="fill:#8a8f98">&#9632; waiting</text><text x="4" y="70" style="fill:#2f6fd6">'
              '&#9472; running</text>' % (peak, base))
    return '<svg id="depth" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="queue depth">%s%s%s%s</svg>' % (
        LABEL_W + CHART_W + 10, base + 20, LABEL_W + CHART_W + 10, base + 20, axis, waiting, running, labels)


def _sort_value(value):
    """data-v for sorting a cell whose text is not the number itself (durations, percent)."""
    return '' if value is None else '%.1f' % value


def jobs_table(jobs, now):
    """One row per job. Kept compact (10,000 rows must stay small enough to mail): column styles come from
    CSS by position, numbers sort by their text unless the cell carries data-v."""
    rows = []
    append = rows.append
    for job in jobs:
        raw = job.raw
        why = raw.get('error') or raw.get('reason') or ''
        masked, total = job.masked, job.total
        if masked is not None:
            rows_text = '{:,}'.format(masked) if not total or total <= 0 or total == masked else '{:,} / {:,}'.format(masked, total)
        elif total is not None and total < 0:
            rows_text = 'counting'
        else:
            rows_text = ''
        if job.progress is None:
            cell = 'counting rows' if total is not None and total < 0 and job.state == 'RUNNING' else ''
        elif job.state == 'RUNNING':
            cell = '<span class="pb"><i style="width:%.0f%%"></i></span> %.0f %%%s' % (
                job.progress, job.progress, (' &middot; %s left' % duration(job.eta)) if job.eta is not None else '')
        else:
            cell = '%.0f %%' % job.progress
        waited, ran = job.waited(now), job.ran()
        execution = raw.get('execution_id')
        append('<tr class="%s" data-job="%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>'
               '<td data-v="%s">%s</td><td data-v="%s">%s</td><td data-v="%s">%s</td><td data-v="%s">%s</td><td>%s</td></tr>' % (
                   job.state, job.id, job.id, _e(raw.get('job_name')), _e(raw.get('request_id')), job.state, _e(why),
                   _e(job.engine), '' if execution is None else execution, '' if masked is None else masked, rows_text,
                   _sort_value(job.progress), cell, _sort_value(waited), duration(waited), _sort_value(ran), duration(ran),
                   when(job.submitted)))
    states = sorted(set(job.state for job in jobs), key=lambda s: STATE_ORDER.index(s) if s in STATE_ORDER else 99)
    tools = ('<div class="tools"><input id="q" type="search" placeholder="filter: job, request, engine, reason" size="36">'
             '<select id="qs"><option value="">every state</option>%s</select><span id="qc" class="muted">%d jobs</span></div>' % (
                 ''.join('<option>%s</option>' % s for s in states), len(jobs)))
    head = ('<tr><th data-num>id</th><th>job</th><th>request</th><th>state</th><th>reason / error</th><th>engine</th>'
            '<th data-num>execution</th><th data-num>rows</th><th data-num>progress</th><th data-num>waited</th>'
            '<th data-num>ran</th><th>submitted (UTC)</th></tr>')
    return '%s<div class="scroll"><table id="jobs"><thead>%s</thead><tbody>%s</tbody></table></div>' % (tools, head, ''.join(rows))


def engines_table(engines, jobs, now):
    ran = {}
    for job in jobs:
        if job.has_run:
            ran[job.engine] = ran.get(job.engine, 0) + 1
    rows = []
    for engine in engines:
        name = engine.get('name')
        down = epoch(engine.get('unreachable_since'))
        if down is not None:
            reach = '<span class="err">unreachable since %s (%s)</span>' % (_e(when(down)), _e(duration(now - down)))
        else:
            reach = 'reachable'
        flags = []
        if engine.get('drained'):
            flags.append('drained')
        if engine.get('enabled') is False or engine.get('enabled') == 0:
            flags.append('disabled')
        memory = ''
        if engine.get('memory_mb'):
            memory = '%s / %s MB' % (engine.get('memory_used_mb') or 0, engine.get('memory_mb'))
        elif engine.get('memory_used_mb'):
            memory = '%s MB' % engine.get('memory_used_mb')
        rows.append('<tr data-engine="%s"><td><b>%s</b>%s</td><td>%s</td><td class="n">%s / %s</td><td class="n">%s</td>'
                    '<td>%s</td><td>%s</td><td class="why err">%s</td></tr>' % (
                        _e(name), _e(name), (' <span class="muted">(%s)</span>' % ', '.join(flags)) if flags else '',
                        _e(engine.get('url')), _e(engine.get('slots_used') or 0), _e(engine.get('slots')), ran.get(name, 0),
                        _e(memory), reach, _e(engine.get('last_error') or '')))
    return ('<table id="engines"><thead><tr><th>engine</th><th>url</th><th data-num>slots used</th><th data-num>runs in window</th>'
            '<th>memory</th><th>reachability</th><th>last error</th></tr></thead><tbody>%s</tbody></table>' % ''.join(rows))


def normal_hosts(hosts):
    """Host entries as dicts with name, address, state, reason (bare names are hosts of unknown state)."""
    result = []
    for host in hosts or ():
        if isinstance(host, dict):
            name = host.get('name') or host.get('address') or host.get('inventory_hostname')
            state = host.get('state') or host.get('orchestra_state') or 'unknown'
            result.append({'name': name, 'address': host.get('address') or host.get('ansible_host') or '',
                           'state': str(state), 'reason': host.get('reason') or host.get('orchestra_reason') or ''})
        else:
            result.append({'name': str(host), 'address': '', 'state': 'unknown', 'reason': ''})
    return result


def hosts_section(hosts):
    order = dict((state, index) for index, state in enumerate(HOST_STATE_ORDER))
    hosts = sorted(hosts, key=lambda h: (order.get(h['state'], 99), h['state'], str(h['name'])))
    counts = {}
    for host in hosts:
        counts[host['state']] = counts.get(host['state'], 0) + 1
    badges = ''.join(_badge('%s %d' % (state, n), HOST_COLOURS.get(state, '#8a8f98'))
                     for state, n in sorted(counts.items(), key=lambda item: order.get(item[0], 99)))
    rows = ''.join('<tr data-host="%s" data-state="%s"><td>%s</td><td>%s</td><td style="color:%s;font-weight:600">%s</td>'
                   '<td class="why">%s</td></tr>' % (_e(h['name']), _e(h['state']), _e(h['name']), _e(h['address']),
                                                     HOST_COLOURS.get(h['state'], '#8a8f98'), _e(h['state']), _e(h['reason']))
                   for h in hosts)
    return ('<div class="badges">%s</div><table id="hosts" style="margin-top:8px"><thead><tr><th>host</th><th>address</th>'
            '<th>state</th><th>reason</th></tr></thead><tbody>%s</tbody></table>' % (badges, rows))


def window_of(jobs, now, since=None, until=None):
    """The window to draw: given bounds, else from the first submission among the jobs to now.

    An open bound gets a margin of 4 % of the span (at least 10 s in all), so the first and the last bars
    do not stick to the edges; a given bound is kept as it is.
    """
    open_since, open_until = since is None, until is None
    until = now if open_until else until
    if open_since:
        starts = [job.submitted for job in jobs if job.submitted is not None and job.submitted <= until]
        since = min(starts) if starts else until - 3600
    pad = max((until - since) * 0.04, (10.0 - (until - since)) / 2.0, 0.0)
    if open_since:
        since -= pad
    if open_until:
        until += pad
    if until - since < 1.0:
        until = since + 1.0
    return since, until


def in_window(job, since, until):
    """A job belongs to the window when its life (submitted .. finished, or still open) overlaps it."""
    begin = job.submitted if job.submitted is not None else job.started
    end = job.finished
    if begin is not None and begin > until:
        return False
    return end is None or end >= since


def select(jobs, now, since=None, until=None):
    """The jobs of the window, newest first (as masking_queue_info lists them), and the window's bounds."""
    every = [Job(raw, now) for raw in jobs]
    since, until = window_of(every, now, since, until)
    shown = [job for job in every if in_window(job, since, until)]
    shown.sort(key=lambda job: (-(job.submitted or 0), -(job.id or 0)))
    return shown, since, until


def state_counts(shown):
    counts = {}
    for job in shown:
        counts[job.state] = counts.get(job.state, 0) + 1
    return counts


def summary(jobs, engines, now, since=None, until=None):
    """What the module returns about the page: jobs in the window, counts per state, the window."""
    shown, since, until = select(jobs, now, since, until)
    return {'jobs': len(shown), 'states': state_counts(shown), 'engines': len(engines), 'since': since, 'until': until}


def render(jobs, engines, now, since=None, until=None, hosts=None, title='Masking queue report', store=None):
    """The whole page as one string (pure: the same inputs give the same bytes)."""
    return build(jobs, engines, now, since, until, hosts, title, store)[0]


def build(jobs, engines, now, since=None, until=None, hosts=None, title='Masking queue report', store=None):
    """(the page, what it shows: jobs in the window, counts per state, engines, the window) in one pass."""
    shown, since, until = select(jobs, now, since, until)
    counts = state_counts(shown)
    badges = ''.join(_badge('%s %d' % (state.lower().replace('_', ' '), counts.get(state, 0)), OUTCOME_COLOURS[state],
                            zero=not counts.get(state)) for state in STATE_ORDER)
    # what needs a look first: failures before warnings, newest first; the table has them all
    problems = [job for job in shown if job.state == 'FAILED'] + [job for job in shown if job.state == 'WARNING']
    problem_list = ''
    if problems:
        problem_list = '<ul id="problems">%s</ul>' % ''.join(
            '<li><span class="st %s">%s</span> %s #%s on %s: %s</li>' % (
                job.state, job.state, _e(job.raw.get('job_name')), job.id, _e(job.engine or '-'),
                _e(job.raw.get('error') or job.raw.get('reason') or '')) for job in problems[:PROBLEMS_LISTED])
        if len(problems) > PROBLEMS_LISTED:
            problem_list += '<p class="muted">and %d more in the table (filter it by state)</p>' % (len(problems) - PROBLEMS_LISTED)
    sections = [
        '<section><h2>Jobs in the window: %d</h2><div class="badges">%s</div>%s</section>' % (len(shown), badges, problem_list),
        '<section><h2>Executions per engine slot</h2>%s%s</section>' % (_legend(), timeline_svg(shown, engines, since, until, now)),
        '<section><h2>Queue depth</h2>%s</section>' % depth_svg(shown, since, until, now),
        '<section><h2>Engines</h2>%s</section>' % engines_table(engines, shown, now),
    ]
    if hosts is not None:
        sections.append('<section><h2>Fleet hosts</h2>%s</section>' % hosts_section(normal_hosts(hosts)))
    sections.append('<section><h2>Jobs</h2>%s</section>' % jobs_table(shown, now))
    meta = 'queue as of %s UTC &middot; window %s .. %s UTC%s' % (
        _e(when(now)), _e(when(since)), _e(when(until)), (' &middot; store %s' % _e(store)) if store else '')
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            '<title>%s</title><style>%s</style></head><body><header><h1>%s</h1><div class="meta">%s</div></header>'
            '<main>%s</main><script>%s</script></body></html>\n' % (
                _e(title), CSS.strip(), _e(title), meta, ''.join(sections), SCRIPT.strip()))
    return page, {'jobs': len(shown), 'states': counts, 'engines': len(engines), 'since': since, 'until': until}


def reference_time(jobs, engines, wall_clock):
    """The moment the page shows the queue at (pure).

    While a job is unfinished the picture is live: the wall clock. When every job has ended, the last
    thing that happened in the queue (a submission, a start, an end, an engine going down): the same
    quiet queue then gives the same page byte for byte, so writing it again changes nothing.
    """
    latest = None
    for raw in jobs:
        if raw.get('finished_at') is None:
            return wall_clock
        for key in ('submitted_at', 'started_at', 'finished_at'):
            moment = epoch(raw.get(key))
            if moment is not None and (latest is None or moment > latest):
                latest = moment
    for engine in engines:
        moment = epoch(engine.get('unreachable_since'))
        if moment is not None and (latest is None or moment > latest):
            latest = moment
    return wall_clock if latest is None else min(latest, wall_clock)


def window(since=None, until=None, hours=None):
    """Window options -> (since, until) epochs or None where open; raises ValueError on a bad value."""
    def moment(value, what):
        if value is None or value == '':
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
        try:
            return epoch(value)
        except ValueError:
            raise ValueError('%s must be an ISO-8601 time (2026-11-22T02:00:00Z) or epoch seconds, got %r' % (what, value))
    begin, end = moment(since, 'since'), moment(until, 'until')
    if hours is not None:
        if hours <= 0:
            raise ValueError('hours must be more than 0, got %r' % (hours,))
        if begin is not None:
            raise ValueError('give since or hours, not both')
    if begin is not None and end is not None and begin >= end:
        raise ValueError('since (%s) must be before until (%s)' % (since, until))
    return begin, end
