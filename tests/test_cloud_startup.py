"""The VM's startup script, run locally end to end against the storage emulator and the fake
Compute endpoint: train -> periodic sync -> completion marker -> self-deletion -> ``--sync``;
then a replacement VM resumes a preempted run from its last checkpoint in Cloud Storage."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from backend.ml.cloud import storage
from backend.ml.cloud.commands import CloudTarget, sync_command
from backend.ml.cloud.orchestrate import CloudRun, upload_inputs
from backend.ml.cloud.startup import StartupSettings, render_startup_script
from backend.ml.run_directory import SOURCE_PROVENANCE_FILE
from support.cli import REPO_ROOT
from support.cloud import (
    PROJECT,
    RUN_ID,
    ZONE,
    boot_instance,
    run_vm,
    startup_script,
    tiny_cloud_config,
)


def _torchrun_stand_in(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    recorded = tmp_path / "torchrun-args"
    stand_in = bin_dir / "torchrun"
    stand_in.write_text(f'#!/bin/bash\necho "$@" > {recorded}\nshift 2\n'
                        f'exec {sys.executable} "$@"\n')
    stand_in.chmod(0o755)
    return bin_dir, recorded


@pytest.mark.slow
def test_startup_script_trains_syncs_marks_done_deletes_its_vm_and_resumes(
        gcs, fake_compute, tmp_path):
    client, bucket = gcs
    run = CloudRun(run_id=RUN_ID, project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[ZONE], spec={"preemptible": True, "machine_type": "n1-standard-4",
                                       "gpu_type": "nvidia-tesla-t4", "gpu_count": 1,
                                       "max_run_hours": 1.0},
                   vms=[{"instance": "mb-vm-0", "zone": ZONE,
                         "created_at": datetime.now(timezone.utc).isoformat()}])
    upload_inputs(client, run, tiny_cloud_config(), [], tmp_path, log=lambda *_: None)

    # First VM: a whole run, on "two GPUs": started through torchrun (a stand-in that records
    # its arguments and runs the command on this machine's CPU).
    boot_instance(fake_compute, ZONE, "mb-vm-0")
    bin_dir, torchrun_args = _torchrun_stand_in(tmp_path)
    done = run_vm(startup_script(bucket, tmp_path / "vm0", "mb-vm-0", fake_compute.url,
                                 gpu_count=2), path_prefix=bin_dir)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert torchrun_args.read_text().split() == [
        "--standalone", "--nproc_per_node=2", "run_experiment.py", "train",
        "cloud_inputs/config.yaml",
        "--run-id", RUN_ID, "--output-dir", str(tmp_path / "vm0" / "runs"),
        "--set", "training.device=cpu"]
    marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
    assert marker["status"] == "completed" and marker["instance"] == "mb-vm-0"
    # The marker lists what the final upload put in the bucket, checksum by checksum.
    listed = {name: blob.crc32c for name, blob in
              storage.remote_files(client, f"{run.url}/run").items()}
    assert marker["manifest"] == listed and marker["uploaded"]["files"] == len(listed)
    assert fake_compute.deletes == ["mb-vm-0"] and fake_compute.live() == []
    assert "poweroff-would-run" not in log
    # The watcher uploaded while training ran (timestamped lines), not only at the end.
    assert any(line.startswith("[sync] ") and line[7:9].isdigit() for line in log.splitlines())
    remote = storage.remote_files(client, f"{run.url}/run")
    assert "final_model/model.safetensors" in remote
    assert any(name.startswith("checkpoints/step-") for name in remote)
    assert storage.read_text(client, f"{run.url}/cloud/mb-vm-0.log")

    # --sync brings the run directory home, verified file by file.
    runs_dir = tmp_path / "home" / "runs"
    target = CloudTarget(overrides=[f"cloud.project={PROJECT}", f"cloud.bucket={bucket}"],
                         runs_dir=runs_dir)
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    assert sync_command(target, RUN_ID) == 0
    local = runs_dir / RUN_ID
    results = json.loads((local / "results.json").read_text())
    assert results["status"] == "completed" and results["experiment_id"] == RUN_ID
    assert results["cloud"]["bucket_url"] == run.url
    # The VM's code has no .git: its results name the commit, branch and diff that were shipped.
    archive = tarfile.open(fileobj=io.BytesIO(
        client.bucket(bucket).blob(f"runs/{RUN_ID}/code.tar.gz").download_as_bytes()))
    shipped = json.load(archive.extractfile(SOURCE_PROVENANCE_FILE))
    assert shipped["git_commit"] == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
        check=True).stdout.strip()
    assert {key: results["metadata"][key] for key in shipped} == shipped
    for name, blob in storage.remote_files(client, f"{run.url}/run").items():
        if name != "results.json":  # the local copy gains the "cloud" section
            assert storage.file_crc32c(local / name) == blob.crc32c, name

    # A preempted run: no marker, the last step checkpoint in the bucket, no final model.
    checkpoints = sorted({name.split("/")[1] for name in remote
                          if name.startswith("checkpoints/step-")})
    resume_from = checkpoints[0]
    for name, blob in storage.remote_files(client, f"{run.url}/run").items():
        if name.startswith(("final_model/", "predictions/", "plots/", "checkpoints/best/")) or \
                (name.startswith("checkpoints/step-") and resume_from not in name):
            blob.delete()
    results.pop("cloud")
    results.update(status="running", test=None)
    storage.write_json(client, f"{run.url}/run/results.json", results)
    client.bucket(bucket).blob(f"runs/{RUN_ID}/cloud/DONE.json").delete()

    # The replacement VM resumes from that checkpoint and finishes the run.
    boot_instance(fake_compute, ZONE, "mb-vm-1")
    resumed = run_vm(startup_script(bucket, tmp_path / "vm1", "mb-vm-1", fake_compute.url))
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log
    assert f"Resuming {RUN_ID} from {resume_from}" in log
    final = storage.read_json(client, f"{run.url}/run/results.json")
    assert final["status"] == "completed"
    assert final["metadata"]["resumed_from_step"] == int(resume_from.split("-")[1])
    assert storage.read_json(client, f"{run.url}/cloud/DONE.json")["instance"] == "mb-vm-1"
    assert "final_model/model.safetensors" in storage.remote_files(client, f"{run.url}/run")
    assert fake_compute.live() == []


@pytest.mark.slow
def test_a_failing_training_writes_a_failed_marker_and_still_deletes_the_vm(
        gcs, fake_compute, tmp_path):
    client, bucket = gcs
    run = CloudRun(run_id=RUN_ID, project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[ZONE], spec={})
    # The config on the bucket names a data file that does not exist on the VM.
    broken = tiny_cloud_config()
    broken.data.dataset, broken.data.path = "babe", "cloud_inputs/data/missing.csv"
    upload_inputs(client, run, broken, [], tmp_path, log=lambda *_: None)
    boot_instance(fake_compute, ZONE, "mb-vm-0")
    done = run_vm(startup_script(bucket, tmp_path / "vm0", "mb-vm-0", fake_compute.url))
    assert done.returncode != 0
    marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
    assert marker["status"] == "failed" and marker["exit_code"] != 0
    assert fake_compute.deletes == ["mb-vm-0"] and fake_compute.live() == []


def test_rendered_script_holds_no_credentials_and_is_valid_bash(tmp_path):
    script = render_startup_script(StartupSettings(
        run_id=RUN_ID, bucket="b", project="p", zone=ZONE, instance="mb-x-0",
        wandb_secret="wandb-api-key"))
    path = tmp_path / "s.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert "WANDB_SECRET=wandb-api-key" in script  # a secret's name, never its value
    try:
        render_startup_script(StartupSettings(run_id=RUN_ID, bucket="b", project="p", zone=ZONE,
                                              instance="i", environment={"WANDB_API_KEY": "x"}))
    except ValueError as error:
        assert "WANDB_API_KEY may not be passed" in str(error)
    else:
        raise AssertionError("a key in the script's environment must be refused")
    # The VM runs the shipped body unchanged, below a header holding this VM's own values.
    header, _, body = script.partition("\n\n")
    assert body == (REPO_ROOT / "backend/ml/cloud/startup.sh").read_text(encoding="utf-8")
    assert {f"RUN_ID={RUN_ID}", "BUCKET=b", "PROJECT=p", f"ZONE={ZONE}",
            "INSTANCE=mb-x-0"} <= set(header.splitlines())
