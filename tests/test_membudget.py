"""The byte budget: never over capacity, first come first served, oversize alone, cancel-safe."""

from __future__ import annotations

import random

import anyio
import pytest

from batchrun.dispatch.membudget import ByteBudget

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_holds_never_exceed_capacity_and_all_finish() -> None:
    budget = ByteBudget(100)
    rng = random.Random(7)
    sizes = [rng.randint(1, 100) for _ in range(200)]
    seen_over: list[int] = []

    async def use(nbytes: int) -> None:
        async with budget.hold(nbytes):
            if budget.in_use > budget.capacity:
                seen_over.append(budget.in_use)
            await anyio.sleep(rng.random() / 1000)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for size in sizes:
                tasks.start_soon(use, size)
    assert seen_over == []
    assert budget.in_use == 0 and 50 < budget.peak_in_use <= 100


async def test_oversize_goes_alone_once_nothing_is_held() -> None:
    budget = ByteBudget(10)
    order: list[str] = []
    small_held = anyio.Event()
    release_small = anyio.Event()

    async def small() -> None:
        async with budget.hold(4):
            order.append("small in")
            small_held.set()
            await release_small.wait()
        order.append("small out")

    async def huge() -> None:
        await small_held.wait()
        async with budget.hold(1000):
            order.append(f"huge in, in_use={budget.in_use}")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(small)
            tasks.start_soon(huge)
            await small_held.wait()
            await anyio.sleep(0.01)
            assert order == ["small in"]  # the huge one waits while anything is held
            release_small.set()
    assert order == ["small in", "small out", "huge in, in_use=1000"]


async def test_first_come_first_served_so_large_ones_are_not_starved() -> None:
    budget = ByteBudget(10)
    granted: list[str] = []
    await budget.acquire(6)  # held by "someone"

    async def want(name: str, nbytes: int) -> None:
        await budget.acquire(nbytes)
        granted.append(name)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(want, "large", 8)
        await anyio.sleep(0.01)
        tasks.start_soon(want, "small", 2)  # would fit now, but queues behind "large"
        await anyio.sleep(0.01)
        assert granted == []
        budget.release(6)
        await anyio.sleep(0.01)
        assert granted == ["large", "small"]
        budget.release(8)
        budget.release(2)
    assert budget.in_use == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_lets_others_in() -> None:
    budget = ByteBudget(10)
    await budget.acquire(5)
    granted: list[str] = []

    async def want(name: str, nbytes: int) -> None:
        await budget.acquire(nbytes)
        granted.append(name)

    big_scope = anyio.CancelScope()

    async def big() -> None:
        with big_scope:
            await want("big", 9)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(big)
        await anyio.sleep(0.01)
        tasks.start_soon(want, "small", 5)
        await anyio.sleep(0.01)
        assert granted == []  # "big" is at the head
        big_scope.cancel()
        await anyio.sleep(0.01)
        assert granted == ["small"]
    assert budget.in_use == 10
    budget.release(5)
    budget.release(5)
    assert budget.in_use == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ByteBudget(0)


async def test_a_body_holding_nothing_never_waits_behind_queued_media() -> None:
    # Text bodies hold 0 bytes (they are in memory already): they pass a queue of media ones.
    budget = ByteBudget(10)
    release = anyio.Event()
    passed: list[str] = []

    async def media(nbytes: int, name: str) -> None:
        async with budget.hold(nbytes):
            passed.append(name)
            await release.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(media, 10, "first")
            await anyio.sleep(0.01)
            tasks.start_soon(media, 5, "queued")
            await anyio.sleep(0.01)
            async with budget.hold(0):
                passed.append("text")
            assert passed == ["first", "text"] and budget.in_use == 10
            release.set()
    assert passed == ["first", "text", "queued"] and budget.in_use == 0
