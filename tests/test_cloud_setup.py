"""scripts/gcp_setup.py against the fake Compute / Service Usage endpoint and the emulator."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from backend.ml.cloud.setup import LAUNCH_PERMISSIONS, TRAINER_ROLES
from support.cli import REPO_ROOT
from support.cloud import PROJECT
from support.fakes.fake_compute import RETIRED_FAMILY

_spec = importlib.util.spec_from_file_location("gcp_setup", REPO_ROOT / "scripts" / "gcp_setup.py")
assert _spec is not None and _spec.loader is not None
gcp_setup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gcp_setup)


def _quotas(fake, t4: float, preemptible_t4: float = 0.0, cpus: float = 24.0,
            all_regions: float = 4.0):
    fake.quotas["us-central1"] = [
        {"metric": "NVIDIA_T4_GPUS", "limit": t4, "usage": 0.0},
        {"metric": "PREEMPTIBLE_NVIDIA_T4_GPUS", "limit": preemptible_t4, "usage": 0.0},
        {"metric": "CPUS", "limit": cpus, "usage": 4.0}]
    fake.project_quotas = [{"metric": "GPUS_ALL_REGIONS", "limit": all_regions, "usage": 0.0}]


def _endpoints(monkeypatch, fake):
    monkeypatch.setenv("MEDIA_BIAS_SERVICEUSAGE_ENDPOINT", fake.url)
    monkeypatch.setenv("MEDIA_BIAS_IAM_ENDPOINT", fake.url)


def test_setup_only_enables_apis_creates_the_bucket_and_reports_missing_quota(
        gcs, fake_compute, monkeypatch, capsys):
    client, _ = gcs
    _endpoints(monkeypatch, fake_compute)
    _quotas(fake_compute, t4=0.0, all_regions=0.0)
    code = gcp_setup.main(["--project", PROJECT, "--bucket", "setup-runs-bucket",
                           "--setup-only"])
    out = capsys.readouterr().out
    assert code == 1
    assert fake_compute.enabled_services == ["compute.googleapis.com", "storage.googleapis.com",
                                             "iam.googleapis.com",
                                             "cloudresourcemanager.googleapis.com"]
    bucket = client.get_bucket("setup-runs-bucket")
    assert bucket.iam_configuration.uniform_bucket_level_access_enabled
    assert bucket.iam_configuration.public_access_prevention == "enforced"
    assert "Missing before a GPU run can start" in out
    assert "request PREEMPTIBLE_NVIDIA_T4_GPUS or NVIDIA_T4_GPUS >= 1" in out
    # The project-wide GPU quota is checked next to the regional one (new projects have 0).
    assert "request GPUS_ALL_REGIONS >= 1" in out
    assert fake_compute.inserts == []


def test_setup_creates_the_service_account_grants_its_roles_and_checks_your_permissions(
        gcs, fake_compute, monkeypatch, capsys):
    _endpoints(monkeypatch, fake_compute)
    _quotas(fake_compute, t4=1.0)
    fake_compute.service_accounts.clear()  # a fresh project
    fake_compute.caller_permissions = set(LAUNCH_PERMISSIONS) - {"iam.serviceAccounts.actAs"}
    code = gcp_setup.main(["--project", PROJECT, "--bucket", "setup-sa-bucket", "--setup-only",
                           "--skip-enable"])
    out = capsys.readouterr().out
    trainer = f"media-bias-trainer@{PROJECT}.iam.gserviceaccount.com"
    assert trainer in fake_compute.service_accounts and f"{trainer}: created" in out
    for role in TRAINER_ROLES:
        assert f"serviceAccount:{trainer}" in fake_compute.iam_bindings[role]
    asked = [r for r in fake_compute.requests if r["path"].endswith(":testIamPermissions")]
    assert asked and set(asked[0]["body"]["permissions"]) == set(LAUNCH_PERMISSIONS)
    assert code == 1 and "your account lacks iam.serviceAccounts.actAs" in out

    fake_compute.caller_permissions = None  # every permission: the second run finds it all
    assert gcp_setup.main(["--project", PROJECT, "--bucket", "setup-sa-bucket", "--setup-only",
                           "--skip-enable"]) == 0
    out = capsys.readouterr().out
    assert f"{trainer}: exists" in out and "already granted" in out


def test_setup_reports_a_retired_image_family_with_its_replacement(gcs, fake_compute,
                                                                   monkeypatch, capsys):
    _endpoints(monkeypatch, fake_compute)
    _quotas(fake_compute, t4=1.0)
    assert gcp_setup.main(["--project", PROJECT, "--bucket", "setup-img-bucket", "--setup-only",
                           "--skip-enable", "--image-family", RETIRED_FAMILY]) == 1
    out = capsys.readouterr().out
    assert f"'{RETIRED_FAMILY}' is deprecated" in out and "use 'common-cu129-v20260901'" in out
    assert gcp_setup.main(["--project", PROJECT, "--bucket", "setup-img-bucket", "--setup-only",
                           "--skip-enable", "--image-family", "pytorch-latest-gpu"]) == 1
    assert "'pytorch-latest-gpu' does not exist" in capsys.readouterr().out


def test_with_quota_it_creates_a_labelled_self_deleting_vm(gcs, fake_compute, monkeypatch,
                                                           capsys):
    _endpoints(monkeypatch, fake_compute)
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
    _endpoints(monkeypatch, fake_compute)
    _quotas(fake_compute, t4=1.0)
    code = gcp_setup.main(["--project", PROJECT, "--bucket", "setup-bad-bucket",
                           "--skip-enable", "--gpu-type", "nvidia-tesla-t4",
                           "--machine-type", "a2-highgpu-1g"])
    assert code == 1
    assert "attaches only to N1 machine types" in capsys.readouterr().err
    assert fake_compute.inserts == []


def test_smoke_test_script_imports_and_explains_itself():
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gcp_smoke_test.py"),
                                "--help"], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "--project" in completed.stdout and "simulateMaintenanceEvent" in completed.stdout
