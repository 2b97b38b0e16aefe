"""What runs on the VM never loses the run: remote objects are removed only after a complete
download, the completion marker only follows a verified final upload, a preemption notice stops
the training and saves it, and a VM without a usable GPU fails fast and deletes itself. (Which
torch build the VM installs: tests/test_cloud_torch_build.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from backend.ml.cloud import agent, storage
from backend.ml.cloud.orchestrate import CloudRun, upload_inputs
from support.cloud import (
    PROJECT,
    RUN_ID,
    ZONE,
    boot_instance,
    run_vm,
    startup_script,
    tiny_cloud_config,
)
from support.fakes.fake_metadata import FakeMetadata

CHECKPOINT = "checkpoints/step-000004/training_state.pt"


def _remote_run(client, bucket: str) -> str:
    url = f"gs://{bucket}/runs/{RUN_ID}/run"
    for name in ("config.yaml", CHECKPOINT, "metrics.jsonl"):
        client.bucket(bucket).blob(f"runs/{RUN_ID}/run/{name}").upload_from_string(b"x" * 64)
    return url


def test_an_upload_removes_remote_objects_only_after_a_complete_download(gcs, tmp_path):
    client, bucket = gcs
    url = _remote_run(client, bucket)
    local = tmp_path / "run"
    local.mkdir()
    (local / "config.yaml").write_bytes(b"x" * 64)  # a partial copy: the checkpoint is missing
    flag = tmp_path / "run-download.complete"
    assert agent.main(["up", str(local), url, "--mirror-after", str(flag)]) == 0
    assert CHECKPOINT in storage.remote_files(client, url)
    flag.touch()  # the whole run directory was downloaded: now local deletions are real ones
    assert agent.main(["up", str(local), url, "--mirror-after", str(flag)]) == 0
    assert set(storage.remote_files(client, url)) == {"config.yaml"}


def test_a_failed_download_on_a_replacement_vm_keeps_every_remote_checkpoint(
        gcs, fake_compute, tmp_path):
    client, bucket = gcs
    run = CloudRun(run_id=RUN_ID, project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[ZONE], spec={})
    upload_inputs(client, run, tiny_cloud_config(), [], tmp_path, log=lambda *_: None)
    url = _remote_run(client, bucket)
    # An object and a "directory" of the same name: the download stops at the second one,
    # before the checkpoint, as a full disk or a lost connection would stop it.
    for name in ("a", "a/b"):
        client.bucket(bucket).blob(f"runs/{RUN_ID}/run/{name}").upload_from_string(b"y")
    boot_instance(fake_compute, ZONE, "mb-vm-1")
    vm = run_vm(startup_script(bucket, tmp_path / "vm1", "mb-vm-1", fake_compute.url))
    log = vm.stdout + vm.stderr
    assert vm.returncode != 0 and "cannot fetch the earlier run directory" in log
    remote = storage.remote_files(client, url)
    assert {CHECKPOINT, "config.yaml", "metrics.jsonl", "a/b"} <= set(remote), log
    marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
    assert marker["status"] == "failed"
    assert marker["reason"] == "cannot fetch the earlier run directory"
    assert fake_compute.live() == []


def test_the_marker_follows_only_a_verified_final_upload(gcs, tmp_path):
    client, bucket = gcs
    local = tmp_path / "run"
    (local / "checkpoints").mkdir(parents=True)
    (local / "results.json").write_text('{"status": "completed"}')
    (local / "checkpoints" / "model.bin").write_bytes(os.urandom(5000))
    marker_url = f"gs://{bucket}/runs/m/cloud/DONE.json"
    common = ["--status", "completed", "--retries", "2", "--retry-wait", "0"]
    # The run directory's bucket is gone: two attempts fail, and no marker claims completion.
    assert agent.main(["finish", str(local), "gs://no-such-bucket-anywhere/runs/m/run",
                       marker_url, *common]) == 1
    assert storage.read_json(client, marker_url) is None
    assert agent.main(["finish", str(local), f"gs://{bucket}/runs/m/run", marker_url,
                       *common]) == 0
    marker = storage.read_json(client, marker_url)
    assert marker["status"] == "completed" and marker["uploaded"]["files"] == 2
    assert marker["manifest"] == {name: storage.file_crc32c(path)
                                  for name, path in storage.local_files(local).items()}


TRAINER_STAND_IN = """
import pathlib, signal, sys, time
run = pathlib.Path(sys.argv[1])
def stop(*_):  # what the trainer does on Ctrl-C: leave its state behind, then exit
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "interrupted.pt").write_text("state")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
(run / "started").write_text("yes")
time.sleep(60)
"""


def test_a_preemption_notice_interrupts_the_training_and_saves_the_run(gcs, tmp_path):
    client, bucket = gcs
    metadata = FakeMetadata().start()
    run_dir, flag = tmp_path / "run", tmp_path / "preempted"
    run_dir.mkdir()
    url = f"gs://{bucket}/runs/p/run"
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER_STAND_IN, str(run_dir)])
    env = dict(os.environ, GOOGLE_CLOUD_PROJECT=PROJECT)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "backend.ml.cloud.agent", "watch", str(run_dir), url,
         "--pid", str(trainer.pid), "--interval", "600", "--preemption-url",
         f"http://{metadata.host}/computeMetadata/v1/instance/preempted",
         "--preempted-flag", str(flag)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (run_dir / "started").exists() or metadata.requests < 2:
            assert time.monotonic() < deadline, "the watcher never asked the metadata server"
            time.sleep(0.1)
        metadata.announce_preemption()
        out, _ = watcher.communicate(timeout=40)
        assert trainer.wait(timeout=10) == 130  # stopped by SIGINT, not killed
    finally:
        for process in (trainer, watcher):
            if process.poll() is None:
                process.kill()
        metadata.stop()
    assert "preemption notice" in out and flag.is_file()
    assert "checkpoints/interrupted.pt" in storage.remote_files(client, url)


@pytest.mark.parametrize("stand_in, reason", [
    (None, "no GPU: the NVIDIA driver did not come up within 1 s"),
    ("#!/bin/bash\necho 'GPU 0: Tesla T4 (UUID: GPU-0)'\n",
     "no GPU: torch does not see the 1 GPU(s) of this VM"),
])
def test_a_vm_without_a_usable_gpu_fails_fast_and_deletes_itself(
        gcs, fake_compute, tmp_path, stand_in, reason):
    client, bucket = gcs
    run = CloudRun(run_id=RUN_ID, project=PROJECT, region="us-central1", bucket=bucket,
                   zones=[ZONE], spec={})
    upload_inputs(client, run, tiny_cloud_config(), [], tmp_path, log=lambda *_: None)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if stand_in:  # a driver that answers, on a machine where torch sees no CUDA device
        (bin_dir / "nvidia-smi").write_text(stand_in)
        (bin_dir / "nvidia-smi").chmod(0o755)
    boot_instance(fake_compute, ZONE, "mb-vm-0")
    script = startup_script(bucket, tmp_path / "vm0", "mb-vm-0", fake_compute.url,
                            check_gpu=True, gpu_wait_seconds=1, train_device="cuda")
    vm = run_vm(script, path_prefix=bin_dir)
    log = vm.stdout + vm.stderr
    assert vm.returncode != 0, log
    marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
    assert marker["status"] == "failed" and marker["reason"] == reason
    assert marker["failed_step"] == "gpu-check"
    # When the driver answered, the GPU check ran; its report travels in the marker.
    assert marker["gpu"] == (None if stand_in is None else {
        "ok": False, "torch": torch.__version__, "cuda": torch.version.cuda,
        "expected_gpus": 1, "devices": [], "reason": reason})
    assert "training:" not in log and fake_compute.live() == []


def test_fetching_a_finished_run_mirrors_deletions_only_after_every_file_arrived(gcs, tmp_path):
    from backend.ml.cloud.orchestrate import fetch_results

    client, bucket = gcs
    _remote_run(client, bucket)
    run_url = f"gs://{bucket}/runs/{RUN_ID}"
    local = tmp_path / "home" / RUN_ID
    stale = local / "checkpoints" / "step-000002" / "training_state.pt"  # rotated away remotely
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    # The download stops half-way ("a" then "a/b" cannot both be files): nothing local goes.
    for name in ("a", "a/b"):
        client.bucket(bucket).blob(f"runs/{RUN_ID}/run/{name}").upload_from_string(b"y")
    with pytest.raises(OSError):
        fetch_results(client, run_url, local, log=lambda *_: None, mirror=True)
    assert stale.is_file()
    client.bucket(bucket).blob(f"runs/{RUN_ID}/run/a/b").delete()
    report = fetch_results(client, run_url, local, log=lambda *_: None, mirror=True)
    assert not stale.exists() and report.deleted == ["checkpoints/step-000002/training_state.pt"]
    assert (local / CHECKPOINT).is_file()
