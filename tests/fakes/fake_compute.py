"""A fake Compute Engine REST endpoint on 127.0.0.1 for the real google-cloud-compute client.

It implements the paths the cloud code uses (instances insert / get / delete / aggregated list,
zone operations get / wait, aggregated accelerator types, regions get), records every request,
and simulates operations, spot preemption, stockouts and quota errors.

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
from urllib.parse import parse_qs, urlparse

PREFIX = "/compute/v1/projects/"
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
        self.enabled_services: list[str] = []               # Service Usage batchEnable
        self.pending_polls = 0                               # operations RUNNING for N polls
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # ---- control from the tests ---------------------------------------------------------------
    def start(self) -> "FakeCompute":
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
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next_insert(self, zone: str, kind: str) -> None:
        """kind: stockout, zonal_quota, regional_quota or invalid."""
        self.failures.setdefault(zone, []).append(kind)

    def preempt(self, name: str) -> None:
        """Spot preemption with instanceTerminationAction DELETE: the instance disappears."""
        with self.lock:
            for key in [key for key in self.instances if key[1] == name]:
                del self.instances[key]
                self.requests.append({"method": "PREEMPT", "path": name, "query": {},
                                      "body": None})

    def set_status(self, name: str, status: str) -> None:
        with self.lock:
            for key, instance in self.instances.items():
                if key[1] == name:
                    instance["status"] = status

    @property
    def inserts(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"].endswith("/instances")]

    @property
    def deletes(self) -> list[str]:
        """Names of instances whose deletion was requested (existing or not)."""
        return [r["path"].rsplit("/", 1)[1] for r in self.requests if r["method"] == "DELETE"]

    def live(self) -> list[str]:
        with self.lock:
            return sorted(name for _, name in self.instances)

    # ---- behaviour ------------------------------------------------------------------------------
    def operation(self, project: str, zone: str, kind: str, target: str,
                  error: tuple[int, str, str] | None = None) -> dict:
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
        if self.pending_polls:
            op["_polls_left"] = self.pending_polls
            op["status"] = "RUNNING"
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
        instance = dict(body, zone=f"https://compute.googleapis.com{PREFIX}{project}/zones/{zone}",
                        status="RUNNING", id=str(next(self._ids)),
                        creationTimestamp=datetime.now(timezone.utc).isoformat())
        self.instances[(zone, name)] = instance
        op = self.operation(project, zone, "insert", target)
        if self.on_insert:
            self.on_insert(project, zone, body)
        return 200, op


_ROUTES = [
    ("POST", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instances$"), "insert"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)$"), "get"),
    ("DELETE", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/instances/(?P<n>[^/]+)$"), "delete"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/operations/(?P<o>[^/]+)$"), "op"),
    ("POST", re.compile(r"^(?P<p>[^/]+)/zones/(?P<z>[^/]+)/operations/(?P<o>[^/]+)/wait$"), "op"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/aggregated/instances$"), "aggregated_instances"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/aggregated/acceleratorTypes$"), "aggregated_accelerators"),
    ("GET", re.compile(r"^(?P<p>[^/]+)/regions/(?P<r>[^/]+)$"), "region"),
]


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
        status, payload = 404, {"error": {"code": 404, "message": f"no route {parsed.path}"}}
        with fake.lock:
            fake.requests.append({"method": method, "path": parsed.path,
                                  "query": parse_qs(parsed.query), "body": body})
            if parsed.path.startswith("/v1/projects/") and parsed.path.endswith(
                    "/services:batchEnable"):
                fake.enabled_services += (body or {}).get("serviceIds", [])
                status, payload = 200, {"name": "operations/enable-1", "done": True}
            elif parsed.path.startswith(PREFIX):
                tail = parsed.path[len(PREFIX):]
                for route_method, pattern, action in _ROUTES:
                    match = pattern.match(tail)
                    if route_method == method and match:
                        status, payload = getattr(self, f"_{action}")(fake, **match.groupdict(),
                                                                      body=body)
                        break
        data = json.dumps(payload).encode()
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
    def _insert(fake, p, z, body):
        return fake.insert(p, z, body)

    @staticmethod
    def _get(fake, p, z, n, body):
        instance = fake.instances.get((z, n))
        return (200, instance) if instance else _not_found(f"projects/{p}/zones/{z}/instances/{n}")

    @staticmethod
    def _delete(fake, p, z, n, body):
        if (z, n) not in fake.instances:
            return _not_found(f"projects/{p}/zones/{z}/instances/{n}")
        del fake.instances[(z, n)]
        return 200, fake.operation(p, z, "delete", f"{PREFIX}{p}/zones/{z}/instances/{n}")

    @staticmethod
    def _op(fake, p, z, o, body):
        op = fake.operations.get(o)
        if op is None:
            return _not_found(f"projects/{p}/zones/{z}/operations/{o}")
        if op.get("_polls_left"):
            op["_polls_left"] -= 1
            if not op["_polls_left"]:
                op["status"] = "DONE"
        return 200, {key: value for key, value in op.items() if not key.startswith("_")}

    @staticmethod
    def _aggregated_instances(fake, p, body):
        items: dict[str, dict] = {}
        for (zone, _), instance in sorted(fake.instances.items()):
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(instance)
        return 200, {"kind": "compute#instanceAggregatedList", "items": items}

    @staticmethod
    def _aggregated_accelerators(fake, p, body):
        items: dict[str, dict] = {}
        for gpu, zones in fake.accelerators.items():
            for zone in zones:
                items.setdefault(f"zones/{zone}", {"acceleratorTypes": []})[
                    "acceleratorTypes"].append({"name": gpu, "zone": zone,
                                                "maximumCardsPerInstance": 4})
        return 200, {"items": items}

    @staticmethod
    def _region(fake, p, r, body):
        return 200, {"name": r, "status": "UP", "quotas": fake.quotas.get(r, [])}
