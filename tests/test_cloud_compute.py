"""VM lifecycle with the real google-cloud-compute client against the fake Compute endpoint
(and the real storage client against the emulator): request bodies, zone fallback,
preemption and replacement, and deletion of the VM on every way out."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from backend.ml.cloud import storage
from backend.ml.cloud.commands import (
    CloudTarget,
    cloud_run_command,
    cloud_status_command,
    cloud_teardown_command,
    sync_command,
)
from backend.ml.cloud.compute import CapacityError, CloudError, Compute
from backend.ml.cloud.orchestrate import CloudRun, start_vm, watch_run
from support.cloud import PROJECT
from support.configs import tiny_config, write_config
from support.fakes.fake_compute import CURRENT_FAMILY

ZONES = ["us-central1-a", "us-central1-b", "us-central1-c"]
TRAINER = f"media-bias-trainer@{PROJECT}.iam.gserviceaccount.com"


def _run(bucket: str, preemptible: bool = True, run_id: str = "tiny_0a1b2c") -> CloudRun:
    spec = {"project": PROJECT, "run_id": run_id, "bucket": bucket,
            "machine_type": "n1-standard-8", "gpu_type": "nvidia-tesla-t4", "gpu_count": 2,
            "preemptible": preemptible, "boot_disk_gb": 80, "image_family": CURRENT_FAMILY,
            "image_project": "deeplearning-platform-release", "max_run_hours": 2.5,
            "wandb_secret": None, "service_account": TRAINER}
    return CloudRun(run_id=run_id, project=PROJECT, region="us-central1", bucket=bucket,
                    zones=list(ZONES), spec=spec)


def _finish(client, run: CloudRun, status: str = "completed") -> None:
    """What the VM's startup script leaves in the bucket at the end."""
    storage.write_json(client, f"{run.url}/run/results.json",
                       {"experiment_id": run.run_id, "status": status})
    storage.write_json(client, f"{run.url}/cloud/DONE.json",
                       {"status": status, "exit_code": 0 if status == "completed" else 1})


def test_instance_request_body(gcs, fake_compute, monkeypatch):
    _, bucket = gcs
    monkeypatch.setenv("WANDB_API_KEY", "wandb-key-value-0123456789")
    run = _run(bucket)
    record = start_vm(Compute(), run, log=lambda *_: None)
    (insert,) = fake_compute.inserts
    body = insert["body"]
    assert insert["path"] == f"/compute/v1/projects/{PROJECT}/zones/us-central1-a/instances"
    assert record == {"instance": body["name"], "zone": "us-central1-a",
                      "created_at": record["created_at"], "ended_at": None, "max_hours": 2.5}
    assert body["name"] == "mb-tiny-0a1b2c-0"
    assert body["machineType"].endswith("zones/us-central1-a/machineTypes/n1-standard-8")
    assert body["guestAccelerators"] == [{
        "acceleratorType": f"projects/{PROJECT}/zones/us-central1-a/acceleratorTypes/"
                           f"nvidia-tesla-t4", "acceleratorCount": 2}]
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False,
                                  "provisioningModel": "SPOT",
                                  "instanceTerminationAction": "DELETE",
                                  "maxRunDuration": {"seconds": "9000"}}
    assert body["labels"] == {"app": "media-bias", "media-bias-run": "tiny_0a1b2c"}
    disk = body["disks"][0]
    assert disk["autoDelete"] and disk["initializeParams"]["sourceImage"] == (
        f"projects/deeplearning-platform-release/global/images/family/{CURRENT_FAMILY}")
    assert disk["initializeParams"]["diskSizeGb"] == "80"
    # The dedicated service account, and no cloud-platform scope unless asked for.
    assert body["serviceAccounts"] == [{"email": TRAINER, "scopes": [
        "https://www.googleapis.com/auth/devstorage.read_write",
        "https://www.googleapis.com/auth/compute",
        "https://www.googleapis.com/auth/logging.write"]}]
    metadata = {item["key"]: item["value"] for item in body["metadata"]["items"]}
    script = metadata["startup-script"]
    assert script.startswith("#!/bin/bash") and "INSTANCE=mb-tiny-0a1b2c-0" in script
    assert f"BUCKET={bucket}" in script and "ZONE=us-central1-a" in script
    assert metadata["media-bias-run-id"] == "tiny_0a1b2c"
    assert "wandb-key-value-0123456789" not in json.dumps(body)


