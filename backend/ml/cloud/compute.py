"""Compute Engine: the training VM's request body, creation with zone fallback, deletion.

Every call goes through google-cloud-compute's REST transport. ``MEDIA_BIAS_COMPUTE_ENDPOINT``
(e.g. ``http://127.0.0.1:8085``) points the clients at an emulator with anonymous
credentials, like ``STORAGE_EMULATOR_HOST`` does for Cloud Storage; without it they use
Application Default Credentials against compute.googleapis.com.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ..errors import UserError
from .catalog import uses_guest_accelerators

ENDPOINT_VARIABLE = "MEDIA_BIAS_COMPUTE_ENDPOINT"
APP_LABEL = "media-bias"
RUN_LABEL = "media-bias-run"
# Least the VM needs: read code / write results in Cloud Storage, delete itself, write logs.
VM_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",
             "https://www.googleapis.com/auth/compute",
             "https://www.googleapis.com/auth/logging.write")
# Secret Manager has no narrower OAuth scope; added only when W&B needs its key on the VM.
SECRET_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
STOCKOUT_CODES = ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS")


class CloudError(UserError):
    """A Compute Engine request failed in a way the user has to act on."""


class CapacityError(CloudError):
    """No zone could take the VM (stockout or quota)."""


@dataclass
class VmSpec:
    """Everything the instance request is built from (names and numbers only)."""

    project: str
    run_id: str
    bucket: str
    machine_type: str
    gpu_type: str
    gpu_count: int
    preemptible: bool
    boot_disk_gb: int
    image_family: str
    image_project: str
    max_run_hours: float
    wandb_secret: str | None = None
    extra_metadata: dict = field(default_factory=dict)


def label_value(text: str) -> str:
    """A Compute Engine label value: lowercase letters, digits, '_' and '-', at most 63."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def instance_name(run_id: str, attempt: int = 0) -> str:
    """``mb-<run id>-<attempt>`` made a valid instance name (RFC 1035, at most 63)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-") or "run"
    suffix = f"-{attempt}"
    stem = stem[-(63 - 3 - len(suffix)):].lstrip("-")  # keep the run's random tail
    return f"mb-{stem}{suffix}"


def instance_body(spec: VmSpec, zone: str, name: str, startup_script: str,
                  shutdown_script: str | None = None) -> dict:
    """The exact ``instances.insert`` body (REST JSON) for the training VM in ``zone``."""
    scheduling = {
        "onHostMaintenance": "TERMINATE",      # GPUs cannot live-migrate
        "automaticRestart": False,
        "provisioningModel": "SPOT" if spec.preemptible else "STANDARD",
        # The VM is deleted, not stopped, when preempted or when its time is up: a stopped VM
        # still bills its disk, and the local side replaces a preempted one.
        "instanceTerminationAction": "DELETE",
        "maxRunDuration": {"seconds": str(int(round(spec.max_run_hours * 3600)))},
    }
    metadata = [{"key": "startup-script", "value": startup_script},
                {"key": "install-nvidia-driver", "value": "True"},  # Deep Learning VM images
                {"key": "media-bias-run-id", "value": spec.run_id},
                {"key": "media-bias-bucket", "value": spec.bucket}]
    if shutdown_script:
        metadata.insert(1, {"key": "shutdown-script", "value": shutdown_script})
    metadata += [{"key": key, "value": str(value)} for key, value in spec.extra_metadata.items()]
    scopes = list(VM_SCOPES) + ([SECRET_SCOPE] if spec.wandb_secret else [])
    body = {
        "name": name,
        "machineType": f"zones/{zone}/machineTypes/{spec.machine_type}",
        "labels": {"app": APP_LABEL, RUN_LABEL: label_value(spec.run_id)},
        "scheduling": scheduling,
        "disks": [{
            "boot": True, "autoDelete": True,
            "initializeParams": {
                "sourceImage": f"projects/{spec.image_project}/global/images/family/"
                               f"{spec.image_family}",
                "diskSizeGb": str(spec.boot_disk_gb),
                "diskType": f"zones/{zone}/diskTypes/pd-balanced",
            },
        }],
        # An external address only for outgoing traffic (pip, the model hub); no port is opened.
        "networkInterfaces": [{"network": "global/networks/default",
                               "accessConfigs": [{"name": "External NAT",
                                                  "type": "ONE_TO_ONE_NAT"}]}],
        "serviceAccounts": [{"email": "default", "scopes": scopes}],
        "metadata": {"items": metadata},
    }
    if uses_guest_accelerators(spec.gpu_type):
        body["guestAccelerators"] = [{
            "acceleratorType": f"projects/{spec.project}/zones/{zone}/acceleratorTypes/"
                               f"{spec.gpu_type}",
            "acceleratorCount": spec.gpu_count}]
    return body


def error_message(error) -> str:
    """The API's message without the request line (``POST http://...: ``) api_core puts first."""
    message = str(getattr(error, "message", "") or error)
    return re.sub(r"^[A-Z]+ \S+://\S+: ", "", message)


