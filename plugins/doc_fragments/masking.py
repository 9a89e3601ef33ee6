# -*- coding: utf-8 -*-
# Copyright: orchestra.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every masking queue module shares (the orchestra.fleet.masking action group)."""


class ModuleDocFragment:

    DOCUMENTATION = r'''
options:
  store:
    description:
      - Where the masking queue lives.
      - A SQLite file, given as a plain absolute path (or one under C(~)) or as C(sqlite:///abs/path.db). A relative path
        is refused, so every task uses the same file whatever its working directory. SQLite is the default and suits
        one controller; the file is created (with its directory) on first use by a module that writes
        (M(orchestra.fleet.masking_queue_info) never creates one).
      - A PostgreSQL DSN C(postgresql://user@host:5432/dbname) for AWX/AAP or several controllers (a local file does
        not survive between AWX jobs, which run in fresh containers). Keep the database password out of the DSN
        and out of playbooks, since libpq reads C(PGPASSWORD) or C(~/.pgpass), which an AWX credential can inject. A
        password that is nevertheless in the DSN is masked in every message and result.
      - If not set, the environment variable C(ORCHESTRA_QUEUE_STORE) is used; when neither is set, C(~/.ansible/orchestra/masking-queue.db) on the
        host that runs the module (usually the controller, with C(connection=local) or C(delegate_to=localhost)).
      - All queue modules of one play should point at the same store; set it once with C(module_defaults) for the
        C(group/orchestra.fleet.masking) action group.
    type: str
  username:
    description:
      - User name for logging in to the masking engines, used for every engine that has no entry in O(engine_credentials).
      - If not set, the environment variable C(ORCHESTRA_MASKING_USERNAME) is used.
      - Never stored in the queue. Not a secret, so it is not masked in results (only passwords are).
    type: str
  password:
    description:
      - Password for O(username).
      - If not set, the environment variable C(ORCHESTRA_MASKING_PASSWORD) is used.
      - Never stored in the queue and never logged.
    type: str
  engine_credentials:
    description:
      - Credentials per engine name, for fleets where engines do not share one login. An entry wins over
        O(username)/O(password) for its engine.
      - Each value is a dictionary with the keys C(username) and C(password).
      - The option is never logged; in results only the passwords in it are masked, not the user names. It may come from Ansible Vault, or from an AWX custom
        credential that injects it as a JSON string in the environment variable C(ORCHESTRA_MASKING_ENGINE_CREDENTIALS),
        which is read when the option is not set.
    type: dict
requirements:
  - requests (to talk to the masking engines)
  - psycopg >= 3.1 (only when O(store) is a PostgreSQL DSN; without it such a store fails with a message naming
    C(pip install "psycopg[binary]"))
notes:
  - The modules run wherever the task runs; point them at the controller (C(connection=local), C(delegate_to=localhost)
    or a C(localhost) play) so every task uses the same queue store.
  - Every call to the queue database rides out an outage (a PostgreSQL restart, a network cut) of up to 90 seconds,
    reconnecting with backoff, before the task fails with C(error_kind=store_unavailable).
  - Credentials only travel with the task that needs them. Steps that start, poll or cancel executions on an engine
    (M(orchestra.fleet.masking_job) with O(orchestra.fleet.masking_job#module:wait=true),
    M(orchestra.fleet.masking_poll), cancelling) need them; registering engines and reading the queue do not.
seealso:
  - name: Masking queue user guide
    description: How the queue places, starts and polls masking jobs, and how to run it from AWX/AAP.
    link: https://github.com/orchestra-fleet/orchestra.fleet/blob/main/docs/masking-queue.md
attributes:
  action_group:
    description: Use C(group/orchestra.fleet.masking) in C(module_defaults) to set the shared options once.
    support: full
    membership:
      - orchestra.fleet.masking
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
'''
