"""Wall-clock helpers: claims expire on wall time because they outlive the process."""
import time
from datetime import datetime, timezone


def now():
    return time.time()


def iso(timestamp):
    """Seconds since the epoch -> '2026-11-22T11:00:00Z' (None stays None)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
