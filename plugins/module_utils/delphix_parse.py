# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parsing and decision functions for the Delphix Masking Engine client (no I/O)."""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Dict, List, Optional

TERMINAL = frozenset({'SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED'})
NON_TERMINAL = frozenset({'QUEUED', 'RUNNING', 'WAITING'})
KNOWN_STATUSES = TERMINAL | NON_TERMINAL
PAGE_OUT_OF_RANGE = 'is outside of the acceptable range'

_DATE = re.compile(
    r'^\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*'
    r'(Z|[+-]\d{2}(?::?\d{2})?)?\s*$', re.IGNORECASE)


def parse_time(value: Any) -> Optional[datetime]:
    """Engine date -> aware UTC datetime; lenient (+0000, +00:00, Z, no fraction, epoch ms); None if unusable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)  # Java epoch milliseconds
        except (OverflowError, OSError, ValueError):
            return None
    match = _DATE.match(str(value))
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or '0').ljust(6, '0')[:6])
    offset = timedelta(0)
    if zone and zone.upper() != 'Z':
        digits = zone[1:].replace(':', '')
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        if zone[0] == '-':
            offset = -offset
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro,
                          tzinfo=timezone(offset))
    except ValueError:
        return None
    return moment.astimezone(timezone.utc)


def _int_or_none(value):
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Execution:
    """One masking job execution as the engine reported it."""

    execution_id: int
    job_id: int
    status: str
    rows_masked: Optional[int] = None
    rows_total: Optional[int] = None       # -1 while the engine is still counting rows
    submit_time: Optional[datetime] = None
    start_time: Optional[datetime] = None
    end_time: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def terminal(self) -> bool:
        """Finished for good. An unknown status is never terminal (and never success)."""
        return self.status in TERMINAL

    @property
    def known_status(self) -> bool:
        return self.status in KNOWN_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == 'SUCCEEDED'

    def to_dict(self) -> Dict[str, Any]:
        def iso(moment):
            return moment.isoformat() if moment else None
        return {'execution_id': self.execution_id, 'job_id': self.job_id, 'status': self.status,
                'terminal': self.terminal, 'known_status': self.known_status, 'rows_masked': self.rows_masked,
                'rows_total': self.rows_total, 'submit_time': iso(self.submit_time),
                'start_time': iso(self.start_time), 'end_time': iso(self.end_time)}


def parse_execution(obj: Any) -> Execution:
    """Engine execution object -> Execution; ValueError when it lacks executionId/jobId/status."""
    if not isinstance(obj, dict):
        raise ValueError('execution is not a JSON object: %r' % (obj,))
    execution_id, job_id = _int_or_none(obj.get('executionId')), _int_or_none(obj.get('jobId'))
    status = obj.get('status')
    if execution_id is None or job_id is None or not isinstance(status, str) or not status:
        raise ValueError('execution lacks executionId, jobId or status: %r' % (obj,))
    return Execution(execution_id=execution_id, job_id=job_id, status=status.strip().upper(),
                     rows_masked=_int_or_none(obj.get('rowsMasked')), rows_total=_int_or_none(obj.get('rowsTotal')),
                     submit_time=parse_time(obj.get('submitTime')), start_time=parse_time(obj.get('startTime')),
                     end_time=parse_time(obj.get('endTime')), raw=dict(obj))


def page_items(body: Any) -> tuple:
    """A list answer -> (items, total or None). Tolerates a bare JSON list (no _pageInfo)."""
    if isinstance(body, list):
        return body, len(body)
    if not isinstance(body, dict) or not isinstance(body.get('responseList', []), list):
        raise ValueError('not a Delphix list answer: %r' % (body,))
    info = body.get('_pageInfo') or {}
    return body.get('responseList') or [], _int_or_none(info.get('total'))


def more_pages(collected: int, page_len: int, total: Optional[int], page_size: int) -> bool:
    """Whether to ask for the next page."""
    if page_len == 0:
        return False
    if total is not None:
        return collected < total
    return page_len >= page_size


def is_page_out_of_range(message: Optional[str]) -> bool:
    return bool(message) and PAGE_OUT_OF_RANGE in message


def backoff_delay(attempt: int, backoff: float, cap: float = 10.0) -> float:
    """Delay before retry number `attempt` (1-based): exponential, capped."""
    return min(cap, backoff * (2 ** (attempt - 1)))


def error_kind(status: Optional[int]) -> str:
    """HTTP status -> error kind: auth, not_found, conflict, unavailable or error."""
    if status is None:
        return 'unavailable'
    if status == 401:
        return 'auth'
    if status == 404:
        return 'not_found'
    if status == 409:
        return 'conflict'
    if status >= 500:
        return 'unavailable'
    return 'error'


def highest_execution_id(executions: List[Execution]) -> int:
    """The start marker: the highest executionId among a job's executions, 0 when it has none.

    Execution ids only grow on an engine, so an execution with a higher id than the marker taken right
    before a POST was created after that moment: no clock is involved.
    """
    return max([execution.execution_id for execution in executions] or [0])


def choose_after_marker(executions: List[Execution], marker: int) -> Optional[Execution]:
    """The execution a start made after `marker` was taken: the lowest id above the marker, or None.

    Any status counts (a fast job may have finished already). Nothing at or below the marker is ever
    adopted, however its dates read: an older finished run is someone else's. The lowest id wins
    because the queue runs one start of a job per engine at a time; a higher one is a later start.
    """
    newer = [execution for execution in executions if execution.execution_id > int(marker)]
    return min(newer, key=lambda e: e.execution_id) if newer else None


def clock_offset(date_header: Optional[str], sent: float, received: float) -> Optional[float]:
    """Seconds the engine's clock is ahead of ours (negative: behind), from an HTTP Date header.

    For reporting only (1 s resolution, network delay): never used to decide which execution is ours.
    sent/received: our epoch seconds around the request.
    """
    if not date_header:
        return None
    try:
        moment = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp() - (sent + received) / 2.0


def select_job(jobs_by_environment: Dict[str, List[Dict[str, Any]]], job_name: str,
               environment: Optional[str] = None) -> tuple:
    """Resolve a jobName -> ('ok', id) | ('not_found', envs searched) | ('ambiguous', environments).

    jobs_by_environment maps environment name -> the masking-job objects listed for it.
    """
    matches = []
    for env_name, jobs in jobs_by_environment.items():
        if environment is not None and env_name != environment:
            continue
        for job in jobs:
            if job.get('jobName') == job_name:
                matches.append((env_name, int(job['maskingJobId'])))
    ids = sorted(set(job_id for _env, job_id in matches))
    if not ids:
        return 'not_found', sorted(jobs_by_environment)
    if len(ids) > 1:
        return 'ambiguous', sorted(set(env for env, _id in matches))
    return 'ok', ids[0]


def setting_values(items: List[Dict[str, Any]]) -> Dict[str, str]:
    """GET /application-settings entries -> {settingName: settingValue} (values as the engine wrote them, strings)."""
    values = {}
    for item in items or ():
        if isinstance(item, dict) and item.get('settingName') is not None:
            value = item.get('settingValue')
            values[str(item['settingName'])] = None if value is None else str(value)
    return values


def whole_number(value: Any) -> Optional[int]:
    """A setting or field that should be a whole number >= 0 ("7", 7, "7.0" is not) -> int, else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    text = str(value).strip()
    return int(text) if text.isdigit() else None
