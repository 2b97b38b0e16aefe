"""A fake Compute Engine REST endpoint on 127.0.0.1 for the real google-cloud-compute client.

It implements the paths the cloud code uses (instances insert / get / delete / aggregated list /
simulateMaintenanceEvent, zone operations get / wait / list, images getFromFamily, aggregated
accelerator types, regions get, projects get), plus the IAM and Resource Manager calls of the
project setup, and records every request. It is as strict as Compute Engine where the code
depends on it: instances pass PROVISIONING and STAGING before RUNNING and exist only once their
insert operation is DONE; a deleted instance is STOPPING until its deletion ends, and deleting it
again then is refused (400 resourceNotReady); an insert needs an existing, non-deprecated image
family and an existing service account; GPUs count against GPUS_ALL_REGIONS; a preemption is
recorded as a ``compute.instances.preempted`` zone operation, a maxRunDuration deletion is not.
It refuses the scheduling Compute Engine refuses (a GPU that would live-migrate, an automatically
restarting spot VM, a maxRunDuration with no termination action), and a test can make chosen
calls fail as a flaky network or a busy front end does (:meth:`FakeCompute.inject_faults`).
It also answers ``getSerialPortOutput`` with the text a test gave :meth:`FakeCompute.write_serial`.

>>> fake = FakeCompute().start()
>>> fake.fail_next_insert("us-central1-a", "stockout")
>>> # Compute(endpoint=fake.url) ... fake.inserts, fake.deletes
>>> fake.stop()
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/compute/v1/projects/"
IMAGE_PROJECT = "deeplearning-platform-release"
CURRENT_FAMILY = "common-cu129-ubuntu-2204-nvidia-580"
RETIRED_FAMILY = "common-cu128-ubuntu-2204-nvidia-570"   # deprecated, replaced by the one above
BOOT_STATES = ("PROVISIONING", "STAGING", "RUNNING")      # one step per GET of the instance
DEFAULT_ACCELERATORS = {
    "nvidia-tesla-t4": ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f",
                        "europe-west4-a"],
    "nvidia-tesla-v100": ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"],
}
# Machine families whose GPUs come with the machine type (no guestAccelerators in the body).
GPU_MACHINE_PREFIXES = ("a2-", "a3-", "a4-", "g2-")
FAULTS = ("500", "502", "503", "429", "drop", "stall")
RETRY_AFTER_SECONDS = 7  # what a 429 answer asks the client to wait
STALL_SECONDS = 20  # a stalled call is dropped after this, so that a test without time-out ends


class FakeCompute:
    """State of the fake: instances, operations, recorded requests and scripted failures."""

    def __init__(self):
        self.lock = threading.RLock()  # hooks may call back in
        self.released = threading.Event()  # stalled calls hang until stop()
        self.stalls_outwaited = 0  # stalled calls whose client waited STALL_SECONDS for them
        self.instances: dict[tuple[str, str], dict] = {}    # (zone, name) -> instance JSON
        self.operations: dict[str, dict] = {}
        self.requests: list[dict] = []                      # {"method", "path", "query", "body"}
        self.failures: dict[str, list[tuple[str, str]]] = {}  # zone -> (kind, quota metric)
        self.accelerators = {gpu: list(zones) for gpu, zones in DEFAULT_ACCELERATORS.items()}
        self.quotas: dict[str, list[dict]] = {}             # region -> quota entries
        self.on_insert = None                               # callback(project, zone, body)
        self.on_operation_poll = None                       # callback(operation name)
        self.enabled_services: list[str] = []               # Service Usage batchEnable
        self.pending_polls = 0                               # operations RUNNING for N polls
        # A preempted VM runs its shutdown script (~30 s) while STOPPING: N GETs of it.
        self.preemption_stopping_polls = 0
        self.faults: list[tuple[str, re.Pattern, deque[str]]] = []  # see inject_faults
        self.images = {                                      # (project, family) -> image
            (IMAGE_PROJECT, CURRENT_FAMILY): {"name": "common-cu129-v20260901",
                                              "family": CURRENT_FAMILY, "status": "READY"},
            (IMAGE_PROJECT, RETIRED_FAMILY): {
                "name": "common-cu128-v20260301", "family": RETIRED_FAMILY, "status": "READY",
                "deprecated": {"state": "DEPRECATED", "replacement":
                               f"https://compute.googleapis.com{PREFIX}{IMAGE_PROJECT}/global/"
                               f"images/common-cu129-v20260901"}}}
        self.service_accounts: dict[str, dict] = {}         # email -> account
        # Resource Manager's number of every project: the storage emulator's, so that the
        # emulator's buckets belong to the project unless a test says otherwise.
        self.project_number = "1234"
        self.secrets: set[str] = set()                       # Secret Manager secret names
        self.on_iam_policy_read: Callable[[str], object] | None = None  # a test's hook
        self.iam_bindings: dict[str, set[str]] = {}          # role -> members, unconditional
        self.iam_conditional_bindings: list[dict] = []       # {"role", "members", "condition"}
        self.iam_etag = 1                                     # changes with every set
        # A new service account reaches IAM seconds after its creation: until then
        # setIamPolicy refuses bindings naming it. email -> refusals left.
        self.iam_propagation_refusals = 2
        self.not_yet_in_iam: dict[str, int] = {}
        self.caller_permissions: set[str] | None = None      # None: the caller may do anything
        self.project_quotas: list[dict] = []                 # projects.get quotas
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # ---- control from the tests ---------------------------------------------------------------
    def start(self) -> FakeCompute:
        fake = self

        class Handler(_Handler):
            state = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next_insert(self, zone: str, kind: str,
                         metric: str = "PREEMPTIBLE_NVIDIA_T4_GPUS") -> None:
        """kind: stockout, zonal_quota, regional_quota, global_quota or invalid; a quota kind
        names ``metric`` in its message, as Compute Engine does."""
        self.failures.setdefault(zone, []).append((kind, metric))

    def _find(self, name: str):
        return next(((key, instance) for key, instance in self.instances.items()
                     if key[1] == name), (None, None))

    def _record_operation(self, key, kind: str) -> None:
        zone, name = key
        project = self.instances[key].get("_project", "test-project")
        self.operation(project, zone, kind, f"{PREFIX}{project}/zones/{zone}/instances/{name}",
                       pending=False)

    def inject_faults(self, path_pattern: str, *faults: str, method: str = "GET") -> None:
        """The next ``method`` calls whose URL path matches ``path_pattern`` (a regex) fail, one
        fault each, in order: "500", "502" (the front end's HTML page) or "503" as Google answers
        them, "429" with ``Retry-After``, "drop" (the connection closes without an answer),
        "stall" (no answer until the fake stops or STALL_SECONDS pass, as a connection that
        died while the laptop slept). A failed call is recorded and does nothing."""
        assert all(fault in FAULTS for fault in faults), f"faults are {FAULTS}"
        with self.lock:
            self.faults.append((method, re.compile(path_pattern), deque(faults)))

    def _next_fault(self, method: str, path: str) -> str | None:
        for wanted, pattern, faults in self.faults:
            if faults and wanted == method and pattern.search(path):
                return faults.popleft()
        return None

    def preempt(self, name: str, stopping_polls: int | None = None) -> None:
        """Spot preemption with instanceTerminationAction DELETE: recorded at once; the VM is
        STOPPING for ``stopping_polls`` GETs of it (default ``preemption_stopping_polls``),
        then deleted."""
        polls = self.preemption_stopping_polls if stopping_polls is None else stopping_polls
        with self.lock:
            key, instance = self._find(name)
            if key:
                self._record_operation(key, "compute.instances.preempted")
                if polls:
                    instance.update(status="STOPPING", _stopping_polls=polls)
                else:
                    del self.instances[key]

    def expire(self, name: str) -> None:
        """maxRunDuration reached (action DELETE): deleted, with no preemption on record."""
        with self.lock:
            key, _ = self._find(name)
            if key:
                del self.instances[key]

    def host_maintenance(self, name: str) -> None:
        """An on-demand GPU VM (onHostMaintenance TERMINATE) stopped for host maintenance."""
        with self.lock:
            key, instance = self._find(name)
            if key:
                self._record_operation(key, "compute.instances.terminateOnHostMaintenance")
                instance["status"] = "TERMINATED"

    def start_self_deletion(self, name: str) -> None:
        """The VM asked for its own deletion: STOPPING until :meth:`finish_deletions`."""
        with self.lock:
            key, instance = self._find(name)
            if key:
                instance.update(status="STOPPING", _deleting=True)

    def finish_deletions(self) -> None:
        with self.lock:
            for key in [key for key, value in self.instances.items() if value.get("_deleting")]:
                del self.instances[key]

    def write_serial(self, name: str, text: str) -> None:
        """The VM prints ``text`` on its serial console (port 1)."""
        with self.lock:
            _, instance = self._find(name)
            instance["_serial"] = instance.get("_serial", "") + text

    def set_status(self, name: str, status: str) -> None:
        with self.lock:
            for key, instance in self.instances.items():
                if key[1] == name:
                    instance["status"] = status

    def add_service_account(self, project: str, account_id: str) -> str:
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        self.service_accounts[email] = {"email": email, "projectId": project}
        return email

    def gpus_in_use(self) -> int:
        return sum(int(accelerator.get("acceleratorCount", 0))
                   for instance in self.instances.values()
                   for accelerator in instance.get("guestAccelerators", []))

    @property
    def inserts(self) -> list[dict]:
        return [r for r in self.requests
                if r["method"] == "POST" and r["path"].endswith("/instances")]

    @property
    def deletes(self) -> list[str]:
        """Names of instances whose deletion was requested (existing or not)."""
        return [r["path"].rsplit("/", 1)[1] for r in self.requests if r["method"] == "DELETE"]

    def live(self) -> list[str]:
        """Instances that exist and are not being deleted."""
        with self.lock:
            return sorted(name for (_, name), instance in self.instances.items()
                          if not instance.get("_deleting"))

    # ---- behaviour ------------------------------------------------------------------------------
    def operation(self, project: str, zone: str, kind: str, target: str,
                  error: tuple[int, str, str] | None = None, on_done=None,
                  pending: bool = True) -> dict:
        name = f"operation-{next(self._ids)}"
        op = {"kind": "compute#operation", "id": str(next(self._ids)), "name": name,
              "zone": f"https://compute.googleapis.com/compute/v1/projects/{project}/zones/{zone}",
              "operationType": kind, "targetLink": target, "status": "DONE", "progress": 100,
              "selfLink": f"{PREFIX}{project}/zones/{zone}/operations/{name}"}
        if error:
            status, code, message = error
            op.update(error={"errors": [{"code": code, "message": message}]},
                      httpErrorStatusCode=status, httpErrorMessage={
                          503: "SERVICE UNAVAILABLE", 403: "FORBIDDEN"}.get(status, "ERROR"))
        if self.pending_polls and pending:
            op["_polls_left"] = self.pending_polls
            op["status"] = "RUNNING"
            op["_on_done"] = on_done
        elif on_done:
            on_done()
        self.operations[name] = op
        return op

    def insert(self, project: str, zone: str, body: dict):
        failures = self.failures.get(zone) or []
        kind, metric = failures.pop(0) if failures else (None, "")
        name = body.get("name", "")
        target = f"{PREFIX}{project}/zones/{zone}/instances/{name}"
        if kind in ("regional_quota", "global_quota"):
            where = "globally" if kind == "global_quota" else f"in region {zone.rsplit('-', 1)[0]}"
            message = f"Quota '{metric}' exceeded.  Limit: 0.0 {where}."
            return 403, {"error": {"code": 403, "message": message, "errors": [{
                "message": message, "domain": "usageLimits", "reason": "quotaExceeded"}]}}
        if kind == "invalid":
            return 400, {"error": {"code": 400, "message": "Invalid value for field "
                                   "'resource.machineType': 'n1-bogus'.", "errors": [{
                                       "message": "Invalid value", "domain": "global",
                                       "reason": "invalid"}]}}
        if kind == "stockout":
            return 200, self.operation(project, zone, "insert", target, (
                503, "ZONE_RESOURCE_POOL_EXHAUSTED",
                f"The zone 'projects/{project}/zones/{zone}' does not have enough resources "
                f"available to fulfill the request. Try a different zone, or try again later."))
        if kind == "zonal_quota":
            return 200, self.operation(project, zone, "insert", target, (
                403, "QUOTA_EXCEEDED", f"Quota '{metric}' exceeded. Limit: 0.0 in zone {zone}."))
        refusal = self._refusal(project, body)
        if refusal:
            return refusal
        instance = dict(body, zone=f"https://compute.googleapis.com{PREFIX}{project}/zones/{zone}",
                        status=BOOT_STATES[0], id=str(next(self._ids)), _project=project,
                        creationTimestamp=datetime.now(timezone.utc).isoformat())

        def created():
            self.instances[(zone, name)] = instance
            if self.on_insert:
                self.on_insert(project, zone, body)

        return 200, self.operation(project, zone, "insert", target, on_done=created)

    def _refusal(self, project: str, body: dict):
        """The error Compute Engine answers an insert with, or None."""
        source = body.get("disks", [{}])[0].get("initializeParams", {}).get("sourceImage", "")
        match = re.match(r"projects/([^/]+)/global/images/family/(.+)$", source)
        image = self.images.get((match.group(1), match.group(2))) if match else None
        if image is None or image.get("deprecated", {}).get("state") in ("OBSOLETE", "DELETED"):
            return _not_found(source)
        scheduling = _scheduling_refusal(body)
        if scheduling:
            return scheduling
        for account in body.get("serviceAccounts", []):
            email = account.get("email")
            if email != "default" and email not in self.service_accounts:
                return 400, {"error": {"code": 400, "message": f"The resource '{email}' of type "
                                       f"'serviceAccount' was not found.", "errors": [{
                                           "message": "serviceAccount not found",
                                           "domain": "global", "reason": "invalid"}]}}
        limits = {quota["metric"]: quota["limit"] for quota in self.project_quotas}
        wanted = sum(int(item.get("acceleratorCount", 0))
                     for item in body.get("guestAccelerators", []))
        if "GPUS_ALL_REGIONS" in limits and self.gpus_in_use() + wanted > \
                limits["GPUS_ALL_REGIONS"]:
            message = (f"Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: "
                       f"{limits['GPUS_ALL_REGIONS']:.1f} globally.")
            return 403, {"error": {"code": 403, "message": message, "errors": [{
                "message": message, "domain": "usageLimits", "reason": "quotaExceeded"}]}}
        return None


_ROUTES = [
    ("POST", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instances$"), "insert"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)$"), "get"),
    ("DELETE", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)$"), "delete"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/operations/(?P<o>[^/]+)$"), "op"),
    ("POST", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/operations/(?P<o>[^/]+)/wait$"), "op"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/aggregated/instances$"), "aggregated_instances"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/aggregated/acceleratorTypes$"), "aggregated_accelerators"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/regions/(?P<r>[^/]+)$"), "region"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/operations$"), "list_operations"),
    ("POST", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)/"
                        r"simulateMaintenanceEvent$"), "maintenance"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)/serialPort$"),
     "serial_port"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/global/images/family/(?P<f>[^/]+)$"), "family"),
    ("GET", re.compile(r"^(?P<p>[^/]+)$"), "project"),
]
# IAM (iam.googleapis.com) and Resource Manager (cloudresourcemanager.googleapis.com), v1.
_IAM_ROUTES = [
    ("GET", re.compile(r"^/v1/projects/(?P<p>[^/]+)/serviceAccounts/(?P<e>[^/:]+)$"), "get_sa"),
    ("POST", re.compile(r"^/v1/projects/(?P<p>[^/]+)/serviceAccounts$"), "create_sa"),
    ("POST", re.compile(r"^/v1/projects/(?P<p>[^/:]+):getIamPolicy$"), "get_policy"),
    ("POST", re.compile(r"^/v1/projects/(?P<p>[^/:]+):setIamPolicy$"), "set_policy"),
    ("POST", re.compile(r"^/v1/projects/(?P<p>[^/:]+):testIamPermissions$"), "test_permissions"),
    ("GET", re.compile(r"^/v1/projects/(?P<p>[^/:]+)$"), "get_project"),
    ("GET", re.compile(r"^/v1/projects/(?P<p>[^/]+)/secrets/(?P<s>[^/:]+)$"), "get_secret"),
]


def _public(payload):
    """The payload without the fake's own bookkeeping keys (``_project``, ``_deleting``...)."""
    if isinstance(payload, dict):
        return {key: _public(value) for key, value in payload.items() if not key.startswith("_")}
    if isinstance(payload, list):
        return [_public(value) for value in payload]
    return payload


def _bad_request(message: str, reason: str = "invalid"):
    return 400, {"error": {"code": 400, "message": message, "errors": [{
        "message": message, "domain": "global", "reason": reason}]}}


def _scheduling_refusal(body: dict):
    """Compute Engine's 400 for scheduling it does not allow, or None."""
    scheduling = body.get("scheduling", {})
    machine_type = body.get("machineType", "").rsplit("/", 1)[-1]
    has_gpu = bool(body.get("guestAccelerators")) or machine_type.startswith(GPU_MACHINE_PREFIXES)
    if has_gpu and scheduling.get("onHostMaintenance") != "TERMINATE":
        return _bad_request("Invalid resource usage: 'Instances with guest accelerators do not "
                            "support live migration.'.", "invalidResourceUsage")
    if scheduling.get("provisioningModel") == "SPOT" and scheduling.get("automaticRestart"):
        return _bad_request("Invalid value for field 'resource.scheduling.automaticRestart': "
                            "'true'. Spot VMs cannot be automatically restarted.")
    if scheduling.get("maxRunDuration") and not scheduling.get("instanceTerminationAction"):
        return _bad_request("Invalid value for field 'resource.scheduling.maxRunDuration': "
                            "instanceTerminationAction must be set when maxRunDuration is.")
    return None


_FAULT_ANSWERS = {
    "500": (500, "Internal error. Please try again or contact Google Support.", "backendError"),
    "503": (503, "The service is currently unavailable.", "backendError"),
    "429": (429, "Rate Limit Exceeded", "rateLimitExceeded"),
}
# What Google's front end answers when the backend is unreachable: HTML, not JSON.
_BAD_GATEWAY_PAGE = (b"<!DOCTYPE html><html lang=en><title>Error 502 (Server Error)!!1</title>"
                     b"<p><b>502.</b> <ins>That's an error.</ins><p>The server encountered a "
                     b"temporary error and could not complete your request.<p>Please try again "
                     b"in 30 seconds.</html>")


def _iam_error(code: int, status: str, message: str):
    return code, {"error": {"code": code, "message": message, "status": status}}


def _not_found(what: str):
    return 404, {"error": {"code": 404, "message": f"The resource '{what}' was not found",
                           "errors": [{"message": f"The resource '{what}' was not found",
                                       "domain": "global", "reason": "notFound"}]}}


class _Handler(BaseHTTPRequestHandler):
    state: FakeCompute

    def log_message(self, *args):  # quiet test output
        pass

    def _handle(self, method: str):
        parsed = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        fake = self.state
        status = 404
        payload: dict[str, Any] = {"error": {"code": 404, "message": f"no route {parsed.path}"}}
        with fake.lock:
            fake.requests.append({"method": method, "path": parsed.path,
                                  "query": parse_qs(parsed.query), "body": body})
            fault = fake._next_fault(method, parsed.path)
            if fault and fault != "stall":
                self._answer_fault(fault)
                return
        if fault == "stall":  # outside the lock: the other calls go on meanwhile
            if not fake.released.wait(STALL_SECONDS):
                fake.stalls_outwaited += 1  # the client waited all this while: no time-out
            self._answer_fault("drop")
            return
        with fake.lock:
            if parsed.path.startswith("/v1/projects/") and parsed.path.endswith(
                    "/services:batchEnable"):
                fake.enabled_services += (body or {}).get("serviceIds", [])
                status, payload = 200, {"name": "operations/enable-1", "done": True}
            elif any(method == m and pattern.match(parsed.path) for m, pattern, _ in _IAM_ROUTES):
                for route_method, pattern, action in _IAM_ROUTES:
                    match = pattern.match(parsed.path)
                    if route_method == method and match:
                        status, payload = getattr(self, f"_{action}")(
                            fake, **match.groupdict(), body=body, query={})
                        break
            elif parsed.path.startswith(PREFIX):
                tail = parsed.path[len(PREFIX):]
                for route_method, pattern, action in _ROUTES:
                    match = pattern.match(tail)
                    if route_method == method and match:
                        status, payload = getattr(self, f"_{action}")(
                            fake, **match.groupdict(), body=body,
                            query=parse_qs(parsed.query))
                        break
        data = json.dumps(_public(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer_fault(self, fault: str) -> None:
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "502":
            status, data, kind = 502, _BAD_GATEWAY_PAGE, "text/html; charset=UTF-8"
        else:
            status, message, reason = _FAULT_ANSWERS[fault]
            data = json.dumps({"error": {"code": status, "message": message, "errors": [{
                "message": message, "domain": "global", "reason": reason}]}}).encode()
            kind = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if fault == "429":
            self.send_header("Retry-After", str(RETRY_AFTER_SECONDS))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    # ---- actions ---------------------------------------------------------------------------------
    @staticmethod
    def _insert(fake, p, z, body, query):
        return fake.insert(p, z, body)

    @staticmethod
    def _get(fake, p, z, n, body, query):
        instance = fake.instances.get((z, n))
        if not instance:
            return _not_found(f"projects/{p}/zones/{z}/instances/{n}")
        if "_stopping_polls" in instance:  # a preempted VM's shutdown script runs
            if not instance["_stopping_polls"]:
                del fake.instances[(z, n)]
                return _not_found(f"projects/{p}/zones/{z}/instances/{n}")
            instance["_stopping_polls"] -= 1
        if instance["status"] in BOOT_STATES[:-1]:
            instance["status"] = BOOT_STATES[BOOT_STATES.index(instance["status"]) + 1]
        return 200, instance

    @staticmethod
    def _delete(fake, p, z, n, body, query):
        instance = fake.instances.get((z, n))
        if instance is None:
            return _not_found(f"projects/{p}/zones/{z}/instances/{n}")
        if instance.get("_deleting"):
            message = f"The resource 'projects/{p}/zones/{z}/instances/{n}' is not ready"
            return 400, {"error": {"code": 400, "message": message, "errors": [{
                "message": message, "domain": "global", "reason": "resourceNotReady"}]}}
        instance.update(status="STOPPING", _deleting=True)
        return 200, fake.operation(p, z, "delete", f"{PREFIX}{p}/zones/{z}/instances/{n}",
                                   on_done=lambda: fake.instances.pop((z, n), None))

    @staticmethod
    def _maintenance(fake, p, z, n, body, query):
        instance = fake.instances.get((z, n))
        if instance is None:
            return _not_found(f"projects/{p}/zones/{z}/instances/{n}")
        op = fake.operation(p, z, "simulateMaintenanceEvent",
                            f"{PREFIX}{p}/zones/{z}/instances/{n}", pending=False)
        if instance.get("scheduling", {}).get("provisioningModel") == "SPOT":
            fake.preempt(n)
        else:
            fake.host_maintenance(n)
        return 200, op

    @staticmethod
    def _serial_port(fake, p, z, n, body, query):
        """Port 1 from byte ``start`` on (the instance's ``_serial`` text), and ``next``."""
        instance = fake.instances.get((z, n))
        if instance is None:
            return _not_found(f"projects/{p}/zones/{z}/instances/{n}")
        text = instance.get("_serial", "")
        start = int((query.get("start") or ["0"])[0])
        return 200, {"kind": "compute#serialPortOutput", "contents": text[start:],
                     "start": str(start), "next": str(len(text)),
                     "selfLink": f"{PREFIX}{p}/zones/{z}/instances/{n}/serialPort"}

    @staticmethod
    def _list_operations(fake, p, z, body, query):
        wanted = re.search(r'operationType\s*=\s*"?([\w.]+)"?', (query.get("filter") or [""])[0])
        items = [op for op in fake.operations.values() if op["zone"].endswith(f"/zones/{z}")
                 and (not wanted or op["operationType"] == wanted.group(1))]
        return 200, {"kind": "compute#operationList", "items": items}

    @staticmethod
    def _family(fake, p, f, body, query):
        image = fake.images.get((p, f))
        if image is None:
            return _not_found(f"projects/{p}/global/images/family/{f}")
        return 200, dict(image, selfLink=f"{PREFIX}{p}/global/images/{image['name']}")

    @staticmethod
    def _project(fake, p, body, query):
        return 200, {"name": p, "quotas": fake.project_quotas}

    @staticmethod
    def _get_sa(fake, p, e, body, query):
        account = fake.service_accounts.get(e)
        return (200, account) if account else _not_found(f"projects/{p}/serviceAccounts/{e}")

    @staticmethod
    def _create_sa(fake, p, body, query):
        email = fake.add_service_account(p, body["accountId"])
        fake.not_yet_in_iam[email] = fake.iam_propagation_refusals
        return 200, fake.service_accounts[email]

    @staticmethod
    def _get_policy(fake, p, body, query):
        """As IAM: conditional bindings only at requestedPolicyVersion 3; below, their role
        names carry ``_withcond_`` and the condition is left out. ``on_iam_policy_read`` runs
        once the answer is made, as a change landing right after the read would."""
        version = ((body or {}).get("options") or {}).get("requestedPolicyVersion", 1)
        bindings = [{"role": role, "members": sorted(members)}
                    for role, members in sorted(fake.iam_bindings.items())]
        for index, binding in enumerate(fake.iam_conditional_bindings):
            if version >= 3:
                bindings.append(dict(binding, members=sorted(binding["members"])))
            else:
                bindings.append({"role": f"{binding['role']}_withcond_{index:04x}",
                                 "members": sorted(binding["members"])})
        policy_version = 3 if fake.iam_conditional_bindings and version >= 3 else 1
        answer = {"version": policy_version, "etag": f"BwX{fake.iam_etag}", "bindings": bindings}
        if fake.on_iam_policy_read:
            fake.on_iam_policy_read(p)
        return 200, answer

    @staticmethod
    def _set_policy(fake, p, body, query):
        policy = body["policy"]
        bindings = policy.get("bindings", [])
        if policy.get("etag") not in (None, f"BwX{fake.iam_etag}"):
            return _iam_error(409, "ABORTED", "There were concurrent policy changes. Please "
                              "retry the whole read-modify-write with exponential backoff.")
        conditional = [binding for binding in bindings if binding.get("condition")]
        if (conditional or fake.iam_conditional_bindings) and policy.get("version") != 3:
            return _iam_error(400, "INVALID_ARGUMENT", "Policy has conditional role bindings: "
                              "setIamPolicy needs policy version 3.")
        if any("_withcond_" in binding["role"] for binding in bindings):
            return _iam_error(400, "INVALID_ARGUMENT", "Role names with _withcond_ come from a "
                              "policy read below version 3 and cannot be set.")
        for member in {member for binding in bindings for member in binding["members"]}:
            email = member.removeprefix("serviceAccount:")
            if fake.not_yet_in_iam.get(email):
                fake.not_yet_in_iam[email] -= 1
                return _iam_error(400, "INVALID_ARGUMENT",
                                  f"Service account {email} does not exist.")
        fake.iam_bindings = {binding["role"]: set(binding["members"])
                             for binding in bindings if not binding.get("condition")}
        fake.iam_conditional_bindings = [dict(binding, members=set(binding["members"]))
                                         for binding in conditional]
        fake.iam_etag += 1
        return _Handler._get_policy(fake, p, {"options": {"requestedPolicyVersion": 3}}, query)

    @staticmethod
    def _get_project(fake, p, body, query):
        return 200, {"projectId": p, "projectNumber": fake.project_number,
                     "lifecycleState": "ACTIVE"}

    @staticmethod
    def _get_secret(fake, p, s, body, query):
        if s not in fake.secrets:
            return _not_found(f"projects/{p}/secrets/{s}")
        return 200, {"name": f"projects/{fake.project_number}/secrets/{s}",
                     "replication": {"automatic": {}}}

    @staticmethod
    def _test_permissions(fake, p, body, query):
        asked = body.get("permissions", [])
        granted = [permission for permission in asked if fake.caller_permissions is None
                   or permission in fake.caller_permissions]
        return 200, {"permissions": granted} if granted else {}

    @staticmethod
    def _op(fake, p, z, o, body, query):
        op = fake.operations.get(o)
        if op is None:
            return _not_found(f"projects/{p}/zones/{z}/operations/{o}")
        if fake.on_operation_poll:
            fake.on_operation_poll(o)
        if op.get("_polls_left"):
            op["_polls_left"] -= 1
            if not op["_polls_left"]:
                op["status"] = "DONE"
                callback = op.pop("_on_done", None)
                if callback:
                    callback()
        return 200, op

    @staticmethod
    def _aggregated_instances(fake, p, body, query):
        items: dict[str, dict] = {}
        for (zone, _), instance in sorted(fake.instances.items()):
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(instance)
        return 200, {"kind": "compute#instanceAggregatedList", "items": items}

    @staticmethod
    def _aggregated_accelerators(fake, p, body, query):
        items: dict[str, dict] = {}
        for gpu, zones in fake.accelerators.items():
            for zone in zones:
                items.setdefault(f"zones/{zone}", {"acceleratorTypes": []})[
                    "acceleratorTypes"].append({"name": gpu, "zone": zone,
                                                "maximumCardsPerInstance": 4})
        return 200, {"items": items}

    @staticmethod
    def _region(fake, p, r, body, query):
        return 200, {"name": r, "status": "UP", "quotas": fake.quotas.get(r, [])}
