# -*- coding: utf-8 -*-
# Copyright (c) orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an engine says about itself -> what the queue registers: pure functions, no I/O.

    facts(settings, system, catalogue)   the engine's answers -> {field: (value, source)} for slots, memory_mb, jobs
    merge(facts, explicit)               explicit options override -> (wanted, sources, discovered fields)
    foreign_executions(...)              RUNNING/QUEUED executions on an engine that no queue job owns

Facts (DELPHIX_MASKING_API.md, "Engine capacity"): an engine runs at most NumSimulJobsAllowed jobs at once
(0 means cores - 1, from /system-information totalAvailableCores) and at most MaximumMemoryForJobs MB of summed
job maxMemory (when the setting is not set, /system-information totalAllocatedMemoryForJobs). The jobs it
carries are every masking job of every environment of every application, by name and environment.
"""

from ansible_collections.orchestra.fleet.plugins.module_utils.delphix_parse import whole_number

SLOTS_SETTING = 'NumSimulJobsAllowed'
MEMORY_SETTING = 'MaximumMemoryForJobs'
DISCOVERABLE = ('slots', 'memory_mb', 'jobs')
EXPLICIT = 'explicit'
# How often (seconds) the poll step reads a discovered engine's job list and capacity again even when nothing
# is missing: bounded so a job added, deleted or renamed on the engine shows within five minutes.
CATALOGUE_INTERVAL = 300.0


class DiscoveryError(ValueError):
    """The engine's answers do not give a value the queue needs (and none was given explicitly)."""


def slots_fact(settings, system):
    """(slots, source) from the settings {name: value} and /system-information; (None, why) when not reported."""
    allowed = whole_number(settings.get(SLOTS_SETTING))
    if allowed is None:
        return None, 'the engine did not report %s' % SLOTS_SETTING
    if allowed > 0:
        return allowed, 'application-settings %s' % SLOTS_SETTING
    cores = whole_number((system or {}).get('totalAvailableCores'))
    if cores is None:
        return None, '%s is 0 (cores - 1) and the engine did not report totalAvailableCores' % SLOTS_SETTING
    return max(1, cores - 1), 'system-information totalAvailableCores %d - 1 (%s is 0)' % (cores, SLOTS_SETTING)


def memory_fact(settings, system):
    """(memory_mb, source): MaximumMemoryForJobs when set (above 0), else totalAllocatedMemoryForJobs; None: no budget."""
    memory = whole_number(settings.get(MEMORY_SETTING))
    if memory:
        return memory, 'application-settings %s' % MEMORY_SETTING
    total = whole_number((system or {}).get('totalAllocatedMemoryForJobs'))
    if total:
        return total, 'system-information totalAllocatedMemoryForJobs'
    return None, 'the engine reported no memory for jobs: no memory budget'


def catalogue_jobs(catalogue):
    """Catalogue entries (job objects with environmentName) -> sorted unique [{name, environment}]."""
    seen = {}
    for job in catalogue or ():
        name = job.get('jobName')
        if not name:
            continue
        environment = job.get('environmentName')
        entry = {'name': str(name), 'environment': str(environment)} if environment else str(name)
        seen[(str(name), str(environment or ''))] = entry
    return [seen[key] for key in sorted(seen)]


def jobs_fact(catalogue):
    jobs = catalogue_jobs(catalogue)
    environments = set(job.get('environmentName') for job in catalogue or () if job.get('environmentName'))
    return jobs, 'the engine: %d jobs in %d environments' % (len(jobs), len(environments))


def facts(settings, system, catalogue):
    """{field: (value, source)} for slots, memory_mb and jobs from the engine's own answers."""
    return {'slots': slots_fact(settings, system), 'memory_mb': memory_fact(settings, system),
            'jobs': jobs_fact(catalogue)}


def merge(found, explicit, engine_name):
    """Explicit values override discovered ones -> (wanted {field: value}, sources {field: source}, discovered fields).

    found: facts(); explicit: {field: value or None}. DiscoveryError names the engine when slots can be known
    neither way.
    """
    wanted, sources, discovered = {}, {}, []
    for field in DISCOVERABLE:
        value, source = found.get(field, (None, 'not read'))
        if explicit.get(field) is not None:
            wanted[field], sources[field] = explicit[field], EXPLICIT
            continue
        if value is None and field == 'slots':
            raise DiscoveryError('engine %s: %s; give slots explicitly' % (engine_name, source))
        wanted[field], sources[field] = value, source
        discovered.append(field)
    return wanted, sources, discovered


def refresh_wanted(found, discovered_fields):
    """What a refresh writes: only the fields that came from discovery, and only values the engine gave."""
    return dict((field, found[field][0]) for field in discovered_fields or ()
                if field in found and found[field][0] is not None)


def foreign_executions(active, our_execution_ids, starting_job_names):
    """Executions RUNNING or QUEUED on an engine that no queue job owns, sorted by id.

    active: [{'execution_id', 'job_name', 'status', 'max_memory_mb'}] as the driver lists them; our_execution_ids:
    the executions queue jobs hold on that engine; starting_job_names: masking jobs the queue is starting there
    right now (a POST in flight has an execution the queue has not recorded yet: it is not foreign).
    """
    ours, starting = set(our_execution_ids), set(starting_job_names)
    return sorted((dict(entry) for entry in active or ()
                   if entry['execution_id'] not in ours and entry.get('job_name') not in starting),
                  key=lambda entry: entry['execution_id'])
