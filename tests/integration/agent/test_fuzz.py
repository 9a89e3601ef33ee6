"""Fuzz docs/agent-openapi.yaml against the running agent with schemathesis (bounded examples).

All of schemathesis' default checks run: no server error, responses match the
documented schemas and status codes, invalid input is rejected, valid input is
accepted; its stateful phase follows the claim links (create -> renew/release).
The seed is fixed for reproducible CI; set ORCHESTRA_FUZZ_SEED to explore others.
"""
import os
import subprocess
import sys

import pytest

from tests.support.agent_proc import COLLECTION_ROOT, start_agent

SPEC = os.path.join(COLLECTION_ROOT, 'docs', 'agent-openapi.yaml')
MAX_EXAMPLES = int(os.environ.get('ORCHESTRA_FUZZ_EXAMPLES', '25'))
SEED = os.environ.get('ORCHESTRA_FUZZ_SEED', '20261122')


@pytest.mark.slow
@pytest.mark.parametrize('with_workload', [False, True], ids=['lazy-host', 'busy-host'])
def test_openapi_fuzz_finds_no_server_errors(busybox_image, selector, workloads, tmp_path, with_workload):
    if with_workload:
        workloads('sleep 120')
        workloads(['sh', '-c', 'exit 5'])
    # No token: schemathesis cannot sign, and an unguarded agent lets it reach every mutation's
    # validation and the claim links (signing itself is covered by test_bad_input and the unit tests).
    # A body limit above anything the generator makes: a schema-violating body (say 300 long command
    # items) must reach validation and be answered 400, not stop at the size limit (413, which
    # schemathesis does not count as a rejection; the limit itself is tested in test_bad_input).
    handle = start_agent(labels=[selector], config={'max_claim_ttl': 86400, 'max_body_bytes': 16 * 1024 * 1024})
    try:
        handle.wait_state(lambda s: s['docker']['reachable'])
        result = subprocess.run(
            [sys.executable, '-m', 'schemathesis.cli', 'run', SPEC, '--url', handle.url,
             '--max-examples', str(MAX_EXAMPLES), '--seed', SEED,
             '--generation-database', 'none', '--request-timeout', '10', '--no-color'],
            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240, check=False)
        summary = result.stdout[-6000:]
        assert result.returncode == 0, summary
        assert ' passed' in summary and 'Server error' not in summary, summary
        # The agent stayed up through the whole run and logged no unexpected exception.
        assert handle.health() is not None
        assert '"request failed"' not in handle.logs()
    finally:
        handle.close()
