"""The Ray engine's parts without Ray: the governor's leases (rate and cap), a worker's side of
them, and the shards the driver hands out, on real files and real async calls."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from batchrun.cluster.governor import Governor, GovernorService
from batchrun.cluster.leases import GovernorLink, LeasedBudget, LeasedLimiter
from batchrun.cluster.messages import LEASE_S, LeaseAsk, Shard
from batchrun.cluster.shards import ShardBook, ShardReader
from batchrun.core.result import Completion
from batchrun.cost.budget import BudgetExhausted, CreditLedger
from batchrun.cost.catalog import price_for
from batchrun.manifest.job import JobSpec


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the governor ----------------------------------------------------------------------
def test_permits_come_in_chunks_of_a_lease_and_keep_the_global_rate() -> None:
    clock = Clock()
    governor = Governor(rpm=1200, tpm=None, clock=clock)
    granted = 0
    calls = 0
    # Two workers asking for everything they have waiting, for 30 s of virtual time.
    while clock.now < 130.0:
        for worker in ("a", "b"):
            grant = governor.permits(LeaseAsk(worker, requests=64), clock.now)
            calls += 1
            assert grant.requests <= 1200 / 60 * LEASE_S  # a lease's worth, never more
            granted += grant.requests
        clock.now += 0.05
    # 1,200/min over 30 s is 600, plus the bucket's one-second burst.
    assert 600 <= granted <= 620
    assert calls < 1300  # not one call per request: chunks of up to 5


def test_without_a_rate_a_lease_is_a_window_and_an_overload_pause_holds_it() -> None:
    clock = Clock()
    governor = Governor(rpm=None, tpm=None, clock=clock)
    grant = governor.permits(LeaseAsk("a", requests=10), clock.now)
    assert grant.free_for_s == LEASE_S and grant.requests == 0
    governor.limiter.cooldown(2.0)
    paused = governor.permits(LeaseAsk("a", requests=10), clock.now)
    assert paused.free_for_s == 0 and paused.wait_s == pytest.approx(2.0)


def test_refusals_reported_by_workers_teach_the_same_controller() -> None:
    clock = Clock()
    governor = Governor(rpm=None, tpm=None, clock=clock)
    # A flood: most answers refused, reported in a batch by one worker.
    for _ in range(3):
        clock.now += 0.4
        governor.learn(LeaseAsk("a", answered=2, sent_freely=40,
                                refusals=[(1.0, None)] * 38))
    assert governor.limiter.rate_rpm is not None  # cut: now a rate is kept
    assert governor.limiter.refusals == 114


def test_allowance_never_passes_the_cap_and_says_when_it_is_reached() -> None:
    governor = Governor(rpm=None, tpm=None, cap=10.0, spent=2.0)
    first, reached = governor.allowance(LeaseAsk("a", credits=5.0, credits_floor=1.0))
    assert (first, reached) == (5.0, False)
    second, reached = governor.allowance(LeaseAsk("b", credits=5.0, credits_floor=1.0))
    assert (second, reached) == (3.0, False)  # only what is left: 10 - 2 - 5
    # Nothing left, but "a" may hand some back: wait, not reached.
    assert governor.allowance(LeaseAsk("b", credits=1.0, credits_floor=1.0)) == (0.0, False)
    # "a" spent 4.5 of its 5 and returned the rest; "b" spent all 3.
    governor.learn(LeaseAsk("a", spent=4.5, returned=0.5))
    governor.learn(LeaseAsk("b", spent=3.0))
    assert governor.spent == pytest.approx(9.5)
    # 0.5 left: a request needing 1.0 can never fit now.
    assert governor.allowance(LeaseAsk("b", credits=1.0, credits_floor=1.0)) == (0.0, True)


def test_a_lost_workers_allowance_counts_as_spent() -> None:
    governor = Governor(rpm=None, tpm=None, cap=10.0)
    governor.allowance(LeaseAsk("a", credits=4.0, credits_floor=1.0))
    governor.forget("a")
    assert governor.spent == 4.0 and governor.held == {}


# --- a worker's side, over real async calls into the governor's service ----------------
async def send_for(limiter: LeasedLimiter, seconds: float, senders: int) -> int:
    """Requests ``senders`` tasks got through ``limiter`` in ``seconds`` (each one answered)."""
    sent = 0

    async def one() -> None:
        nonlocal sent
        while True:
            if not limiter.acquire_now():
                await limiter.acquire()
            sent += 1
            limiter.answered(None)

    async with anyio.create_task_group() as group:
        for _ in range(senders):
            group.start_soon(one)
        await anyio.sleep(seconds)
        group.cancel_scope.cancel()
    return sent


def test_two_linked_limiters_share_one_rate() -> None:
    async def main() -> int:
        service = GovernorService(rpm=600, tpm=None, cap=None, spent=0.0)
        counts: list[int] = []

        async def worker(name: str) -> None:
            limiter = LeasedLimiter(GovernorLink(name, service.lease))
            counts.append(await send_for(limiter, 3.0, senders=8))

        async with anyio.create_task_group() as group:
            group.start_soon(worker, "a")
            group.start_soon(worker, "b")
        return sum(counts)

    sent = anyio.run(main)
    # 600/min for 3 s is 30, plus the one-second burst of 10 (and a lapsed permit or two).
    assert 28 <= sent <= 42


def test_leased_budget_reserves_under_the_cap_and_hands_back_what_it_does_not_need() -> None:
    price = price_for("gemini-3.1-pro")
    template = CreditLedger.for_job(50.0, "gemini-3.1-pro", output_bound=1000)

    async def main() -> tuple[float, float, float]:
        service = GovernorService(rpm=None, tpm=None, cap=50.0, spent=0.0)
        links = [GovernorLink(name, service.lease) for name in ("a", "b")]
        budgets = [LeasedBudget(template, price, link) for link in links]
        spent = 0.0
        with pytest.raises(BudgetExhausted):
            while True:
                for budget in budgets:
                    reservation = await budget.reserve(100)
                    assert reservation is not None
                    completion = Completion(content="x", prompt_tokens=100,
                                            completion_tokens=900)
                    budget.settle(reservation, completion)
                    spent += price.credits(100, 900)
                for link in links:
                    await link.ask()  # the news: spending and returned allowance
        return spent, service.governor.spent, sum(service.governor.held.values())

    spent, governor_spent, held = anyio.run(main)
    assert spent <= 50.0
    assert governor_spent == pytest.approx(spent, abs=1e-6)
    assert held < 50.0 - spent + 1e-6


# --- shards ----------------------------------------------------------------------------
def _manifest(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_shard_reads_only_its_lines_and_says_when_the_file_ends(tmp_path: Path) -> None:
    rows = [json.dumps({"id": f"r{n}", "prompt": f"p{n}"}) for n in range(1, 11)]
    manifest = _manifest(tmp_path / "m.jsonl", rows[:5] + [""] + rows[5:])  # a blank line 6
    job = JobSpec()
    middle, end = ShardReader(manifest, job).read(Shard(1, 3, 7, frozenset({4})))
    assert [row.line for row in middle] == [3, 5, 7] and not end
    last, end = ShardReader(manifest, job).read(Shard(2, 8, 20))
    assert [row.id for row in last] == ["r7", "r8", "r9", "r10"] and end
    beyond, end = ShardReader(manifest, job).read(Shard(3, 21, 30))
    assert beyond == [] and end


def test_the_book_skips_done_lines_and_hands_a_lost_workers_rest_to_others() -> None:
    done = bytearray(11)
    done[1:5] = b"\x01" * 4  # lines 1-4 done in an earlier session
    book = ShardBook(bytes(done), size=3)
    first = book.take("a")
    assert first is not None and (first.first, first.last) == (5, 7)
    second = book.take("b")
    assert second is not None and (second.first, second.last) == (8, 10)
    book.finish(5)
    assert book.lose("a") == 1
    again = book.take("b")
    assert again is not None and (again.first, again.last) == (5, 7) and again.skip == {5}
    book.shard_done("b", second.number, reached_end=True)
    book.shard_done("b", again.number, reached_end=False)
    assert book.all_done
    assert book.take("b") is None


# --- the core install stays without Ray ------------------------------------------------
def test_ray_is_an_extra_and_a_local_run_never_imports_it(tmp_path: Path) -> None:
    import subprocess
    import sys
    import tomllib

    from support.kit import ROOT, fast_job, write_manifest

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.lower().startswith("ray") for dep in project["dependencies"])
    assert any(dep.startswith("ray>=") for dep in project["optional-dependencies"]["ray"])
    manifest = write_manifest(tmp_path / "m.jsonl", 3)
    job = fast_job(tmp_path)
    # A whole local run in one process, then: was Ray (or the cluster engine) loaded?
    script = (
        "import sys\n"
        "from batchrun.cli import main\n"
        f"sys.argv = ['batchrun', 'run', {str(manifest)!r}, '--job', {str(job)!r}, '--out', "
        f"{str(tmp_path / 'out')!r}, '--emulate', '-q']\n"
        "try:\n    main()\nexcept SystemExit as done:\n    code = done.code\n"
        "print(code, 'ray' in sys.modules, 'batchrun.cluster.driver' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.stdout.split() == ["0", "False", "False"], done.stderr


def test_a_worker_reads_its_shards_forward_and_parquet_from_the_right_row_group(
        tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"r{n}", "prompt": f"p{n}"} for n in range(1, 1001)]
    manifest = _manifest(tmp_path / "m.jsonl", [json.dumps(row) for row in rows])
    reader = ShardReader(manifest, JobSpec())
    seen = []
    end = False
    for number, first in enumerate(range(1, 1001, 100), start=1):
        shard_rows, end = reader.read(Shard(number, first, first + 99, frozenset({first})))
        seen += [row.id for row in shard_rows]
        assert reader.cursor.line == first - 1  # the cursor moved forward, shard by shard
    assert end and len(seen) == 990 and seen[0] == "r2" and seen[-1] == "r1000"
    # A range handed out again (a lost worker's) starts over from the top.
    again, _ = reader.read(Shard(99, 5, 7))
    assert [row.id for row in again] == ["r5", "r6", "r7"]

    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=64)
    late, end = ShardReader(parquet, JobSpec()).read(Shard(1, 700, 705, frozenset({701})))
    assert [(row.line, row.id) for row in late] == [(700, "r700"), (702, "r702"),
                                                    (703, "r703"), (704, "r704"),
                                                    (705, "r705")]
    assert not end


def test_under_a_rate_one_call_brings_a_leases_worth_of_permits_paced() -> None:
    async def main() -> tuple[int, int]:
        service = GovernorService(rpm=2400, tpm=None, cap=None, spent=0.0)
        link = GovernorLink("a", service.lease)
        sent = await send_for(LeasedLimiter(link), 2.0, senders=32)
        return sent, link.calls

    sent, calls = anyio.run(main)
    # 2,400/min = 40/s: 80 in 2 s plus the bucket's burst of 40, never more.
    assert 80 <= sent <= 125
    # A lease is a quarter second of the rate (10 permits): about 4 calls a second, not 40.
    assert calls <= 14, (calls, sent)
