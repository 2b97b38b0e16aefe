"""--cloud-logs, --cloud-cost and a multi-run --cloud launch under one budget, against the
storage emulator and the strict Compute fake."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from backend.ml.cloud import storage
from backend.ml.cloud.commands import (
    CloudTarget,
    cloud_cost_command,
    cloud_logs_command,
    cloud_run_command,
)
from backend.ml.cloud.orchestrate import CloudRun
from backend.ml.cloud.pricing import CostError
from support.cli import run_main
from support.cloud import PROJECT
from support.configs import tiny_config, write_config
from support.fakes.fake_compute import CURRENT_FAMILY

ZONE = "us-central1-a"


def _ago(**delta) -> str:
    return (datetime.now(timezone.utc) - timedelta(**delta)).isoformat(timespec="seconds")


def _launched(client, bucket, vms) -> CloudRun:
    run = CloudRun(run_id="logs_abc123", project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[ZONE], spec={"preemptible": True}, vms=vms, budget_usd=5.0,
                   estimate={"hourly": {"spot": 0.5, "on_demand": 1.5}, "chosen": "spot",
                             "total": {"spot": 0.75, "on_demand": 2.25}, "hours": 1.5})
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    return run


def _target(tmp_path, bucket) -> CloudTarget:
    return CloudTarget(overrides=[f"cloud.project={PROJECT}", f"cloud.bucket={bucket}"],
                       runs_dir=tmp_path / "runs")


def test_cloud_logs_follows_every_vm_of_the_run_until_it_ends(gcs, fake_compute, tmp_path,
                                                             capsys):
    client, bucket = gcs
    run = _launched(client, bucket, [
        {"instance": "mb-logs-abc123-0", "zone": ZONE, "created_at": _ago(hours=2),
         "ended_at": _ago(hours=1)},
        {"instance": "mb-logs-abc123-1", "zone": ZONE, "created_at": _ago(hours=1)}])
    first = f"{run.url}/cloud/mb-logs-abc123-0.log"
    second = f"{run.url}/cloud/mb-logs-abc123-1.log"
    client.bucket(bucket).blob(first[len(f"gs://{bucket}/"):]).upload_from_string(
        "[media-bias] training: python run_experiment.py\n[media-bias] preempted\n")
    client.bucket(bucket).blob(second[len(f"gs://{bucket}/"):]).upload_from_string(
        "[media-bias] resuming\n")
    polls = []

    def sleep(_):  # the VM syncs a longer log, then finishes
        polls.append(1)
        client.bucket(bucket).blob(second[len(f"gs://{bucket}/"):]).upload_from_string(
            "[media-bias] resuming\nstep 8 loss 0.41\n")
        storage.write_json(client, f"{run.url}/cloud/DONE.json", {"status": "completed"})

    assert cloud_logs_command(_target(tmp_path, bucket), "logs_abc123", follow=True,
                              sleep=sleep) == 0
    out = capsys.readouterr().out
    assert polls == [1]
    assert out.index(f"==> {first} <==") < out.index("preempted") < out.index(f"==> {second}")
    assert out.count("[media-bias] resuming") == 1  # new lines only, never repeated
    assert "step 8 loss 0.41" in out and out.rstrip().endswith("==> run logs_abc123: completed <==")


def test_cloud_cost_adds_up_the_hours_of_every_vm_next_to_the_estimate(gcs, fake_compute,
                                                                      tmp_path, capsys):
    client, bucket = gcs
    _launched(client, bucket, [
        {"instance": "mb-logs-abc123-0", "zone": ZONE, "created_at": _ago(hours=3),
         "ended_at": _ago(hours=1)},                        # 2 h, preempted
        {"instance": "mb-logs-abc123-1", "zone": ZONE, "created_at": _ago(minutes=30)}])
    fake_compute.instances[(ZONE, "mb-logs-abc123-1")] = {
        "name": "mb-logs-abc123-1", "status": "RUNNING",
        "labels": {"app": "media-bias", "media-bias-run": "logs_abc123"}}
    assert cloud_cost_command(_target(tmp_path, bucket), "logs_abc123") == 0
    out = capsys.readouterr().out
    assert "mb-logs-abc123-0" in out and "ended" in out and "running" in out
    total = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert "2.50 h" in total and "$    1.25" in total  # 2.5 VM-hours at $0.50
    assert "estimate at launch: $0.75" in out and "budget (cloud.max_cost_usd): $5.00" in out


def test_the_cli_dispatches_cloud_cost_and_reports_an_unknown_run_plainly(gcs, fake_compute,
                                                                          tmp_path, capsys):
    client, bucket = gcs
    _launched(client, bucket, [{"instance": "mb-logs-abc123-0", "zone": ZONE,
                                "created_at": _ago(hours=1), "ended_at": _ago(minutes=30)}])
    where = ["--set", f"cloud.project={PROJECT}", "--set", f"cloud.bucket={bucket}",
             "--runs-dir", str(tmp_path / "runs")]
    shown = run_main(capsys, "cloud", "cost", "logs_abc123", *where, check=True)
    assert "0.50 h" in shown.stdout and "$    0.25" in shown.stdout
    missing = run_main(capsys, "cloud", "logs", "no_such_run", *where)
    assert missing.returncode == 1 and "no cloud run 'no_such_run'" in missing.stderr
    assert "Traceback" not in missing.stderr


def _sweep_config(tmp_path, bucket, **cloud):
    config = tiny_config(training={"device": "auto"}, data={"max_samples": 120},
                         sweep={"training.epochs": [1, 2]},
                         cloud={"project": PROJECT, "bucket": bucket, "zones": [ZONE],
                                "gpu_type": "nvidia-tesla-t4", **cloud})
    return write_config(tmp_path, config)


def _launch(tmp_path, config_path) -> int:
    return cloud_run_command(CloudTarget(configs=[str(config_path)], runs_dir=tmp_path / "runs"),
                             yes=True, max_parallel=2)


def test_a_sweep_fans_out_to_parallel_vms_and_syncs_every_result(gcs, fake_compute, tmp_path,
                                                                capsys):
    client, bucket = gcs

    def vm_runs(project, zone, body):  # each VM trains its own run and syncs it back
        items = {item["key"]: item["value"] for item in body["metadata"]["items"]}
        url = f"gs://{bucket}/runs/{items['media-bias-run-id']}"
        storage.write_json(client, f"{url}/run/results.json", {
            "experiment_id": items["media-bias-run-id"], "status": "completed"})
        storage.write_json(client, f"{url}/cloud/DONE.json", {"status": "completed"})

    fake_compute.on_insert = vm_runs
    assert _launch(tmp_path, _sweep_config(tmp_path, bucket)) == 0
    out = capsys.readouterr().out
    assert "2 cloud runs, at most 2 VMs at once" in out
    names = [r["body"]["labels"]["media-bias-run"] for r in fake_compute.inserts]
    assert len(set(names)) == 2 and fake_compute.live() == []
    for run_id in names:
        results = json.loads((tmp_path / "runs" / run_id / "results.json").read_text())
        assert results["status"] == "completed" and results["cloud"]["vms"]
        assert f"[{run_id}] Results:" in out
    assert "Launch cost about $" in out


def test_a_fan_out_over_the_total_budget_starts_nothing(gcs, fake_compute, tmp_path):
    _, bucket = gcs
    with pytest.raises(CostError, match="runs together are estimated at .* more than "
                                        "cloud.max_cost_usd"):
        _launch(tmp_path, _sweep_config(tmp_path, bucket, max_cost_usd=0.05))
    assert fake_compute.requests == []


def test_continuing_a_stopped_run_respects_the_budget_of_every_earlier_vm(gcs, fake_compute,
                                                                          tmp_path, capsys):
    from backend.ml.cloud.commands import sync_command
    from backend.ml.cloud.compute import CloudError, service_account_email

    client, bucket = gcs
    run = CloudRun(run_id="cont_abc123", project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[ZONE], budget_usd=3.1,
                   spec={"project": PROJECT, "run_id": "cont_abc123", "bucket": bucket,
                         "machine_type": "n1-standard-4", "gpu_type": "nvidia-tesla-t4",
                         "gpu_count": 1, "preemptible": True, "boot_disk_gb": 50,
                         "image_family": CURRENT_FAMILY,
                         "image_project": "deeplearning-platform-release", "max_run_hours": 2.0,
                         "service_account": service_account_email(PROJECT)},
                   estimate={"hourly": {"spot": 1.0, "on_demand": 3.0}, "chosen": "spot",
                             "total": {"spot": 1.5, "on_demand": 4.5}, "hours": 1.5},
                   # Two VMs ran 2.5 h and 0.5 h at $1/h: $3 spent; the $0.10 left buys
                   # 6 minutes, too little for a VM to start and train.
                   vms=[{"instance": "mb-cont-abc123-0", "zone": ZONE,
                         "created_at": _ago(hours=3, minutes=30), "ended_at": _ago(hours=1)},
                        {"instance": "mb-cont-abc123-1", "zone": ZONE,
                         "created_at": _ago(hours=1), "ended_at": _ago(minutes=30)}])
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    target = _target(tmp_path, bucket)
    with pytest.raises(CloudError, match=r"has cost about \$3\.00 so far .*left of "
                                         r"cloud.max_cost_usd = \$3\.10"):
        sync_command(target, "cont_abc123", continue_run=True)
    assert fake_compute.inserts == []
    fake_compute.on_insert = lambda *_: storage.write_json(
        client, f"{run.url}/cloud/DONE.json", {"status": "completed"})
    target.overrides.append("cloud.max_cost_usd=10")  # the user raises the budget to continue
    assert sync_command(target, "cont_abc123", continue_run=True) == 0
    assert [r["body"]["name"] for r in fake_compute.inserts] == ["mb-cont-abc123-2"]