def test_on_demand_vm_is_standard_provisioning(gcs, fake_compute):
    _, bucket = gcs
    start_vm(Compute(), _run(bucket, preemptible=False), log=lambda *_: None)
    assert fake_compute.inserts[0]["body"]["scheduling"]["provisioningModel"] == "STANDARD"


def test_stockout_and_zonal_quota_fall_back_to_the_next_zone(gcs, fake_compute):
    _, bucket = gcs
    fake_compute.fail_next_insert("us-central1-a", "stockout")
    fake_compute.fail_next_insert("us-central1-b", "zonal_quota")
    fake_compute.pending_polls = 2  # operations stay RUNNING for two polls
    messages = []
    record = start_vm(Compute(), _run(bucket), log=messages.append)
    assert record["zone"] == "us-central1-c"
    assert [r["path"].split("/")[6] for r in fake_compute.inserts] == ZONES
    assert fake_compute.live() == ["mb-tiny-0a1b2c-0"]
    assert any("us-central1-a: no capacity (ZONE_RESOURCE_POOL_EXHAUSTED)" in m for m in messages)
    assert any("us-central1-b: zonal quota exceeded" in m for m in messages)
    # the startup script of the VM that was created names the zone it really runs in
    assert "ZONE=us-central1-c" in fake_compute.inserts[-1]["body"]["metadata"]["items"][0]["value"]


def test_every_zone_out_of_capacity_stops_with_a_clear_message(gcs, fake_compute):
    _, bucket = gcs
    for zone in ZONES:
        fake_compute.fail_next_insert(zone, "stockout")
    with pytest.raises(CapacityError, match="no zone could take the VM") as raised:
        start_vm(Compute(), _run(bucket), log=lambda *_: None)
    assert all(zone in str(raised.value) for zone in ZONES)
    assert fake_compute.live() == []


def test_regional_quota_stops_at_once(gcs, fake_compute):
    _, bucket = gcs
    fake_compute.fail_next_insert("us-central1-a", "regional_quota")
    with pytest.raises(CapacityError, match="quota PREEMPTIBLE_NVIDIA_T4_GPUS exceeded in the "
                                            "region"):
        start_vm(Compute(), _run(bucket), log=lambda *_: None)
    assert len(fake_compute.inserts) == 1 and fake_compute.live() == []


@pytest.mark.parametrize("kind, metric, where", [
    ("global_quota", "CPUS_ALL_REGIONS", "project-wide quota CPUS_ALL_REGIONS"),
    ("regional_quota", "CPUS", "quota CPUS exceeded in the region")])
def test_a_cpu_quota_refusal_names_the_cpu_metric_not_the_gpu_one(gcs, fake_compute, kind,
                                                                   metric, where):
    _, bucket = gcs
    fake_compute.fail_next_insert("us-central1-a", kind, metric=metric)
    with pytest.raises(CapacityError, match=where) as raised:
        start_vm(Compute(), _run(bucket), log=lambda *_: None)
    assert "GPUS_ALL_REGIONS" not in str(raised.value) and "GPU quota" not in str(raised.value)
    assert f"metric {metric}" in str(raised.value) and fake_compute.live() == []


def test_completed_run_returns_the_marker_and_deletes_the_vm(gcs, fake_compute):
    client, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=lambda *_: None)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        _finish(client, run)  # the VM finishes while we wait, and stays up (self-delete failed)

    marker = watch_run(compute, client, run, poll_seconds=7, log=lambda *_: None, sleep=sleep)
    assert marker["status"] == "completed" and sleeps == [7]
    assert fake_compute.deletes == ["mb-tiny-0a1b2c-0"] and fake_compute.live() == []


