import json
import threading

import pytest

from orchestra_agent import claims, persist


class FakeClock:
    def __init__(self):
        self.value = 1_800_000_000.0

    def __call__(self):
        return self.value


def lazy(_owner):
    return None if _owner is None else 'host already claimed by %s' % _owner


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / claims.FILE_NAME)


def test_claim_is_persisted_before_it_is_returned_and_secret_is_only_a_digest(path, clock):
    store = claims.ClaimStore(path, now=clock)
    claim = store.create('sched-a', 60, None, lazy)
    on_disk = json.load(open(path))
    assert on_disk['fencing'] == 1
    assert on_disk['claims'][0]['id'] == claim['id']
    assert claim['secret'] not in json.dumps(on_disk)
    assert claim['expires_at'] == '2027-01-15T08:01:00Z'


def test_one_claim_at_a_time(path, clock):
    store = claims.ClaimStore(path, now=clock)
    store.create('a', 60, None, lazy)
    with pytest.raises(claims.ClaimError) as info:
        store.create('b', 60, None, lazy)
    assert (info.value.status, info.value.message) == (409, 'host already claimed by a')


def test_fencing_only_grows_across_release_expiry_and_restart(path, clock):
    store = claims.ClaimStore(path, now=clock)
    first = store.create('a', 60, None, lazy)
    store.release(first['id'], first['secret'])
    second = store.create('b', 5, None, lazy)
    clock.value += 6
    third = claims.ClaimStore(path, now=clock).create('c', 5, None, lazy)
    assert [first['fencing'], second['fencing'], third['fencing']] == [1, 2, 3]


def test_claim_survives_restart(path, clock):
    claim = claims.ClaimStore(path, now=clock).create('a', 60, 'n', lazy)
    reloaded = claims.ClaimStore(path, now=clock)
    assert reloaded.active()['id'] == claim['id']
    assert reloaded.renew(claim['id'], claim['secret'])['fencing'] == 1


def test_expiry_frees_the_host(path, clock):
    store = claims.ClaimStore(path, now=clock)
    claim = store.create('a', 10, None, lazy)
    clock.value += 10
    assert store.active() is None
    assert store.list_public() == []
    with pytest.raises(claims.ClaimError) as info:
        store.renew(claim['id'], claim['secret'])
    assert info.value.status == 404
    assert store.create('b', 10, None, lazy)['fencing'] == 2


def test_wrong_secret_and_stale_fencing_are_rejected(path, clock):
    store = claims.ClaimStore(path, now=clock)
    claim = store.create('a', 60, None, lazy)
    with pytest.raises(claims.ClaimError) as info:
        store.renew(claim['id'], 'wrong')
    assert (info.value.status, info.value.code) == (403, 'forbidden')
    with pytest.raises(claims.ClaimError) as info:
        store.release(claim['id'], claim['secret'], fencing=claim['fencing'] - 1)
    assert (info.value.status, info.value.code) == (409, 'stale_fencing')
    with pytest.raises(claims.ClaimError) as info:
        store.release('0' * 32, claim['secret'])
    assert info.value.status == 404
    assert store.active()['id'] == claim['id']


def test_renew_moves_the_expiry(path, clock):
    store = claims.ClaimStore(path, now=clock)
    claim = store.create('a', 60, None, lazy)
    clock.value += 50
    renewed = store.renew(claim['id'], claim['secret'], ttl=120, fencing=1)
    assert renewed['ttl'] == 120
    clock.value += 100
    assert store.active() is not None


def test_refusal_blocks_a_claim(path, clock):
    store = claims.ClaimStore(path, now=clock)
    with pytest.raises(claims.ClaimError) as info:
        store.create('a', 60, None, lambda owner: 'host is busy')
    assert info.value.message == 'host is busy'
    assert store.fencing == 0


def test_concurrent_creates_give_exactly_one_claim(path, clock):
    store = claims.ClaimStore(path, now=clock)
    barrier = threading.Barrier(50)
    results = []

    def attempt(index):
        barrier.wait()
        try:
            results.append(store.create('owner-%d' % index, 60, None, lazy)['fencing'])
        except claims.ClaimError as exc:
            results.append(exc.status)

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [1] + [409] * 49


def test_failed_persist_hands_out_nothing(path, clock, monkeypatch):
    store = claims.ClaimStore(path, now=clock)

    def broken(*_args):
        raise persist.StoreError('disk full')

    monkeypatch.setattr(persist, 'write_json', broken)
    with pytest.raises(persist.StoreError):
        store.create('a', 60, None, lazy)
    assert store.active() is None
    assert store.fencing == 0


def test_corrupt_claims_file_is_an_error_not_a_reset(path, clock):
    with open(path, 'w') as handle:
        handle.write('{"fencing": "x"}')
    with pytest.raises(persist.StoreError):
        claims.ClaimStore(path, now=clock)
