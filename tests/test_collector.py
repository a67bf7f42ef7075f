"""The young-generation threshold a runtime raises while open, and gives back."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import Runtime

from .models import Account, Deposit

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def default_threshold() -> Iterator[None]:
    gc.collect()  # runtimes earlier tests dropped without closing stop counting once collected
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


async def test_the_threshold_is_raised_while_open_and_restored_at_close(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        assert gc.get_threshold() == (50_000, 10, 10)
        await rt.ask("Account/a", Deposit(1))
    assert gc.get_threshold() == (700, 10, 10)


async def test_the_last_of_two_runtimes_restores_it(db: str, tmp_path: Path) -> None:
    other = str(tmp_path / "other.db")
    first = await Runtime(db, actors=[Account], young_gc_threshold=20_000).__aenter__()
    async with Runtime(other, actors=[Account], young_gc_threshold=20_000):
        assert gc.get_threshold()[0] == 20_000
    assert gc.get_threshold()[0] == 20_000  # the first is still open
    await first.close()
    assert gc.get_threshold() == (700, 10, 10)


async def test_none_leaves_the_collector_alone(db: str) -> None:
    async with Runtime(db, actors=[Account], young_gc_threshold=None):
        assert gc.get_threshold() == (700, 10, 10)


async def test_a_threshold_someone_else_set_meanwhile_is_kept(db: str) -> None:
    async with Runtime(db, actors=[Account]):
        gc.set_threshold(1234, 5, 5)
    assert gc.get_threshold() == (1234, 5, 5)


async def test_a_higher_threshold_already_set_is_not_lowered(db: str) -> None:
    gc.set_threshold(100_000, 10, 10)
    async with Runtime(db, actors=[Account]):
        assert gc.get_threshold() == (100_000, 10, 10)
    assert gc.get_threshold() == (100_000, 10, 10)


def test_a_threshold_below_one_is_refused(db: str) -> None:
    with pytest.raises(ValueError, match="young_gc_threshold must be at least 1"):
        Runtime(db, actors=[Account], young_gc_threshold=0)


async def test_an_abandoned_runtime_gives_it_back_too(db: str) -> None:
    rt = await Runtime(db, actors=[Account]).__aenter__()
    assert gc.get_threshold() == (50_000, 10, 10)
    await rt.abandon()  # as a crash would: close() is not called
    assert gc.get_threshold() == (700, 10, 10)
    async with Runtime(db, actors=[Account]):  # and the count is right for the next one
        assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)
