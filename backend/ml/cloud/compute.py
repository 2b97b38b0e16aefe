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
from typing import TYPE_CHECKING, TypedDict

from ..errors import UserError
from .catalog import uses_guest_accelerators

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

ENDPOINT_VARIABLE = "MEDIA_BIAS_COMPUTE_ENDPOINT"
APP_LABEL = "media-bias"
RUN_LABEL = "media-bias-run"
# Least the VM needs: read code / write results in Cloud Storage, delete itself, write logs.
# The service account's roles (scripts/gcp_setup.py) are what really limits it; the scopes only
# keep a token from reaching further.
VM_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",
             "https://www.googleapis.com/auth/compute",
             "https://www.googleapis.com/auth/logging.write")
# Secret Manager has no narrower OAuth scope: only with cloud.cloud_platform_scope.
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SERVICE_ACCOUNT_ID = "media-bias-trainer"
DEFAULT_IMAGE_FAMILY = "common-cu129-ubuntu-2204-nvidia-580"  # supported until 2028-08
STOCKOUT_CODES = ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS")
# Zone operation Compute Engine records when it preempts a spot VM; nothing else means preempted.
PREEMPTED_OPERATION = "compute.instances.preempted"
# How long a Ctrl-C or a time-out during creation waits for the VM to exist, to delete it.
CREATION_GRACE_SECONDS = 180
UNANSWERED_INSERT_SECONDS = 30  # an insert interrupted before its answer may still create the VM


class CloudError(UserError):
    """A Compute Engine request failed in a way the user has to act on."""


class CapacityError(CloudError):
    """No zone could take the VM (stockout or quota)."""


class OperationTimeout(CloudError):
    """A Compute Engine operation did not finish in time."""


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
    service_account: str = "default"
    cloud_platform_scope: bool = False
    extra_metadata: dict = field(default_factory=dict)


def service_account_email(project: str, account_id: str = SERVICE_ACCOUNT_ID) -> str:
    """``media-bias-trainer@PROJECT.iam.gserviceaccount.com``, the VM's identity."""
    return f"{account_id}@{project}.iam.gserviceaccount.com"


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
    scopes = list(VM_SCOPES) + ([CLOUD_PLATFORM_SCOPE] if spec.cloud_platform_scope else [])
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
        "serviceAccounts": [{"email": spec.service_account, "scopes": scopes}],
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


def quota_metric(message: str) -> str | None:
    """The quota metric a Compute Engine refusal names (``Quota 'CPUS_ALL_REGIONS' exceeded``)."""
    match = re.search(r"Quota '([A-Z0-9_]+)' exceeded", message)
    return match.group(1) if match else None


def classify_insert_error(error) -> str:
    """stockout, zonal_quota, regional_quota, global_quota, unavailable (GPU or type not in
    zone), image, service_account or other."""
    text = _error_text(error)
    lowered = text.lower()
    if any(code in text for code in STOCKOUT_CODES) or "does not have enough resources" in lowered:
        return "stockout"
    if "_ALL_REGIONS" in text or ("quota" in lowered and "globally" in lowered):
        return "global_quota"
    if "/global/images/" in lowered:
        return "image"
    if "serviceaccount" in lowered.replace(" ", "") or "service account" in lowered:
        return "service_account"
    if "quota" in lowered:
        if "in region" not in lowered and ("zone" in lowered or "zonal" in lowered):
            return "zonal_quota"
        return "regional_quota"
    if "acceleratortypes" in lowered.replace(" ", "") or "machinetypes" in lowered.replace(" ", ""):
        if "not found" in lowered or "does not exist" in lowered or "invalid" in lowered:
            return "unavailable"
    return "other"


class _ClientArguments(TypedDict, total=False):
    """Keyword arguments every compute_v1 client is built with."""

    transport: str
    client_options: dict[str, str]
    credentials: Credentials


# Seconds a status call may take before it counts as lost: Compute Engine answers in well under
# one, and a dead connection never does.
CALL_TIMEOUT_SECONDS = 60.0


