"""scripts/gcp_setup.py against the fake Compute / Service Usage endpoint and the emulator."""

from __future__ import annotations

import importlib.util

from conftest import REPO_ROOT
from fakes.fixtures import PROJECT, fake_compute, gcs  # noqa: F401  (fixtures)

_spec = importlib.util.spec_from_file_location("gcp_setup", REPO_ROOT / "scripts" / "gcp_setup.py")
gcp_setup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gcp_setup)


def _quotas(fake, t4: float, preemptible_t4: float = 0.0, cpus: float = 24.0):
    fake.quotas["us-central1"] = [
        {"metric": "NVIDIA_T4_GPUS", "limit": t4, "usage": 0.0},
        {"metric": "PREEMPTIBLE_NVIDIA_T4_GPUS", "limit": preemptible_t4, "usage": 0.0},
        {"metric": "CPUS", "limit": cpus, "usage": 4.0}]


def test_setup_only_enables_apis_creates_the_bucket_and_reports_missing_quota(
        gcs, fake_compute, monkeypatch, capsys):
    client, _ = gcs
    monkeypatch.setenv("MEDIA_BIAS_SERVICEUSAGE_ENDPOINT", fake_compute.url)
    _quotas(fake_compute, t4=0.0)
    code = gcp_setup.main(["--project", PROJECT, "--bucket", "setup-runs-bucket",
                           "--setup-only"])
    out = capsys.readouterr().out
    assert code == 1
    assert fake_compute.enabled_services == ["compute.googleapis.com", "storage.googleapis.com"]
    bucket = client.get_bucket("setup-runs-bucket")
    assert bucket.iam_configuration.uniform_bucket_level_access_enabled
    assert bucket.iam_configuration.public_access_prevention == "enforced"
    assert "Missing before a GPU run can start" in out
    assert "request PREEMPTIBLE_NVIDIA_T4_GPUS or NVIDIA_T4_GPUS >= 1" in out
    assert fake_compute.inserts == []


def test_with_quota_it_creates_a_labelled_self_deleting_vm(gcs, fake_compute, monkeypatch,
                                                           capsys):
    monkeypatch.setenv("MEDIA_BIAS_SERVICEUSAGE_ENDPOINT", fake_compute.url)
    _quotas(fake_compute, t4=1.0)
    fake_compute.fail_next_insert("us-central1-a", "stockout")
    code = gcp_setup.main(["--project", PROJECT, "--bucket", "setup-vm-bucket", "--name",
                           "mb-interactive-test", "--max-run-hours", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Ready:" in out and "gcloud compute ssh mb-interactive-test --zone us-central1-b" in out
    body = fake_compute.inserts[-1]["body"]
    assert body["labels"]["app"] == "media-bias"
    assert body["scheduling"]["maxRunDuration"] == {"seconds": "10800"}
    assert body["guestAccelerators"][0]["acceleratorType"].endswith("nvidia-tesla-t4")
    assert fake_compute.live() == ["mb-interactive-test"]


def test_incompatible_vm_flags_are_a_plain_error(gcs, fake_compute, monkeypatch, capsys):
    monkeypatch.setenv("MEDIA_BIAS_SERVICEUSAGE_ENDPOINT", fake_compute.url)
    _quotas(fake_compute, t4=1.0)
    code = gcp_setup.main(["--project", PROJECT, "--bucket", "setup-bad-bucket",
                           "--skip-enable", "--gpu-type", "nvidia-tesla-t4",
                           "--machine-type", "a2-highgpu-1g"])
    assert code == 1
    assert "attaches only to N1 machine types" in capsys.readouterr().err
    assert fake_compute.inserts == []
