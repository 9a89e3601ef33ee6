"""The agent's packaging promises: Python 3.9 syntax, one OpenAPI document, spec and routes in step."""
import ast
import os

import yaml

import orchestra_agent
from orchestra_agent import app

PACKAGE_DIR = os.path.dirname(os.path.abspath(orchestra_agent.__file__))
COLLECTION_ROOT = os.path.normpath(os.path.join(PACKAGE_DIR, '..', '..', '..', '..', '..'))
DOCS_SPEC = os.path.join(COLLECTION_ROOT, 'docs', 'agent-openapi.yaml')


def test_every_module_parses_as_python_3_9():
    for name in sorted(os.listdir(PACKAGE_DIR)):
        if name.endswith('.py'):
            with open(os.path.join(PACKAGE_DIR, name), encoding='utf-8') as handle:
                ast.parse(handle.read(), filename=name, feature_version=(3, 9))


def test_served_openapi_is_the_documented_one():
    with open(DOCS_SPEC, 'rb') as docs, open(app.OPENAPI_FILE, 'rb') as served:
        assert docs.read() == served.read(), 'copy docs/agent-openapi.yaml to roles/agent/files/agent/orchestra_agent/openapi.yaml'


def test_openapi_paths_are_exactly_the_routes():
    with open(DOCS_SPEC, encoding='utf-8') as handle:
        spec = yaml.safe_load(handle)
    documented = set()
    for path, item in spec['paths'].items():
        for method in item:
            if method in ('get', 'post', 'put', 'delete'):
                documented.add((method.upper(), path))
    routed = set()
    for method, table in (('GET', 'get_routes'), ('POST', 'post_routes')):
        routed |= {(method, path) for path in _route_table(table)}
    routed |= {('PUT', '/v1/claims/{claim_id}'), ('DELETE', '/v1/claims/{claim_id}'),
               ('GET', '/v1/workflows/{workflow_id}'), ('POST', '/v1/workflows/{workflow_id}/cancel')}
    assert documented == routed


def _route_table(name):
    """The route paths of a fresh Application (built over a minimal stand-in agent)."""
    class Settings:
        max_body_bytes = 1024
        token = None
        auth_reads = False

    class Agent:
        settings = Settings()
        agent_id = 'stand-in'

    return list(getattr(app.Application(Agent()), name))
