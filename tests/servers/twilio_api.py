"""A local HTTP stand-in for Twilio's REST API (Messages only), on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class StandIn:
    """Records every request; answers like Twilio's Messages resource, or with ``fail_status``."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_status: int | None = None
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> StandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                stand_in.requests.append({"path": self.path, "form": form,
                                          "auth": self.headers.get("Authorization", "")})
                if stand_in.fail_status:
                    body = {"code": 20500, "message": "Internal error", "status": 500}
                    self._send(stand_in.fail_status, body)
                    return
                account = self.path.split("/")[3]
                if "/Recordings" in self.path:
                    # Create (…/Calls/CA…/Recordings.json) or update (…/Recordings/RE….json).
                    sid = (self.path.rsplit("/", 1)[1].removesuffix(".json")
                           if self.path.endswith(".json") and "/Recordings/" in self.path
                           else "RE" + "1" * 32)
                    self._send(201, {"sid": sid, "account_sid": account,
                                     "status": form.get("Status", "in-progress")})
                    return
                self._send(201, {"sid": "SM" + "0" * 32, "account_sid": account,
                                 "to": form.get("To"), "from": form.get("From"),
                                 "body": form.get("Body"), "status": "queued"})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
