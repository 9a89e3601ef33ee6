"""Pure parsing and decisions of the Delphix client (no I/O)."""
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import delphix_parse as dp
from ansible_collections.orchestra.fleet.plugins.module_utils.delphix import api_base

UTC = timezone.utc


@pytest.mark.parametrize('text, expected', [
    ('2018-06-26T01:08:42.206+0000', datetime(2018, 6, 26, 1, 8, 42, 206000, UTC)),
    ('2018-06-26T01:08:42.206Z', datetime(2018, 6, 26, 1, 8, 42, 206000, UTC)),
    ('2018-06-26T01:08:42.206+00:00', datetime(2018, 6, 26, 1, 8, 42, 206000, UTC)),
    ('2018-06-26T03:08:42.206+0200', datetime(2018, 6, 26, 1, 8, 42, 206000, UTC)),
    ('2018-06-25T20:08:42-0500', datetime(2018, 6, 26, 1, 8, 42, 0, UTC)),
    ('2018-06-26 01:08:42', datetime(2018, 6, 26, 1, 8, 42, 0, UTC)),
    ('2018-06-26T01:08', datetime(2018, 6, 26, 1, 8, 0, 0, UTC)),
    ('2018-06-26T01:08:42.123456789+0000', datetime(2018, 6, 26, 1, 8, 42, 123456, UTC)),
    (1529975322206, datetime(2018, 6, 26, 1, 8, 42, 206000, UTC)),
])
def test_parse_time_is_lenient_and_aware(text, expected):
    parsed = dp.parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize('text', [None, '', 'yesterday', '2018-13-45T01:00:00Z', True, '26/06/2018'])
def test_parse_time_unusable_is_none(text):
    assert dp.parse_time(text) is None


def test_parse_execution_started_sample():
    raw = {'executionId': 896, 'jobId': 677, 'status': 'RUNNING', 'startTime': '2018-06-26T01:08:42.206+0000'}
    execution = dp.parse_execution(raw)
    assert (execution.execution_id, execution.job_id, execution.status) == (896, 677, 'RUNNING')
    assert execution.rows_masked is None and execution.end_time is None and execution.submit_time is None
    assert execution.start_time == datetime(2018, 6, 26, 1, 8, 42, 206000, UTC)
    assert not execution.terminal and execution.raw == raw


def test_parse_execution_done_sample():
    execution = dp.parse_execution({'executionId': 1, 'jobId': 1, 'status': 'SUCCEEDED', 'rowsMasked': 1000,
                                    'rowsTotal': 1000, 'startTime': '2019-02-14T21:51:13.253+0000',
                                    'endTime': '2019-02-14T21:51:54.956+0000'})
    assert execution.terminal and execution.succeeded
    assert execution.rows_masked == execution.rows_total == 1000
    assert execution.end_time - execution.start_time == timedelta(seconds=41, milliseconds=703)


@pytest.mark.parametrize('status, terminal', [('QUEUED', False), ('RUNNING', False), ('WAITING', False),
                                              ('SUCCEEDED', True), ('WARNING', True), ('FAILED', True),
                                              ('CANCELLED', True), ('CANCELLING', False), ('PAUSED', False)])
def test_terminal_statuses_and_unknown_is_never_terminal(status, terminal):
    execution = dp.parse_execution({'executionId': 1, 'jobId': 2, 'status': status})
    assert execution.terminal is terminal
    assert execution.succeeded is (status == 'SUCCEEDED')
    assert execution.known_status is (status in dp.KNOWN_STATUSES)


def test_unknown_status_is_reported_in_to_dict():
    data = dp.parse_execution({'executionId': 1, 'jobId': 2, 'status': 'mystery'}).to_dict()
    assert data['status'] == 'MYSTERY' and data['terminal'] is False and data['known_status'] is False


def test_rows_total_minus_one_while_counting():
    execution = dp.parse_execution({'executionId': 1, 'jobId': 2, 'status': 'RUNNING', 'rowsTotal': -1})
    assert execution.rows_total == -1


@pytest.mark.parametrize('raw', [{}, {'executionId': 1, 'jobId': 2}, {'executionId': 'x', 'jobId': 2, 'status': 'RUNNING'},
                                 [], 'RUNNING', {'jobId': 2, 'status': 'RUNNING'}])
def test_parse_execution_rejects_incomplete(raw):
    with pytest.raises(ValueError):
        dp.parse_execution(raw)


def test_page_items_shapes():
    assert dp.page_items({'_pageInfo': {'numberOnPage': 1, 'total': 3}, 'responseList': [1]}) == ([1], 3)
    assert dp.page_items({'responseList': [1, 2]}) == ([1, 2], None)
    assert dp.page_items([1, 2]) == ([1, 2], 2)
    with pytest.raises(ValueError):
        dp.page_items({'responseList': 'x'})
    with pytest.raises(ValueError):
        dp.page_items('x')


