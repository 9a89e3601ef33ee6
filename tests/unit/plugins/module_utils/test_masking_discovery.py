"""The pure parts of engines that describe themselves: facts from the engine's answers, overrides, foreign load,
and how placement counts and explains load started outside the queue."""
import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import masking_discovery as discovery
from ansible_collections.orchestra.fleet.plugins.module_utils.delphix_parse import setting_values, whole_number
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_placement import (
    QueuedJob, foreign_memory, has_room, make_engine, overbooked, pending_reason, place)
from ansible_collections.orchestra.fleet.plugins.module_utils.masking_views import foreign_dict

SYSTEM = {'version': '6.0.17.0', 'totalAllocatedMemoryForJobs': 65536, 'totalAvailableCores': 8}
CATALOGUE = [
    {'jobName': 'mask_a', 'maskingJobId': 1, 'environmentName': 'dev', 'maxMemory': 1024},
    {'jobName': 'mask_a', 'maskingJobId': 2, 'environmentName': 'prod', 'maxMemory': 1024},
    {'jobName': 'mask_b', 'maskingJobId': 3, 'environmentName': 'prod'},
    {'jobName': 'mask_b', 'maskingJobId': 3, 'environmentName': 'prod'},   # listed twice (pages shifting): once
]


def settings(**values):
    return setting_values([{'settingGroup': 'general', 'settingName': name, 'settingValue': str(value)}
                           for name, value in values.items()])


def test_setting_values_and_whole_numbers():
    assert settings(NumSimulJobsAllowed=7) == {'NumSimulJobsAllowed': '7'}
    assert [whole_number(v) for v in ('7', 7, ' 3 ', '7.5', '-1', -1, None, True, 'x')] == [7, 7, 3] + [None] * 6


@pytest.mark.parametrize('values, system, expected', [
    ({'NumSimulJobsAllowed': 7}, SYSTEM, (7, 'application-settings NumSimulJobsAllowed')),
    ({'NumSimulJobsAllowed': 0}, SYSTEM, (7, 'system-information totalAvailableCores 8 - 1 (NumSimulJobsAllowed is 0)')),
    ({'NumSimulJobsAllowed': 0}, {'totalAvailableCores': 1}, (1, 'system-information totalAvailableCores 1 - 1 (NumSimulJobsAllowed is 0)')),
    ({'NumSimulJobsAllowed': 0}, {}, (None, 'NumSimulJobsAllowed is 0 (cores - 1) and the engine did not report totalAvailableCores')),
    ({}, SYSTEM, (None, 'the engine did not report NumSimulJobsAllowed')),
    ({'NumSimulJobsAllowed': 'many'}, SYSTEM, (None, 'the engine did not report NumSimulJobsAllowed')),
])
def test_slots_from_the_setting_or_the_cores(values, system, expected):
    assert discovery.slots_fact(settings(**values), system) == expected


def test_memory_from_the_setting_else_the_system_information_else_none():
    assert discovery.memory_fact(settings(MaximumMemoryForJobs=4096), SYSTEM) == (4096, 'application-settings MaximumMemoryForJobs')
    assert discovery.memory_fact(settings(MaximumMemoryForJobs=0), SYSTEM) == (65536, 'system-information totalAllocatedMemoryForJobs')
    assert discovery.memory_fact({}, {})[0] is None


def test_jobs_by_name_and_environment_sorted_and_unique():
    jobs, source = discovery.jobs_fact(CATALOGUE)
    assert jobs == [{'name': 'mask_a', 'environment': 'dev'}, {'name': 'mask_a', 'environment': 'prod'},
                    {'name': 'mask_b', 'environment': 'prod'}]
    assert source == 'the engine: 3 jobs in 2 environments'


def test_explicit_values_override_and_sources_say_so():
    found = discovery.facts(settings(NumSimulJobsAllowed=6, MaximumMemoryForJobs=8192), SYSTEM, CATALOGUE)
    wanted, sources, discovered = discovery.merge(found, {'slots': 2, 'memory_mb': None, 'jobs': None}, 'e1')
    assert wanted['slots'] == 2 and wanted['memory_mb'] == 8192 and len(wanted['jobs']) == 3
    assert sources == {'slots': 'explicit', 'memory_mb': 'application-settings MaximumMemoryForJobs',
                       'jobs': 'the engine: 3 jobs in 2 environments'}
    assert discovered == ['memory_mb', 'jobs']
    assert discovery.refresh_wanted(found, discovered) == {'memory_mb': 8192, 'jobs': wanted['jobs']}