def test_preempted_vm_is_replaced_and_the_replacement_resumes(gcs, fake_compute):
    client, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=lambda *_: None)
    polls = iter(["preempt", "wait", "finish"])

    def sleep(_):
        step = next(polls)
        if step == "preempt":
            fake_compute.preempt("mb-tiny-0a1b2c-0")
        elif step == "finish":
            _finish(client, run)

    messages = []
    marker = watch_run(compute, client, run, poll_seconds=0, log=messages.append, sleep=sleep)
    assert marker["status"] == "completed"
    names = [r["body"]["name"] for r in fake_compute.inserts]
    assert names == ["mb-tiny-0a1b2c-0", "mb-tiny-0a1b2c-1"]
    # the replacement runs the same run (same bucket prefix, same id): its script resumes
    script = fake_compute.inserts[1]["body"]["metadata"]["items"][0]["value"]
    assert "RUN_ID=tiny_0a1b2c" in script and "run_experiment.py resume" in script
    assert [vm["instance"] for vm in run.vms] == names
    assert any("was preempted (spot)" in m for m in messages)
    assert fake_compute.live() == []
    saved = storage.read_json(client, f"{run.url}/cloud/launch.json")
    assert [vm["instance"] for vm in saved["vms"]] == names


def test_a_vanished_on_demand_vm_is_an_error_not_a_replacement(gcs, fake_compute):
    _, bucket = gcs
    run = _run(bucket, preemptible=False)
    compute = Compute()
    start_vm(compute, run, log=lambda *_: None)
    fake_compute.set_status("mb-tiny-0a1b2c-0", "TERMINATED")
    with pytest.raises(CloudError, match="without a preemption on record"):
        watch_run(compute, client_of(gcs), run, poll_seconds=0, log=lambda *_: None,
                  sleep=lambda _: None)
    assert len(fake_compute.inserts) == 1 and fake_compute.live() == []


def client_of(gcs_fixture):
    return gcs_fixture[0]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_ctrl_c_or_an_error_while_waiting_deletes_the_vm(gcs, fake_compute, interruption):
    client, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=lambda *_: None)

    def sleep(_):
        raise interruption()

    with pytest.raises(interruption):
        watch_run(compute, client, run, poll_seconds=0, log=lambda *_: None, sleep=sleep)
    assert fake_compute.deletes == ["mb-tiny-0a1b2c-0"] and fake_compute.live() == []


def test_a_failed_run_deletes_the_vm_and_reports_failure(gcs, fake_compute):
    client, bucket = gcs
    run = _run(bucket)
    compute = Compute()
    start_vm(compute, run, log=lambda *_: None)
    _finish(client, run, status="failed")
    marker = watch_run(compute, client, run, poll_seconds=0, log=lambda *_: None)
    assert marker["status"] == "failed" and fake_compute.live() == []


# ---- the CLI commands --------------------------------------------------------------------------

def _target(tmp_path, config_path=None) -> CloudTarget:
    return CloudTarget(configs=[str(config_path)] if config_path else [],
                       runs_dir=tmp_path / "runs")


def _cloud_config(tmp_path, bucket, **cloud):
    config = tiny_config(training={"epochs": 1, "device": "auto"}, data={"max_samples": 120},
                         cloud={"project": PROJECT, "bucket": bucket, "gpu_type": "nvidia-tesla-t4",
                                "zones": ["us-central1-a", "us-central1-b"], **cloud})
    return write_config(tmp_path, config)


