"""cloud.max_cost_usd bounds every VM: its maxRunDuration is what the budget has left at its
hourly rate, for the first VM, a replacement after a preemption, and the runs of a fan-out,
through the real Compute client against the strict fake."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from backend.ml.cloud import orchestrate, storage
from backend.ml.cloud.commands import CloudTarget, cloud_run_command
from backend.ml.cloud.compute import CloudError, Compute
from backend.ml.cloud.orchestrate import CloudRun, start_vm, watch_run
from support.cli import run_main
from support.cloud import PROJECT
from support.configs import tiny_config, write_config
from support.fakes.fake_compute import CURRENT_FAMILY

ZONE = "us-central1-a"
# prices.yaml, us-central1, spot: n1-standard-4 0.06382 + T4 0.1915 + a 100 GB pd-balanced
# boot disk (0.10 $/GB-month over 730 h) + the external IP 0.0025, $/hour.
T4_SPOT_PER_HOUR = 0.06382 + 0.1915 + 100 * 0.10 / 730 + 0.0025


def _run(bucket: str, budget_usd: float | None, max_run_hours: float = 6.0,
         vms: list | None = None) -> CloudRun:
    spec = {"project": PROJECT, "run_id": "cap_0a1b2c", "bucket": bucket,
            "machine_type": "n1-standard-4", "gpu_type": "nvidia-tesla-t4", "gpu_count": 1,
            "preemptible": True, "boot_disk_gb": 50, "image_family": CURRENT_FAMILY,
            "image_project": "deeplearning-platform-release", "max_run_hours": max_run_hours,
            "service_account": f"media-bias-trainer@{PROJECT}.iam.gserviceaccount.com"}
    # $2/h at spot, 12 minutes of startup.
    estimate = {"hourly": {"spot": 2.0, "on_demand": 5.0}, "chosen": "spot",
                "total": {"spot": 1.0, "on_demand": 2.5}, "hours": 0.5, "startup_hours": 0.2}
    return CloudRun(run_id="cap_0a1b2c", project=PROJECT, region="us-central1", bucket=bucket,
                    zones=[ZONE], spec=spec, estimate=estimate, budget_usd=budget_usd,
                    vms=vms or [])


def _max_run_seconds(insert: dict) -> int:
    return int(insert["body"]["scheduling"]["maxRunDuration"]["seconds"])


def _quiet(*_):
    pass


@pytest.mark.parametrize("budget_usd, seconds", [
    (3.0, 5400),      # $3 buys 1.5 h at $2/h, below cloud.max_run_hours = 6 h
    (30.0, 21600),    # $30 buys 15 h: cloud.max_run_hours is the ceiling
    (None, 21600),    # no budget recorded: cloud.max_run_hours alone
])
def test_the_first_vm_runs_for_what_the_budget_buys(gcs, fake_compute, budget_usd, seconds):
    _, bucket = gcs
    record = start_vm(Compute(), _run(bucket, budget_usd), log=_quiet)
    (insert,) = fake_compute.inserts
    assert _max_run_seconds(insert) == seconds
    assert insert["body"]["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert record["max_hours"] == pytest.approx(seconds / 3600)


def test_a_replacement_gets_the_remainder_after_the_preempted_vms_hours(gcs, fake_compute):
    client, bucket = gcs
    run = _run(bucket, budget_usd=5.0)  # $2/h: the first VM may run 2.5 h
    compute = Compute()
    start_vm(compute, run, log=_quiet)
    assert _max_run_seconds(fake_compute.inserts[0]) == 9000
    # It ran 1 h ($2) before its preemption: the replacement may spend the $3 left, 1.5 h.
    run.vms[0]["created_at"] = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    steps = iter(["preempt-first", "finish"])

    def sleep(_):
        if next(steps) == "preempt-first":
            fake_compute.preempt(run.vms[0]["instance"])
        else:
            storage.write_json(client, f"{run.url}/cloud/DONE.json", {"status": "completed"})

    watch_run(compute, client, run, poll_seconds=0, log=_quiet, sleep=sleep)
    first, replacement = fake_compute.inserts
    assert replacement["body"]["name"] == "mb-cap-0a1b2c-1"
    # The first VM's end is recorded a moment after the preemption, hence the tolerance.
    assert abs(_max_run_seconds(replacement) - 5400) <= 5
    saved = storage.read_json(client, f"{run.url}/cloud/launch.json")
    assert saved["vms"][1]["max_hours"] == pytest.approx(1.5, abs=0.002)


def test_no_vm_starts_when_the_remainder_buys_less_than_a_useful_run(gcs, fake_compute):
    _, bucket = gcs
    ended = {"instance": "mb-cap-0a1b2c-0", "zone": ZONE,
             "created_at": "2026-01-01T10:00:00+00:00", "ended_at": "2026-01-01T11:24:00+00:00"}
    run = _run(bucket, budget_usd=3.0, vms=[ended])  # 1.4 h at $2/h: $2.80 of $3 spent
    with pytest.raises(CloudError, match=r"has cost about \$2\.80 so far \(1\.40 VM-hours over "
                                         r"1 VM\(s\)\); the \$0\.20 left of cloud.max_cost_usd = "
                                         r"\$3\.00 buys 6 min .* less than the 22 min .*"
                                         r"--set cloud.max_cost_usd=\.\.\."):
        start_vm(Compute(), run, log=_quiet)
    assert fake_compute.inserts == [] and len(run.vms) == 1


def _sweep(tmp_path, bucket, **cloud):
    config = tiny_config(training={"device": "auto"}, data={"max_samples": 120},
                         sweep={"training.epochs": [1, 2]},
                         cloud={"project": PROJECT, "bucket": bucket, "zones": [ZONE],
                                "gpu_type": "nvidia-tesla-t4", **cloud})
    return write_config(tmp_path, config)


def test_the_runs_of_a_fan_out_share_the_budget(gcs, fake_compute, tmp_path, monkeypatch):
    client, bucket = gcs
    monkeypatch.setattr(orchestrate, "POLL_SECONDS", 0.05)
    second_insert = threading.Event()

    def vm(project, zone, body):  # both VMs train until the second one is requested
        if len(fake_compute.inserts) < 2:
            return
        second_insert.set()
        for insert in fake_compute.inserts:
            items = {item["key"]: item["value"] for item in insert["body"]["metadata"]["items"]}
            url = f"gs://{bucket}/runs/{items['media-bias-run-id']}"
            storage.write_json(client, f"{url}/cloud/DONE.json", {"status": "completed"})

    fake_compute.on_insert = vm
    target = CloudTarget(configs=[str(_sweep(tmp_path, bucket, max_cost_usd=0.5,
                                             max_run_hours=1.0))], runs_dir=tmp_path / "runs")
    assert cloud_run_command(target, yes=True, max_parallel=2) == 0 and second_insert.is_set()
    # The first VM may run cloud.max_run_hours (1 h, $0.27); the second what the $0.23 left of
    # the shared $0.50 buys, whichever run reached the budget first.
    seconds = sorted(_max_run_seconds(insert) for insert in fake_compute.inserts)
    assert seconds == [round((0.5 / T4_SPOT_PER_HOUR - 1.0) * 3600), 3600]


def test_the_dry_run_shows_the_cap_the_budget_sets(tmp_path, capsys):
    path = write_config(tmp_path, tiny_config(
        training={"device": "auto"},
        cloud={"gpu_type": "nvidia-tesla-t4", "max_cost_usd": 0.5, "max_run_hours": 6.0}))
    out = run_main(capsys, str(path), "--cloud", "--dry-run", "--run-id", "tiny_aaaaaa",
                   "--set", "cloud.project=", check=True).stdout
    budget_hours = 0.5 / T4_SPOT_PER_HOUR  # 1.84 h = 1 h 50 min, below cloud.max_run_hours
    assert "one VM deletes itself after 1 h 50 min" in out
    assert "cloud.max_cost_usd = $0.50 buys 1 h 50 min at $0.2715/h" in out
    body = json.loads(out.split("/instances:\n", 1)[1].split("\n\nUploads", 1)[0])
    assert body["scheduling"]["maxRunDuration"] == {"seconds": str(round(budget_hours * 3600))}
