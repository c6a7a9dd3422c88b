import pytest

from tests.worlds import tiny_world


@pytest.fixture
def raw_world(tmp_path):
    """The standard tiny world, raw layout only (see tests/worlds.py for what it holds)."""
    return tiny_world(tmp_path / "world")


@pytest.fixture
def split_world(raw_world):
    """The standard tiny world, split, with target lists written."""
    from competition.split import split
    from competition.targets import write_target_lists
    split(raw_world, progress=False)
    write_target_lists(raw_world)
    return raw_world


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The standard tiny world, split (module scope: shared by a test module's read-only tests)."""
    from competition.split import split
    root = tiny_world(tmp_path_factory.mktemp("tiny") / "world")
    split(root, progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_events(tiny):
    """The event table (input layout) of :func:`tiny`."""
    from competition.events import EventTable
    return EventTable.build(tiny, "input", progress=False)
