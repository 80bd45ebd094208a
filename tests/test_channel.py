"""The row channel's fast paths: nothing lost, nothing doubled, ends when the sender closes."""

from __future__ import annotations

import anyio

from batchrun.dispatch import channel


def test_every_item_reaches_exactly_one_worker_in_order() -> None:
    async def main() -> tuple[list[int], list[list[int]]]:
        send, receive = anyio.create_memory_object_stream[int](max_buffer_size=2)
        received: list[list[int]] = [[] for _ in range(3)]

        async def produce() -> None:
            async with send:
                for item in range(500):
                    await channel.send(send, item)  # blocks whenever the buffer is full

        async def work(mine: list[int], stream: anyio.abc.ObjectReceiveStream[int]) -> None:
            async with stream:
                async for item in channel.receive_all(stream):
                    mine.append(item)
                    if item % 7 == 0:
                        await anyio.sleep(0)  # now and then a worker is busy elsewhere

        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            for mine in received:
                group.start_soon(work, mine, receive.clone())
            receive.close()
        return sorted(item for mine in received for item in mine), received

    everything, per_worker = anyio.run(main)
    assert everything == list(range(500))
    for mine in per_worker:
        assert mine == sorted(mine)
    assert sum(1 for mine in per_worker if mine) >= 2  # the work was shared
