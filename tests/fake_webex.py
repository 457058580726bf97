# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "requests>=2.31,<3",
#     "python-dotenv>=1.0,<2",
#     "questionary>=2.0,<3",
#     "rich>=13.7,<16",
#     "pyjwt[crypto]>=2.10,<3",
# ]
# ///
"""A fake Webex BYODS API on a real socket, faithful to ../shared/webex-byods-api.md.

Two servers on 127.0.0.1: the API (`/v1/...`) and an identity broker that publishes the JWKS
(`/idb/oauth2/v2/keys/verificationjwk`), as Webex keeps them on different hosts. Responses omit
audience, subject and lifetime, as the real ones do: they live only in the RS256-signed token.
Faults are injected per method and path: status codes with Retry-After, dropped connections,
slow answers, malformed bodies.

Run it on its own to try the tool without a Webex org:

    python tests/fake_webex.py            # prints the settings to put in .env
    python tests/fake_webex.py --demo     # opens the tool on it, in this terminal
    uv run tests/fake_webex.py --demo     # the same with no virtual environment at all (the
                                          # block above: the tool's own packages, which it runs with)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SCRIPT = Path(__file__).resolve().parent.parent / "data-sources.py"
_KEYS: dict[str, object] = {}
_KEY_LOCK = threading.Lock()


def rsa_key(name: str):
    """One RSA key per name per process: generating one per test would dominate the suite's time."""
    with _KEY_LOCK:
        if name not in _KEYS:
            _KEYS[name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _KEYS[name]


def signing_key():
    return rsa_key("signing")


def other_key():
    """A second key: in the key set beside the real one, or signing tokens no key verifies."""
    return rsa_key("other")


def self_signed_context(folder: Path) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate for 127.0.0.1, written to
    folder/cert.pem: point REQUESTS_CA_BUNDLE at it to trust it, or leave it untrusted."""
    key = signing_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class QuietServer(ThreadingHTTPServer):
    """A dropped connection is a fault we inject, not news."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


@dataclass
class Fault:
    method: str
    path: str  # a regular expression matched against the whole path
    status: int | None = 500  # None: answer normally, after the delay
    times: int = 1
    headers: dict = field(default_factory=dict)
    body: object = None  # dict: JSON; str/bytes: sent as is; None: a Webex error body
    delay: float = 0.0
    drop: bool = False  # with status None: the request is carried out, then its answer is lost
    on_arrival: Callable[[], None] | None = None  # runs when the request is in, before any answer


@dataclass
class Seen:
    server: str
    method: str
    path: str
    headers: dict
    body: bytes
    at: float
    connection: int


class FakeWebex:
    """One customer org's API. add_org() puts more orgs behind the same server: a request is
    served by the org whose access token it carries, as Webex serves every org on one host."""

    SECRET_NAMES = (
        "access_token",
        "refresh_token",
        "client_secret",
        "integration_token",
        "integration_refresh_token",
        "integration_client_secret",
    )

    def __init__(self, latency: float = 0.0, tls_context=None, serve: bool = True, tls_keys: bool = False, seed: int | None = None):
        self.latency = latency
        self.random = random.Random(seed)  # ids, nonces and URLs: the same on every run for one seed (the demo's)
        self.secrets_held: set[str] = set()  # every token and secret this fake ever had
        self.access_token = "fake-access-" + secrets.token_hex(16)
        self.client_id = "fake-client-id"
        self.client_secret = "fake-client-secret-" + secrets.token_hex(8)
        self.refresh_token = "fake-refresh-" + secrets.token_hex(16)
        self.scopes = {"read", "write"}
        self.kid = "fake-kid-1"
        self.org_id = self.new_id()
        self.application_id = "C" + self.random.getrandbits(256).to_bytes(32).hex()
        self.created_status = 200
        self.jwks_down = False
        self.tenants: list[FakeWebex] = []  # the other orgs this server answers for
        self.authorized = True  # has this org's admin authorized the Service App (minting)
        self.mints = 0
        self.service_app_id = "Y2lzY29zcGFyazovL3VzL0FQUExJQ0FUSU9OL2Zha2U"
        self.integration_token = "fake-integration-" + secrets.token_hex(16)
        self.integration_refresh_token = "fake-integration-refresh-" + secrets.token_hex(16)
        self.integration_client_id = "fake-integration-client"
        self.integration_client_secret = "fake-integration-secret-" + secrets.token_hex(8)
        self.list_fields: tuple | None = None  # list items keep only these (the spec's sparse example)
        self.refresh_expires_in = 7775999
        self.jwks_with_kids = True  # False: a key set whose keys carry no kid
        self.jwks_other_key = False  # True: an unrelated key is listed first
        self.allowed_domains: set[str] | None = None
        self.schemas = {}
        for service, description in (
            ("Voice Virtual Agent", "Connects Webex calls to a virtual agent"),
            ("Contact Center Transcripts", None),
        ):
            schema_id = self.new_id()
            schema = {
                "id": schema_id,
                "serviceType": service,
                "appType": "BYODS",
                "protocol": "gRPC",
                "url": "https://schemas.example/" + schema_id,
                "createdAt": iso(time.time() - 86400 * 90),
            }
            if description:
                schema["description"] = description
            self.schemas[schema_id] = schema
        self.sources: dict[str, dict] = {}
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.issued_tokens: list[str] = []
        self.used_nonces: set[str] = set()
        self.connections = {"api": 0, "idb": 0}
        self.in_flight = 0
        self.max_in_flight = 0
        self.limit_per_second: int | None = None  # the Service App's rate limit, across every org on this server
        self.limited = 0  # how many 429s the limit answered
        self._allowance: float | None = None  # the limit's bucket: requests it would let through now
        self._refilled = 0.0
        self.limit_window: float | None = None  # seconds: count the limit over a rolling window instead of a bucket
        self._answered: deque[float] = deque()  # when requests were let through, over the last limit_window
        self.clock_offset = 0.0  # seconds this server's clock is ahead of the machine's (its Date header, iat, exp)
        self.cookie: str | None = None  # a Set-Cookie every answer of this org carries, as a load balancer's would
        self.lock = threading.Condition()
        if serve:
            self.api = self._server("api", tls_context)
            self.idb = self._server("idb", tls_context if tls_keys else None)  # tls_keys: the broker behind the same TLS
            scheme = "https" if tls_context else "http"
            self.base_url = f"{scheme}://127.0.0.1:{self.api.server_address[1]}/v1"
            self.issuer = f"{scheme if tls_keys else 'http'}://127.0.0.1:{self.idb.server_address[1]}/idb"

    def __setattr__(self, name, value):
        if name in self.SECRET_NAMES:
            self.secrets_held.add(value)
        super().__setattr__(name, value)

    def now(self) -> float:
        return time.time() + self.clock_offset

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def add_org(self) -> FakeWebex:
        """Another customer org on this server: its own token, org id and sources; the same
        Service App (client id and secret, schemas) and the same identity broker."""
        org = FakeWebex(serve=False, seed=self.random.getrandbits(64))
        org.base_url, org.issuer, org.schemas = self.base_url, self.issuer, self.schemas
        org.client_id, org.client_secret = self.client_id, self.client_secret
        self.tenants.append(org)
        return org

    def everyone(self) -> list[FakeWebex]:
        return [self, *self.tenants]

    def leaked_secrets(self, text: str) -> list[str]:
        """The secrets and raw tokens of this fake and its other orgs that appear in text."""
        known = set()
        for org in self.everyone():
            with org.lock:
                known |= org.secrets_held | set(org.issued_tokens)
        return [secret for secret in known if secret in text]

    # -- lifecycle ------------------------------------------------------------------------------
    def _server(self, role, tls_context):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, as a real server's do

            def setup(self):
                super().setup()
                with fake.lock:
                    fake.connections[role] += 1
                    self.connection_number = fake.connections[role]

            def log_message(self, *args):
                pass

            def date_time_string(self, timestamp=None):
                return super().date_time_string(fake.now() if timestamp is None else timestamp)

            def do_GET(self):
                fake.handle(self, role)

            do_POST = do_PUT = do_DELETE = do_GET

        server = QuietServer(("127.0.0.1", 0), Handler)
        if tls_context:
            server.socket = tls_context.wrap_socket(server.socket, server_side=True)
        return server

    def mint_env(self, org: FakeWebex) -> dict:
        """What an org's file and the shared file hold to mint that org's tokens."""
        return {
            "WEBEX_SERVICE_APP_ID": self.service_app_id,
            "WEBEX_CLIENT_ID": self.client_id,
            "WEBEX_CLIENT_SECRET": self.client_secret,
            "WEBEX_TARGET_ORG_ID": org.org_id,
            "WEBEX_INTEGRATION_TOKEN": self.integration_token,
        }

    def start(self):
        for server in (self.api, self.idb):
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        for server in (self.api, self.idb):
            server.shutdown()
            server.server_close()

    def expire_access_token(self) -> None:
        """The token the tool holds stops working, as a Service App token does after some days."""
        self.access_token = "fake-access-unknown-" + secrets.token_hex(16)

    def env(self) -> dict:
        """The settings the tool needs to talk to this fake, in one env file."""
        return {"WEBEX_ACCESS_TOKEN": self.access_token, **self.shared_env()}

    def shared_env(self) -> dict:
        """What every org shares (the shared .env or the environment; never an org's file)."""
        return {"WEBEX_API_BASE_URL": self.base_url, "WEBEX_TRUSTED_ISSUERS": self.issuer}

    # -- data -----------------------------------------------------------------------------------
    def sign(self, claims: dict, kid: str | None = None, alg: str = "RS256", key=None) -> str:
        header = {"kid": kid or self.kid, "typ": "JWT", "alg": alg}
        if alg == "RS256":
            # The key object, not PEM: parsing PEM re-checks the key and costs ~50 ms a token.
            token = jwt.encode(claims, key or signing_key(), algorithm="RS256", headers={"kid": header["kid"]})
        else:  # hand-made, because pyjwt rightly refuses to make these
            signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            signature = b""
            if alg == "HS256":
                secret = (
                    signing_key().public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                )
                signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            token = signing_input + "." + b64url(signature)
        with self.lock:
            self.issued_tokens.append(token)
        return token

    def claims_for(self, source: dict) -> dict:
        return {
            "aud": source["audience"],
            "sub": source["subject"],
            "iss": source.get("issuer") or self.issuer,
            "iat": source["iat"],
            "exp": source["exp"],
            "jti": source["nonce"],
            "com.cisco.datasource.url": source["url"],
            "com.cisco.datasource.schema.uuid": source["schemaId"],
            "com.cisco.org.uuid": self.org_id,
            **source.get("extra_claims", {}),
        }

    def issue(self, source: dict, kid=None, alg="RS256", key=None) -> None:
        source["jwsToken"] = self.sign(self.claims_for(source), kid, alg, key)

    def add_source(
        self,
        audience="BYODS",
        subject="BYODS",
        url=None,
        schema_id=None,
        lifetime=1440,
        expires_in=None,
        status="active",
        error_message=None,
        nonce=None,
        issuer=None,
        kid=None,
        alg="RS256",
        source_id=None,
        extra_claims=None,
        key=None,
    ) -> dict:
        now = int(self.now())
        exp = now + (lifetime * 60 if expires_in is None else int(expires_in))
        source = {
            "id": source_id or self.new_id(),
            "schemaId": schema_id or next(iter(self.schemas)),
            "url": url or f"https://dap.example.com/{re.sub('[^a-z0-9]+', '-', audience.lower())}/{self.random.getrandbits(24):06x}",
            "audience": audience,
            "subject": subject,
            "nonce": nonce or self.new_id(),
            "lifetime": lifetime,
            "status": status,
            "iat": exp - lifetime * 60,
            "exp": exp,
            "createdBy": self.new_id(),
            "createdAt": iso(now - 3600),
        }
        if issuer:
            source["issuer"] = issuer
        if extra_claims:
            source["extra_claims"] = extra_claims
        if error_message:
            source["errorMessage"] = error_message
        self.issue(source, kid, alg, key)
        with self.lock:
            self.sources[source["id"]] = source
            self.used_nonces.add(source["nonce"])
        return source

    def public_view(self, source: dict) -> dict:
        """What the real API answers: no audience, subject or lifetime."""
        body = {
            "id": source["id"],
            "schemaId": source["schemaId"],
            "orgId": self.org_id,
            "applicationId": self.application_id,
            "status": source["status"],
            "tokenExpiryTime": iso(source["exp"]),
            "nonce": source["nonce"],
            "createdBy": source["createdBy"],
            "createdAt": source["createdAt"],
            "url": source["url"],
        }
        if "jwsToken" in source:  # tests delete it to model a malformed answer
            body["jwsToken"] = source["jwsToken"]
        if source["status"] == "disabled" and source.get("errorMessage"):
            body["errorMessage"] = source["errorMessage"]
        return body

    def fail(self, method, path, status=500, times=1, **kwargs) -> Fault:
        fault = Fault(method, path, status, times, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    # -- what the fake saw ----------------------------------------------------------------------
    def requests(self, method=None, path=None, server="api") -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.seen
                if s.server == server and (method is None or s.method == method) and (path is None or re.fullmatch(path, s.path))
            ]

    def wait_for(self, predicate, timeout=10.0) -> bool:
        """Block until predicate(fake) holds; woken by every request, never by polling sleeps."""
        with self.lock:
            return self.lock.wait_for(lambda: predicate(self), timeout)

    # -- serving --------------------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler, role: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = urlsplit(handler.path).path
        org = next((o for o in self.tenants if handler.headers.get("Authorization") == f"Bearer {o.access_token}"), self)
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        with org.lock:
            org.seen.append(Seen(role, handler.command, path, dict(handler.headers), body, time.monotonic(), handler.connection_number))
            fault = next((f for f in org.faults if f.times > 0 and f.method == handler.command and re.fullmatch(f.path, path)), None)
            if fault:
                fault.times -= 1
            org.lock.notify_all()
        try:
            if role == "api" and self.over_the_limit():
                return self.error(handler, 429, "Too many requests for this application", {"Retry-After": 1})
            if role == "api" and self.latency:
                time.sleep(self.latency)
            if fault and fault.delay:
                time.sleep(fault.delay)
            if fault and fault.on_arrival:
                fault.on_arrival()
            if fault and fault.drop and fault.status is None:
                org.lose_answer(handler, path, body)
            elif fault and fault.status is not None:
                org.apply_fault(handler, fault)
            elif role == "idb":
                self.serve_keys(handler, path)
            else:
                org.route(handler, path, body)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.lock.notify_all()

    def over_the_limit(self) -> bool:
        """Webex limits the Service App as a whole, "N a minute", enforced as gateways do: a bucket
        that refills evenly at limit_per_second and holds one second's worth at most. A burst
        beyond that is a 429; an even stream just under the limit always fits. With limit_window,
        the other shape Webex may use: at most limit_per_second * limit_window requests in any
        limit_window seconds."""
        if self.limit_per_second is None:
            return False
        with self.lock:
            now = time.monotonic()
            if self.limit_window:
                while self._answered and self._answered[0] <= now - self.limit_window:
                    self._answered.popleft()
                if len(self._answered) >= self.limit_per_second * self.limit_window:
                    self.limited += 1
                    return True
                self._answered.append(now)
                return False
            held = self.limit_per_second if self._allowance is None else self._allowance
            self._allowance = min(self.limit_per_second, held + (now - self._refilled) * self.limit_per_second)
            self._refilled = now
            if self._allowance < 1:
                self.limited += 1
                return True
            self._allowance -= 1
            return False

    def apply_fault(self, handler, fault: Fault) -> None:
        if fault.drop:
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        if fault.body is None:
            self.error(handler, fault.status, f"Injected fault {fault.status}", fault.headers)
        else:
            self.send(handler, fault.status, fault.body, fault.headers)

    def lose_answer(self, handler, path: str, body: bytes) -> None:
        """Carry the request out, then drop the connection: the change is made, its answer lost."""
        handler.wfile = io.BytesIO()
        self.route(handler, path, body)
        handler.close_connection = True
        handler.connection.shutdown(2)

    def send(self, handler, status: int, body=None, headers=None) -> None:
        if isinstance(body, (dict, list)):
            data, content_type = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            data, content_type = body.encode(), "text/html" if "<html" in body.lower() else "text/plain"
        else:
            data, content_type = body or b"", "application/json"
        handler.send_response(status)
        handler.send_header("TrackingID", "ROUTER_" + uuid.uuid4().hex[:24].upper())
        if data:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        if self.cookie:
            handler.send_header("Set-Cookie", self.cookie)
        for key, value in (headers or {}).items():
            handler.send_header(key, str(value))
        handler.end_headers()
        if data:
            handler.wfile.write(data)

    def error(self, handler, status: int, message: str, headers=None) -> None:
        tracking = "ROUTER_" + uuid.uuid4().hex[:24].upper()
        body = {"message": message, "errors": [{"description": message}], "trackingId": tracking}
        self.send(handler, status, body, {"TrackingID": tracking, **(headers or {})})

    def serve_keys(self, handler, path: str) -> None:
        if path != "/idb/oauth2/v2/keys/verificationjwk":
            return self.error(handler, 404, "No such issuer")
        if self.jwks_down:
            return self.error(handler, 503, "Key service unavailable")
        keys = [(other_key(), "fake-kid-other")] if self.jwks_other_key else []
        keys.append((signing_key(), self.kid))
        jwks = []
        for key, kid in keys:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update(use="sig", alg="RS256", **({"kid": kid} if self.jwks_with_kids else {}))
            jwks.append(jwk)
        self.send(handler, 200, {"keys": jwks})

    def route(self, handler, path: str, body: bytes) -> None:
        method = handler.command
        if method == "POST" and path == "/v1/access_token":
            return self.renew(handler, body)
        if method == "POST" and (app := re.fullmatch(r"/v1/applications/([^/]+)/token", path)):
            return self.mint(handler, unquote(app.group(1)), body)
        if handler.headers.get("Authorization") != f"Bearer {self.access_token}":
            return self.error(handler, 401, "The request requires a valid access token set in the Authorization request header.")
        needed = "read" if method == "GET" else "write"
        if needed not in self.scopes:
            return self.error(handler, 403, "Unauthorized: missing scope spark-admin:datasource_" + needed)
        match = re.fullmatch(r"/v1/dataSources(?:/(schemas)(?:/([^/]+))?|/([^/]+))?/?", path)
        if not match:
            return self.error(handler, 404, "Not found")
        schemas, schema_id, source_id = (unquote(part) if part else part for part in match.groups())
        if schemas and method == "GET":
            if schema_id is None:
                return self.send(handler, 200, {"items": list(self.schemas.values())})
            if schema_id in self.schemas:
                return self.send(handler, 200, self.schemas[schema_id])
            return self.error(handler, 404, "Schema not found")
        if source_id is None and method == "GET":
            with self.lock:
                items = [self.public_view(s) for s in self.sources.values()]
            if self.list_fields is not None:
                items = [{k: v for k, v in item.items() if k in self.list_fields} for item in items]
            return self.send(handler, 200, {"items": items})
        if source_id is None and method == "POST":
            return self.write(handler, None, body)
        with self.lock:
            source = self.sources.get(source_id)
        if source is None:
            return self.error(handler, 404, "Data source not found")
        if method == "GET":
            return self.send(handler, 200, self.public_view(source))
        if method == "PUT":
            return self.write(handler, source, body)
        if method == "DELETE":
            with self.lock:
                self.sources.pop(source_id, None)
            return self.send(handler, 204)
        return self.error(handler, 405, "Method not allowed")

    def invalid(self, payload, source: dict | None) -> str | None:
        if not isinstance(payload, dict):
            return "Body must be a JSON object"
        for name in ("schemaId", "url", "audience", "subject", "nonce"):
            if not isinstance(payload.get(name), str) or not payload[name]:
                return f"{name} is required"
        if payload["schemaId"] not in self.schemas:
            return "schemaId is not one of the Service App's schemas"
        url = urlsplit(payload["url"])
        kept = source is not None and payload["url"] == source["url"]  # an old registration keeps its url
        if not kept and (url.scheme != "https" or not url.hostname):
            return "url must be https"
        if not kept and self.allowed_domains is not None and url.hostname not in self.allowed_domains:
            return f"url domain {url.hostname} is not registered for the Service App"
        lifetime = payload.get("tokenLifetimeMinutes")
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or not 1 <= lifetime <= 1440:
            return "tokenLifetimeMinutes must be 1 to 1440"
        if source is not None:
            if payload.get("status") not in ("active", "disabled"):
                return "status must be active or disabled"
            if payload["status"] == "disabled" and not payload.get("errorMessage"):
                return "errorMessage is required when status is disabled"
        return None

    def write(self, handler, source: dict | None, body: bytes) -> None:
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return self.error(handler, 400, "Malformed JSON body")
        problem = self.invalid(payload, source)
        if problem:
            return self.error(handler, 400, problem)
        with self.lock:
            if payload["nonce"] in self.used_nonces:
                conflict = True
            else:
                conflict = False
                self.used_nonces.add(payload["nonce"])
        if conflict:
            return self.error(handler, 409, "The nonce has already been used")
        now = int(self.now())
        lifetime = int(payload["tokenLifetimeMinutes"])
        updated = dict(source or {"id": self.new_id(), "createdBy": self.new_id(), "createdAt": iso(now), "status": "active"})
        updated.update({k: payload[k] for k in ("schemaId", "url", "audience", "subject", "nonce")})
        updated.update(lifetime=lifetime, iat=now, exp=now + lifetime * 60)
        updated.pop("issuer", None)
        if source is not None:
            updated["status"] = payload["status"]
            updated["errorMessage"] = payload.get("errorMessage") if payload["status"] == "disabled" else None
        self.issue(updated)
        with self.lock:
            self.sources[updated["id"]] = updated
        self.send(handler, 200 if source else self.created_status, self.public_view(updated))

    def renew(self, handler, body: bytes) -> None:
        """An org's refresh token (any org on this server), or the integration's."""
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        for org in self.everyone():
            if form == {
                "grant_type": "refresh_token",
                "client_id": org.client_id,
                "client_secret": org.client_secret,
                "refresh_token": org.refresh_token,
            }:
                org.access_token = "fake-access-renewed-" + secrets.token_hex(16)
                org.refresh_token = "fake-refresh-renewed-" + secrets.token_hex(16)
                return self.send_tokens(handler, org.access_token, org.refresh_token, org.refresh_expires_in)
        integration = {
            "grant_type": "refresh_token",
            "client_id": self.integration_client_id,
            "client_secret": self.integration_client_secret,
            "refresh_token": self.integration_refresh_token,
        }
        if form != integration:
            return self.error(handler, 400, "Invalid refresh token or client credentials")
        self.integration_token = "fake-integration-renewed-" + secrets.token_hex(16)
        self.integration_refresh_token = "fake-integration-refresh-renewed-" + secrets.token_hex(16)
        self.send_tokens(handler, self.integration_token, self.integration_refresh_token, 7775999)

    def send_tokens(self, handler, access_token: str, refresh_token: str, refresh_expires_in: int, **extra) -> None:
        """A token endpoint's answer, as Webex's /access_token and the mint give it."""
        body = {"access_token": access_token, "expires_in": 1209599, "refresh_token": refresh_token,
                "refresh_token_expires_in": refresh_expires_in, **extra}
        self.send(handler, 200, body)

    def mint(self, handler, app_id: str, body: bytes) -> None:
        """POST /applications/{id}/token: an org's new tokens, for the integration token's owner."""
        if handler.headers.get("Authorization") != f"Bearer {self.integration_token}":
            return self.error(handler, 401, "The request requires a valid access token set in the Authorization request header.")
        if app_id != self.service_app_id:
            return self.error(handler, 404, "Application not found")
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return self.error(handler, 400, "Malformed JSON body")
        if not isinstance(payload, dict) or (payload.get("clientId"), payload.get("clientSecret")) != (self.client_id, self.client_secret):
            return self.error(handler, 400, "Invalid clientId or clientSecret")
        org = next((o for o in self.everyone() if o.org_id == payload.get("targetOrgId")), None)
        if org is None or not org.authorized:
            return self.error(handler, 403, "The organization has not authorized this application")
        with org.lock:
            org.mints += 1
        org.access_token = "fake-access-minted-" + secrets.token_hex(16)
        org.refresh_token = "fake-refresh-minted-" + secrets.token_hex(16)
        self.send_tokens(handler, org.access_token, org.refresh_token, org.refresh_expires_in, token_type="Bearer")


DEMO_SEED = 2024  # the demo's ids and URLs are the same on every run, so the README shows its real output


def seed_demo(fake: FakeWebex, count: int = 5) -> None:
    """A few sources that walk every menu path: fine, expiring soon, expired, disabled. Each expiry
    is half a minute past a whole minute, so what the tool says of it holds for that long."""
    fake.add_source(audience="Acme Contact Center", subject="transcripts", expires_in=20 * 3600 + 30)
    fake.add_source(audience="Globex Voice", subject="virtual agent", lifetime=60, expires_in=20 * 60 + 30)
    fake.add_source(audience="Initech", subject="call data", expires_in=-2 * 3600 - 15)
    fake.add_source(audience="Umbrella", subject="paused", status="disabled", error_message="Contract paused until renewal",
                    expires_in=12 * 3600 + 30)
    for number in range(5, count + 1):
        fake.add_source(audience=f"Customer {number:04d}", subject="BYODS", expires_in=(2 + number % 22) * 3600 + 30)


def demo_settings(fake: FakeWebex) -> dict:
    """The demo's .env: the org's token, the fake's addresses, and what onboarding needs (the
    minting keys and a source template), so every part of the tool can be tried."""
    minting = {key: value for key, value in fake.mint_env(fake).items() if key != "WEBEX_TARGET_ORG_ID"}
    return {**fake.env(), **minting, "WEBEX_SOURCE_URL": "https://dap.example.com/byods/{org_name}",
            "WEBEX_SOURCE_SCHEMA_ID": next(iter(fake.schemas))}


def demo_orgs(fake: FakeWebex) -> dict[str, FakeWebex]:
    """Two customer orgs with files of their own (the first is the .env's), for --env-file 'orgs/*.env'."""
    hooli = fake.add_org()
    hooli.add_source(audience="Hooli Search", subject="queries", expires_in=5 * 3600 + 30)
    return {"acme": fake, "hooli": hooli}


def run_demo(fake: FakeWebex, orgs: dict[str, FakeWebex], tool_args: list[str]) -> int:
    """The tool in this terminal, on this fake: a copy of it in a folder of its own, with its .env
    beside it and orgs/*.env, and none of your WEBEX_ settings; the fake stops and the folder is
    removed when the tool exits. Only the tool writes to stdout, so `--demo --list --json | jq` works."""
    folder = Path(tempfile.mkdtemp(prefix="byods-demo-"))
    try:
        script = folder / SCRIPT.name
        shutil.copy(SCRIPT, script)
        (folder / ".env").write_text("".join(f"{key}={value}\n" for key, value in demo_settings(fake).items()))
        (folder / ".env").chmod(0o600)  # as the README says to keep it
        (folder / "orgs").mkdir()
        for name, org in orgs.items():
            (folder / "orgs" / f"{name}.env").write_text(f"WEBEX_ACCESS_TOKEN={org.access_token}\nWEBEX_TARGET_ORG_ID={org.org_id}\n")
            (folder / "orgs" / f"{name}.env").chmod(0o600)
        env = {key: value for key, value in os.environ.items() if not key.startswith("WEBEX_")}
        # Ctrl-C belongs to the tool (it finishes a write in flight before it exits); a handler, unlike
        # SIG_IGN, is not inherited, so the tool still gets its KeyboardInterrupt.
        signal.signal(signal.SIGINT, lambda *_: None)
        return subprocess.call([sys.executable, str(script), *tool_args], env=env, cwd=folder)
    finally:
        fake.stop()
        shutil.rmtree(folder, ignore_errors=True)
        print("The fake Webex API has stopped, and the demo's files are gone.", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake Webex BYODS API on 127.0.0.1.")
    parser.add_argument("--sources", type=int, default=5, help="how many data sources to seed (at least 4)")
    parser.add_argument("--latency-ms", type=float, default=0, help="simulated round trip per request")
    parser.add_argument("--demo", action="store_true", help="run data-sources.py on this fake in this terminal; stop when it exits")
    args, tool_args = parser.parse_known_args()
    fake = FakeWebex(latency=args.latency_ms / 1000, seed=DEMO_SEED).start()
    seed_demo(fake, args.sources)
    orgs = demo_orgs(fake)
    newcomer = fake.add_org()  # authorized the Service App, nothing registered yet: --onboard it
    if args.demo:
        print(f"The fake Webex API is up: a customer org to onboard is {newcomer.org_id}.", file=sys.stderr)
        sys.exit(run_demo(fake, orgs, tool_args))
    print("Fake Webex API running. Put these in a .env file (or export them):\n")
    for key, value in demo_settings(fake).items():
        print(f"{key}={value}")
    print(f"\nThen: python data-sources.py --env-file that-file. A customer org to onboard: {newcomer.org_id}. "
          "Ctrl-C here stops the fake.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