def _error_text(error) -> str:
    parts = [error_message(error)]
    for item in getattr(error, "errors", None) or []:
        if isinstance(item, dict):
            parts += [str(item.get("reason", "")), str(item.get("code", "")),
                      str(item.get("message", ""))]
        else:
            parts += [str(getattr(item, "code", "")), str(getattr(item, "message", ""))]
    return " ".join(part for part in parts if part)


def classify_insert_error(error) -> str:
    """stockout, zonal_quota, regional_quota, unavailable (GPU or type not in zone) or other."""
    text = _error_text(error)
    lowered = text.lower()
    if any(code in text for code in STOCKOUT_CODES) or "does not have enough resources" in lowered:
        return "stockout"
    if "quota" in lowered:
        if "in region" not in lowered and ("zone" in lowered or "zonal" in lowered):
            return "zonal_quota"
        return "regional_quota"
    if "acceleratortypes" in lowered.replace(" ", "") or "machinetypes" in lowered.replace(" ", ""):
        if "not found" in lowered or "does not exist" in lowered or "invalid" in lowered:
            return "unavailable"
    return "other"


class Compute:
    """The few Compute Engine calls a cloud run needs, on the real REST clients.

    >>> compute = Compute()  # doctest: +SKIP
    >>> compute.list_run_instances("my-project")  # doctest: +SKIP
    """

    def __init__(self, credentials=None, endpoint: str | None = None):
        from google.cloud import compute_v1

        endpoint = endpoint or os.environ.get(ENDPOINT_VARIABLE)
        options = {"transport": "rest"}
        if endpoint:
            from google.auth.credentials import AnonymousCredentials
            options["client_options"] = {"api_endpoint": endpoint}
            credentials = credentials or AnonymousCredentials()
        if credentials is not None:
            options["credentials"] = credentials
        self._v1 = compute_v1
        self.instances = compute_v1.InstancesClient(**options)
        # The clients' own operation polling ignores client_options (it always dials
        # compute.googleapis.com), so operations are awaited here with a client built like the rest.
        self.zone_operations = compute_v1.ZoneOperationsClient(**options)
        self.accelerator_types = compute_v1.AcceleratorTypesClient(**options)
        self.regions = compute_v1.RegionsClient(**options)

    def insert(self, project: str, zone: str, body: dict, timeout: float = 600) -> None:
        """Create the instance and wait until Compute Engine accepted or refused it."""
        resource = self._v1.Instance.from_json(json.dumps(body))
        operation = self.instances.insert_unary(project=project, zone=zone,
                                                instance_resource=resource)
        self.wait(project, zone, operation, timeout)

    def wait(self, project: str, zone: str, operation, timeout: float = 600) -> None:
        """Block until a zonal operation is DONE; its error is raised as GoogleAPICallError."""
        import time

        from google.api_core import exceptions

        deadline = time.monotonic() + timeout
        done = self._v1.Operation.Status.DONE
        while operation.status != done:
            if time.monotonic() > deadline:
                raise CloudError(f"operation {operation.name} in {zone} did not finish in "
                                 f"{timeout:g} s")
            operation = self.zone_operations.wait(project=project, zone=zone,
                                                  operation=operation.name)
        if operation.error and operation.error.errors:
            errors = list(operation.error.errors)
            message = "; ".join(f"{error.code}: {error.message}" for error in errors)
            raise exceptions.from_http_status(operation.http_error_status_code or 500, message,
                                              errors=errors)

    def get(self, project: str, zone: str, name: str) -> dict | None:
        """``{"name", "zone", "status", "labels", "creation"}`` of the instance, None if gone."""
        from google.api_core import exceptions

        try:
            instance = self.instances.get(project=project, zone=zone, instance=name)
        except exceptions.NotFound:
            return None
        return self._describe(instance, zone)

    @staticmethod
    def _describe(instance, zone: str) -> dict:
        return {"name": instance.name, "zone": zone.rsplit("/", 1)[-1], "status": instance.status,
                "labels": dict(instance.labels),
                "machine_type": instance.machine_type.rsplit("/", 1)[-1],
                "created": instance.creation_timestamp}

    def delete(self, project: str, zone: str, name: str, wait: bool = True,
               timeout: float = 600) -> bool:
        """Delete the instance; False when it was already gone."""
        from google.api_core import exceptions

        try:
            operation = self.instances.delete_unary(project=project, zone=zone, instance=name)
            if wait:
                self.wait(project, zone, operation, timeout)
        except exceptions.NotFound:
            return False
        return True

    def list_run_instances(self, project: str) -> list[dict]:
        """Every instance of ``project`` labelled as a media-bias training VM, in any zone."""
        request = self._v1.AggregatedListInstancesRequest(
            project=project, filter=f'labels.app = "{APP_LABEL}"')
        found = []
        for zone, scoped in self.instances.aggregated_list(request=request):
            for instance in scoped.instances:
                if instance.labels.get("app") == APP_LABEL:
                    found.append(self._describe(instance, zone))
        return sorted(found, key=lambda item: (item["zone"], item["name"]))

    def zones_offering(self, project: str, region: str, gpu_type: str) -> list[str]:
        """Zones of ``region`` whose accelerator types include ``gpu_type``."""
        request = self._v1.AggregatedListAcceleratorTypesRequest(
            project=project, filter=f'name = "{gpu_type}"')
        zones = []
        for scope, listed in self.accelerator_types.aggregated_list(request=request):
            zone = scope.rsplit("/", 1)[-1]
            if zone.startswith(region + "-") and any(item.name == gpu_type
                                                     for item in listed.accelerator_types):
                zones.append(zone)
        return sorted(zones)

    def region_quotas(self, project: str, region: str) -> dict[str, tuple[float, float]]:
        """``{metric: (limit, usage)}`` of the region, e.g. ``PREEMPTIBLE_NVIDIA_T4_GPUS``."""
        info = self.regions.get(project=project, region=region)
        return {quota.metric: (quota.limit, quota.usage) for quota in info.quotas}


