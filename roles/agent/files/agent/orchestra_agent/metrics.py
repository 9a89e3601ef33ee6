"""Prometheus text exposition of the agent's state and request counters. Pure."""
from orchestra_agent import workload


def _escape(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def render(state, request_counts, events_seen, reconnects):
    lines = [
        '# HELP orchestra_agent_info Agent version.',
        '# TYPE orchestra_agent_info gauge',
        'orchestra_agent_info{version="%s"} 1' % _escape(state['version']),
        '# HELP orchestra_agent_state Current host state (1 for the active one).',
        '# TYPE orchestra_agent_state gauge',
    ]
    lines += ['orchestra_agent_state{state="%s"} %d' % (name, int(state['state'] == name)) for name in workload.STATE_ORDER]
    gauges = (
        ('docker_reachable', 'Whether the Docker engine answers.', int(state['docker']['reachable'])),
        ('running_containers', 'Running workload containers.', state['running']),
        ('failed_workflows', 'Failed workflows not yet acknowledged.', state['failed_workflows']),
        ('claimed', 'Whether a live claim holds the host.', int(state['claimed'])),
        ('fencing', 'Highest fencing number issued on this host.', state['fencing']),
    )
    for name, text, value in gauges:
        lines += ['# HELP orchestra_agent_%s %s' % (name, text), '# TYPE orchestra_agent_%s gauge' % name,
                  'orchestra_agent_%s %d' % (name, value)]
    counters = (
        ('docker_events_total', 'Docker container events handled.', events_seen),
        ('docker_reconnects_total', 'Reconnections to the Docker engine.', reconnects),
    )
    for name, text, value in counters:
        lines += ['# HELP orchestra_agent_%s %s' % (name, text), '# TYPE orchestra_agent_%s counter' % name,
                  'orchestra_agent_%s %d' % (name, value)]
    lines += ['# HELP orchestra_agent_http_requests_total HTTP requests answered, by status code.',
              '# TYPE orchestra_agent_http_requests_total counter']
    lines += ['orchestra_agent_http_requests_total{code="%d"} %d' % (code, count) for code, count in sorted(request_counts.items())]
    return '\n'.join(lines) + '\n'
