"""The studio's web server: standard library only (ThreadingHTTPServer + server-sent events).

Python's docs call http.server fit for basic use only; what it lacks for this page is added
here, each item tested in tests/test_studio_api.py:
- a listen backlog of 128 (the default 5 made some of 50 event streams wait for a SYN retry),
  a thread per connection, and a read timeout (READ_TIMEOUT_S) on every request, so a client
  that never finishes its headers or body cannot hold a thread;
- a POST body is one flat JSON object of at most MAX_BODY bytes: malformed, too deeply
  nested (checked before parsing, so no RecursionError), NaN/Infinity or chunked bodies get
  a 400, and every field is checked for its type and range (fields.py);
- a client that hangs up mid-request is dropped quietly: no traceback for a disconnect.
What it lets in, as a local dev tool should (TensorBoard and Jupyter do the same):
- a request whose Host header is not this server's address is refused (DNS rebinding: a
  web page on evil.example resolving its name to 127.0.0.1 would otherwise read the API);
  bound to a loopback address, only loopback names are accepted (localhost, 127.0.0.0/8,
  ::1), with the served port;
- a POST from another origin is refused (Origin / Sec-Fetch-Site), and POST bodies must be
  JSON, which a cross-site form cannot send without a CORS preflight that this server never
  grants;
- only the packaged files named in STATIC are served, with a content-security policy that
  allows nothing outside this server.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from ..runs import USER_ERRORS
from . import fields
from .fields import FieldError
from .session import Busy, Session
from .views import ViewError

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
STATIC = {  # URL path -> (packaged file, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
MAX_BODY = 64 * 1024
MAX_DEPTH = 2  # a body is a flat object; one level more gets a field's own message
KEEPALIVE_S = 15.0
READ_TIMEOUT_S = 10.0  # a request's headers and body must arrive within this (per read)
BACKLOG = 128
DISCONNECTS = (ConnectionError, TimeoutError)  # a client gone: nothing to report


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None]:
    """'127.0.0.1:8000' -> ('127.0.0.1', 8000); '[::1]:80' -> ('::1', 80); bad -> ('', None)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    if port and not port.isdigit():
        return "", None
    return host, int(port) if port else None


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (0 for a scalar), found without
    parsing it: strings are skipped, then the brackets counted."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRINGS.sub(b'""', raw)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class StudioServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = BACKLOG  # the listen backlog (socketserver's default is 5)

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 0):
        self.session = session
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        super().__init__((host, port), StudioHandler)
        self.host = host
        self.port = self.server_address[1]
        self.shutting_down = threading.Event()
        self.loopback = is_loopback(host)
        self.names = {"localhost", host.lower()}
        if host in ("0.0.0.0", "::"):  # reachable by this machine's own names too
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/"

    def host_allowed(self, header: str | None) -> bool:
        """The Host header names this server, with the served port: bound to loopback, a
        loopback name only; otherwise also the --host name, this machine's names, or an IP
        literal (which no DNS rebinding can forge)."""
        if not header:
            return False
        name, port = split_host(header)
        if port is None:
            port = 80
        if port != self.port or not name:
            return False
        if is_loopback(name):
            return True
        if self.loopback:
            return False
        return _is_ip(name) or name in self.names

    def handle_error(self, request, client_address) -> None:
        """A client that hung up is no error; anything else is a bug: say so."""
        if isinstance(sys.exc_info()[1], DISCONNECTS):
            return
        super().handle_error(request, client_address)

    def origin_allowed(self, origin: str) -> bool:
        parts = urlsplit(origin)
        if parts.scheme != "http" or not parts.netloc:
            return False
        return self.host_allowed(parts.netloc)

    def shutdown(self) -> None:
        self.shutting_down.set()
        self.session.events.close()
        super().shutdown()


