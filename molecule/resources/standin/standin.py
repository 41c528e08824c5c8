"""Stand-in for a Deephaven web_api_service or query worker in molecule scenarios.

Answers every request with JSON naming this server and echoing the method, path and headers,
so a test can tell which backend Envoy picked and what it forwarded. A websocket upgrade is
accepted and every text message is echoed back as "<name>: <message>".
HTTP/1.1 needs only the standard library. Cleartext HTTP/2 (prior knowledge, what Envoy sends
when the client spoke HTTP/2, like a real worker's gRPC) is served when the pure-Python `h2`
package is importable.
"""

import argparse
import base64
import hashlib
import json
import socket
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import h2.config
    import h2.connection
    import h2.events
except ImportError:  # HTTP/1.1 only
    h2 = None

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def answer(name: str, method: str, path: str, headers: dict, body: bytes) -> bytes:
    return json.dumps(
        {
            "server": name,
            "method": method,
            "path": path,
            "headers": headers,
            "body": body.decode(errors="replace"),
        }
    ).encode()


def websocket_accept(key: str) -> str:
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def read_frame(stream) -> tuple[int, bytes] | None:
    """One client frame as (opcode, payload); None when the peer went away."""
    header = stream.read(2)
    if len(header) < 2:
        return None
    opcode, length = header[0] & 0x0F, header[1] & 0x7F
    masked = header[1] & 0x80
    if length == 126:
        (length,) = struct.unpack("!H", stream.read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", stream.read(8))
    mask = stream.read(4) if masked else b"\0\0\0\0"
    payload = stream.read(length)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def write_frame(stream, opcode: int, payload: bytes) -> None:
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    stream.write(header + payload)
    stream.flush()


class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dhops-standin/1"
    name = "standin"

    def handle(self) -> None:
        if h2 is not None and self.starts_with_http2_preface():
            self.serve_http2()
        else:
            super().handle()

    def starts_with_http2_preface(self) -> bool:
        seen = b""
        while len(seen) < len(HTTP2_PREFACE):
            seen = self.request.recv(len(HTTP2_PREFACE), socket.MSG_PEEK)
            if not seen or not HTTP2_PREFACE.startswith(seen):
                return False
        return True

    def serve_http2(self) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        requests: dict[int, tuple[dict, bytearray]] = {}
        while data := self.request.recv(65535):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                    requests[event.stream_id] = (headers, bytearray())
                elif isinstance(event, h2.events.DataReceived):
                    requests[event.stream_id][1].extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    headers, body = requests.pop(event.stream_id)
                    pseudo = {k: headers.pop(k) for k in list(headers) if k.startswith(":")}
                    reply = answer(self.name, pseudo[":method"], pseudo[":path"], headers, body)
                    response_headers = [
                        (":status", "200"),
                        ("content-type", "application/json"),
                        ("content-length", str(len(reply))),
                    ]
                    conn.send_headers(event.stream_id, response_headers)
                    conn.send_data(event.stream_id, reply, end_stream=True)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.request.sendall(conn.data_to_send())
                    return
            self.request.sendall(conn.data_to_send())

    def handle_any(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.serve_websocket()
            return
        length = int(self.headers.get("Content-Length") or 0)
        request_body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = answer(self.name, self.command, self.path, headers, request_body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any

    def serve_websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if not key:
            self.send_error(400, "Sec-WebSocket-Key missing")
            return
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocket_accept(key))
        self.end_headers()
        self.wfile.flush()
        while (frame := read_frame(self.rfile)) is not None:
            opcode, payload = frame
            if opcode == OPCODE_CLOSE:
                write_frame(self.wfile, OPCODE_CLOSE, payload[:2])
                break
            if opcode == OPCODE_PING:
                write_frame(self.wfile, OPCODE_PONG, payload)
            elif opcode == OPCODE_TEXT:
                write_frame(self.wfile, OPCODE_TEXT, f"{self.name}: ".encode() + payload)
        self.close_connection = True

    def log_message(self, format, *args):
        pass  # journald would otherwise hold one line per test request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="name reported in every answer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args()
    handler = type("Handler", (StandinHandler,), {"name": args.name})
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((args.bind, args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