def test_cloud_run_command_end_to_end_with_a_simulated_vm(gcs, fake_compute, tmp_path, capsys):
    client, bucket = gcs
    fake_compute.fail_next_insert("us-central1-a", "stockout")
    config_path = _cloud_config(tmp_path, bucket)

    def vm_runs(project, zone, body):  # the VM trains and syncs its run directory
        items = {item["key"]: item["value"] for item in body["metadata"]["items"]}
        url = f"gs://{bucket}/runs/{items['media-bias-run-id']}"
        storage.write_json(client, f"{url}/run/results.json", {"status": "completed"})
        storage.write_json(client, f"{url}/cloud/DONE.json", {"status": "completed",
                                                              "exit_code": 0})

    fake_compute.on_insert = vm_runs
    assert cloud_run_command(_target(tmp_path, config_path), run_id="tiny_c0ffee", yes=True) == 0
    out = capsys.readouterr().out
    assert "Cost estimate" in out and "us-central1-a: no capacity" in out
    url = f"gs://{bucket}/runs/tiny_c0ffee"
    uploaded = storage.remote_files(client, url)
    assert {"code.tar.gz", "inputs/config.yaml", "cloud/launch.json"} <= set(uploaded)
    results = json.loads((tmp_path / "runs" / "tiny_c0ffee" / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["cloud"]["vms"][0]["zone"] == "us-central1-b"
    assert results["cloud"]["estimate"]["chosen"] == "spot"
    # Provenance: the local commit the code came from, although the VM had no git checkout.
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert results["cloud"]["source"]["git_commit"] == head
    assert results["cloud"]["vm_hours"] >= 0 and "cost_usd" in results["cloud"]
    assert fake_compute.live() == []
    assert "credentials" not in json.dumps(storage.read_json(client, f"{url}/cloud/launch.json"))


def test_detach_leaves_the_self_deleting_vm_and_status_teardown_sync_find_it(
        gcs, fake_compute, tmp_path, capsys):
    client, bucket = gcs
    config_path = _cloud_config(tmp_path, bucket)
    assert cloud_run_command(_target(tmp_path, config_path), run_id="Tiny_D00d00", yes=True,
                             detach=True) == 0
    assert "cloud sync Tiny_D00d00" in capsys.readouterr().out
    assert fake_compute.live() == ["mb-tiny-d00d00-0"]

    assert cloud_status_command(_target(tmp_path, config_path)) == 0
    out = capsys.readouterr().out
    # The VM's label holds the run id lowercased (label values allow no capitals).
    assert re.search(r"Tiny_D00d00 +no completion marker; running on mb-tiny-d00d00-0", out), out

    # Without a config, sync finds the project and bucket through the launch's local pointer.
    assert sync_command(_target(tmp_path), "Tiny_D00d00") == 0
    assert "still training on mb-tiny-d00d00-0" in capsys.readouterr().out

    assert cloud_teardown_command(_target(tmp_path, config_path), yes=True) == 0
    assert fake_compute.live() == [] and "mb-tiny-d00d00-0" in fake_compute.deletes
    # Its VM gone without a completion marker: crashed, never shown as running.
    assert cloud_status_command(_target(tmp_path, config_path)) == 0
    out = capsys.readouterr().out
    assert "Tiny_D00d00" in out and "crashed: no completion marker and no VM" in out
    assert "running on" not in out

    # preempted while detached: cloud sync reports it; --continue replaces the VM and waits
    assert sync_command(_target(tmp_path), "Tiny_D00d00") == 1
    assert "cloud sync Tiny_D00d00 --continue" in capsys.readouterr().out
    run = CloudRun.from_dict(storage.read_json(client, f"gs://{bucket}/runs/Tiny_D00d00/cloud/"
                                                        f"launch.json"))
    fake_compute.on_insert = lambda *_: _finish(client, run)
    assert sync_command(_target(tmp_path), "Tiny_D00d00", continue_run=True) == 0
    assert fake_compute.inserts[-1]["body"]["name"] == "mb-tiny-d00d00-1"
    assert fake_compute.live() == []


def test_cloud_run_refuses_when_over_budget_and_creates_nothing(gcs, fake_compute, tmp_path):
    _, bucket = gcs
    config_path = _cloud_config(tmp_path, bucket, max_cost_usd=0.01)
    with pytest.raises(Exception, match="exceeds cloud.max_cost_usd"):
        cloud_run_command(_target(tmp_path, config_path), yes=True)
    assert fake_compute.requests == []


def test_a_missing_bucket_is_reported_before_any_vm(gcs, fake_compute, tmp_path):
    config_path = _cloud_config(tmp_path, "no-such-bucket-anywhere")
    with pytest.raises(Exception, match="does not exist"):
        cloud_run_command(_target(tmp_path, config_path), yes=True)
    assert fake_compute.requests == []


def test_zones_are_checked_against_the_compute_api_before_launch(gcs, fake_compute, tmp_path,
                                                                  capsys):
    client, bucket = gcs
    fake_compute.accelerators["nvidia-tesla-t4"] = ["us-central1-b"]
    fake_compute.on_insert = lambda project, zone, body: _finish(
        client, CloudRun(run_id="tiny_abcdef", project=PROJECT, region="us-central1",
                         bucket=bucket, zones=[], spec={}))
    config_path = _cloud_config(tmp_path, bucket)
    assert cloud_run_command(_target(tmp_path, config_path), run_id="tiny_abcdef", yes=True) == 0
    assert "skipping us-central1-a: it does not offer nvidia-tesla-t4" in capsys.readouterr().out
    assert [r["path"].split("/")[6] for r in fake_compute.inserts] == ["us-central1-b"]

    fake_compute.accelerators["nvidia-tesla-t4"] = []
    with pytest.raises(CapacityError, match="no zone of us-central1 offers nvidia-tesla-t4"):
        cloud_run_command(_target(tmp_path, config_path), run_id="tiny_abcde0", yes=True)
    assert len(fake_compute.inserts) == 1


# ---- what Compute Engine refuses -----------------------------------------------------------------

def _body(run: CloudRun, zone: str = "us-central1-a") -> dict:
    from backend.ml.cloud.orchestrate import body_for
    return body_for(run, zone, 0)


def _live_migrating(body: dict) -> dict:
    body["scheduling"]["onHostMaintenance"] = "MIGRATE"
    return body


def _g2_live_migrating(body: dict) -> dict:
    body.pop("guestAccelerators")
    body["machineType"] = "zones/us-central1-a/machineTypes/g2-standard-8"
    return _live_migrating(body)


def _spot_restarting(body: dict) -> dict:
    body["scheduling"]["automaticRestart"] = True
    return body


def _no_termination_action(body: dict) -> dict:
    del body["scheduling"]["instanceTerminationAction"]
    return body


def _missing_family(body: dict) -> dict:
    body["disks"][0]["initializeParams"]["sourceImage"] = (
        "projects/deeplearning-platform-release/global/images/family/pytorch-latest-gpu")
    return body


@pytest.mark.parametrize("change, refusal, message", [
    (_live_migrating, "BadRequest", "Instances with guest accelerators do not support live "
                                    "migration"),
    (_g2_live_migrating, "BadRequest", "Instances with guest accelerators do not support live "
                                       "migration"),
    (_spot_restarting, "BadRequest", "'resource.scheduling.automaticRestart': 'true'. Spot VMs "
                                     "cannot be automatically restarted"),
    (_no_termination_action, "BadRequest", "instanceTerminationAction must be set when "
                                           "maxRunDuration is"),
    (_missing_family, "NotFound", "global/images/family/pytorch-latest-gpu' was not found"),
])
def test_compute_engine_refuses_what_the_real_api_refuses(gcs, fake_compute, change, refusal,
                                                          message):
    from google.api_core import exceptions

    _, bucket = gcs
    body = change(_body(_run(bucket)))
    with pytest.raises(getattr(exceptions, refusal), match=message):
        Compute().insert(PROJECT, "us-central1-a", body)
    assert fake_compute.live() == []


@pytest.mark.parametrize("preemptible", [True, False])
def test_the_projects_own_request_bodies_are_accepted(gcs, fake_compute, preemptible):
    _, bucket = gcs
    for run_id, machine, gpu, count in [("n1_0a1b2c", "n1-standard-8", "nvidia-tesla-t4", 2),
                                        ("g2_0a1b2c", "g2-standard-8", "nvidia-l4", 1)]:
        run = _run(bucket, preemptible=preemptible, run_id=run_id)
        run.spec.update(machine_type=machine, gpu_type=gpu, gpu_count=count)
        Compute().insert(PROJECT, "us-central1-a", _body(run))
    assert fake_compute.live() == ["mb-g2-0a1b2c-0", "mb-n1-0a1b2c-0"]
