"""G5: state from (latest snapshot + later events) equals state from all events."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors._actor import describe
from runtime import Registry, Runtime, load
from storage import Journal

from .conftest import BACKENDS, tamper
from .models import Account, Deposit, GetBalance


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on a SQLite file and on a PostgreSQL database (``db`` makes either)."""
    return str(request.param)


def rebuilt(db: str, address: str, *, use_snapshots: bool) -> Account.State:
    registry = Registry([Account])
    with Journal.open(db) as journal:
        loaded = load(
            journal, describe(Account), registry.codec, address, address.split("/")[1], use_snapshots=use_snapshots
        )
    state: Account.State = loaded.instance.state
    return state


@settings(max_examples=15, deadline=None)
@given(amounts=st.lists(st.integers(1, 1000), min_size=1, max_size=40))
async def test_snapshot_plus_tail_equals_full_replay(tmp_path_factory: object, amounts: list[int]) -> None:
    db = str(tmp_path_factory.mktemp("g5") / "j.db")  # type: ignore[attr-defined]
    async with Runtime(db, actors=[Account]) as rt:
        for amount in amounts:
            await rt.ask("Account/a", Deposit(amount))
    full = rebuilt(db, "Account/a", use_snapshots=False)
    fast = rebuilt(db, "Account/a", use_snapshots=True)
    assert full == fast
    assert full.history == amounts  # and both equal the model
    with Journal.open(db) as journal:
        assert len(list(journal.snapshots("Account/a"))) == len(amounts) // Account.snapshot_every


async def test_an_undecodable_snapshot_falls_back_to_older_history(db: str) -> None:
    async with Runtime(db, actors=[Account]) as rt:
        for amount in range(1, 13):
            await rt.ask("Account/a", Deposit(amount))
    tamper(db, "UPDATE snapshots SET data = ? WHERE seq = (SELECT max(seq) FROM snapshots)", (b"\xc1\xc1\xc1",))
    async with Runtime(db, actors=[Account]) as rt:
        assert await rt.ask("Account/a", GetBalance()) == sum(range(1, 13))
    assert rebuilt(db, "Account/a", use_snapshots=True).history == list(range(1, 13))


class Unsnapshotted(Account):
    name = "Plain"
    snapshot_every = 0


async def test_snapshot_every_zero_writes_no_snapshot_ever(db: str) -> None:
    async with Runtime(db, actors=[Unsnapshotted], max_active=1) as rt:
        for i in range(30):
            await rt.ask(f"Plain/{i % 3}", Deposit(1))  # max_active=1 passivates constantly
    with Journal.open(db) as journal:
        assert all(list(journal.snapshots(a.address)) == [] for a in journal.actors())
        assert len(journal.actors()) == 3


async def test_state_survives_passivation_with_snapshots(db: str) -> None:
    rng = random.Random(5)
    expected: dict[str, int] = {}
    async with Runtime(db, actors=[Account], max_active=3) as rt:
        for _ in range(300):
            key = f"Account/{rng.randrange(10)}"
            amount = rng.randrange(1, 50)
            expected[key] = expected.get(key, 0) + amount
            await rt.tell(key, Deposit(amount))
        for key, balance in expected.items():
            assert await rt.ask(key, GetBalance()) == balance
