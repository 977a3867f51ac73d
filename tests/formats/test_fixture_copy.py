"""The repository's copy of the official_tiny fixture (tests/data/official_tiny) is complete, matches the hashes
its README states, and equals the shared original when ../shared/fixtures/official_tiny is present."""
import hashlib
import re

from conftest import FIXTURE_FILES, OWN_FIXTURE, SHARED_FIXTURES


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_own_copy_matches_its_readme():
    table = dict(re.findall(r"^\| `([\w.]+)` \| [\d,]+ \| ([0-9a-f]{12}) \|", (OWN_FIXTURE / "README.md").read_text(),
                            re.M))
    assert sorted(table) == sorted(FIXTURE_FILES)
    for name, prefix in table.items():
        assert _sha(OWN_FIXTURE / name).startswith(prefix), name


def test_own_copy_equals_the_shared_set_when_present():
    shared = SHARED_FIXTURES / "official_tiny"
    if not shared.is_dir():  # a clone without ../shared: nothing to compare with (the hashes above still hold)
        return
    for name in FIXTURE_FILES:
        assert _sha(OWN_FIXTURE / name) == _sha(shared / name), name
