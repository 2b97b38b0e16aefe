"""The attached watch on a laptop's network: Google's front end answering 500, 502, 503 or 429,
connections dropped without an answer, a laptop that slept. The watch retries with backoff and
says so; a network that stays down makes it stop and leave the VM running, never delete it;
Ctrl-C still deletes it. The waits go through ``sleep=``, so nothing here really waits."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from backend.ml.cloud import storage
from backend.ml.cloud.compute import Compute
from backend.ml.cloud.orchestrate import CloudRun, start_vm, watch_run
from backend.ml.cloud.retrying import NETWORK_LOST_EXIT, NETWORK_PATIENCE_SECONDS, NetworkLost
from support.cloud import PROJECT
from support.fakes.fake_compute import CURRENT_FAMILY, RETRY_AFTER_SECONDS

ZONE = "us-central1-a"
VM = "mb-net-0a1b2c-0"
VM_GET = rf"/instances/{VM}$"


def _run(bucket: str) -> CloudRun:
    spec = {"project": PROJECT, "run_id": "net_0a1b2c", "bucket": bucket,
            "machine_type": "n1-standard-4", "gpu_type": "nvidia-tesla-t4", "gpu_count": 1,
            "preemptible": True, "boot_disk_gb": 50, "image_family": CURRENT_FAMILY,
            "image_project": "deeplearning-platform-release", "max_run_hours": 2.0,
            "service_account": f"media-bias-trainer@{PROJECT}.iam.gserviceaccount.com"}
    return CloudRun(run_id="net_0a1b2c", project=PROJECT, region="us-central1", bucket=bucket,
                    zones=[ZONE], spec=spec)


def _started(bucket: str) -> tuple[Compute, CloudRun]:
    compute, run = Compute(), _run(bucket)
    start_vm(compute, run, log=lambda *_: None)
    return compute, run


def _faults_left(fake) -> int:
    return sum(len(faults) for _, _, faults in fake.faults)


def test_transient_failures_are_retried_with_backoff_and_the_run_finishes(gcs, fake_compute):
    client, bucket = gcs
    compute, run = _started(bucket)
    # 503 is retried by the Compute client itself (its default retry for instances.get).
    fake_compute.inject_faults(VM_GET, "500", "502", "429", "drop", "503", "500")
    lines, waits, deleted_before_the_end = [], [], []

    def sleep(seconds):
        waits.append(seconds)
        if seconds == 0 and not _faults_left(fake_compute):  # a poll once the network is back
            deleted_before_the_end.extend(fake_compute.deletes)
            storage.write_json(client, f"{run.url}/cloud/DONE.json", {"status": "completed"})

    marker = watch_run(compute, client, run, poll_seconds=0, log=lines.append, sleep=sleep)
    assert marker["status"] == "completed"
    retries = [line for line in lines if "retrying in" in line]
    assert len(retries) == 5, lines
    assert "HTTP 502 BadGateway" in retries[1] and "ConnectionError" in retries[3]
    backoff = [seconds for seconds in waits if seconds]
    # Doubling waits, each between half and all of its step; the 429 waits its Retry-After.
    for failure, (seconds, step) in enumerate(zip(backoff, [2, 4, 8, 16, 32])):
        assert step / 2 <= seconds <= step or (failure == 2 and seconds == RETRY_AFTER_SECONDS)
    assert deleted_before_the_end == [] and fake_compute.deletes == [VM]


def test_a_network_that_stays_down_leaves_the_vm_running_and_says_how_to_reattach(
        gcs, fake_compute):
    client, bucket = gcs
    compute, run = _started(bucket)
    fake_compute.inject_faults(VM_GET, *["drop"] * 100)
    waits = []
    with pytest.raises(NetworkLost) as lost:
        watch_run(compute, client, run, poll_seconds=0, log=lambda *_: None, sleep=waits.append)
    message = str(lost.value)
    assert f"VM {VM} ({ZONE}) was left running" in message
    assert "`cloud logs net_0a1b2c --follow`" in message and "`cloud sync net_0a1b2c`" in message
    assert lost.value.exit_code == NETWORK_LOST_EXIT
    assert NETWORK_PATIENCE_SECONDS / 2 < sum(waits) <= NETWORK_PATIENCE_SECONDS
    assert fake_compute.deletes == [] and fake_compute.live() == [VM]
    assert run.vms[0]["ended_at"] is None  # still running, still billed


def test_a_laptop_that_slept_finds_its_stale_connection_dropped_and_watches_on(gcs, fake_compute):
    client, bucket = gcs
    compute, run = _started(bucket)
    polls = iter(["lid closed", "training", "finished"])

    def sleep(seconds):
        if seconds:  # a retry's wait
            return
        step = next(polls)
        if step == "lid closed":  # hours pass; the pooled connection died meanwhile
            created = datetime.fromisoformat(run.vms[0]["created_at"])
            run.vms[0]["created_at"] = (created - timedelta(hours=5)).isoformat()
            fake_compute.inject_faults(VM_GET, "drop", "drop")
        elif step == "finished":
            storage.write_json(client, f"{run.url}/cloud/DONE.json", {"status": "completed"})

    lines = []
    marker = watch_run(compute, client, run, poll_seconds=0, log=lines.append, sleep=sleep)
    assert marker["status"] == "completed"
    assert sum("retrying in" in line for line in lines) == 2
    assert fake_compute.deletes == [VM]  # deleted at the end, as after any finished run


def test_a_call_that_never_answers_times_out_and_is_retried(gcs, fake_compute):
    """A connection that died while the laptop slept never answers: without a time-out the
    watch would wait on it for ever."""
    client, bucket = gcs
    run = _run(bucket)
    start_vm(Compute(), run, log=lambda *_: None)
    compute = Compute(call_timeout=0.5)  # the fake never answers the stalled call at all
    fake_compute.inject_faults(VM_GET, "stall")
    polls = iter(["stalled call made", "finished"])

    def sleep(seconds):
        if not seconds and next(polls) == "finished":  # a poll's wait, not a retry's
            storage.write_json(client, f"{run.url}/cloud/DONE.json", {"status": "completed"})

    lines = []
    marker = watch_run(compute, client, run, poll_seconds=0, log=lines.append, sleep=sleep)
    assert marker["status"] == "completed"
    assert any("retrying in" in line and "Timeout" in line for line in lines), lines
    assert _faults_left(fake_compute) == 0 and fake_compute.deletes == [VM]
    assert fake_compute.stalls_outwaited == 0  # the client gave up on its own


def test_ctrl_c_while_waiting_to_retry_still_deletes_the_vm(gcs, fake_compute):
    client, bucket = gcs
    compute, run = _started(bucket)
    fake_compute.inject_faults(VM_GET, "502")

    def sleep(seconds):
        if seconds:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        watch_run(compute, client, run, poll_seconds=0, log=lambda *_: None, sleep=sleep)
    assert fake_compute.deletes == [VM] and run.vms[0]["ended_at"]
