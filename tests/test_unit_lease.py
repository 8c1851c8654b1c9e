"""The output's lease on local disk: acquire, refuse, expire, take over, release, races with one winner, and how a
rerun judges its predecessor: gone from this machine (taken at once), running here (refused), elsewhere (waited for)."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace

import pytest

from svdbatch.store import lease, lease_records, processes
from svdbatch.store.lease import LeaseHeld, LeaseLost
from svdbatch.store.lease_records import Holder, Standing


def _record(output, generation: int) -> dict:
    return json.loads((output / "_job" / "lease" / lease_records.record_file(generation)).read_text())


def _generations(output) -> list[int]:
    return lease_records.generations(*lease_records.lease_folder(str(output), {}))


def _write(output, record: dict, generation: int = 1) -> None:
    folder = output / "_job" / "lease"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / lease_records.record_file(generation)).write_text(json.dumps(record))


def _here(pid: int, expires: float, **changes) -> Holder:
    """A record of a process on this machine, as acquire writes it."""
    host, boot_id, namespace = processes.machine()
    holder = Holder(host, pid, "run-old", time.time() - 5, expires, boot_id, namespace, processes.start_ticks(pid))
    return replace(holder, **changes)


def _ended_process() -> tuple[int, int]:
    """The pid and start ticks of a process that ran on this machine and has ended."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = processes.start_ticks(child.pid)
    child.kill()
    child.wait()
    return child.pid, started


def test_a_second_run_refuses_naming_the_holder_until_the_first_releases(tmp_path):
    first = lease.acquire(str(tmp_path), {}, "run-a", ttl_s=60)
    record = _record(tmp_path, 1)
    assert record["run_id"] == "run-a" and record["host"] == socket.gethostname()
    assert record["expires"] > time.time() + 50

    with pytest.raises(LeaseHeld) as refused:
        lease.acquire(str(tmp_path), {}, "run-b", ttl_s=60)
    line = str(refused.value)
    assert "\n" not in line
    assert "run run-a on " + socket.gethostname() in line and lease_records.utc(first.holder.started) in line
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


def _race(output: str, start, wins, attempt: int, done=None) -> None:
    """Race for the lease; a racing process stays alive until ``done``: a winner whose process ended would be
    replaced by the next racer (its lease is not released, but its process is gone)."""
    start.wait()
    try:
        lease.acquire(output, {}, f"racer-{attempt}", ttl_s=60)
        wins.put(attempt)
    except LeaseHeld:
        wins.put(None)
    if done is not None:
        done.wait(60)


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
    start, results, done = context.Barrier(racers), context.Queue(), context.Event()
    racing = [context.Process(target=_race, args=(str(tmp_path), start, results, n, done)) for n in range(racers)]
    for process in racing:
        process.start()
    winners = [winner for winner in (results.get(timeout=60) for _ in range(racers)) if winner is not None]
    done.set()
    for process in racing:
        process.join()
    assert len(winners) == 1
    assert _generations(tmp_path) == [2] and _record(tmp_path, 2)["run_id"] == f"racer-{winners[0]}"


def test_the_ttl_is_a_spec_field_and_take_over_a_run_flag(capsys):
    from helpers import make_spec

    from svdbatch.cli import main
    from svdbatch.spec.config import SpecError

    assert make_spec("m.parquet", "out").lease.ttl_s == 60.0
    with pytest.raises(SpecError, match="lease.ttl_s"):
        make_spec("m.parquet", "out", lease={"ttl_s": 0})
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "--take-over" in help_text and "--lease-wait SECONDS" in help_text
    assert main(["run", "missing.yaml", "--lease-wait", "-1"]) == 2
    assert capsys.readouterr().err == "svdbatch: error: --lease-wait -1: must be 0 or more seconds\n"


def test_a_holder_whose_process_ended_on_this_machine_is_replaced_at_once(tmp_path, capsys):
    pid, started = _ended_process()
    _write(tmp_path, asdict(_here(pid, time.time() + 600, pid_started=started)))
    began = time.monotonic()
    taken = lease.acquire(str(tmp_path), {}, "run-new", ttl_s=60, wait_s=600)
    assert time.monotonic() - began < 5 and taken.generation == 2 and _generations(tmp_path) == [2]
    lines = capsys.readouterr().err.strip().splitlines()
    took = f"svdbatch: output {tmp_path}: took the lease of run run-old on {socket.gethostname()} (pid {pid}, started "
    assert len(lines) == 1 and lines[0].startswith(took) and lines[0].endswith("whose process has ended")
    mine = _record(tmp_path, 2)
    assert (mine["pid"], mine["boot_id"], mine["pid_namespace"]) == (taken.holder.pid, *processes.machine()[1:])
    assert mine["pid_started"] == processes.start_ticks(mine["pid"]) > 0
    taken.release()


