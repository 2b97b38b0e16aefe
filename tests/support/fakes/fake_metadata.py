"""A fake GCE metadata server on 127.0.0.1: ``instance/preempted`` answers FALSE until
:meth:`FakeMetadata.announce_preemption`, then TRUE, like the ~30 s notice of a spot VM;
``instance/service-accounts/default/token`` hands out :attr:`FakeMetadata.token` as the real
server hands out the VM's access token.

>>> metadata = FakeMetadata().start()
>>> metadata.host            # for GCE_METADATA_HOST  # doctest: +SKIP
>>> metadata.stop()
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
PREEMPTED_PATH = "/computeMetadata/v1/instance/preempted"


class FakeMetadata:
    def __init__(self):
        self.preempted = False
        self.requests = 0
        self.token = f"ya29.fake-{secrets.token_hex(16)}"  # unique: a test can look for leaks
        self.token_requests = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> FakeMetadata:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests += 1
                if self.headers.get("Metadata-Flavor") != "Google":
                    self.send_response(403)  # the real server refuses requests without it
                    self.end_headers()
                    return
                path = self.path.split("?")[0]
                if path == TOKEN_PATH:
                    fake.token_requests += 1
                    data = json.dumps({"access_token": fake.token, "expires_in": 3599,
                                       "token_type": "Bearer"}).encode()
                elif path == PREEMPTED_PATH:
                    data = b"TRUE" if fake.preempted else b"FALSE"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def announce_preemption(self) -> None:
        self.preempted = True

    @property
    def host(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
