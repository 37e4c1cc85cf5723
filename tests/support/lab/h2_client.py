"""A raw HTTP/2 client for the proxy tests, on Python's `h2`: it sends
exactly the frames and header bytes it is told to (no validation or
normalisation of outbound headers), so a test can send a `:path` no
well-behaved client would, stall a request body, or hold a connection open
doing nothing but PINGs. It reads one JSON plan from argv[1] and prints one
JSON report on stdout.

Plan keys: `host`, `port`, `source` (address to bind), `tls` (bool), `ca`
(CA file), `sni`, `mode` and the mode's own keys:

* `requests`: `requests` is a list of `{headers: [[name, value], ...],
  body?: str}`, each sent on its own stream, one after another; the report
  has `results`, one `{status, headers, body, reset}` each (`reset`: the
  stream's RST_STREAM error code, or `"connection"` if the connection ended).
* `stall_body`: `headers` (without END_STREAM), then `data` (a string) and
  nothing more; waits up to `wait` seconds. The report has `status`, `body`,
  `seconds` (until the answer ended), `reset` and `closed`.
* `idle`: the preface and SETTINGS, then only a PING every `ping_every`
  seconds (and the automatic PING acks) until the server ends the
  connection or `wait` seconds pass. The report has `closed`, `goaway` and
  `seconds`.
"""
import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events


def connect(plan):
    family = socket.AF_INET6 if ":" in plan["host"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((plan["source"], 0))
    sock.settimeout(plan.get("connect_timeout", 5))
    sock.connect((plan["host"], plan["port"]))
    if plan.get("tls", True):
        context = ssl.create_default_context(cafile=plan["ca"])
        context.set_alpn_protocols(["h2"])
        sock = context.wrap_socket(sock, server_hostname=plan.get("sni", "localhost"))
        if sock.selected_alpn_protocol() != "h2":
            raise SystemExit("the server did not select h2: %r" % sock.selected_alpn_protocol())
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


class Stream:
    def __init__(self):
        self.status = None
        self.headers = []
        self.body = b""
        self.ended = False
        self.reset = None


def pump(sock, conn, streams, deadline):
    """Reads once (until `deadline`) and feeds the events to `streams`.
    Returns False when the connection is over (EOF, error or GOAWAY)."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        data = sock.recv(65536)
    except socket.timeout:
        return True
    except (ConnectionError, ssl.SSLError, OSError):
        return False
    if not data:
        return False
    alive = True
    for event in conn.receive_data(data):
        stream = streams.get(getattr(event, "stream_id", None))
        if isinstance(event, h2.events.ResponseReceived) and stream:
            stream.headers = [[k, v] for k, v in event.headers]
            stream.status = int(dict(event.headers).get(":status", "0"))
        elif isinstance(event, h2.events.DataReceived):
            if stream:
                stream.body += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and stream:
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream:
            stream.reset = int(event.error_code)
            stream.ended = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            alive = False
    try:
        sock.sendall(conn.data_to_send())
    except OSError:
        return False
    return alive


def report_stream(stream):
    return {
        "status": stream.status,
        "headers": stream.headers,
        "body": stream.body.decode("utf-8", "replace"),
        "reset": stream.reset,
    }


def send_headers(sock, conn, headers, end_stream):
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [(k, v) for k, v in headers], end_stream=end_stream)
    sock.sendall(conn.data_to_send())
    return stream_id


def requests(plan):
    sock, conn = connect(plan)
    results = []
    alive = True
    for request in plan["requests"]:
        if not alive:
            results.append({"status": None, "headers": [], "body": "", "reset": "connection"})
            continue
        body = request.get("body")
        stream_id = send_headers(sock, conn, request["headers"], body is None)
        if body is not None:
            conn.send_data(stream_id, body.encode(), end_stream=True)
            sock.sendall(conn.data_to_send())
        stream = Stream()
        streams = {stream_id: stream}
        deadline = time.monotonic() + plan.get("wait", 10)
        while not stream.ended and alive and time.monotonic() < deadline:
            alive = pump(sock, conn, streams, deadline)
        result = report_stream(stream)
        if not stream.ended and result["reset"] is None:
            result["reset"] = "connection" if not alive else "timeout"
        results.append(result)
    return {"results": results}


def stall_body(plan):
    sock, conn = connect(plan)
    started = time.monotonic()
    stream_id = send_headers(sock, conn, plan["headers"], False)
    conn.send_data(stream_id, plan["data"].encode(), end_stream=False)
    sock.sendall(conn.data_to_send())
    stream = Stream()
    deadline = started + plan["wait"]
    alive = True
    while not stream.ended and alive and time.monotonic() < deadline:
        alive = pump(sock, conn, {stream_id: stream}, deadline)
    result = report_stream(stream)
    result["seconds"] = time.monotonic() - started
    result["closed"] = not alive
    result["ended"] = stream.ended
    return result


def idle(plan):
    sock, conn = connect(plan)
    started = time.monotonic()
    deadline = started + plan["wait"]
    next_ping = started
    goaway = False
    closed = False
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_ping:
            conn.ping(b"xdpgate!")
            try:
                sock.sendall(conn.data_to_send())
            except OSError:
                closed = True
                break
            next_ping = now + plan["ping_every"]
        sock.settimeout(max(0.01, min(next_ping, deadline) - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            closed = True
            break
        if not data:
            closed = True
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ConnectionTerminated):
                goaway = True
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            closed = True
            break
        if goaway:
            # A GOAWAY is the end; wait briefly for the close itself.
            sock.settimeout(2)
            try:
                while sock.recv(65536):
                    pass
            except (OSError, socket.timeout):
                pass
            closed = True
            break
    return {"closed": closed, "goaway": goaway, "seconds": time.monotonic() - started}


def main():
    plan = json.loads(sys.argv[1])
    mode = {"requests": requests, "stall_body": stall_body, "idle": idle}[plan["mode"]]
    print(json.dumps(mode(plan)))


if __name__ == "__main__":
    main()