def test_a_running_holder_on_this_machine_refuses_at_once_and_a_reused_pid_is_not_it(tmp_path):
    me = _here(os.getpid(), time.time() + 600)
    assert lease_records.standing(me, time.time()) is Standing.RUNNING
    _write(tmp_path, asdict(me))
    began = time.monotonic()
    with pytest.raises(LeaseHeld, match="is in use by run run-old"):
        lease.acquire(str(tmp_path), {}, "run-new", ttl_s=60, wait_s=600)
    assert time.monotonic() - began < 5  # a process alive here renews its lease: waiting would not help
    # The same pid, started at another time: the recorded process ended and its pid was reused.
    assert lease_records.standing(replace(me, pid_started=me.pid_started + 1), time.time()) is Standing.GONE
    # Records that cannot be judged from here: another host, another boot, another pid namespace (a container).
    for elsewhere in ({"host": "node-elsewhere"}, {"boot_id": "another-boot"}, {"pid_namespace": "pid:[1]"}):
        assert lease_records.standing(replace(me, **elsewhere), time.time()) is Standing.ELSEWHERE
    assert lease_records.standing(replace(me, expires=0.0), time.time()) is Standing.EXPIRED


def test_a_live_holder_on_another_machine_is_waited_for_then_refused(tmp_path, capsys):
    holder = lease.acquire(str(tmp_path), {}, "run-far", ttl_s=1.0)
    holder.holder = replace(holder.holder, host="node-elsewhere")  # its renewals now say so
    holder.renew()
    holder.keep(on_lost=lambda error: None)
    began = time.monotonic()
    with pytest.raises(LeaseHeld) as refused:
        lease.acquire(str(tmp_path), {}, "run-new", ttl_s=60, wait_s=2.5)
    assert 2.5 <= time.monotonic() - began < 6  # past its TTL (1 s): it kept renewing
    assert "is in use by run run-far on node-elsewhere" in str(refused.value)
    assert "still renewed after waiting 2.5 s, --lease-wait" in str(refused.value)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"svdbatch: output {tmp_path} is held by run run-far on node-elsew")
    assert "waiting up to 2.5 s for its lease to expire (--lease-wait)" in lines[0]
    holder.release()


def test_an_expired_holder_from_another_machine_is_waited_for_then_taken(tmp_path, capsys):
    _write(tmp_path, asdict(_here(4242, time.time() + 2.0, host="node-elsewhere")))
    began = time.monotonic()
    taken = lease.acquire(str(tmp_path), {}, "run-new", ttl_s=60, wait_s=60)
    assert 1.5 <= time.monotonic() - began < 6 and taken.generation == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is held by run run-old on node-elsewhere (pid 4242" in lines[0]
    taken.release()


def test_a_record_without_process_facts_or_with_unknown_fields_is_read_and_waited_for(tmp_path):
    """Records of earlier versions lack boot id, pid namespace and start ticks: this machine's pid cannot be trusted
    (rebooted? reused?), so the rerun waits for expiry. Fields of later versions are ignored."""
    old = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "run_id": "run-old",
        "started": time.time(),
        "expires": time.time() + 1.5,
    }
    assert lease_records.standing(Holder(**old), time.time()) is Standing.ELSEWHERE
    _write(tmp_path, {**old, "written_by": "a later version"})
    assert lease_records.newest_record(*lease_records.lease_folder(str(tmp_path), {}))[1] == Holder(**old)
    began = time.monotonic()
    taken = lease.acquire(str(tmp_path), {}, "run-new", ttl_s=60, wait_s=60)
    assert 1.0 <= time.monotonic() - began < 6 and taken.generation == 2
    taken.release()


def test_processes_tell_a_running_process_from_an_ended_or_reused_one():
    pid, started = _ended_process()
    assert started > 0 and processes.gone(pid, started)
    me = processes.start_ticks(os.getpid())
    assert not processes.gone(os.getpid(), me) and not processes.gone(os.getpid(), 0)
    assert processes.gone(os.getpid(), me + 1)
    assert processes.same_machine(processes.machine()) and not processes.same_machine(("", "", ""))
