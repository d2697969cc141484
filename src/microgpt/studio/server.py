"""The studio's web server: standard library only (ThreadingHTTPServer + server-sent events).

What it lets in, as a local dev tool should (TensorBoard and Jupyter do the same):
- a request whose Host header is not this server's address is refused (DNS rebinding: a
  web page on evil.example resolving its name to 127.0.0.1 would otherwise read the API);
  IP literals and `localhost` are accepted with the served port, as dev servers do;
- a POST from another origin is refused (Origin / Sec-Fetch-Site), and POST bodies must be
  JSON, which a cross-site form cannot send without a CORS preflight that this server never
  grants;
- only the packaged files named in STATIC are served, with a content-security policy that
  allows nothing outside this server.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from ..config import ConfigError
from ..tokenizer import TokenizerError
from .session import Session
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
KEEPALIVE_S = 15.0


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
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


class StudioServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 0):
        self.session = session
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        super().__init__((host, port), StudioHandler)
        self.host = host
        self.port = self.server_address[1]
        self.shutting_down = threading.Event()
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
        """The Host header names this server: an IP literal, localhost, or the --host name,
        with the served port."""
        if not header:
            return False
        name, port = split_host(header)
        if port is None:
            port = 80
        if port != self.port or not name:
            return False
        return _is_ip(name) or name in self.names

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
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug: say so, keep serving
            self._internal_error(e)

    def _internal_error(self, e: Exception) -> None:
        traceback.print_exc(file=sys.stderr)
        try:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{e.__class__.__name__}: {e}")
        except OSError:
            pass

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
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the browser went away; it reconnects with Last-Event-ID

    # --- POST ---------------------------------------------------------------------------------
    def do_POST(self):
        if not self._check_host():
            return
        try:
            body = self._read_json()
            data = self._route_post(self.path.split("?", 1)[0], body)
        except RequestError as e:
            self._error(e.status, str(e))
            return
        except (ViewError, TokenizerError, ConfigError) as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
            return
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
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return data

    def _route_post(self, path: str, body: dict) -> dict:
        session = self.server.session
        if path == "/api/train":
            action = body.get("action")
            if action == "start":
                return session.start()
            if action == "stop":
                return session.stop()
            if action == "reset":
                return session.reset()
            raise RequestError(HTTPStatus.BAD_REQUEST, "action must be start, stop or reset")
        if path == "/api/inspect":
            return session.look_inside(
                _field(body, "text", str, "emma"), _field(body, "temperature", float, 1.0)
            )
        if path == "/api/graph":
            root = body.get("root")
            if root is not None and not isinstance(root, int):
                raise RequestError(HTTPStatus.BAD_REQUEST, "root must be a node id")
            depth = _field(body, "depth", int, 3)
            return session.graph(
                _field(body, "text", str, "emma"), _field(body, "position", int, 0), root,
                max(1, min(depth, 6)),
            )  # fmt: skip
        if path == "/api/sample":
            count = _field(body, "count", int, 10)
            if not 1 <= count <= 200:
                raise RequestError(HTTPStatus.BAD_REQUEST, "count must be between 1 and 200")
            temperature = _field(body, "temperature", float, 0.5)
            if not 0 <= temperature <= 10:
                raise RequestError(HTTPStatus.BAD_REQUEST, "temperature must be in [0, 10]")
            seed = body.get("seed")
            if seed is not None and not isinstance(seed, int):
                raise RequestError(HTTPStatus.BAD_REQUEST, "seed must be an integer")
            lengths = {}
            for key in ("min_length", "max_length"):  # optional: absent or null is no limit
                if body.get(key) is not None:
                    lengths[key] = _field(body, key, int, 0)
            return session.sample(
                _field(body, "prompt", str, ""), count, temperature,
                max(0, _field(body, "top_k", int, 0)) or None, bool(body.get("novel", False)),
                seed, **lengths,
            )  # fmt: skip
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")


def _field(body: dict, key: str, kind: type, default):
    value = body.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{key} must be a {kind.__name__}")
    if kind is str and len(value) > 1000:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{key} is too long")
    return value
