"""The original tool's ~/.orchestra_subnet as a source (subnets_file): one CIDR a line."""
import pytest

from ansible_collections.orchestra.fleet.plugins.module_utils import fleet_discovery as fd


def names(targets):
    return [t.name for t in targets]


def test_cidrs_comments_and_blank_lines(tmp_path):
    path = tmp_path / '.orchestra_subnet'
    path.write_text('# written by orchestra\n10.9.0.0/30\n\n   10.9.1.4/31  # second rack\n10.9.2.7\n')
    assert fd.read_subnets_file(str(path)) == ['10.9.0.0/30', '10.9.1.4/31', '10.9.2.7/32']


def test_swept_like_subnets_beside_the_cache_file(tmp_path):
    subnet_file, cache = tmp_path / '.orchestra_subnet', tmp_path / 'cache'
    subnet_file.write_text('10.9.0.0/29\n')
    cache.write_text('10.9.0.2\n10.9.5.5\n')
    targets = fd.expand_sources(hosts_file=str(cache), subnets_file=str(subnet_file), exclude=['10.9.0.1'])
    # Cache-file addresses are named (always reported); the subnet file's addresses are swept, de-duplicated.
    assert names(targets) == ['10.9.0.2', '10.9.5.5', '10.9.0.3', '10.9.0.4', '10.9.0.5', '10.9.0.6']
    assert [t.named for t in targets] == [True, True, False, False, False, False]


def test_the_file_alone_is_a_source_and_counts_against_max_addresses(tmp_path):
    path = tmp_path / 's'
    path.write_text('10.9.0.0/30\n10.9.1.0/24\n')
    assert len(fd.expand_sources(subnets_file=str(path))) == 2 + 254
    with pytest.raises(fd.FleetConfigError, match='subnets and subnets_file: 260 addresses exceed max_addresses=100'):
        fd.expand_sources(subnets_file=str(path), max_addresses=100)


@pytest.mark.parametrize('content, line, bad', [
    ('10.9.0.0/24\n10.9.0.0/33\n', 2, '10.9.0.0/33'),
    ('\n# c\nrack-a\n', 3, 'rack-a'),
    ('10.9.0.0/24 10.9.1.0/24\n', 1, '10.9.0.0/24 10.9.1.0/24'),
])
def test_a_bad_line_names_file_and_line(tmp_path, content, line, bad):
    path = tmp_path / '.orchestra_subnet'
    path.write_text(content)
    with pytest.raises(fd.FleetConfigError) as info:
        fd.expand_sources(subnets_file=str(path))
    assert str(info.value) == 'subnets_file: %s line %d: %r is not a CIDR' % (path, line, bad)


def test_unreadable_file(tmp_path):
    with pytest.raises(fd.FleetConfigError, match='subnets_file: cannot read .*missing: No such file'):
        fd.expand_sources(subnets_file=str(tmp_path / 'missing'))


def test_source_options_pass_it_through():
    options = {'subnets': None, 'hosts': None, 'hosts_file': None, 'exclude': None, 'max_addresses': 9,
               'subnets_file': '/x/.orchestra_subnet'}
    assert fd.source_options(options.get)['subnets_file'] == '/x/.orchestra_subnet'