def create_with_fallback(compute: Compute, project: str, zones: list[str], build_body,
                         log=print) -> tuple[str, dict]:
    """Create the VM in the first zone that takes it; returns ``(zone, body)``.

    A stockout (``ZONE_RESOURCE_POOL_EXHAUSTED``), a zonal quota error or a GPU missing from the
    zone moves on to the next zone; a regional quota error or any other failure stops at once.
    """
    from google.api_core import exceptions

    if not zones:
        raise CapacityError("no zone to try: set cloud.zones, or a cloud.region whose zones "
                            "offer cloud.gpu_type")
    failures = []
    for zone in zones:
        body = build_body(zone)
        try:
            compute.insert(project, zone, body)
            return zone, body
        except KeyboardInterrupt:
            # Ctrl-C while Compute Engine may already be creating it: make sure it is gone.
            compute.delete(project, zone, body["name"], wait=False)
            raise
        except exceptions.GoogleAPICallError as error:
            kind = classify_insert_error(error)
            message = error_message(error)
            # A refused insert can leave a stopped shell of the instance behind; never keep it.
            compute.delete(project, zone, body["name"])
            if kind == "regional_quota":
                raise CapacityError(
                    f"GPU quota exceeded in the region while creating the VM in {zone}: "
                    f"{message}\nRequest more quota (IAM & Admin > Quotas; `python "
                    f"scripts/gcp_setup.py --project {project} --setup-only` shows what is "
                    f"missing), or choose another cloud.region or cloud.gpu_type.") from None
            if kind == "other":
                raise CloudError(f"creating the VM {body['name']} in {zone} failed: "
                                 f"{message}") from None
            reason = {"stockout": "no capacity (ZONE_RESOURCE_POOL_EXHAUSTED)",
                      "zonal_quota": "zonal quota exceeded",
                      "unavailable": "GPU or machine type not offered"}[kind]
            failures.append(f"{zone}: {reason}")
            log(f"  {zone}: {reason}; trying the next zone")
    raise CapacityError("no zone could take the VM:\n  " + "\n  ".join(failures) + "\nTry again "
                        "later, allow more zones (cloud.zones), or choose another cloud.region "
                        "or cloud.gpu_type; on-demand capacity (cloud.preemptible: false) is "
                        "sometimes available when spot is not.")