class Compute:
    """The few Compute Engine calls a cloud run needs, on the real REST clients.

    >>> compute = Compute()  # doctest: +SKIP
    >>> compute.list_run_instances("my-project")  # doctest: +SKIP
    """

    def __init__(self, credentials: Credentials | None = None, endpoint: str | None = None,
                 call_timeout: float = CALL_TIMEOUT_SECONDS):
        from google.cloud import compute_v1

        self.call_timeout = call_timeout
        endpoint = endpoint or os.environ.get(ENDPOINT_VARIABLE)
        options: _ClientArguments = {"transport": "rest"}
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
        self.projects = compute_v1.ProjectsClient(**options)
        self.images = compute_v1.ImagesClient(**options)

    def insert(self, project: str, zone: str, body: dict, timeout: float = 600) -> None:
        """Create the instance and wait until Compute Engine accepted or refused it.

        A Ctrl-C or a time-out while Compute Engine is still creating it waits (bounded) for
        the creation to end and deletes the VM, so nothing keeps running unseen.
        """
        resource = self._v1.Instance.from_json(json.dumps(body))
        operation = None
        try:
            operation = self.instances.insert_unary(project=project, zone=zone,
                                                    instance_resource=resource)
            self.wait(project, zone, operation, timeout)
        except (KeyboardInterrupt, OperationTimeout):
            self.delete_once_created(project, zone, body["name"], operation)
            raise

    def delete_once_created(self, project: str, zone: str, name: str, operation=None,
                            grace: float = CREATION_GRACE_SECONDS) -> None:
        """Let a pending creation finish (at most ``grace`` s), then delete the instance.

        Without the insert operation (interrupted before Compute Engine answered) the instance
        is looked for a while instead, in case the request got through.
        """
        import time

        deadline = time.monotonic() + grace
        done = self._v1.Operation.Status.DONE
        while operation is not None and operation.status != done and time.monotonic() < deadline:
            try:
                operation = self.zone_operations.wait(project=project, zone=zone,
                                                      operation=operation.name)
            except Exception:  # noqa: BLE001  (best effort: the delete below still runs)
                break
        if operation is None:
            look_until = time.monotonic() + min(grace, UNANSWERED_INSERT_SECONDS)
            while self.get(project, zone, name) is None and time.monotonic() < look_until:
                time.sleep(2)
        self.delete(project, zone, name, wait=False)

    def wait(self, project: str, zone: str, operation, timeout: float = 600) -> None:
        """Block until a zonal operation is DONE; its error is raised as GoogleAPICallError."""
        import time

        from google.api_core import exceptions

        deadline = time.monotonic() + timeout
        done = self._v1.Operation.Status.DONE
        while operation.status != done:
            if time.monotonic() > deadline:
                raise OperationTimeout(f"operation {operation.name} in {zone} did not finish in "
                                       f"{timeout:g} s")
            operation = self.zone_operations.wait(project=project, zone=zone,
                                                  operation=operation.name)
        if operation.error and operation.error.errors:
            errors = list(operation.error.errors)
            message = "; ".join(f"{error.code}: {error.message}" for error in errors)
            raise exceptions.from_http_status(operation.http_error_status_code or 500, message,
                                              errors=errors)

    def get(self, project: str, zone: str, name: str) -> dict | None:
        """``{"name", "zone", "status", "labels", "creation"}`` of the instance, None if gone.

        Gives up after ``call_timeout`` seconds: a connection that died while the laptop slept
        never answers, and the watch retries a time-out like any network failure.
        """
        from google.api_core import exceptions

        try:
            instance = self.instances.get(project=project, zone=zone, instance=name,
                                          timeout=self.call_timeout)
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
        """Delete the instance; False when it was already gone or already being deleted."""
        from google.api_core import exceptions

        try:
            operation = self.instances.delete_unary(project=project, zone=zone, instance=name)
            if wait:
                self.wait(project, zone, operation, timeout)
        except exceptions.NotFound:
            return False
        except exceptions.BadRequest as error:
            # A VM deleting itself is STOPPING; a second delete is refused as not ready.
            if "not ready" in error_message(error).lower():
                return False
            raise
        return True

    def serial_output(self, project: str, zone: str, name: str, start: int = 0
                      ) -> tuple[str, int] | None:
        """The VM's serial port 1 output from byte ``start`` on, and the offset to ask for
        next (``instances.getSerialPortOutput``); None once the VM is gone."""
        from google.api_core import exceptions

        request = self._v1.GetSerialPortOutputInstanceRequest(
            project=project, zone=zone, instance=name, port=1, start=start)
        try:
            output = self.instances.get_serial_port_output(request=request)
        except exceptions.NotFound:
            return None
        return output.contents, int(output.next_)

    def was_preempted(self, project: str, zone: str, name: str) -> bool:
        """Whether the zone's operations record a preemption of instance ``name``."""
        request = self._v1.ListZoneOperationsRequest(
            project=project, zone=zone, filter=f'operationType = "{PREEMPTED_OPERATION}"')
        return any(operation.operation_type == PREEMPTED_OPERATION
                   and operation.target_link.rsplit("/", 1)[-1] == name
                   for operation in self.zone_operations.list(request=request,
                                                               ))

    def image_from_family(self, image_project: str, family: str) -> dict:
        """``{"name", "state", "replacement"}`` of the family's current image.

        Raises CloudError naming a replacement when the family is missing or deprecated.
        """
        from google.api_core import exceptions

        try:
            image = self.images.get_from_family(project=image_project, family=family)
        except exceptions.NotFound:
            raise CloudError(
                f"cloud.image_family: {family!r} does not exist in {image_project} (Deep "
                f"Learning VM families are retired on a schedule). Use a current one, e.g. "
                f"{DEFAULT_IMAGE_FAMILY!r}; list them with `gcloud compute images list "
                f"--project {image_project} --filter=family~common-cu --format='value(family)'"
                f"`") from None
        state = image.deprecated.state if image.deprecated else ""
        replacement = image.deprecated.replacement.rsplit("/", 1)[-1] if image.deprecated \
            else ""
        if state in ("DEPRECATED", "OBSOLETE", "DELETED"):
            instead = replacement or DEFAULT_IMAGE_FAMILY
            raise CloudError(f"cloud.image_family: {family!r} is {state.lower()} (image "
                             f"{image.name}); use {instead!r} instead")
        return {"name": image.name, "state": state or "ACTIVE", "replacement": replacement}

    def project_quotas(self, project: str) -> dict[str, tuple[float, float]]:
        """Project-wide ``{metric: (limit, usage)}``, e.g. ``GPUS_ALL_REGIONS``."""
        info = self.projects.get(project=project)
        return {quota.metric: (quota.limit, quota.usage) for quota in info.quotas}

    def simulate_maintenance(self, project: str, zone: str, name: str) -> None:
        """``instances.simulateMaintenanceEvent``: a spot VM is preempted as for real."""
        operation = self.instances.simulate_maintenance_event_unary(project=project, zone=zone,
                                                                    instance=name)
        self.wait(project, zone, operation)

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
            compute.insert(project, zone, body)  # deletes the VM itself on Ctrl-C / time-out
            return zone, body
        except exceptions.GoogleAPICallError as error:
            kind = classify_insert_error(error)
            message = error_message(error)
            # A refused insert can leave a stopped shell of the instance behind; never keep it.
            compute.delete(project, zone, body["name"])
            if kind == "global_quota":
                metric = quota_metric(message) or "GPUS_ALL_REGIONS"
                raise CapacityError(
                    f"the project-wide quota {metric} is used up: {message}\n"
                    f"Request more (IAM & Admin > Quotas, metric {metric}); `python "
                    f"scripts/gcp_setup.py --project {project} --setup-only` shows the "
                    f"quotas a run needs.") from None
            if kind == "image":
                raise CloudError(f"the boot image was refused: {message}\nSet "
                                 f"cloud.image_family to a current Deep Learning VM family, "
                                 f"e.g. {DEFAULT_IMAGE_FAMILY}.") from None
            if kind == "service_account":
                raise CloudError(f"the VM's service account was refused: {message}\nCreate it "
                                 f"and grant its roles with `python scripts/gcp_setup.py "
                                 f"--project {project} --setup-only`.") from None
            if kind == "regional_quota":
                metric = quota_metric(message) or "the GPU quota"
                raise CapacityError(
                    f"quota {metric} exceeded in the region while creating the VM in {zone}: "
                    f"{message}\nRequest more (IAM & Admin > Quotas, metric {metric}; `python "
                    f"scripts/gcp_setup.py --project {project} --setup-only` shows what is "
                    f"missing), or choose another cloud.region, cloud.machine_type or "
                    f"cloud.gpu_type.") from None
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
