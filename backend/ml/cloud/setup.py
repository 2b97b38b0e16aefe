"""One-time GCP project setup: APIs, the results bucket, the VM's service account and its
roles, your own permissions, GPU quota (regional and project-wide), the boot image family;
optionally a training VM.

Used by ``python scripts/gcp_setup.py``. Service Usage, IAM, Resource Manager and Secret Manager
are called over REST with Application Default Credentials (``MEDIA_BIAS_SERVICEUSAGE_ENDPOINT``
points the first, ``MEDIA_BIAS_IAM_ENDPOINT`` the others at an emulator).
"""

from __future__ import annotations

import os
import time

from ..errors import UserError
from . import storage
from .catalog import GPUS, n1_vcpus
from .compute import SERVICE_ACCOUNT_ID, CloudError, service_account_email
from .startup import WANDB_API_KEY_SECRET

SERVICES = ("compute.googleapis.com", "storage.googleapis.com", "iam.googleapis.com",
            "cloudresourcemanager.googleapis.com")
# With W&B on the VM (docs/cloud.md): the key lives in Secret Manager, read with the VM's account.
WANDB_SERVICES = ("secretmanager.googleapis.com",)
WANDB_ROLES = ("roles/secretmanager.secretAccessor",)
# Bucket roles under which the VM's account can read the code and write results.
BUCKET_OBJECT_ROLES = ("roles/storage.objectUser", "roles/storage.objectAdmin",
                       "roles/storage.admin")
# Waits between attempts to grant roles: IAM learns of a new service account within a minute.
IAM_RETRY_SECONDS = (2.0, 4.0, 8.0, 16.0, 30.0)
SERVICEUSAGE_VARIABLE = "MEDIA_BIAS_SERVICEUSAGE_ENDPOINT"
IAM_VARIABLE = "MEDIA_BIAS_IAM_ENDPOINT"
# What the training VM's service account needs: read the code and write results in the bucket,
# delete its own instance, write logs. Granted on the project (a narrower custom role for the
# self-deletion is possible; see docs/cloud.md).
TRAINER_ROLES = ("roles/storage.objectUser", "roles/compute.instanceAdmin.v1",
                 "roles/logging.logWriter")
# What your own account needs to launch, watch and clean up a cloud run.
LAUNCH_PERMISSIONS = ("compute.instances.create", "compute.instances.delete",
                      "compute.instances.get", "compute.instances.list",
                      "compute.instances.setMetadata", "compute.instances.setServiceAccount",
                      "compute.zoneOperations.get", "compute.zoneOperations.list",
                      "compute.images.useReadOnly", "iam.serviceAccounts.actAs",
                      "storage.buckets.get", "storage.objects.create", "storage.objects.get",
                      "storage.objects.list", "storage.objects.delete")
# Compute Engine's regional quota metric per GPU; spot VMs use PREEMPTIBLE_<metric> when granted.
QUOTA_METRICS = {"nvidia-tesla-t4": "NVIDIA_T4_GPUS", "nvidia-tesla-p4": "NVIDIA_P4_GPUS",
                 "nvidia-tesla-p100": "NVIDIA_P100_GPUS", "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
                 "nvidia-l4": "NVIDIA_L4_GPUS", "nvidia-tesla-a100": "NVIDIA_A100_GPUS"}


