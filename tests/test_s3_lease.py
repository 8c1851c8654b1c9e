"""The output's lease on S3 (moto's real S3-protocol server on loopback): the create is a conditional PUT
(``If-None-Match: *``), so of runs racing for the lease exactly one wins."""

from __future__ import annotations

import json
import threading
import time

import pytest
from s3_server import moto_s3

from svdbatch.store import lease, lease_records
from svdbatch.store.lease import LeaseHeld, LeaseLost

BUCKET = "svdbatch-lease"


@pytest.fixture(scope="module")
def s3():
    with moto_s3(BUCKET) as (port, client):
        options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"},
        }
        yield options, client


def _records(client, output: str) -> dict[str, dict]:
    prefix = output.removeprefix(f"s3://{BUCKET}/") + "/_job/lease/"
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {
        item["Key"].rsplit("/", 1)[-1]: json.loads(client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
        for item in listing
    }


def test_acquire_refuse_expire_take_over_release(s3):
    options, client = s3
    output = f"s3://{BUCKET}/cycle"
    first = lease.acquire(output, options, "run-a", ttl_s=1)
    assert _records(client, output)[lease_records.record_file(1)]["run_id"] == "run-a"
    with pytest.raises(LeaseHeld, match="in use by run run-a on .*--take-over"):
        lease.acquire(output, options, "run-b", ttl_s=60)

    time.sleep(1.1)  # run-a stopped renewing: its lease expired
    second = lease.acquire(output, options, "run-b", ttl_s=60)
    assert list(_records(client, output)) == [lease_records.record_file(2)]
    with pytest.raises(LeaseLost, match="taken over by run run-b"):
        first.renew()

    third = lease.acquire(output, options, "run-c", ttl_s=60, take_over=True)
    with pytest.raises(LeaseLost, match="taken over by run run-c"):
        second.check()
    second.release()
    assert list(_records(client, output)) == [lease_records.record_file(3)]
    third.renew()
    third.release()
    assert _records(client, output)[lease_records.record_file(3)]["expires"] == 0.0  # released in place
    fourth = lease.acquire(output, options, "run-d", ttl_s=60)  # so taken at once, and the numbers go on
    assert fourth.generation == 4 and list(_records(client, output)) == [lease_records.record_file(4)]
    fourth.release()


@pytest.mark.parametrize("expired_holder", [False, True])
def test_threads_racing_for_the_lease_on_s3_have_one_winner(s3, expired_holder):
    options, client = s3
    output = f"s3://{BUCKET}/race-{expired_holder}"
    if expired_holder:
        lease.acquire(output, options, "run-dead", ttl_s=1)
        time.sleep(1.1)
    racers = 12
    start = threading.Barrier(racers)
    winners: list[str] = []
    refused: list[str] = []

    def race(run_id: str) -> None:
        start.wait()
        try:
            lease.acquire(output, options, run_id, ttl_s=60)
            winners.append(run_id)
        except LeaseHeld:
            refused.append(run_id)

    threads = [threading.Thread(target=race, args=(f"racer-{n}",)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and len(refused) == racers - 1
    records = _records(client, output)
    assert [record["run_id"] for record in records.values()] == winners
