"""The suite's own ordering: the slow-file list names files that exist, and they run first."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def slow_files(request: pytest.FixtureRequest) -> dict[str, int]:
    """SLOW_FILES of tests/conftest.py, as pytest loaded it (--import-mode=importlib)."""
    (conftest,) = [plugin for plugin in request.config.pluginmanager.get_plugins()
                   if getattr(plugin, "__file__", None) == str(REPO / "tests" / "conftest.py")]
    return conftest.SLOW_FILES


def test_every_listed_slow_file_exists(slow_files: dict[str, int]) -> None:
    missing = [name for name in slow_files if not (REPO / name).is_file()]
    assert missing == [], f"remove or rename these in tests/conftest.py SLOW_FILES: {missing}"


def test_slow_files_are_listed_slowest_first(slow_files: dict[str, int]) -> None:
    seconds = list(slow_files.values())
    assert seconds == sorted(seconds, reverse=True)


def test_collection_puts_the_slowest_file_first(request: pytest.FixtureRequest,
                                                slow_files: dict[str, int]) -> None:
    files = []
    for item in request.session.items:
        name = Path(str(item.path)).resolve().relative_to(REPO).as_posix()
        if not files or files[-1] != name:
            files.append(name)
    listed = [name for name in files if name in slow_files]
    # the listed files that were collected lead, in the list's order
    assert listed == [name for name in slow_files if name in listed]
    assert files[:len(listed)] == listed