class StudioHandler(BaseHTTPRequestHandler):
    server: StudioServer
    server_version = "microgpt-studio"
    sys_version = ""
    timeout = READ_TIMEOUT_S  # socketserver sets it on the connection: every read and write

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # quiet: the terminal shows the URL, not every request

    # --- plumbing -----------------------------------------------------------------------------
    def _headers(self, status: HTTPStatus, content_type: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self._headers(status, content_type, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: dict, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json({"error": message}, status)

    def _check_host(self) -> bool:
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(HTTPStatus.FORBIDDEN, "Host not allowed: open the studio by its own URL")
            return False
        return True

    # --- GET ----------------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        try:
            self._get()
        except DISCONNECTS:
            self.close_connection = True
        except Exception as e:  # a bug: say so, keep serving
            self._internal_error(e)

    def _internal_error(self, e: Exception) -> None:
        traceback.print_exc(file=sys.stderr)
        try:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{e.__class__.__name__}: {e}")
        except OSError:
            self.close_connection = True

    def _get(self):
        if not self._check_host():
            return
        path = self.path.split("?", 1)[0]
        if path in STATIC:
            name, content_type = STATIC[path]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        elif path == "/api/state":
            self._json(self.server.session.state())
        elif path == "/api/embeddings":
            self._json(self.server.session.embeddings())
        elif path == "/api/events":
            self._events()
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    def _events(self) -> None:
        """Server-sent events: every event of the run after Last-Event-ID, then live ones."""
        last = self.headers.get("Last-Event-ID")
        last_id = int(last) if last and last.strip().isdigit() else None
        self._headers(HTTPStatus.OK, "text/event-stream; charset=utf-8", None)
        if self.command == "HEAD":
            return
        log = self.server.session.events
        try:
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            while not self.server.shutting_down.is_set() and not log.closed:
                events = log.wait(last_id, KEEPALIVE_S)
                if not events:
                    self.wfile.write(b": keep-alive\n\n")
                chunks = []
                for event_id, kind, payload in events:
                    chunks.append(f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n")
                    last_id = event_id
                if chunks:
                    self.wfile.write("".join(chunks).encode())
                self.wfile.flush()
        except DISCONNECTS:
            self.close_connection = True  # the browser went away; it reconnects with Last-Event-ID

    # --- POST ---------------------------------------------------------------------------------
    def do_POST(self):
        try:
            self._post()
        except DISCONNECTS:
            self.close_connection = True

    def _post(self):
        if not self._check_host():
            return
        try:
            body = self._read_json()
            data = self._route_post(self.path.split("?", 1)[0], body)
        except RequestError as e:
            self.close_connection = True
            self._error(e.status, str(e))
            return
        except Busy as e:
            self._error(HTTPStatus.CONFLICT, str(e))
            return
        except (FieldError, ViewError, *USER_ERRORS) as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
            return
        except DISCONNECTS:
            raise
        except Exception as e:
            self._internal_error(e)
            return
        self._json(data)

    def _read_json(self) -> dict:
        origin = self.headers.get("Origin")
        if origin is not None and not self.server.origin_allowed(origin):
            raise RequestError(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise RequestError(HTTPStatus.FORBIDDEN, "cross-site request refused")
        if self.headers.get_content_type() != "application/json":
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        if self.headers.get("Transfer-Encoding") is not None:
            raise RequestError(HTTPStatus.BAD_REQUEST, "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
        raw = self.rfile.read(length)  # READ_TIMEOUT_S per read: a stalled body times out
        if len(raw) < length:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body ended early")
        if json_depth(raw) > MAX_DEPTH:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body nests too deeply: send one "
                               "JSON object of numbers, text and true/false")  # fmt: skip
        try:
            data = json.loads(raw or b"{}", parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return data

    def _route_post(self, path: str, body: dict) -> dict:
        session = self.server.session
        if path == "/api/train":
            action = fields.parse(body, fields.TRAIN)["action"]
            if action == "start":
                return session.start()
            if action == "step":
                return session.step_once()
            if action == "stop":
                return session.stop()
            return session.reset()
        if path == "/api/pace":
            return session.set_pace(fields.parse(body, fields.PACE)["steps_per_s"])
        if path == "/api/continue":
            return session.continue_run(fields.parse(body, fields.CONTINUE)["steps"])
        if path == "/api/settings":
            return session.apply_settings(fields.parse(body, fields.SETTINGS))
        if path == "/api/inspect":
            f = fields.parse(body, fields.INSPECT)
            return session.look_inside(f["text"], f["temperature"])
        if path == "/api/graph":
            f = fields.parse(body, fields.GRAPH)
            return session.graph(f["text"], f["position"], f["focus"])
        if path == "/api/sample":
            return session.sample(**fields.parse(body, fields.SAMPLE))
        if path == "/api/sample/cancel":
            fields.parse(body, fields.EMPTY)
            return session.cancel_sample()
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")
