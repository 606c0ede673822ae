"""A webhook subscriber for the integration tests: a stdlib HTTP server on 127.0.0.1.

    python webhook_subscriber.py --port P --out FILE --secret S [--fail-first N] [--delay SECONDS]

Every PUT is verified with ``dj_cqrs.webhooks.verify`` (no Django needed) and recorded as one
JSON line in FILE: ``{"event_id", "status", "verified", "body"}``. The first N requests are
answered 500; each answer waits ``--delay`` seconds (a slow subscriber). Start it late or kill it
to have a subscriber that is down.
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
import time

from dj_cqrs.webhooks import SignatureError, verify


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    lock = threading.Lock()
    seen = {"requests": 0}
    out = open(args.out, "a", encoding="utf-8")  # noqa: SIM115 - open for the server's life

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                verified = verify(body, self.headers, args.secret)
            except SignatureError as exc:
                verified = False
                self.log_error("signature: %s", exc)
            with lock:
                seen["requests"] += 1
                status = 500 if seen["requests"] <= args.fail_first else 200
            if not verified:
                status = 401
            time.sleep(args.delay)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            record = {
                "event_id": self.headers.get("X-CQRS-Event-Id"),
                "status": status,
                "verified": verified,
                "content_type": self.headers.get("Content-Type"),
                "method": self.command,
                "body": json.loads(body),
            }
            with lock:  # recorded once answered: a line with status 200 was acknowledged
                out.write(json.dumps(record) + "\n")
                out.flush()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
