"""orchestra.fleet.claim's argument spec: only secrets are masked (issue 16 item 4)."""
from ansible.module_utils.common.parameters import _list_no_log_values  # what AnsibleModule scrubs from its output

from ansible_collections.orchestra.fleet.plugins.modules import claim

CLAIM = {'host': '10.20.0.11', 'id': '6c1d0e2a', 'secret': 'hunter2-secret', 'fencing': 7, 'owner': 'nightly',
         'ttl': 1800, 'expires_at': '2026-11-22T12:00:00Z', 'created_at': '2026-11-22T11:30:00Z'}


def test_of_a_claim_only_the_secret_is_masked():
    params = dict((name, None) for name in claim.argument_spec())
    params.update(claims=[dict(CLAIM)], token='agent-token', hosts=['10.20.0.11'])
    # With no_log on the whole `claims` list every value in it was scrubbed from the results, hosts and
    # fencing numbers included ("7" in any returned string became VALUE_SPECIFIED_IN_NO_LOG_PARAMETER).
    masked = _list_no_log_values(claim.argument_spec(), params)
    assert 'hunter2-secret' in masked
    readable = set(str(value) for key, value in CLAIM.items() if key != 'secret')
    assert not masked & readable, masked & readable


def test_claims_accept_what_state_claimed_returns():
    spec = claim.argument_spec()['claims']['options']
    assert sorted(spec) == sorted(CLAIM)
    assert [name for name, option in spec.items() if option.get('no_log')] == ['secret']
