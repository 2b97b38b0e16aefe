"""One-time GCP project setup: APIs, the results bucket, GPU quota; optionally a training VM.

Used by ``python scripts/gcp_setup.py``. The Service Usage API is called over REST with
Application Default Credentials (``MEDIA_BIAS_SERVICEUSAGE_ENDPOINT`` points it at an emulator).
"""

from __future__ import annotations

import os
import time

from ..errors import UserError
from . import storage
from .catalog import GPUS, n1_vcpus

SERVICES = ("compute.googleapis.com", "storage.googleapis.com")
SERVICEUSAGE_VARIABLE = "MEDIA_BIAS_SERVICEUSAGE_ENDPOINT"
# Compute Engine's regional quota metric per GPU; spot VMs use PREEMPTIBLE_<metric> when granted.
QUOTA_METRICS = {"nvidia-tesla-t4": "NVIDIA_T4_GPUS", "nvidia-tesla-p4": "NVIDIA_P4_GPUS",
                 "nvidia-tesla-p100": "NVIDIA_P100_GPUS", "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
                 "nvidia-l4": "NVIDIA_L4_GPUS", "nvidia-tesla-a100": "NVIDIA_A100_GPUS"}


def _serviceusage_session():
    endpoint = os.environ.get(SERVICEUSAGE_VARIABLE)
    if endpoint:
        import requests
        return requests.Session(), endpoint.rstrip("/")
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(
        scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return AuthorizedSession(credentials), "https://serviceusage.googleapis.com"


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
                 spot: bool) -> tuple[list[str], list[str]]:
    """(lines describing the quotas, lines saying what is missing)."""
    lines, missing = [], []
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
                       f"{gpu_count} (IAM & Admin > Quotas); the project-wide GPUS_ALL_REGIONS "
                       f"quota must allow it too")
    vcpus = n1_vcpus(machine_type)
    if vcpus:
        limit, usage = quotas.get("CPUS", (0.0, 0.0))
        lines.append(f"  {'CPUS':<32} limit {limit:g}, in use {usage:g}")
        if limit - usage < vcpus:
            missing.append(f"{vcpus} vCPUs in {region}: request CPUS >= {usage + vcpus:g}")
    return lines, missing


def setup_project(project: str, region: str, bucket: str, gpu_type: str, gpu_count: int,
                  machine_type: str, spot: bool, enable: bool = True, log=print) -> list[str]:
    """APIs, bucket and quota check; returns what is missing (empty: ready)."""
    from .compute import Compute

    if gpu_type not in GPUS:
        raise UserError(f"--gpu-type: unknown GPU {gpu_type!r}; choose from {', '.join(GPUS)}")
    if enable:
        log(f"Enabling {', '.join(SERVICES)} in {project}")
        enable_apis(project)
    client = storage.storage_client(project)
    created_bucket, created = storage.ensure_bucket(client, bucket, region)
    log(f"Bucket gs://{bucket}: " + ("created (uniform access, public access prevented)"
                                     if created else "exists"))
    for warning in storage.bucket_warnings(created_bucket):
        log(f"  warning: {warning}")
    compute = Compute()
    lines, missing = quota_report(compute.region_quotas(project, region), region, gpu_type,
                                  gpu_count, machine_type, spot)
    log(f"GPU quota in {region}:")
    for line in lines:
        log(line)
    zones = compute.zones_offering(project, region, gpu_type)
    log(f"Zones of {region} offering {gpu_type}: {', '.join(zones) or 'none'}")
    if not zones:
        missing.append(f"{gpu_type} is not offered in {region}; choose another --region")
    return missing
