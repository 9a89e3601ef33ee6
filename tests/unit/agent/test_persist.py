import os

import pytest

from orchestra_agent import acks, persist


def test_write_json_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = str(tmp_path / 'f.json')
    persist.write_json(path, {'a': 1})
    persist.write_json(path, {'a': 2})
    assert persist.read_json(path, None) == {'a': 2}
    assert os.listdir(str(tmp_path)) == ['f.json']


def test_read_json_default_and_corrupt(tmp_path):
    assert persist.read_json(str(tmp_path / 'missing'), {'x': 1}) == {'x': 1}
    bad = tmp_path / 'bad'
    bad.write_text('{')
    with pytest.raises(persist.StoreError):
        persist.read_json(str(bad), {})


def test_write_json_reports_unwritable_dir(tmp_path):
    with pytest.raises(persist.StoreError):
        persist.write_json(str(tmp_path / 'missing-dir' / 'f.json'), {})


def test_acks_persist_and_prune(tmp_path):
    path = str(tmp_path / acks.FILE_NAME)
    store = acks.AckStore(path)
    store.add(['a@1', 'b@1'], lambda key: True)
    store.add([], lambda key: key != 'a@1')
    assert acks.AckStore(path).keys == frozenset(['b@1'])