@pytest.mark.parametrize('collected, page_len, total, size, expected', [
    (100, 100, 250, 100, True), (250, 50, 250, 100, False), (0, 0, 5, 100, False),
    (100, 100, None, 100, True), (130, 30, None, 100, False)])
def test_more_pages(collected, page_len, total, size, expected):
    assert dp.more_pages(collected, page_len, total, size) is expected


def test_page_out_of_range_message():
    assert dp.is_page_out_of_range('The page number 3 is outside of the acceptable range. The last page is 2.')
    assert not dp.is_page_out_of_range(None)
    assert not dp.is_page_out_of_range('Invalid value')


def test_backoff_grows_and_is_capped():
    delays = [dp.backoff_delay(n, 0.5, cap=3.0) for n in range(1, 6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize('status, kind', [(None, 'unavailable'), (400, 'error'), (401, 'auth'), (403, 'error'),
                                          (404, 'not_found'), (409, 'conflict'), (500, 'unavailable'),
                                          (503, 'unavailable')])
def test_error_kind(status, kind):
    assert dp.error_kind(status) == kind


def _run(execution_id, status, submit):
    return dp.Execution(execution_id=execution_id, job_id=7, status=status, submit_time=submit)


T0 = datetime(2026, 1, 1, 12, 0, 0, 500700, UTC)


def test_marker_is_the_highest_id_or_zero():
    assert dp.highest_execution_id([_run(4, 'SUCCEEDED', T0), _run(17, 'FAILED', None), _run(9, 'RUNNING', T0)]) == 17
    assert dp.highest_execution_id([]) == 0


def test_adoption_takes_ours_even_if_already_finished():
    older = _run(1, 'SUCCEEDED', T0 - timedelta(seconds=30))
    ours = _run(2, 'SUCCEEDED', T0 - timedelta(seconds=30))   # an engine clock 30 s behind: dates do not matter
    assert dp.choose_after_marker([older, ours], 1) == ours


@pytest.mark.parametrize('offset', [-300, -30, 0, 30, 300])
def test_adoption_never_takes_a_run_at_or_below_the_marker_whatever_the_clocks(offset):
    finished = _run(11, 'SUCCEEDED', T0 + timedelta(seconds=offset))
    active = _run(10, 'RUNNING', T0 + timedelta(seconds=offset))
    assert dp.choose_after_marker([finished, active], 11) is None


def test_adoption_prefers_the_lowest_id_above_the_marker():
    runs = [_run(15, 'RUNNING', T0 - timedelta(days=1)), _run(12, 'QUEUED', T0 + timedelta(days=1)),
            dp.Execution(execution_id=13, job_id=7, status='RUNNING'), _run(3, 'SUCCEEDED', T0)]
    assert dp.choose_after_marker(runs, 3).execution_id == 12
    assert dp.choose_after_marker([], 0) is None


@pytest.mark.parametrize('header, engine_ahead', [('Thu, 01 Jan 2026 12:05:00 GMT', 300.0),
                                                  ('Thu, 01 Jan 2026 11:59:30 GMT', -30.0)])
def test_clock_offset_from_the_date_header(header, engine_ahead):
    ours = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert dp.clock_offset(header, ours - 0.1, ours + 0.1) == pytest.approx(engine_ahead)


@pytest.mark.parametrize('header', [None, '', 'yesterday', 'Thu, 99 Foo 2026'])
def test_clock_offset_of_a_missing_or_bad_header_is_none(header):
    assert dp.clock_offset(header, 0.0, 1.0) is None


JOBS = {'dev': [{'maskingJobId': 11, 'jobName': 'mask_a'}, {'maskingJobId': 12, 'jobName': 'mask_b'}],
        'prod': [{'maskingJobId': 21, 'jobName': 'mask_a'}]}


def test_select_job():
    assert dp.select_job(JOBS, 'mask_b') == ('ok', 12)
    assert dp.select_job(JOBS, 'mask_a') == ('ambiguous', ['dev', 'prod'])
    assert dp.select_job(JOBS, 'mask_a', 'prod') == ('ok', 21)
    assert dp.select_job(JOBS, 'mask_b', 'prod') == ('not_found', ['dev', 'prod'])
    assert dp.select_job(JOBS, 'nope') == ('not_found', ['dev', 'prod'])
    # the same job listed twice (e.g. overlapping lists) is one job
    assert dp.select_job({'a': [JOBS['dev'][0]], 'b': [JOBS['dev'][0]]}, 'mask_a') == ('ok', 11)


@pytest.mark.parametrize('url, version, expected', [
    ('http://e:8282', None, 'http://e:8282/masking/api'),
    ('http://e:8282/', None, 'http://e:8282/masking/api'),
    ('http://e:8282/masking/api/', None, 'http://e:8282/masking/api'),
    ('https://e/masking/api', '5.1.44', 'https://e/masking/api/v5.1.44'),
    ('https://e', 'v5.1.8', 'https://e/masking/api/v5.1.8')])
def test_api_base(url, version, expected):
    assert api_base(url, version) == expected
