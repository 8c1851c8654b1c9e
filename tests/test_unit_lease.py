"""The output's lease on local disk: acquire, refuse, expire, take over, release, and races with one winner."""

from __future__ import annotations

import json
import multiprocessing
import queue
import socket
import threading
import time

import pytest

from svdbatch import lease
from svdbatch.lease import LeaseHeld, LeaseLost


def _record(output, generation: int) -> dict:
    return json.loads((output / "_job" / "lease" / lease.name(generation)).read_text())


def _generations(output) -> list[int]:
    return lease.generations(*lease.lease_folder(str(output), {}))


def test_a_second_run_refuses_naming_the_holder_until_the_first_releases(tmp_path):
    first = lease.acquire(str(tmp_path), {}, "run-a", ttl_s=60)
    record = _record(tmp_path, 1)
    assert record["run_id"] == "run-a" and record["host"] == socket.gethostname()
    assert record["expires"] > time.time() + 50

    with pytest.raises(LeaseHeld) as refused:
        lease.acquire(str(tmp_path), {}, "run-b", ttl_s=60)
    line = str(refused.value)
    assert "\n" not in line
    assert "run run-a on " + socket.gethostname() in line and lease.utc(first.holder.started) in line
    assert "--take-over" in line

    first.release()
    assert _record(tmp_path, 1)["expires"] == 0
    second = lease.acquire(str(tmp_path), {}, "run-b", ttl_s=60)
    assert second.generation == 2 and _generations(tmp_path) == [2]  # numbers never restart; the older is removed
    second.release()


def test_an_expired_lease_is_taken_and_its_old_holder_learns_it_lost(tmp_path):
    dead = lease.acquire(str(tmp_path), {}, "run-dead", ttl_s=1)
    time.sleep(1.1)
    alive = lease.acquire(str(tmp_path), {}, "run-alive", ttl_s=60)
    assert alive.generation == 2 and _generations(tmp_path) == [2]
    with pytest.raises(LeaseLost, match="taken over by run run-alive"):
        dead.renew()
    alive.release()


def test_take_over_wins_over_a_live_holder_which_then_stops(tmp_path):
    holder = lease.acquire(str(tmp_path), {}, "run-a", ttl_s=60)
    taker = lease.acquire(str(tmp_path), {}, "run-b", ttl_s=60, take_over=True)
    assert taker.generation == 2
    with pytest.raises(LeaseLost, match="taken over by run run-b"):
        holder.check()
    holder.release()  # its record, written again by its last renewal, is removed; the taker's is untouched
    assert _generations(tmp_path) == [2]
    assert _record(tmp_path, 2)["run_id"] == "run-b" and _record(tmp_path, 2)["expires"] > time.time()
    with pytest.raises(LeaseHeld, match="run run-b"):
        lease.acquire(str(tmp_path), {}, "run-c", ttl_s=60)
    taker.release()


def test_the_keeper_renews_and_reports_a_takeover_once(tmp_path):
    holder = lease.acquire(str(tmp_path), {}, "run-a", ttl_s=1.0)
    lost: list[LeaseLost] = []
    reported = threading.Event()
    holder.keep(on_lost=lambda error: (lost.append(error), reported.set()))
    first_expiry = holder.holder.expires
    time.sleep(1.5)  # past the first TTL: renewed every 0.25 s, so still held
    assert _record(tmp_path, 1)["expires"] > first_expiry
    with pytest.raises(LeaseHeld):
        lease.acquire(str(tmp_path), {}, "run-b", ttl_s=60)

    lease.acquire(str(tmp_path), {}, "run-b", ttl_s=60, take_over=True)
    assert reported.wait(2.0)
    assert len(lost) == 1 and "taken over by run run-b" in str(lost[0]) and holder.lost is lost[0]
    holder.release()


def _race(output: str, start, wins, attempt: int) -> None:
    start.wait()
    try:
        lease.acquire(output, {}, f"racer-{attempt}", ttl_s=60)
        wins.put(attempt)
    except LeaseHeld:
        wins.put(None)


@pytest.mark.parametrize("expired_holder", [False, True])
def test_threads_racing_for_the_lease_have_one_winner(tmp_path, expired_holder):
    if expired_holder:
        lease.acquire(str(tmp_path), {}, "run-dead", ttl_s=1)
        time.sleep(1.1)
    racers = 16
    start = threading.Barrier(racers)
    results: queue.Queue = queue.Queue()
    threads = [threading.Thread(target=_race, args=(str(tmp_path), start, results, n)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [winner for winner in (results.get() for _ in range(racers)) if winner is not None]
    assert len(winners) == 1
    assert _record(tmp_path, _generations(tmp_path)[-1])["run_id"] == f"racer-{winners[0]}"


def test_processes_racing_for_an_expired_lease_have_one_winner(tmp_path):
    lease.acquire(str(tmp_path), {}, "run-dead", ttl_s=1)
    time.sleep(1.1)
    context = multiprocessing.get_context("fork")
    racers = 8
    start, results = context.Barrier(racers), context.Queue()
    processes = [context.Process(target=_race, args=(str(tmp_path), start, results, n)) for n in range(racers)]
    for process in processes:
        process.start()
    winners = [winner for winner in (results.get(timeout=60) for _ in range(racers)) if winner is not None]
    for process in processes:
        process.join()
    assert len(winners) == 1
    assert _generations(tmp_path) == [2] and _record(tmp_path, 2)["run_id"] == f"racer-{winners[0]}"


def test_the_ttl_is_a_spec_field_and_take_over_a_run_flag(capsys):
    from helpers import make_spec

    from svdbatch.cli import main
    from svdbatch.config import SpecError

    assert make_spec("m.parquet", "out").lease.ttl_s == 60.0
    with pytest.raises(SpecError, match="lease.ttl_s"):
        make_spec("m.parquet", "out", lease={"ttl_s": 0})
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--take-over" in capsys.readouterr().out
