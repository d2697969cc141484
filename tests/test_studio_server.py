"""microgpt studio's server under what a real server meets: malformed and hostile bodies,
clients that hang up or stall, fifty event streams at once, and a long draw of samples
while training streams.

Oracles: the HTTP status and the body the server answers, whether the server's stderr holds
a traceback, whether the connection is closed, and timestamps taken by the client. The two
latency bounds are the issue's (every stream's first event within 1 s; no gap over 200 ms
between training events while a hard sample request runs): the server runs in its own
process (`microgpt studio`, as a user starts it), training is paced at 20 steps a second so
that events are frequent, and the measured quantity is the largest gap, which a loaded
machine stretches far less than a blocked lock would (the old server held the engine's lock
for a whole draw: seconds).
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest
from test_studio_api import TINY, Client, serving, studio_args

from microgpt.studio import server as studio_server


@pytest.fixture
def serve():
    with serving() as start:
        yield start


# --- what a request may carry ------------------------------------------------------------------


def raw_post(client: Client, path: str, raw: bytes):
    status, _, payload = client.request(
        "POST", path, raw_body=raw, headers={"Content-Type": "application/json"}
    )
    return status, json.loads(payload)


def test_malformed_and_deep_json_get_400_and_no_traceback(serve, names_path, capfd):
    client = serve(studio_args(names_path, "--engine", "ref"))
    endpoints = ["/api/train", "/api/pace", "/api/continue", "/api/settings", "/api/inspect",
                 "/api/graph", "/api/sample", "/api/sample/cancel"]  # fmt: skip
    bodies = {
        b"[" * 30_000 + b"]" * 30_000: "nests too deeply",  # a RecursionError in json
        b'{"text": {"a": {"b": 1}}}': "nests too deeply",
        b'{"a": "[[[[[[", "b": "{{{{"}': "unknown field",  # brackets in strings do not count
        b"{": "not JSON",
        b"\xff\xfe": "not JSON",
        b'{"temperature": NaN}': "not JSON",
        b'{"count": Infinity}': "not JSON",
        b"[1, 2]": "JSON object",
        b"42": "JSON object",
    }
    for path in endpoints:
        for raw, why in bodies.items():
            status, body = raw_post(client, path, raw)
            assert status == 400 and why in body["error"], (path, raw[:20], body)
    status, _, _ = client.get("/api/state")
    assert status == 200
    assert "Traceback" not in capfd.readouterr().err


def test_every_field_is_strict(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    bad = [
        ("/api/sample", {"novel": "yes"}, "novel only must be true or false"),
        ("/api/sample", {"top_k": -5}, "top-k must be between 1 and"),
        ("/api/sample", {"top_k": True}, "top-k must be a number"),
        ("/api/sample", {"prompt": "a" * 1000}, "prompt must be at most 32 characters"),
        ("/api/sample", {"prompt": "a" * 33}, "prompt must be at most 32 characters"),
        ("/api/sample", {"count": 2.5}, "count must be a whole number"),
        ("/api/sample", {"count": 0}, "count must be between 1 and 200"),
        ("/api/sample", {"temperature": "1"}, "temperature must be a number"),
        ("/api/sample", {"seed": -1}, "seed must be between"),
        ("/api/sample", {"min_length": 20}, "min length 20 cannot be reached"),
        ("/api/sample", {"min_length": 5, "max_length": 3}, "max length 3 is below"),
        ("/api/sample", {"prompt": "emma", "max_length": 3}, "shorter than the prompt"),
        ("/api/sample", {"prompt": "É"}, "not in the model's vocabulary"),
        ("/api/sample", {"cout": 3}, "unknown field 'cout'"),
        ("/api/inspect", {"text": "a" * 65}, "word must be at most 64 characters"),
        ("/api/inspect", {"temperature": 0}, "temperature must be between"),
        ("/api/graph", {"position": -1}, "position must be between"),
        ("/api/graph", {"focus": "3"}, "node must be a number"),
        ("/api/train", {"action": "go"}, "action must be one of start, stop, step, reset"),
        ("/api/train", {}, "action is required"),
        ("/api/pace", {"steps_per_s": 0}, "speed (steps per second) must be between 1"),
        ("/api/continue", {"steps": 0}, "more steps must be between 1"),
        ("/api/settings", {"n_layer": 0}, "layers (n_layer) must be between 1"),
        ("/api/settings", {"learning_rate": "0.1"}, "learning rate must be a number"),
        ("/api/settings", {"n_embd": 10, "n_head": 4}, "must be a multiple of heads"),
        ("/api/sample/cancel", {"now": True}, "unknown field 'now'"),
    ]
    for path, body, message in bad:
        status, answer = client.post(path, body)
        assert status == 400 and message in answer["error"], (path, body, answer)
        assert "--" not in answer["error"], "the page has no command-line flags"
    assert not client.server.session.running and client.server.session.run_id == 1
    ok = [("/api/sample", {"prompt": "a" * 32, "count": 1, "top_k": None, "novel": False}),
          ("/api/sample", {"count": 2.0, "top_k": 3}),  # 2.0 is 2: JavaScript's numbers
          ("/api/pace", {"steps_per_s": None}), ("/api/inspect", {"text": "a" * 64})]
    for path, body in ok:
        status, answer = client.post(path, body)
        assert status == 200, (path, body, answer)


def test_clients_that_hang_up_or_stall(serve, names_path, capfd, monkeypatch):
    monkeypatch.setattr(studio_server.StudioHandler, "timeout", 0.5)
    client = serve(studio_args(names_path, "--engine", "ref"))
    port = client.port
    head = (f"POST /api/sample HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n").encode()  # fmt: skip

    def connect():
        return socket.create_connection(("127.0.0.1", port), timeout=30)

    # hang up mid-body, mid-headers, and before reading a long answer
    for raw in (head + b"Content-Length: 100\r\n\r\n{\"co", head[:30],
                head + b'Content-Length: 13\r\n\r\n{"count": 200}'[:-1]):  # fmt: skip
        with connect() as sock:
            sock.sendall(raw)
    with connect() as sock:
        sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        sock.recv(100)
    # a client that stops sending (headers, or a body) is cut off by the read timeout,
    # instead of holding its thread forever
    for raw in (head, head + b"Content-Length: 100\r\n\r\n{\"count\""):
        with connect() as sock:
            sock.sendall(raw)
            data = sock.recv(1000)
            while data and not data.endswith(b"}"):  # an error answer, or nothing; then EOF
                data += sock.recv(1000)
            assert sock.recv(1000) == b""
    time.sleep(0.3)  # let the server threads finish with the hung-up clients
    status, _, _ = client.get("/api/state")
    assert status == 200
    assert "Traceback" not in capfd.readouterr().err


def test_loopback_host_only_when_bound_to_loopback(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    port = client.port
    for host, expected in [(f"127.0.0.1:{port}", 200), (f"127.0.0.2:{port}", 200),
                           (f"[::1]:{port}", 200), (f"localhost:{port}", 200),
                           (f"10.0.0.1:{port}", 403), (f"0.0.0.0:{port}", 403),
                           (f"192.168.1.2:{port}", 403), (f"[fe80::1]:{port}", 403)]:  # fmt: skip
        status, _, _ = client.get("/api/state", headers={"Host": host})
        assert status == expected, host
    # a server on a wildcard or LAN address also answers to IP literals (which no DNS
    # rebinding can forge) and to its names; here by its rule, without opening such a port
    server = client.server
    server.loopback = False
    assert server.host_allowed(f"10.0.0.1:{port}") and server.host_allowed(f"localhost:{port}")
    assert not server.host_allowed(f"evil.example:{port}")


# --- latency, on a studio in its own process ---------------------------------------------------


@pytest.fixture
def studio_process(names_path, cli_env):
    """Start `microgpt studio` in a process of its own, training a small model for a long
    time; returns its port."""
    procs = []

    def start(*model_flags) -> int:
        cmd = [sys.executable, "-m", "microgpt", "studio", "--engine", "ref", "--data",
               str(names_path), "--port", "0", "--steps", "100000", "--sample-every",
               "100000", "--seed", "7", *model_flags]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=cli_env)  # fmt: skip
        procs.append(proc)
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        return int(url.rsplit(":", 1)[1].rstrip("/"))

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        assert "Traceback" not in err, err


class Remote(Client):
    def __init__(self, port: int):
        self.host, self.port = "127.0.0.1", port


def first_event_times(port: int, n: int, timeout: float = 20.0) -> list[float]:
    """Open n event streams at once (one thread, non-blocking sockets) and return, for
    each, the seconds from its connect to the end of its first event."""
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    request = f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    state = {}
    for i in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        state[sock] = {"sent": False, "buf": b"", "start": time.monotonic()}
        sel.register(sock, selectors.EVENT_WRITE, i)
    times = []
    while len(times) < n and time.monotonic() - t0 < timeout:
        for key, _ in sel.select(timeout=0.1):
            sock, st = key.fileobj, state[key.fileobj]
            if not st["sent"]:
                sock.sendall(request)
                st["sent"] = True
                sel.modify(sock, selectors.EVENT_READ, key.data)
                continue
            chunk = sock.recv(65536)
            st["buf"] += chunk
            if b"\nevent: " in st["buf"] and b"\n\n" in st["buf"].split(b"\nevent: ", 1)[1]:
                times.append(time.monotonic() - st["start"])
                sel.unregister(sock)
                sock.close()
            elif not chunk:
                sel.unregister(sock)
                sock.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return times


def test_fifty_event_streams_each_get_their_first_event_within_a_second(studio_process):
    port = studio_process(*TINY)
    remote = Remote(port)
    status, _ = remote.post("/api/train", {"action": "start"})  # full speed, meanwhile
    assert status == 200
    times = first_event_times(port, 50)
    remote.post("/api/train", {"action": "stop"})
    assert len(times) == 50
    print(f"\n50 event streams: first event after max {max(times):.3f} s, "
          f"median {sorted(times)[25]:.3f} s")  # fmt: skip
    assert max(times) < 1.0, sorted(times)


def test_a_long_sample_does_not_stall_the_training_stream(studio_process):
    # NOTE: a model small enough that one reference step takes a few ms even on a busy
    # machine, so that 20 steps a second is a pace it keeps; what is measured is whether
    # the draw holds training up, not how fast this machine trains
    port = studio_process("--n-embd", "4", "--n-head", "1", "--block-size", "4")
    remote = Remote(port)
    remote.post("/api/pace", {"steps_per_s": 20})
    arrivals: list[tuple[float, int]] = []
    stop = threading.Event()

    def read_stream():
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                     .encode())  # fmt: skip
        buf = b""
        with sock:
            while not stop.is_set():
                chunk = sock.recv(65536)
                if not chunk:
                    break
                now = time.monotonic()
                buf += chunk
                *blocks, buf = buf.split(b"\n\n")
                for block in blocks:
                    if b"event: step\n" in block:
                        data = json.loads(block.split(b"data: ", 1)[1])
                        arrivals.append((now, data["step"]))

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    remote.post("/api/train", {"action": "start"})
    while len(arrivals) < 10:
        time.sleep(0.05)
    answer = {}

    def hard_sample():
        # the most likely token each time (top-k 1), and only empty samples wanted: the
        # model never puts BOS first once trained a few steps, so every one of the 20,000
        # tries allowed is rejected, a token each: a draw of many seconds
        answer["status"], answer["body"] = remote.post(
            "/api/sample", {"count": 200, "temperature": 1.0, "top_k": 1, "max_length": 0}
        )

    sampler = threading.Thread(target=hard_sample, daemon=True)
    t_start = time.monotonic()
    sampler.start()
    while True:  # the busy state, as every page sees it
        state = json.loads(remote.get("/api/state")[2])
        if state["sampling"] is not None:
            break
        time.sleep(0.02)
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t_start)))
    t_end = time.monotonic()  # the window measured: training while the draw runs
    # meanwhile, another draw is refused (busy), and the other views answer
    status, busy = remote.post("/api/sample", {"count": 1})
    assert status == 409 and "cancel" in busy["error"]
    status, inside = remote.post("/api/inspect", {"text": "emma"})
    assert status == 200 and inside["step"] > 0
    status, graph = remote.post("/api/graph", {"text": "emma", "position": 1})
    assert status == 200 and json.loads(remote.get("/api/state")[2])["sampling"] is not None
    status, cancel = remote.post("/api/sample/cancel", {})
    assert status == 200 and cancel["cancelled"]
    sampler.join(timeout=30)
    stop.set()
    remote.post("/api/train", {"action": "stop"})
    assert answer["status"] == 200 and answer["body"]["cancelled"]
    drawn = answer["body"]["report"]["drawn"]
    assert drawn > 0 and json.loads(remote.get("/api/state")[2])["sampling"] is None
    during = [t for t, _ in arrivals if t_start <= t <= t_end]
    steps = [s for t, s in arrivals if t_start <= t <= t_end]
    assert steps == list(range(steps[0], steps[0] + len(steps)))  # none missing
    gaps = [b - a for a, b in zip([t_start, *during], [*during, t_end])]
    print(f"\ntraining during {t_end - t_start:.2f} s of a draw ({drawn} tries in all): "
          f"{len(during)} steps, largest gap {max(gaps) * 1000:.0f} ms")
    assert len(during) >= 10
    assert max(gaps) < 0.2, [round(g, 3) for g in gaps]
