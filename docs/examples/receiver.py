"""A webhook receiver to try jobs against: answers every request 200 and prints what it got.

    python3 docs/examples/receiver.py          # listens on 127.0.0.1:9000
    python3 docs/examples/receiver.py 9001     # another port

Standard library only, so it runs on any machine with Python 3. It does not verify signatures, as
a real receiver must: the README's Security section shows how to check `webhook-signature`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(BaseHTTPRequestHandler):
    """Reads the request, prints one line for it, answers `200 {"received": true}`."""

    protocol_version = "HTTP/1.1"

    def _receive(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        now = datetime.now(UTC).strftime("%H:%M:%S")
        message = self.headers.get("webhook-id", "-")
        print(f"{now} {self.command} {self.path} webhook-id={message} {body[:200]}", flush=True)  # noqa: T201
        reply = b'{"received": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _receive  # noqa: N815

    def log_message(self, *_: object) -> None:
        """The line printed above says it all."""


def main() -> None:
    """Serve on 127.0.0.1 at the port given (9000 by default) until Ctrl-C."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    print(f"receiving on http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)  # noqa: T201
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
