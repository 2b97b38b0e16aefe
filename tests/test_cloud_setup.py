"""scripts/gcp_setup.py against the fake Compute / Service Usage endpoint and the emulator."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from backend.ml.cloud import setup as cloud_setup
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
    # IAM's propagation delay is the fake's count of refusals, not seconds: no need to wait.
    monkeypatch.setattr(cloud_setup, "IAM_RETRY_SECONDS", (0.0,) * 5)


def _policy_writes(fake) -> list[dict]:
    return [request for request in fake.requests if request["path"].endswith(":setIamPolicy")]


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
    # IAM refused the new account twice ("does not exist") before it had propagated.
    assert len(_policy_writes(fake_compute)) == fake_compute.iam_propagation_refusals + 1
    asked = [r for r in fake_compute.requests if r["path"].endswith(":testIamPermissions")]
    assert asked and set(asked[0]["body"]["permissions"]) == set(LAUNCH_PERMISSIONS)
    assert code == 1 and "your account lacks iam.serviceAccounts.actAs" in out

    fake_compute.caller_permissions = None  # every permission: the second run finds it all
    assert gcp_setup.main(["--project", PROJECT, "--bucket", "setup-sa-bucket", "--setup-only",
                           "--skip-enable"]) == 0
    out = capsys.readouterr().out
    assert f"{trainer}: exists" in out and "already granted" in out


def test_granting_roles_keeps_conditional_bindings_and_survives_a_concurrent_change(
        gcs, fake_compute, monkeypatch, capsys):
    _endpoints(monkeypatch, fake_compute)
    _quotas(fake_compute, t4=1.0)
    office_hours = {"role": "roles/compute.viewer", "members": {"user:ana@example.com"},
                    "condition": {"title": "office hours",
                                  "expression": "request.time.getHours('Europe/Zurich') < 18"}}
    fake_compute.iam_conditional_bindings = [office_hours]
    reads = []

    def someone_else_writes_after_our_first_read(path):
        reads.append(path)
        if len(reads) == 1:
            fake_compute.iam_etag += 1  # another administrator's change lands in between

    fake_compute.on_iam_policy_read = someone_else_writes_after_our_first_read
    assert gcp_setup.main(["--project", PROJECT, "--bucket", "setup-cond-bucket",
                           "--setup-only", "--skip-enable"]) == 0, capsys.readouterr()
    reads_asked = [r["body"] for r in fake_compute.requests if r["path"].endswith(":getIamPolicy")]
    assert all(body["options"]["requestedPolicyVersion"] == 3 for body in reads_asked)
    writes = _policy_writes(fake_compute)
    assert len(writes) == 2 and all(w["body"]["policy"]["version"] == 3 for w in writes)
    assert fake_compute.iam_conditional_bindings[0]["condition"] == office_hours["condition"]
    trainer = f"serviceAccount:media-bias-trainer@{PROJECT}.iam.gserviceaccount.com"
    assert all(trainer in fake_compute.iam_bindings[role] for role in TRAINER_ROLES)


def test_a_bucket_of_another_project_gets_its_own_binding_for_the_vm_account(
        gcs, fake_compute, monkeypatch, capsys):
    client, _ = gcs
    _endpoints(monkeypatch, fake_compute)
    _quotas(fake_compute, t4=1.0)
    trainer = f"serviceAccount:media-bias-trainer@{PROJECT}.iam.gserviceaccount.com"
    assert gcp_setup.main(["--project", PROJECT, "--bucket", "setup-own-bucket",
                           "--setup-only", "--skip-enable"]) == 0
    assert "covered by the project role" in capsys.readouterr().out
    fake_compute.project_number = "987654321"  # the emulator's buckets are another project's
    assert gcp_setup.main(["--project", PROJECT, "--bucket", "setup-own-bucket",
                           "--setup-only", "--skip-enable"]) == 0
    assert "granted roles/storage.objectUser on the bucket" in capsys.readouterr().out
    policy = client.get_bucket("setup-own-bucket").get_iam_policy(requested_policy_version=3)
    assert any(binding["role"] == "roles/storage.objectUser" and trainer in binding["members"]
               for binding in policy.bindings)
    assert gcp_setup.main(["--project", PROJECT, "--bucket", "setup-own-bucket",
                           "--setup-only", "--skip-enable"]) == 0
    assert "gs://setup-own-bucket: granted on the bucket" in capsys.readouterr().out


def test_wandb_enables_secret_manager_grants_the_accessor_and_checks_the_secret(
        gcs, fake_compute, monkeypatch, capsys):
    _endpoints(monkeypatch, fake_compute)
    _quotas(fake_compute, t4=1.0)
    args = ["--project", PROJECT, "--bucket", "setup-wandb-bucket", "--setup-only", "--wandb"]
    assert gcp_setup.main(args) == 1
    out = capsys.readouterr().out
    assert "secretmanager.googleapis.com" in fake_compute.enabled_services
    trainer = f"serviceAccount:media-bias-trainer@{PROJECT}.iam.gserviceaccount.com"
    assert trainer in fake_compute.iam_bindings["roles/secretmanager.secretAccessor"]
    assert "no secret 'wandb-api-key'" in out and "gcloud secrets create wandb-api-key" in out
    fake_compute.secrets.add("wandb-api-key")
    assert gcp_setup.main(args) == 0
    assert "cloud.cloud_platform_scope: true" in capsys.readouterr().out


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
