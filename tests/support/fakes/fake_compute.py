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

>>> fake = FakeCompute().start()
>>> fake.fail_next_insert("us-central1-a", "stockout")
>>> # Compute(endpoint=fake.url) ... fake.inserts, fake.deletes
>>> fake.stop()
"""

from __future__ import annotations

import itertools
import json
import re
import threading
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


class FakeCompute:
    """State of the fake: instances, operations, recorded requests and scripted failures."""

    def __init__(self):
        self.lock = threading.RLock()  # hooks may call back in
        self.instances: dict[tuple[str, str], dict] = {}    # (zone, name) -> instance JSON
        self.operations: dict[str, dict] = {}
        self.requests: list[dict] = []                      # {"method", "path", "query", "body"}
        self.failures: dict[str, list[str]] = {}            # zone -> kinds for the next inserts
        self.accelerators = {gpu: list(zones) for gpu, zones in DEFAULT_ACCELERATORS.items()}
        self.quotas: dict[str, list[dict]] = {}             # region -> quota entries
        self.on_insert = None                               # callback(project, zone, body)
        self.on_operation_poll = None                       # callback(operation name)
        self.enabled_services: list[str] = []               # Service Usage batchEnable
        self.pending_polls = 0                               # operations RUNNING for N polls
        self.images = {                                      # (project, family) -> image
            (IMAGE_PROJECT, CURRENT_FAMILY): {"name": "common-cu129-v20260901",
                                              "family": CURRENT_FAMILY, "status": "READY"},
            (IMAGE_PROJECT, RETIRED_FAMILY): {
                "name": "common-cu128-v20260301", "family": RETIRED_FAMILY, "status": "READY",
                "deprecated": {"state": "DEPRECATED", "replacement":
                               f"https://compute.googleapis.com{PREFIX}{IMAGE_PROJECT}/global/"
                               f"images/common-cu129-v20260901"}}}
        self.service_accounts: dict[str, dict] = {}         # email -> account
        self.iam_bindings: dict[str, set[str]] = {}          # role -> members
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
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next_insert(self, zone: str, kind: str) -> None:
        """kind: stockout, zonal_quota, regional_quota or invalid."""
        self.failures.setdefault(zone, []).append(kind)

    def _find(self, name: str):
        return next(((key, instance) for key, instance in self.instances.items()
                     if key[1] == name), (None, None))

    def _record_operation(self, key, kind: str) -> None:
        zone, name = key
        project = self.instances[key].get("_project", "test-project")
        self.operation(project, zone, kind, f"{PREFIX}{project}/zones/{zone}/instances/{name}",
                       pending=False)

    def preempt(self, name: str) -> None:
        """Spot preemption with instanceTerminationAction DELETE: recorded, then deleted."""
        with self.lock:
            key, _ = self._find(name)
            if key:
                self._record_operation(key, "compute.instances.preempted")
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
        kind = failures.pop(0) if failures else None
        name = body.get("name", "")
        target = f"{PREFIX}{project}/zones/{zone}/instances/{name}"
        if kind == "regional_quota":
            region = zone.rsplit("-", 1)[0]
            return 403, {"error": {"code": 403, "message":
                                   f"Quota 'PREEMPTIBLE_NVIDIA_T4_GPUS' exceeded. Limit: 0.0 in "
                                   f"region {region}.", "errors": [{
                                       "message": f"Quota 'PREEMPTIBLE_NVIDIA_T4_GPUS' exceeded. "
                                                  f"Limit: 0.0 in region {region}.",
                                       "domain": "usageLimits", "reason": "quotaExceeded"}]}}
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
                403, "QUOTA_EXCEEDED", f"Quota 'PREEMPTIBLE_NVIDIA_T4_GPUS' exceeded. Limit: "
                f"0.0 in zone {zone}."))
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
]


def _public(payload):
    """The payload without the fake's own bookkeeping keys (``_project``, ``_deleting``...)."""
    if isinstance(payload, dict):
        return {key: _public(value) for key, value in payload.items() if not key.startswith("_")}
    if isinstance(payload, list):
        return [_public(value) for value in payload]
    return payload


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
        return 200, fake.service_accounts[email]

    @staticmethod
    def _get_policy(fake, p, body, query):
        return 200, {"version": 1, "etag": "BwX", "bindings": [
            {"role": role, "members": sorted(members)}
            for role, members in sorted(fake.iam_bindings.items())]}

    @staticmethod
    def _set_policy(fake, p, body, query):
        fake.iam_bindings = {binding["role"]: set(binding["members"])
                             for binding in body["policy"]["bindings"]}
        return _Handler._get_policy(fake, p, None, query)

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
