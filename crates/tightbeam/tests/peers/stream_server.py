"""A streaming-HTTP feed for the `http_stream` tests: envelopes as NDJSON lines or
server-sent events, with DATA, PING and SYNC, scripted per connection.

    python3 stream_server.py PORT FORMAT TOTAL [steady]

`GET /stream` streams the messages n = start..TOTAL-1, where start is the marker the client
resumes from (the `Last-Event-ID` header, else the last marker it POSTed to /sync, as a feed
that saves its clients' places would, else 0), a SYNC whose marker is the next n after
every 10 messages. The first connection goes silent after 50 messages (no PING: the client
must notice and reconnect); the second drops the connection after 100; later ones send the
rest (after two envelopes that cannot be read: text that is not JSON, and an unknown type)
and then PING every 0.5 s. With `steady`, every connection sends the rest. `POST /sync`
records a marker. `GET /state` tells what was recorded: the marker each connection resumed
from (`connections`), its `since` query parameter (`since`), and the markers synced, in order.
"""

import json
import sys
import threading
import time
from urllib.parse import parse_qs, urlparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, FORMAT, TOTAL = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
STEADY = len(sys.argv) > 4 and sys.argv[4] == "steady"
STATE = {"connections": [], "since": [], "synced": []}
LOCK = threading.Lock()


def envelope(kind, **fields):
    return dict(envelopeType=kind, **fields)


class Feed(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_envelope(self, value, event_id=None):
        text = json.dumps(value)
        if FORMAT == "sse":
            frame = ""
            if event_id is not None:
                frame += f"id: {event_id}\n"
            frame += f"data: {text}\n\n"
        else:
            frame = text + "\n"
        self.wfile.write(frame.encode())
        self.wfile.flush()

    def send_raw(self, text):
        frame = f"data: {text}\n\n" if FORMAT == "sse" else text + "\n"
        self.wfile.write(frame.encode())
        self.wfile.flush()

    def do_GET(self):
        if self.path == "/state":
            with LOCK:
                body = json.dumps(STATE).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        resume = self.headers.get("Last-Event-ID")
        with LOCK:
            if resume is None and STATE["synced"]:
                resume = STATE["synced"][-1]
            STATE["connections"].append(resume)
            query = parse_qs(urlparse(self.path).query)
            STATE["since"].append(query.get("since", [None])[0])
            connection = len(STATE["connections"])
        start = int(resume[1:]) if resume else 0
        self.send_response(200)
        kind = "text/event-stream" if FORMAT == "sse" else "application/x-ndjson"
        self.send_header("content-type", kind)
        self.send_header("connection", "close")
        self.end_headers()
        stop = TOTAL if STEADY else {1: 50, 2: 100}.get(connection, TOTAL)
        try:
            self.send_envelope(envelope("PING"))
            if connection == 3 and not STEADY:
                # Envelopes that cannot be read: the client reports them and goes on.
                self.send_raw("this is not JSON")
                self.send_envelope(envelope("HELLO"))
            for n in range(start, max(start, stop)):
                message = {"n": n, "kind": "temp"}
                self.send_envelope(envelope("DATA", pipelineMessage=message))
                if (n + 1) % 10 == 0:
                    marker = f"m{n + 1}"
                    self.send_envelope(envelope("SYNC", syncMarker=marker), event_id=marker)
            if connection == 1 and not STEADY:
                time.sleep(3600)  # silent: no PING
            elif connection == 2 and not STEADY:
                return  # the connection drops
            while True:
                time.sleep(0.5)
                self.send_envelope(envelope("PING"))
        except (BrokenPipeError, ConnectionResetError):
            return

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with LOCK:
            STATE["synced"].append(body.get("syncMarker"))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", PORT), Feed)
server.daemon_threads = True
print("listening", flush=True)
server.serve_forever()