def _session(variable: str, base: str):
    endpoint = os.environ.get(variable)
    if endpoint:
        import requests
        return requests.Session(), endpoint.rstrip("/")
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(
        scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return AuthorizedSession(credentials), base


def _serviceusage_session():
    return _session(SERVICEUSAGE_VARIABLE, "https://serviceusage.googleapis.com")


def _checked(response, what: str) -> dict:
    if response.status_code != 200:
        raise UserError(f"{what} failed: HTTP {response.status_code} {response.text[:300]}")
    return response.json() if response.content else {}


def ensure_service_account(project: str, account_id: str = SERVICE_ACCOUNT_ID
                           ) -> tuple[str, bool]:
    """The VM's service account, created when missing; returns ``(email, created)``."""
    session, base = _session(IAM_VARIABLE, "https://iam.googleapis.com")
    email = service_account_email(project, account_id)
    response = session.get(f"{base}/v1/projects/{project}/serviceAccounts/{email}", timeout=60)
    if response.status_code == 200:
        return email, False
    if response.status_code != 404:
        _checked(response, f"reading service account {email}")
    _checked(session.post(f"{base}/v1/projects/{project}/serviceAccounts", json={
        "accountId": account_id, "serviceAccount": {
            "displayName": "media-bias cloud training VMs"}}, timeout=60),
        f"creating service account {email}")
    return email, True


def grant_roles(project: str, email: str, roles=TRAINER_ROLES) -> list[str]:
    """Add the roles the VM needs to the project's IAM policy; returns those newly granted.

    Reads and writes policy version 3, so conditional bindings others set survive the write. A
    service account created seconds ago is not yet known to IAM ("does not exist"), and another
    writer may change the policy between our read and write (409, stale etag): both are retried
    from a fresh read with growing waits.
    """
    session, base = _session(IAM_VARIABLE, "https://cloudresourcemanager.googleapis.com")
    member = f"serviceAccount:{email}"
    waits: list[float | None] = [*IAM_RETRY_SECONDS, None]
    for wait in waits:
        policy = _checked(session.post(
            f"{base}/v1/projects/{project}:getIamPolicy",
            json={"options": {"requestedPolicyVersion": 3}}, timeout=60),
            "reading the project's IAM policy")
        added = _add_member(policy, member, roles)
        if not added:
            return []
        policy["version"] = 3
        response = session.post(f"{base}/v1/projects/{project}:setIamPolicy",
                                json={"policy": policy}, timeout=60)
        if response.status_code == 200:
            return added
        if wait is None or not _worth_retrying(response, email):
            _checked(response, "granting the service account its roles")
        else:
            time.sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _add_member(policy: dict, member: str, roles) -> list[str]:
    """Add ``member`` to the unconditional binding of each role; returns the roles it gained."""
    bindings = policy.setdefault("bindings", [])
    added = []
    for role in roles:
        binding = next((item for item in bindings
                        if item["role"] == role and not item.get("condition")), None)
        if binding is None:
            binding = {"role": role, "members": []}
            bindings.append(binding)
        if member not in binding["members"]:
            binding["members"].append(member)
            added.append(role)
    return added


def _worth_retrying(response, email: str) -> bool:
    """A concurrent policy change, or a new service account IAM does not know yet."""
    return response.status_code == 409 or (
        response.status_code == 400 and email in response.text
        and "does not exist" in response.text)


def ensure_bucket_access(client, bucket_name: str, email: str, project_number: str) -> str:
    """Make sure the VM's account can read and write objects in the bucket; returns what was
    found or done. The project role covers buckets of the project; a bucket of another project
    needs its own binding, added here (or reported when your account may not add it)."""
    bucket = client.get_bucket(bucket_name)
    if str(bucket.project_number) == str(project_number):
        return "covered by the project role roles/storage.objectUser"
    member = f"serviceAccount:{email}"
    policy = bucket.get_iam_policy(requested_policy_version=3)
    if any(binding["role"] in BUCKET_OBJECT_ROLES and member in binding["members"]
           for binding in policy.bindings):
        return "granted on the bucket"
    policy.version = 3
    policy.bindings.append({"role": "roles/storage.objectUser", "members": {member}})
    bucket.set_iam_policy(policy)
    return "granted roles/storage.objectUser on the bucket (it belongs to another project)"


def project_number(project: str) -> str:
    """The project's number (Resource Manager ``projects.get``)."""
    session, base = _session(IAM_VARIABLE, "https://cloudresourcemanager.googleapis.com")
    return str(_checked(session.get(f"{base}/v1/projects/{project}", timeout=60),
                        f"reading project {project}")["projectNumber"])


def wandb_secret_problem(project: str, secret: str) -> str | None:
    """Why the VM could not read the W&B key from Secret Manager, or None when it can."""
    session, base = _session(IAM_VARIABLE, "https://secretmanager.googleapis.com")
    response = session.get(f"{base}/v1/projects/{project}/secrets/{secret}", timeout=60)
    if response.status_code == 404:
        return (f"Secret Manager has no secret {secret!r} in {project}: create it with `printf "
                f"%s \"$WANDB_API_KEY\" | gcloud secrets create {secret} --data-file=- "
                f"--project {project}` (docs/cloud.md, W&B on the VM)")
    _checked(response, f"reading the secret {secret}")
    return None


def missing_permissions(project: str, permissions=LAUNCH_PERMISSIONS) -> list[str]:
    """Permissions your own account lacks on the project (``projects.testIamPermissions``)."""
    session, base = _session(IAM_VARIABLE, "https://cloudresourcemanager.googleapis.com")
    granted = _checked(session.post(f"{base}/v1/projects/{project}:testIamPermissions",
                                    json={"permissions": list(permissions)}, timeout=60),
                       "checking your permissions").get("permissions", [])
    return [permission for permission in permissions if permission not in granted]


def enable_apis(project: str, services=SERVICES, timeout: float = 300) -> None:
    """Enable the APIs (a no-op for those already on) and wait for the operation."""
    session, base = _serviceusage_session()
    response = session.post(f"{base}/v1/projects/{project}/services:batchEnable",
                            json={"serviceIds": list(services)}, timeout=60)
    if response.status_code != 200:
        raise UserError(f"enabling {', '.join(services)} in {project} failed: HTTP "
                        f"{response.status_code} {response.text[:300]}")
    operation = response.json()
    deadline = time.monotonic() + timeout
    while not operation.get("done"):
        if time.monotonic() > deadline:
            raise UserError(f"enabling the APIs did not finish in {timeout:g} s; run again")
        time.sleep(2)
        operation = session.get(f"{base}/v1/{operation['name']}", timeout=60).json()
    if operation.get("error"):
        raise UserError(f"enabling the APIs failed: {operation['error'].get('message')}")


def quota_report(quotas: dict, region: str, gpu_type: str, gpu_count: int, machine_type: str,
                 spot: bool, project_quotas: dict | None = None) -> tuple[list[str], list[str]]:
    """(lines describing the quotas, lines saying what is missing)."""
    lines, missing = [], []
    if project_quotas is not None:
        limit, usage = project_quotas.get("GPUS_ALL_REGIONS", (0.0, 0.0))
        lines.append(f"  {'GPUS_ALL_REGIONS (project-wide)':<32} limit {limit:g}, in use {usage:g}")
        if limit - usage < gpu_count:
            missing.append(f"{gpu_count} GPU(s) project-wide: request GPUS_ALL_REGIONS >= "
                           f"{usage + gpu_count:g} (IAM & Admin > Quotas); new projects start "
                           f"at 0")
    metric = QUOTA_METRICS.get(gpu_type)
    if metric is None:
        return [f"no quota metric known for {gpu_type}"], []
    names = ([f"PREEMPTIBLE_{metric}"] if spot else []) + [metric]
    free = {}
    for name in names:
        limit, usage = quotas.get(name, (0.0, 0.0))
        free[name] = limit - usage
        lines.append(f"  {name:<32} limit {limit:g}, in use {usage:g}")
    if max(free.values()) < gpu_count:
        missing.append(f"{gpu_count} x {gpu_type} in {region}: request {' or '.join(names)} >= "
                       f"{gpu_count} (IAM & Admin > Quotas)")
    vcpus = n1_vcpus(machine_type)
    if vcpus:
        limit, usage = quotas.get("CPUS", (0.0, 0.0))
        lines.append(f"  {'CPUS':<32} limit {limit:g}, in use {usage:g}")
        if limit - usage < vcpus:
            missing.append(f"{vcpus} vCPUs in {region}: request CPUS >= {usage + vcpus:g}")
    return lines, missing


def setup_project(project: str, region: str, bucket: str, gpu_type: str, gpu_count: int,
                  machine_type: str, spot: bool, enable: bool = True, log=print,
                  image_family: str | None = None,
                  image_project: str = "deeplearning-platform-release",
                  wandb: bool = False) -> list[str]:
    """APIs, bucket, service account, permissions, quotas, image; returns what is missing.

    ``wandb``: also Secret Manager, the VM account's access to the W&B key, and the key itself.
    """
    from .compute import Compute

    if gpu_type not in GPUS:
        raise UserError(f"--gpu-type: unknown GPU {gpu_type!r}; choose from {', '.join(GPUS)}")
    services = SERVICES + (WANDB_SERVICES if wandb else ())
    if enable:
        log(f"Enabling {', '.join(services)} in {project}")
        enable_apis(project, services)
    client = storage.storage_client(project)
    created_bucket, created = storage.ensure_bucket(client, bucket, region)
    log(f"Bucket gs://{bucket}: " + ("created (uniform access, public access prevented)"
                                     if created else "exists"))
    for warning in storage.bucket_warnings(created_bucket):
        log(f"  warning: {warning}")
    missing = _set_up_vm_account(project, client, bucket, wandb, log)
    lacking = missing_permissions(project)
    if lacking:
        missing.append(f"your account lacks {', '.join(lacking)} on {project} (ask for "
                       f"roles/compute.instanceAdmin.v1, roles/iam.serviceAccountUser and "
                       f"roles/storage.objectAdmin)")
    else:
        log("Your permissions: every one a cloud run needs (testIamPermissions)")
    compute = Compute()
    if image_family:
        try:
            image = compute.image_from_family(image_project, image_family)
            log(f"Image family {image_project}/{image_family}: {image['name']}")
        except CloudError as error:
            missing.append(str(error))
    return missing + _check_gpu_capacity(compute, project, region, gpu_type, gpu_count,
                                         machine_type, spot, log)


def _set_up_vm_account(project: str, client, bucket: str, wandb: bool, log) -> list[str]:
    """The VM's service account, its roles and bucket access (and the W&B key's secret);
    returns what is missing."""
    roles = TRAINER_ROLES + (WANDB_ROLES if wandb else ())
    email, created = ensure_service_account(project)
    log(f"Service account {email}: " + ("created" if created else "exists"))
    added = grant_roles(project, email, roles)
    log(f"  roles {', '.join(roles)}: " + (f"granted {', '.join(added)}" if added
                                           else "already granted"))
    log(f"  bucket gs://{bucket}: "
        + ensure_bucket_access(client, bucket, email, project_number(project)))
    if not wandb:
        return []
    problem = wandb_secret_problem(project, WANDB_API_KEY_SECRET)
    if problem:
        return [problem]
    log(f"W&B key: secret {WANDB_API_KEY_SECRET} found; set cloud.cloud_platform_scope: true "
        f"next to logging.wandb: true, the only scope that reaches Secret Manager")
    return []


def _check_gpu_capacity(compute, project: str, region: str, gpu_type: str, gpu_count: int,
                        machine_type: str, spot: bool, log) -> list[str]:
    """The region's and the project's GPU quota and the zones offering the GPU; returns what
    is missing."""
    lines, missing = quota_report(compute.region_quotas(project, region), region, gpu_type,
                                  gpu_count, machine_type, spot, compute.project_quotas(project))
    log(f"GPU quota in {region}:")
    for line in lines:
        log(line)
    zones = compute.zones_offering(project, region, gpu_type)
    log(f"Zones of {region} offering {gpu_type}: {', '.join(zones) or 'none'}")
    if not zones:
        missing.append(f"{gpu_type} is not offered in {region}; choose another --region")
    return missing
