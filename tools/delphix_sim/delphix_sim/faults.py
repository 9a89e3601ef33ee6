"""Fault knobs: what goes wrong with a request, decided in one place.

Knobs (all optional; set at start from the CLI/config, changed at runtime through PUT /_sim/faults):
  error_rate          share of API calls answered 500 before any side effect
  latency_ms          delay added before every API call is handled
  lost_response_rate  share of API calls whose side effect happens but whose answer never arrives
  lost_mode           'reset' (close the connection, default) or 'hang' (hold it lost_hold_s, then close)
  lost_hold_s         how long 'hang' holds the connection
  token_expiry_calls  a token expires after this many authenticated calls
  token_timeout_s     a token expires this many seconds after login (API_AUTHORIZATION_TIMEOUT)
  down_after          seconds (from when the knob was set) until the engine goes down
  down_for            seconds the engine stays down
  down_mode           'reset' (connections closed unanswered, default) or '503'
  match               regex on "METHOD /path" (path after /masking/api[/vX]); error, lost and latency apply
                      only to matching calls (default: all API calls)
  budget              stop injecting errors/lost responses after this many (None = no limit)
  seed                random seed for error_rate / lost_response_rate
  post_status         200 or 201 for POST /login and POST /executions
"""
import random
import re
import threading
import time

KNOBS = {
    'error_rate': 0.0, 'latency_ms': 0.0, 'lost_response_rate': 0.0, 'lost_mode': 'reset', 'lost_hold_s': 1.0,
    'token_expiry_calls': None, 'token_timeout_s': None, 'down_after': None, 'down_for': None,
    'down_mode': 'reset', 'match': None, 'budget': None, 'seed': None, 'post_status': None,
}


class FaultError(ValueError):
    pass


def validate(changes):
    unknown = set(changes) - set(KNOBS)
    if unknown:
        raise FaultError('unknown fault knobs: %s' % ', '.join(sorted(unknown)))
    for name in ('error_rate', 'lost_response_rate'):
        value = changes.get(name)
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise FaultError('%s must be within 0..1' % name)
    if changes.get('lost_mode') not in (None, 'reset', 'hang'):
        raise FaultError("lost_mode must be 'reset' or 'hang'")
    if changes.get('down_mode') not in (None, 'reset', '503'):
        raise FaultError("down_mode must be 'reset' or '503'")
    if changes.get('post_status') not in (None, 200, 201):
        raise FaultError('post_status must be 200 or 201')
    if changes.get('match') is not None:
        re.compile(changes['match'])


class Faults:
    """Current knobs plus the random source and counters; thread-safe."""

    def __init__(self, knobs=None, clock=time.time):
        self._lock = threading.Lock()
        self._clock = clock
        self._knobs = dict(KNOBS)
        self._down_window = None
        self._injected = 0
        self._rng = random.Random()
        self.counts = {'errors': 0, 'lost': 0, 'down': 0}
        self.update(knobs or {})

    def update(self, changes):
        """Merge changes (None resets a knob to its default) and restart the down timer if touched."""
        validate(changes)
        with self._lock:
            for name, value in changes.items():
                self._knobs[name] = KNOBS[name] if value is None else value
            if 'seed' in changes:
                self._rng.seed(self._knobs['seed'])
            if 'budget' in changes:
                self._injected = 0
            if 'down_after' in changes or 'down_for' in changes:
                self._down_window = self._window(self._clock())
            return dict(self._knobs)

    def _window(self, now):
        after, length = self._knobs['down_after'], self._knobs['down_for']
        if after is None and length is None:
            return None
        start = now + float(after or 0.0)
        return (start, start + float(length) if length is not None else float('inf'))

    def snapshot(self):
        with self._lock:
            return dict(self._knobs)

    def knob(self, name):
        with self._lock:
            return self._knobs[name]

    def is_down(self):
        with self._lock:
            window = self._down_window
            down = window is not None and window[0] <= self._clock() < window[1]
            if down:
                self.counts['down'] += 1
            return down

    def _matches(self, call):
        pattern = self._knobs['match']
        return pattern is None or re.search(pattern, call) is not None

    def latency(self, call):
        with self._lock:
            return float(self._knobs['latency_ms'] or 0.0) / 1000.0 if self._matches(call) else 0.0

    def draw(self, call):
        """'error', 'lost' or None for one API call."""
        with self._lock:
            if not self._matches(call):
                return None
            budget = self._knobs['budget']
            if budget is not None and self._injected >= int(budget):
                return None
            if self._knobs['error_rate'] and self._rng.random() < float(self._knobs['error_rate']):
                self._injected += 1
                self.counts['errors'] += 1
                return 'error'
            if self._knobs['lost_response_rate'] and self._rng.random() < float(self._knobs['lost_response_rate']):
                self._injected += 1
                self.counts['lost'] += 1
                return 'lost'
            return None
