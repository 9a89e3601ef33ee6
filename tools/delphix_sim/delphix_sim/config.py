"""Engine config: loading, defaults and validation, plus seed_config() for tests.

Config format (JSON, or YAML when PyYAML is importable), every key optional but `engine.name`:

    {"engine": {"name": "eng1", "num_simul_jobs_allowed": 7, "max_memory_for_jobs": null, ...},
     "users": [{"username": "admin", "password": "Admin-12"}],
     "applications": [{"name": "app", "environments": [{"name": "dev", "purpose": "MASK",
                       "jobs": [{"name": "mask_customers", "outcome": "SUCCEEDED", "duration": 2.0,
                                 "rows": 1000, "max_memory": 1024}]}]}],
     "faults": {...}}
"""
import json
import zlib

ENGINE_DEFAULTS = {
    'name': 'engine',
    'version': '6.0.17.0',
    'build': '6.0.17.0-20260110',
    'api_version': '5.1.44',
    'num_simul_jobs_allowed': 7,    # 0 means cores - 1, as on a real engine
    'total_available_cores': 8,
    'max_memory_for_jobs': None,    # MB, MaximumMemoryForJobs; None = the setting is unset: total_allocated_memory_mb
    'total_allocated_memory_mb': 65536,  # /system-information totalAllocatedMemoryForJobs when the setting is unset
    'token_timeout_s': 900.0,       # API_AUTHORIZATION_TIMEOUT
    'post_status': 201,             # [V] the spec's 201 for POST /login and POST /executions (200 selectable)
    'clock_offset_s': 0.0,          # the engine's own clock: seconds ahead (+) or behind (-) the host's
    'double_start': 'conflict',     # [I] 'conflict' (409) or 'allow' (second execution is accepted)
    'status_set': 'newest',         # 'older' | 'later' | 'newest': which status values the API generation knows
    'queued_status': 'QUEUED',      # [I] the newest enum also names WAITING
    'default_page_size': None,      # [I] None = a list without paging parameters returns everything
    'date_style': 'delphix',        # 'delphix' (+0000), 'iso-z' (Z), 'iso-colon' (+00:00)
    'count_fraction': 0.2,          # share of a run spent counting rows (rowsTotal -1)
    'job_id_base': None,            # None = derived from the engine name, so ids differ per engine
    'execution_id_base': None,
}

JOB_DEFAULTS = {
    'outcome': 'SUCCEEDED',         # SUCCEEDED | WARNING | FAILED, or any other word to get an unknown status
    'duration': 1.0,                # seconds of engine time, may be 0.01
    'rows': 1000,
    'max_memory': 1024,
    'min_memory': 0,
    'num_input_streams': 1,
    'multi_tenant': False,
    'on_the_fly': False,
    'fail_immediately': False,
}

USER_DEFAULT = {'username': 'admin', 'password': 'Admin-12'}
STATUS_SETS = ('older', 'later', 'newest')


class ConfigError(ValueError):
    pass


def load_config(path):
    with open(path, encoding='utf-8') as handle:
        text = handle.read()
    if path.endswith(('.yml', '.yaml')):
        import yaml  # pylint: disable=import-outside-toplevel
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError('not valid YAML: %s' % exc) from exc
    else:
        data = json.loads(text)
    return normalize(data)


def _id_base(name, salt):
    # Distinct, stable ids per engine, as on real engines where one jobName has a different id on each.
    return 1 + (zlib.crc32((salt + name).encode()) % 90) * 100


def normalize(data):
    """Fill defaults and check the config; returns a new dict."""
    if not isinstance(data, dict):
        raise ConfigError('config must be a mapping')
    engine = dict(ENGINE_DEFAULTS)
    engine.update(data.get('engine') or {})
    unknown = set(engine) - set(ENGINE_DEFAULTS)
    if unknown:
        raise ConfigError('unknown engine keys: %s' % ', '.join(sorted(unknown)))
    if engine['status_set'] not in STATUS_SETS:
        raise ConfigError('engine.status_set must be one of %s' % ', '.join(STATUS_SETS))
    if engine['double_start'] not in ('conflict', 'allow'):
        raise ConfigError("engine.double_start must be 'conflict' or 'allow'")
    if int(engine['post_status']) not in (200, 201):
        raise ConfigError('engine.post_status must be 200 or 201')
    try:
        engine['clock_offset_s'] = float(engine['clock_offset_s'] or 0.0)
    except (TypeError, ValueError) as exc:
        raise ConfigError('engine.clock_offset_s must be a number of seconds') from exc
    if engine['job_id_base'] is None:
        engine['job_id_base'] = _id_base(engine['name'], 'job')
    if engine['execution_id_base'] is None:
        engine['execution_id_base'] = _id_base(engine['name'], 'exec') * 10
    users = [dict(USER_DEFAULT, **u) for u in (data.get('users') or [USER_DEFAULT])]
    applications = []
    for app in data.get('applications') or []:
        envs = []
        for env in app.get('environments') or []:
            jobs = []
            for job in env.get('jobs') or []:
                full = dict(JOB_DEFAULTS)
                full.update(job)
                if not full.get('name') or len(full['name']) > 50:
                    raise ConfigError('job names are 1..50 characters: %r' % full.get('name'))
                jobs.append(full)
            envs.append({'name': env['name'], 'purpose': env.get('purpose', 'MASK'), 'jobs': jobs})
        applications.append({'name': app['name'], 'environments': envs})
    return {'engine': engine, 'users': users, 'applications': applications, 'faults': dict(data.get('faults') or {})}


def seed_config(engine_name, jobs, slots=7, memory_mb=None, application='app', users=None, **engine_options):
    """Build a config dict for one engine from a flat job list.

    jobs: [{"name", "environment" (default "env"), "outcome", "duration", "rows", "max_memory"}, ...]
    slots: NumSimulJobsAllowed; memory_mb: MaximumMemoryForJobs (None = no memory limit).
    """
    by_env = {}
    for job in jobs:
        job = dict(job)
        env_name = job.pop('environment', None) or 'env'
        by_env.setdefault(env_name, []).append(job)
    engine = {'name': engine_name, 'num_simul_jobs_allowed': slots, 'max_memory_for_jobs': memory_mb}
    engine.update(engine_options)
    return {
        'engine': engine,
        'users': users or [dict(USER_DEFAULT)],
        'applications': [{'name': application,
                          'environments': [{'name': name, 'jobs': env_jobs} for name, env_jobs in by_env.items()]}],
    }