def test_unknown_slots_without_an_explicit_value_names_the_engine():
    found = discovery.facts({}, SYSTEM, CATALOGUE)
    with pytest.raises(discovery.DiscoveryError, match='engine e9: the engine did not report NumSimulJobsAllowed'):
        discovery.merge(found, {}, 'e9')
    wanted, _sources, discovered = discovery.merge(found, {'slots': 3}, 'e9')
    assert wanted['slots'] == 3 and 'slots' not in discovered


def test_foreign_executions_exclude_ours_and_starts_in_flight():
    active = [{'execution_id': 5, 'job_name': 'a', 'status': 'RUNNING', 'max_memory_mb': 100},
              {'execution_id': 3, 'job_name': 'b', 'status': 'QUEUED', 'max_memory_mb': None},
              {'execution_id': 4, 'job_name': 'c', 'status': 'RUNNING', 'max_memory_mb': 300},
              {'execution_id': 6, 'job_name': 'd', 'status': 'RUNNING', 'max_memory_mb': 50}]
    found = discovery.foreign_executions(active, our_execution_ids=[5], starting_job_names=['d'])
    assert [e['execution_id'] for e in found] == [3, 4]
    assert foreign_memory(make_engine('e1', 4, foreign=found)) == 300


def foreign(*ids, memory=0):
    return [{'execution_id': i, 'job_name': 'x%d' % i, 'status': 'RUNNING', 'max_memory_mb': memory} for i in ids]


def test_placement_counts_foreign_slots_and_memory():
    job = QueuedJob(1, 'mask_a', None, 0, None, 500, 0)
    full = make_engine('e1', 2, slots_used=1, foreign=foreign(31))
    assert place([job], [full]) == []
    assert not has_room({'name': 'e1', 'slots': 2, 'slots_used': 1, 'enabled': True, 'drained': False,
                         'unreachable_since': None, 'foreign_executions': foreign(31)})
    assert pending_reason(job, [full]) == ('all 2 slots full on engines e1; engine e1: 1 of 2 slots used by an '
                                           'execution started outside the queue (execution 31 of x31, RUNNING)')
    roomy = make_engine('e2', 4, slots_used=0, foreign=foreign(41, 42))
    assert [a.engine for a in place([job], [full, roomy])] == ['e2']
    short = make_engine('e3', 4, memory_mb=1000, foreign=foreign(51, memory=800))
    assert place([job], [short]) == []
    assert pending_reason(job, [short]) == ('waiting for memory on e3 (200 of 1000 MB free; 800 MB used by executions '
                                            'started outside the queue): the job needs 500 MB')


def test_overbooked_gives_back_the_last_scheduled_jobs():
    engine = make_engine('e1', 2, slots_used=2, foreign=foreign(7))     # two scheduled + one foreign on 2 slots
    assert overbooked(engine, [(10, None), (11, None)]) == [11]
    engine = make_engine('e1', 1, slots_used=1, foreign=foreign(7, 8))
    assert overbooked(engine, [(10, None)]) == [10]
    assert overbooked(make_engine('e1', 3, slots_used=2, foreign=foreign(7)), [(10, None), (11, None)]) == []
    memory = make_engine('e1', 4, slots_used=2, memory_mb=1000, memory_used_mb=600, foreign=foreign(7, memory=600))
    assert overbooked(memory, [(10, 300), (11, 300)]) == [11]
    memory = memory._replace(foreign=tuple(foreign(7, memory=900)))
    assert overbooked(memory, [(10, 300), (11, 300)]) == [11, 10]
    assert overbooked(make_engine('e1', 1, slots_used=1), [(10, None)]) == []


def test_no_carrier_reason_points_at_job_lists_read_from_the_engines():
    job = QueuedJob(1, 'gone', None, 0, None, None, 0)
    listed = make_engine('e1', 2, jobs=['other'], listed=True)
    assert pending_reason(job, [listed]) == ('no engine carries job gone (not in the job lists read from engines e1: '
                                             'deleted or renamed there?)')
    assert pending_reason(job, [make_engine('e1', 2, jobs=['other'])]) == 'no engine carries job gone'


def test_foreign_dict_for_results():
    engine = {'name': 'e1', 'slots': 4, 'memory_mb': None, 'enabled': True, 'drained': False, 'jobs': None,
              'unreachable_since': None, 'foreign_executions': foreign(31, memory=256), 'foreign_checked_at': 0.0}
    view = foreign_dict(engine)
    assert view['slots'] == 1 and view['memory_mb'] == 256 and view['checked_at'] == '1970-01-01T00:00:00.000Z'
    assert view['note'].startswith('1 of 4 slots used by an execution started outside the queue')
    assert foreign_dict(dict(engine, foreign_executions=None))['note'] is None
