#!/usr/bin/env python3
"""data-sources.py: keep Webex BYODS data sources registered, visible and alive.

A Data Access Provider registers, per customer org, a URL where Webex sends data. Webex
authenticates each delivery with a JWS token that lives at most 24 hours; when it lapses, data
stops. This script lists every source with its expiry, views, registers, updates, rotates and
deletes them, verifies the token signatures, and records every change in a JSON file.

    cp .env.sample .env        # put the Service App access token in it
    python data-sources.py     # the table, then the menu

Unattended: `python data-sources.py --rotate-expiring 180` from cron keeps every source alive.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import ipaddress
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests
import urllib3.exceptions as u3
from dotenv.parser import parse_stream
from requests.adapters import HTTPAdapter
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

# ---------------------------------------------------------------------------------------------
# Constants and defaults
# ---------------------------------------------------------------------------------------------

VERSION = "1.0.0"
SCRIPT_DIR = Path(__file__).resolve().parent

DEFAULT_BASE_URL = "https://webexapis.com/v1"
DEFAULT_AUDIENCE = "BYODS"
DEFAULT_SUBJECT = "BYODS"
DEFAULT_LIFETIME = 1440
MIN_LIFETIME, MAX_LIFETIME = 1, 1440
# Webex's identity brokers: US, EU, US-B and Canada (the regions Cisco's own samples accept).
DEFAULT_TRUSTED_ISSUERS = (
    "https://idbroker.webex.com/idb",
    "https://idbroker-eu.webex.com/idb",
    "https://idbroker-b-us.webex.com/idb",
    "https://idbroker-ca.webex.com/idb",
)
DEFAULT_WORKERS = 4
MAX_WORKERS = 32
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
EXPIRING_SOON_SECONDS = 3600
REFRESH_TOKEN_WARNING_DAYS = 14
MENU_TABLE_ROWS = 40  # the menu's table shows the most urgent; the menu itself lists them all
MAX_TEXT_LENGTH = 1024
CELL_WIDTH = 60  # a table cell or menu line shows this much of a value; details show it whole

# Retries: 429/423/502-504 are retried, bounded in count and in total time. A POST is retried
# only where the server said it did not process it, because a lost answer may hide a new source.
RETRY_STATUSES = frozenset({423, 429, 502, 503, 504})
POST_RETRY_STATUSES = frozenset({423, 429, 503})
MAX_ATTEMPTS = 5
RETRY_WAIT_CAP = 60.0
RETRY_BUDGET = 120.0
BACKOFF_BASE = 0.5

TOKEN_PLACEHOLDER = "paste-your-service-app-access-token-here"
READ_SCOPE, WRITE_SCOPE = "spark-admin:datasource_read", "spark-admin:datasource_write"
JWKS_PATH = "/oauth2/v2/keys/verificationjwk"
CLAIM_URL = "com.cisco.datasource.url"
CLAIM_SCHEMA = "com.cisco.datasource.schema.uuid"
CLAIM_ORG = "com.cisco.org.uuid"
DECISION_FIELDS = ("status", "url", "schemaId")  # a list item without one is read on its own

# Every secret the run knows; scrub() removes them from anything shown or written.
SECRETS: set[str] = set()

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class ConfigError(Exception):
    """Bad usage or configuration: exit code 2, with a sentence saying what to fix."""


class RecordError(Exception):
    """A record file could not be written."""


class Cancelled(Exception):
    """The user backed out of a wizard; nothing was sent."""


class UpdateInstead(Exception):
    """Register found the same source already there, and the user chose to update that one."""

    def __init__(self, view):
        super().__init__(view.id)
        self.view = view


def scrub(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "[redacted]")
    return text


# C0 and C1 controls, ESC, BEL, DEL, bidirectional overrides and marks, line separators: any of
# them from an answer could clear the screen, retitle the window, reorder text or split a row.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible_escape(char: str) -> str:
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def safe_text(value) -> str:
    """The one way an outside string reaches the terminal: secrets redacted, control characters
    and bidi overrides shown as visible escapes (\\x1b, \\n, \\u202e), printable Unicode kept.
    Records keep exact values: this is for the screen and the pipe only."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE_CHARS.sub(lambda match: _visible_escape(match[0]), scrub(text))


def safe_json(value) -> str:
    """Indented JSON to show: its own line breaks kept, everything inside the values made safe."""
    return "\n".join(safe_text(line) for line in json.dumps(value, indent=2, ensure_ascii=False, default=str).split("\n"))


def clip(text: str, width: int = CELL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def remember_secret(value: str | None) -> None:
    if value and len(value) >= 8:
        SECRETS.add(value)


# ---------------------------------------------------------------------------------------------
# Validators: one judgement for values typed at a prompt and passed on the command line.
# Each returns True or the reason the value is refused.
# ---------------------------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def validate_required(text: str) -> bool | str:
    if not text or not text.strip():
        return "This field is required."
    if text != text.strip():
        return "Remove the spaces at the start or end."
    if len(text) > MAX_TEXT_LENGTH:
        return f"Keep it under {MAX_TEXT_LENGTH} characters."
    if any(not ch.isprintable() for ch in text):
        return "Control characters are not allowed."
    return True


def validate_nonce(text: str) -> bool | str:
    verdict = validate_required(text)
    if verdict is True and any(ch.isspace() for ch in text):
        return "A nonce has no spaces; keep the generated UUID or type one without spaces."
    return verdict


def validate_lifetime(text: str) -> bool | str:
    if not re.fullmatch(r"[0-9]{1,5}", text or ""):
        return f"Type a whole number of minutes from {MIN_LIFETIME} to {MAX_LIFETIME}."
    if not MIN_LIFETIME <= int(text) <= MAX_LIFETIME:
        return f"The token lifetime must be {MIN_LIFETIME} to {MAX_LIFETIME} minutes (24 hours)."
    return True


def valid_hostname(host: str) -> bool:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.rstrip(".").split(".")
    if len(ascii_host) > 253 or len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(_HOST_LABEL.match(label) for label in labels)


def validate_url(text: str) -> bool | str:
    if not text:
        return "The URL is required: where Webex sends data, e.g. https://dap.example.com/byods."
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        return "The URL must not contain spaces or control characters."
    if len(text) > 2048:
        return "The URL is too long (2048 characters at most)."
    parts = urlsplit(text)
    if parts.scheme.lower() != "https":
        return "The URL must start with https:// (Webex only sends data over TLS)."
    if "@" in parts.netloc:
        return "Leave user names and passwords out of the URL."
    try:
        port = parts.port
    except ValueError:
        return "The port must be a number from 1 to 65535."
    if port == 0:
        return "The port must be a number from 1 to 65535."
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if not is_ip and not valid_hostname(host):
        return "The URL needs a valid host name, e.g. https://dap.example.com/byods."
    return True


def validate_error_message(text: str) -> bool | str:
    verdict = validate_required(text)
    if verdict == "This field is required.":
        return "Disabling needs an error message: Control Hub shows it to the customer's admin."
    return verdict


_PLAIN_ID = re.compile(r"[A-Za-z0-9_=.-]{1,256}")


def plain_id(value) -> bool:
    """Ids go into URL paths and file names: letters, digits, - _ = . only, and never . or .."""
    return isinstance(value, str) and bool(_PLAIN_ID.fullmatch(value)) and value not in (".", "..")


def argparse_type(validator, convert=str):
    """Turn a validator into an argparse type, so a flag is judged like a typed value."""

    def parse(text: str):
        verdict = validator(text)
        if verdict is not True:
            raise argparse.ArgumentTypeError(verdict)
        return convert(text)

    return parse


def validate_minutes(text: str) -> bool | str:
    if not re.fullmatch(r"[0-9]{1,6}", text or ""):
        return "Give a whole number of minutes, e.g. 180."
    return True


def validate_workers(text: str) -> bool | str:
    if not re.fullmatch(r"[0-9]{1,3}", text or "") or not 1 <= int(text) <= MAX_WORKERS:
        return f"Give a whole number of workers from 1 to {MAX_WORKERS}."
    return True


# ---------------------------------------------------------------------------------------------
# Settings: .env beside the script (or --env-file), real environment variables win.
# ---------------------------------------------------------------------------------------------


@dataclass
class Settings:
    access_token: str
    env_file: Path
    base_url: str = DEFAULT_BASE_URL
    records_dir: Path = SCRIPT_DIR / "records"
    client_id: str = ""
    client_secret: str = ""
    refresh_token: str = ""
    refresh_token_expires_at: datetime | None = None
    trusted_issuers: tuple[str, ...] = DEFAULT_TRUSTED_ISSUERS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT

    @property
    def can_renew(self) -> bool:
        return bool(self.client_id and self.client_secret and self.refresh_token)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value pairs of an env file; a line that is not one is an error with its number."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}. Make it a readable UTF-8 text file.") from None
    values = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(
                f"Line {binding.original.line} of {path} is not KEY=value. "
                "Fix or remove it (see .env.sample for the format)."
            )
        if binding.key:
            values[binding.key] = binding.value or ""
    return values


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_service_url(name: str, url: str) -> str:
    """An API base or issuer: https, or http on this machine only (the fake API for testing)."""
    parts = urlsplit(url)
    secure = parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))
    if not parts.hostname or not secure:
        raise ConfigError(f"{name} must be an https:// URL, e.g. {DEFAULT_BASE_URL}; got {url!r}.")
    return url.rstrip("/")


def read_seconds(name: str, value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 600:
        raise ConfigError(f"{name} must be a number of seconds from 0.1 to 600; got {value!r}.")
    return seconds


def load_settings(env_file: str | None, records_dir: str | None) -> Settings:
    path = Path(env_file) if env_file else SCRIPT_DIR / ".env"
    if env_file and not path.is_file():
        raise ConfigError(f"The env file {path} does not exist. Copy .env.sample to it, or drop --env-file.")
    values = {**read_env_file(path), **{k: v for k, v in os.environ.items() if k.startswith("WEBEX_")}}
    token = values.get("WEBEX_ACCESS_TOKEN", "").strip()
    if not token or token == TOKEN_PLACEHOLDER or any(ch.isspace() for ch in token):
        raise ConfigError(
            f"No Service App access token. Put it in {path} as WEBEX_ACCESS_TOKEN=<token> "
            "(copy .env.sample to start), or set the WEBEX_ACCESS_TOKEN environment variable. "
            "Get it from the developer portal: your Service App, Org authorizations."
        )
    issuers = values.get("WEBEX_TRUSTED_ISSUERS", "")
    issuer_list = [item.strip() for item in issuers.split(",") if item.strip()] or DEFAULT_TRUSTED_ISSUERS
    if records_dir:
        records = Path(records_dir)
    elif values.get("WEBEX_RECORDS_DIR"):
        records = SCRIPT_DIR / values["WEBEX_RECORDS_DIR"]  # absolute paths stay as they are
    else:
        records = SCRIPT_DIR / "records"
    settings = Settings(
        access_token=token,
        env_file=path,
        base_url=check_service_url("WEBEX_API_BASE_URL", values.get("WEBEX_API_BASE_URL") or DEFAULT_BASE_URL),
        records_dir=records,
        client_id=values.get("WEBEX_CLIENT_ID", "").strip(),
        client_secret=values.get("WEBEX_CLIENT_SECRET", "").strip(),
        refresh_token=values.get("WEBEX_REFRESH_TOKEN", "").strip(),
        refresh_token_expires_at=parse_iso(values.get("WEBEX_REFRESH_TOKEN_EXPIRES_AT", "").strip()),
        trusted_issuers=tuple(check_service_url("WEBEX_TRUSTED_ISSUERS", i) for i in issuer_list),
        connect_timeout=read_seconds("WEBEX_CONNECT_TIMEOUT", values.get("WEBEX_CONNECT_TIMEOUT"), DEFAULT_CONNECT_TIMEOUT),
        read_timeout=read_seconds("WEBEX_READ_TIMEOUT", values.get("WEBEX_READ_TIMEOUT"), DEFAULT_READ_TIMEOUT),
    )
    for secret in (settings.access_token, settings.client_secret, settings.refresh_token):
        remember_secret(secret)
    return settings


def save_env_values(path: Path, updates: dict[str, str]) -> None:
    """Set KEY=value lines in an env file, keeping every other byte; atomic, mode 0600."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    pending = dict(updates)
    pieces = []
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        if binding.key in pending:
            stripped = original.lstrip()
            lead = original[: len(original) - len(stripped)]
            newline = "\n" if original.endswith("\n") else ""
            original = f"{lead}{binding.key}={pending.pop(binding.key)}{newline}"
        pieces.append(original)
    if pending:
        if pieces and not pieces[-1].endswith("\n"):
            pieces.append("\n")
        pieces.extend(f"{key}={value}\n" for key, value in pending.items())
    try:
        write_file_atomically(path, "".join(pieces))
    except OSError as exc:
        raise ConfigError(f"Could not save {path} ({exc.strerror or exc}): make it writable, or update it by hand.") from None


def write_file_atomically(path: Path, content: str) -> None:
    """Temporary file in the same folder, fsync, rename: a crash leaves the old file whole."""
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# WebexClient: one session, one method per API operation, one ApiError.
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An API call that failed: the HTTP status (None if no answer), Webex's message, tracking id."""

    def __init__(self, message, status=None, tracking_id=None, hint="", body=None, maybe_processed=False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.tracking_id = tracking_id
        self.hint = hint
        self.body = body
        self.maybe_processed = maybe_processed

    def __str__(self) -> str:
        parts = [f"Webex answered {self.status}: {self.message}" if self.status else self.message]
        if self.tracking_id:
            parts.append(f"(tracking id {self.tracking_id})")
        if self.hint:
            parts.append(self.hint)
        return scrub(" ".join(parts))


def token_env_values(body: dict) -> dict[str, str]:
    """What a token answer changes in an env file, the refresh token's expiry included."""
    values = {"WEBEX_ACCESS_TOKEN": body["access_token"]}
    if body.get("refresh_token"):
        values["WEBEX_REFRESH_TOKEN"] = body["refresh_token"]
    lasts = body.get("refresh_token_expires_in")
    if isinstance(lasts, (int, float)) and not isinstance(lasts, bool) and 0 < lasts < 10**9:
        values["WEBEX_REFRESH_TOKEN_EXPIRES_AT"] = (datetime.now(UTC) + timedelta(seconds=lasts)).isoformat(timespec="seconds")
    return values


def status_hint(status: int, method: str, path: str = "") -> str:
    if status == 403 and "/schemas" in path:  # the spec names no scope for the schema calls
        return ("This token may not read the Service App's schemas: check that the Service App is set up with "
                "schemas and that this org has authorized it.")
    scope = READ_SCOPE if method == "GET" else WRITE_SCOPE
    hints = {
        401: "The access token is invalid or expired: put a fresh Service App access token in "
        "WEBEX_ACCESS_TOKEN, or set WEBEX_CLIENT_ID, WEBEX_CLIENT_SECRET and WEBEX_REFRESH_TOKEN "
        "so the tool renews it.",
        403: f"The token lacks the scope {scope}, or this org has not authorized the Service App. "
        "Use the Service App's token from the developer portal (Org authorizations); "
        "a personal token does not work here.",
        404: "No such data source: Refresh to see what exists.",
        409: "It conflicts with the current state: Refresh and try again with a new nonce.",
        423: "The data source is locked: try again in a minute.",
        429: "Webex is rate limiting: try again in a minute.",
    }
    return hints.get(status, "Webex had a problem: try again later." if status >= 500 else "")


def error_from_response(response: requests.Response, method: str, path: str = "") -> ApiError:
    body = parse_body(response)
    message = ""
    if isinstance(body, dict):
        details = [e.get("description") for e in body.get("errors") or [] if isinstance(e, dict)]
        message = str(body.get("message") or "; ".join(d for d in details if d))
        tracking = body.get("trackingId")
    else:
        tracking = None
    tracking = response.headers.get("TrackingID") or tracking
    hint = status_hint(response.status_code, method, path)
    if response.is_redirect:
        hint = (f"It pointed to {response.headers['Location']}, which this tool does not follow, so nothing was "
                f"changed: check WEBEX_API_BASE_URL (normally {DEFAULT_BASE_URL}).")
    return ApiError(message or response.reason or "no message", status=response.status_code, tracking_id=tracking, hint=hint, body=body)


def parse_body(response: requests.Response):
    """The JSON answer, or None for an empty one. Raises ApiError for anything else."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        looks_like = "an HTML page" if b"<html" in response.content[:512].lower() else "text"
        if response.status_code >= 400:
            return None  # the status speaks; its body does not matter
        raise ApiError(
            f"Webex answered with {looks_like}, not JSON. This is usually a proxy or an outage: try again later.",
            status=response.status_code,
            tracking_id=response.headers.get("TrackingID"),
        ) from None


def _causes(exc: BaseException):
    """Every exception requests and urllib3 wrapped inside this one."""
    seen, stack = set(), [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        stack.extend(x for x in (getattr(item, "reason", None), item.__cause__, item.__context__) if isinstance(x, BaseException))


def network_error(exc: requests.RequestException, method: str, host: str, timeouts) -> ApiError:
    """One sentence for a request that got no answer; maybe_processed if it may have arrived."""
    causes = list(_causes(exc))
    if isinstance(exc, requests.exceptions.SSLError):
        message, sent = (f"TLS failed with {host}: check the system clock, any proxy, or REQUESTS_CA_BUNDLE.", False)
    elif isinstance(exc, requests.exceptions.ConnectTimeout):
        message, sent = (f"Could not connect to {host} within {timeouts[0]:g} s: check the network or WEBEX_API_BASE_URL.", False)
    elif isinstance(exc, requests.exceptions.ReadTimeout):
        message, sent = (f"{host} did not answer within {timeouts[1]:g} s (WEBEX_READ_TIMEOUT).", True)
    elif any(isinstance(c, u3.NameResolutionError) for c in causes):
        message, sent = (f"Cannot resolve the host {host}: check WEBEX_API_BASE_URL and your DNS.", False)
    elif any(isinstance(c, (ConnectionRefusedError, u3.NewConnectionError)) for c in causes):
        message, sent = (f"{host} refused the connection: check WEBEX_API_BASE_URL and that the service is up.", False)
    elif isinstance(exc, requests.exceptions.ConnectionError):
        message, sent = (f"The connection to {host} dropped before an answer came.", True)
    else:
        message, sent = (f"The request to {host} failed: {type(exc).__name__}.", False)
    hint = "The data source may have been created: Refresh and check before registering again." if sent and method == "POST" else ""
    return ApiError(message, hint=hint, maybe_processed=sent)


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        return float(value)
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


@dataclass
class Reply:
    status: int
    tracking_id: str | None
    body: object


def wait_quietly(seconds: float, reason: str) -> None:
    time.sleep(seconds)


def source_path(*ids: str) -> str:
    """/dataSources/{id...}: each id checked, then percent-encoded, so no id can change the path."""
    for value in ids:
        if not plain_id(value):
            raise ApiError(f"The id {clip(str(value), 40)!r} is not a plain identifier (letters, digits, -, _, =, .), "
                           "so it was not sent to Webex. Report the source to Webex support.")
    return "/dataSources/" + "/".join(quote(value, safe="") for value in ids)


class WebexClient:
    """The Webex BYODS API. Thread-safe: bulk rotation shares one client among workers."""

    def __init__(self, settings: Settings, pool_size: int = DEFAULT_WORKERS, sleeper=wait_quietly):
        self.settings = settings
        self.host = urlsplit(settings.base_url).netloc
        self.timeouts = (settings.connect_timeout, settings.read_timeout)
        self.workers = pool_size
        self.sleeper = sleeper  # called with (seconds, reason) for every wait before a retry
        self.on_token_renewed = None  # called with the env values a renewal changed
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"data-sources.py/{VERSION}"
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 2), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._lock = threading.Lock()
        self._paused_until = 0.0

    # One method per API operation.
    def list_sources(self) -> list:
        """Every item Webex listed, as it came: fetch_state counts the ones it cannot use."""
        return self._items(self._request("GET", "/dataSources/").body, "data sources")

    def get_source(self, source_id: str) -> dict:
        return self._request("GET", source_path(source_id)).body

    def create_source(self, payload: dict) -> Reply:
        return self._request("POST", "/dataSources", payload)

    def update_source(self, source_id: str, payload: dict) -> Reply:
        return self._request("PUT", source_path(source_id), payload)

    def delete_source(self, source_id: str) -> Reply:
        return self._request("DELETE", source_path(source_id))

    def list_schemas(self) -> list[dict]:
        items = self._items(self._request("GET", "/dataSources/schemas").body, "schemas")
        return [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]

    def get_schema(self, schema_id: str) -> dict:
        return self._request("GET", source_path("schemas", schema_id)).body

    def check_token(self, token: str) -> None:
        """One list call with a candidate token; raises ApiError if Webex refuses it."""
        self._request("GET", "/dataSources/", token=token)

    def use_token(self, token: str) -> None:
        remember_secret(token)
        self.settings.access_token = token

    def renew_access_token(self) -> None:
        """Exchange the refresh token for a new access token (and maybe a new refresh token)."""
        s = self.settings
        form = {"grant_type": "refresh_token", "client_id": s.client_id, "client_secret": s.client_secret, "refresh_token": s.refresh_token}
        try:
            response = self.session.post(f"{s.base_url}/access_token", data=form, timeout=self.timeouts, allow_redirects=False)
        except requests.RequestException as exc:
            raise network_error(exc, "POST", self.host, self.timeouts) from None
        answered = response.status_code < 300
        body = parse_body(response) if answered else None
        if not answered or not isinstance(body, dict) or not body.get("access_token"):
            error = ApiError("no access_token in the answer") if answered else error_from_response(response, "POST")
            raise ApiError(
                f"Could not renew the access token with the refresh token ({error.message}).",
                status=401,
                tracking_id=error.tracking_id,
                hint="Create a new refresh token for the Service App in the developer portal, or put a fresh "
                "access token in WEBEX_ACCESS_TOKEN.",
            )
        remember_secret(body["access_token"])
        remember_secret(body.get("refresh_token"))
        s.access_token = body["access_token"]
        s.refresh_token = body.get("refresh_token") or s.refresh_token
        if self.on_token_renewed:
            self.on_token_renewed(token_env_values(body))

    @staticmethod
    def _items(body, what: str) -> list:
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ApiError(f"Webex's answer had no list of {what} ('items' is missing): try Refresh later.")
        return body["items"]

    def _pause_everyone(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _wait_for_pause(self) -> None:
        with self._lock:
            remaining = self._paused_until - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def _renew_once(self, rejected_token: str) -> None:
        with self._lock:
            if self.settings.access_token == rejected_token:  # another worker may have renewed it
                self.renew_access_token()

    def _request(self, method: str, path: str, payload: dict | None = None, token: str | None = None) -> Reply:
        started = time.monotonic()
        renewed = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self._wait_for_pause()
            sent_token = token or self.settings.access_token
            try:
                response = self.session.request(
                    method,
                    self.settings.base_url + path,
                    json=payload,
                    headers={"Authorization": f"Bearer {sent_token}"},
                    timeout=self.timeouts,
                    allow_redirects=False,  # a redirected PUT would come back a GET, and "succeed"
                )
            except requests.RequestException as exc:
                error = network_error(exc, method, self.host, self.timeouts)
                if not (error.maybe_processed and method != "POST" and attempt < MAX_ATTEMPTS):
                    raise error from None
                self.sleeper(BACKOFF_BASE * 2 ** (attempt - 1), error.message)
                continue
            status = response.status_code
            if status in (POST_RETRY_STATUSES if method == "POST" else RETRY_STATUSES):
                asked = retry_after_seconds(response)
                wait = min(BACKOFF_BASE * 2 ** (attempt - 1), RETRY_WAIT_CAP) if asked is None else asked
                fits = wait <= RETRY_WAIT_CAP and time.monotonic() - started + wait <= RETRY_BUDGET
                if fits and attempt < MAX_ATTEMPTS:
                    if status in (423, 429):
                        self._pause_everyone(wait)  # a rate limit slows every worker, not just this one
                    self.sleeper(wait, f"Webex answered {status}")
                    continue
                error = error_from_response(response, method, path)
                if asked is not None:
                    error.hint = f"Webex asked to wait {asked:g} s: try again after that."
                raise error
            if status == 401 and token is None and not renewed and self.settings.can_renew:
                self._renew_once(sent_token)
                renewed = True
                continue
            if status >= 300:
                raise error_from_response(response, method, path)
            return Reply(status, response.headers.get("TrackingID"), parse_body(response))
        raise AssertionError("unreachable: the last attempt returns or raises")


# ---------------------------------------------------------------------------------------------
# Data source view: the API's dict plus what the JWS claims tell.
# ---------------------------------------------------------------------------------------------


def decode_claims(token) -> tuple[dict | None, str | None]:
    """The unverified claims of a JWS, or the reason they cannot be read."""
    if not isinstance(token, str) or not token:
        return None, "no token"
    parts = token.split(".")
    if len(parts) != 3:
        return None, "token unreadable (not three parts)"
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None, "token unreadable (payload is not base64 JSON)"
    if not isinstance(claims, dict):
        return None, "token unreadable (claims are not an object)"
    return claims, None


def epoch_to_datetime(value) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_iso(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def lifetime_minutes(claims: dict | None) -> int | None:
    """exp - iat, in whole minutes (at least 1), or None when the claims do not say."""
    issued, expires = (claims or {}).get("iat"), (claims or {}).get("exp")
    if epoch_to_datetime(issued) is None or epoch_to_datetime(expires) is None or expires <= issued:
        return None
    return max(1, round((expires - issued) / 60))


def claim_text(value) -> str | None:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return value if isinstance(value, str) and value else None


def fingerprint(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass
class SourceView:
    id: str
    status: str | None = None
    schema_id: str | None = None
    url: str | None = None
    audience: str | None = None
    subject: str | None = None
    nonce: str | None = None
    lifetime_minutes: int | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    error_message: str | None = None
    org_id: str | None = None
    claims: dict | None = None
    token_problem: str | None = None
    unjudged: str | None = None  # why the tool cannot decide about it (what Webex left out)
    warnings: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def active(self) -> bool:
        return self.status == "active"


def item_id(item) -> str | None:
    """A list item's id as text, or None when it has none that could name it."""
    value = item.get("id") if isinstance(item, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def source_view(item: dict) -> SourceView:
    """The API's fields first; the claims fill what the API omits (audience, subject, lifetime)."""
    claims, problem = decode_claims(item.get("jwsToken"))
    c = claims or {}
    api_lifetime = str(item.get("tokenLifetimeMinutes"))
    lifetime = int(api_lifetime) if re.fullmatch(r"[1-9][0-9]{0,4}", api_lifetime) else lifetime_minutes(claims)
    view = SourceView(
        id=item_id(item),
        status=claim_text(item.get("status")) or ("disabled" if item.get("errorMessage") else "active"),
        schema_id=claim_text(item.get("schemaId")) or claim_text(c.get(CLAIM_SCHEMA)),
        url=claim_text(item.get("url")) or claim_text(c.get(CLAIM_URL)),
        audience=claim_text(item.get("audience")) or claim_text(c.get("aud")),
        subject=claim_text(item.get("subject")) or claim_text(c.get("sub")),
        nonce=claim_text(item.get("nonce")) or claim_text(c.get("jti")),
        lifetime_minutes=lifetime,
        issued_at=epoch_to_datetime(c.get("iat")),
        expires_at=epoch_to_datetime(c.get("exp")) or parse_iso(item.get("tokenExpiryTime")),
        error_message=claim_text(item.get("errorMessage")),
        org_id=claim_text(item.get("orgId")) or claim_text(c.get(CLAIM_ORG)),
        claims=claims,
        token_problem=problem,
        raw=item,
    )
    view.warnings = claim_mismatches(view)
    if not claim_text(item.get("status")):  # as Cisco's gateway reads it: no status and no error message is active
        view.warnings.append(f"Webex did not give its status: taken as {view.status}")
    if not plain_id(view.id):
        view.warnings.append("its id is not a plain identifier (letters, digits, -, _, =, .): it is never sent to Webex")
    return view


def claim_mismatches(view: SourceView) -> list[str]:
    """Where the token says something other than the source: it was issued for other values."""
    if not view.claims:
        return [view.token_problem] if view.token_problem else []
    checks = (
        (CLAIM_URL, "url", view.raw.get("url")),
        (CLAIM_SCHEMA, "schemaId", view.raw.get("schemaId")),
        ("jti", "nonce", view.raw.get("nonce")),
    )
    return [
        f"token claim {claim} is {view.claims.get(claim)!r} but the source's {name} is {actual!r}"
        for claim, name, actual in checks
        if actual is not None and view.claims.get(claim) != actual
    ]


def seconds_left(view: SourceView, now: datetime) -> float | None:
    return None if view.expires_at is None else (view.expires_at - now).total_seconds()


def urgency(view: SourceView, now: datetime) -> tuple[int, float]:
    """Sort key: expired, unknown, under an hour, fine; soonest first within each."""
    left = seconds_left(view, now)
    if left is None:
        return (1, 0.0)
    return (0 if left <= 0 else 2 if left < EXPIRING_SOON_SECONDS else 3, left)


def needs_rotation(view: SourceView, now: datetime, within_minutes: float) -> bool:
    left = seconds_left(view, now)
    return left is None or left <= within_minutes * 60


def duration_text(seconds: float) -> str:
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def expiry_text(view: SourceView, now: datetime) -> str:
    left = seconds_left(view, now)
    if left is None:
        return "unknown"
    return f"expired {duration_text(left)} ago" if left <= 0 else f"in {duration_text(left)}"


def local_time(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "unknown"


def payload_from_view(view: SourceView) -> dict:
    """What the source has now, in the shape a PUT sends (the API wants the full payload)."""
    payload = {
        "schemaId": view.schema_id,
        "url": view.url,
        "audience": view.audience,
        "subject": view.subject,
        "nonce": view.nonce,
        "tokenLifetimeMinutes": view.lifetime_minutes,
        "status": view.status or "active",
    }
    if view.status == "disabled":
        payload["errorMessage"] = view.error_message or ""
    return payload


def missing_fields(item: dict) -> list[str]:
    """What a decision about a source needs that the API's answer left out."""
    return [name for name in DECISION_FIELDS if item.get(name) in (None, "")]


def rotation_payload(view: SourceView, lifetime: int | None = None) -> dict:
    """A new nonce and everything else as it is. Raises ValueError when it cannot be judged."""
    if view.unjudged:
        raise ValueError(f"it cannot be judged: {view.unjudged}")
    payload = payload_from_view(view)
    missing = [name for name in ("schemaId", "url", "audience", "subject") if not payload[name]]
    if missing:
        raise ValueError(f"its {', '.join(missing)} cannot be read from the source or its token: use Update instead")
    chosen = lifetime or view.lifetime_minutes or DEFAULT_LIFETIME
    payload["tokenLifetimeMinutes"] = min(max(chosen, MIN_LIFETIME), MAX_LIFETIME)
    payload["nonce"] = str(uuid.uuid4())
    return payload


def find_duplicate(views: list[SourceView], payload: dict) -> SourceView | None:
    """A source with the same url, schema, audience and subject: registering would copy it."""
    same = ("url", "schema_id", "audience", "subject")
    wanted = (payload.get("url"), payload.get("schemaId"), payload.get("audience"), payload.get("subject"))
    return next((v for v in views if tuple(getattr(v, name) for name in same) == wanted), None)


def changed_fields(before: dict, after: dict) -> list[tuple[str, object, object]]:
    keys = dict.fromkeys([*before, *after])
    return [(key, before.get(key), after.get(key)) for key in keys if before.get(key) != after.get(key)]


# ---------------------------------------------------------------------------------------------
# Token verification: RS256 against the issuer's published keys, trusted issuers only.
# ---------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    state: str  # valid, expired, invalid, untrusted, unreachable, missing
    reason: str = ""
    by_trial: bool = False  # no key had the token's kid: the key was found by trying each one

    @property
    def text(self) -> str:
        trial = ", matched by trying each key" if self.by_trial else ""  # no key had the token's kid
        labels = {
            "valid": "valid (matched by trying each key)" if self.by_trial else "valid",
            "expired": f"expired (signature valid{trial})",
            "untrusted": "untrusted issuer",
            "unreachable": "not verified (keys unreachable)",
            "missing": "no token",
        }
        return labels.get(self.state, f"invalid: {self.reason}")


class TokenVerifier:
    """Keys are fetched once per issuer per run; an untrusted issuer is never contacted. The key
    is the one with the token's kid; failing that, each RSA signing key is tried, as Cisco's
    verifiers do (key sets without kids exist)."""

    def __init__(self, trusted_issuers, timeout: float):
        self.trusted = set(trusted_issuers)
        self.timeout = timeout
        self._key_sets: dict[str, list] = {}
        self._unreachable: set[str] = set()
        self._lock = threading.Lock()

    def _keys_for(self, issuer: str) -> list:
        """The issuer's RSA signing keys, fetched once; raises PyJWKClientConnectionError."""
        import jwt

        with self._lock:
            if issuer not in self._key_sets:
                key_set = jwt.PyJWKClient(issuer + JWKS_PATH, timeout=self.timeout, cache_jwk_set=False).get_jwk_set()
                self._key_sets[issuer] = [k for k in key_set.keys if k.key_type == "RSA" and k.public_key_use in ("sig", None)]
            return self._key_sets[issuer]

    def verify(self, view: SourceView, now: datetime | None = None) -> Verdict:
        import jwt

        token = view.raw.get("jwsToken")
        if not isinstance(token, str) or not token:
            return Verdict("missing")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return Verdict("invalid", "the token cannot be parsed")
        if header.get("alg") != "RS256":
            return Verdict("invalid", f"algorithm {header.get('alg')!r} is not RS256")
        issuer = (view.claims or {}).get("iss")
        if not isinstance(issuer, str) or issuer.rstrip("/") not in self.trusted:
            return Verdict("untrusted", f"issuer {issuer!r} is not in WEBEX_TRUSTED_ISSUERS")
        try:
            keys = [] if issuer in self._unreachable else self._keys_for(issuer.rstrip("/"))
        except jwt.PyJWKClientConnectionError:
            self._unreachable.add(issuer)  # once per run: a thousand tokens must not wait a thousand times
        except jwt.PyJWTError as exc:
            return Verdict("invalid", f"the issuer's key set is unusable ({exc})")
        if issuer in self._unreachable:
            return Verdict("unreachable", "the issuer's keys could not be fetched")
        return self._check_signature(token, header.get("kid"), keys, now or datetime.now(UTC))

    @staticmethod
    def _check_signature(token: str, kid, keys: list, now: datetime) -> Verdict:
        import jwt

        by_kid = [k for k in keys if kid and k.key_id == kid]
        for key in by_kid or keys:
            try:
                claims = jwt.decode(token, key.key, algorithms=["RS256"], leeway=60, options={"verify_aud": False, "verify_exp": False})
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                return Verdict("invalid", str(exc))
            expires = epoch_to_datetime(claims.get("exp"))
            if expires is None:
                return Verdict("invalid", "the token has no expiry")
            state = "expired" if expires <= now else "valid"
            return Verdict(state, "the signature is valid but the token has expired" if state == "expired" else "", by_trial=not by_kid)
        if by_kid:
            return Verdict("invalid", "the signature does not match")
        return Verdict("invalid", f"no key in the issuer's set verifies it (none has kid {kid!r})")


# ---------------------------------------------------------------------------------------------
# Records: one JSON file per operation, atomic, never overwritten, secrets redacted.
# ---------------------------------------------------------------------------------------------


def file_timestamp() -> str:
    return datetime.now().strftime("%Y%m%d_%H%M%S_%f")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat()


def redact(value):
    """A raw jwsToken never reaches a record: its claims and a sha256 fingerprint stand in."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "jwsToken" and isinstance(item, str):
                out["jwsTokenClaims"] = decode_claims(item)[0]
                out["jwsTokenFingerprint"] = fingerprint(item)
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def ensure_records_dir(records_dir: Path) -> None:
    """Fail before anything is sent if a record could not be written."""
    try:
        records_dir.mkdir(parents=True, mode=0o700, exist_ok=True)  # exist_ok: workers race to make it
        with tempfile.TemporaryFile(dir=records_dir):
            pass
    except OSError as exc:
        raise RecordError(
            f"Cannot write records to {records_dir} ({exc.strerror or exc}). Nothing was sent. "
            "Fix the folder's permissions, or choose another with --records-dir or WEBEX_RECORDS_DIR."
        ) from None


def file_safe(source_id) -> str:
    """An id as part of a record's name: only plain characters, so the file stays in its folder."""
    return re.sub(r"[^A-Za-z0-9_=.-]", "_", str(source_id))[:100]


def write_record(records_dir: Path, name: str, content: dict) -> Path:
    """Write {name}_{TS}.json: temporary file, fsync, hard link (which never overwrites).
    Callers check the folder with ensure_records_dir before they send anything."""
    text = scrub(json.dumps(redact(content), indent=2, ensure_ascii=False, default=str)) + "\n"
    try:
        fd, temp_name = tempfile.mkstemp(dir=records_dir, prefix=".record-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            while True:
                path = records_dir / f"{name}_{file_timestamp()}.json"
                try:
                    os.link(temp_name, path)
                    return path
                except FileExistsError:
                    continue  # same microsecond: take the next timestamp
        finally:
            Path(temp_name).unlink(missing_ok=True)
    except OSError as exc:
        raise RecordError(f"Could not write the record {name} in {records_dir}: {exc.strerror or exc}.") from None


def operation_record(operation: str, source_id, payload, reply: Reply | None, error: ApiError | None) -> dict:
    return {
        "operation_timestamp": now_iso(),
        "operation_type": operation,
        "data_source_id": source_id,
        "configuration": payload,
        "api_response": {
            "status_code": reply.status if reply else error.status,
            "tracking_id": reply.tracking_id if reply else error.tracking_id,
            "body": reply.body if reply else error.body,
        },
        "success": error is None,
        "error": str(error) if error else None,
    }


def list_record(views: list[SourceView]) -> dict:
    return {"retrieved_timestamp": now_iso(), "count": len(views), "data_sources": [v.raw for v in views]}


# ---------------------------------------------------------------------------------------------
# Rendering with rich: the sources table, details, changes, errors.
# ---------------------------------------------------------------------------------------------

EXPIRY_STYLES = {0: "bold red", 1: "magenta", 2: "yellow", 3: "green"}


def schema_name(schemas: dict, schema_id: str | None) -> str:
    schema = schemas.get(schema_id)
    if schema and schema.get("serviceType"):
        return schema["serviceType"]
    return f"unknown ({(schema_id or '?')[:8]})"


def sort_views(views: list[SourceView], now: datetime) -> list[SourceView]:
    return sorted(views, key=lambda v: urgency(v, now))


def cell(value, style: str = "") -> Text:
    """A table cell or one-line label from outside data: safe, and cut to fit."""
    return Text(clip(safe_text(value)), style=style)


def sources_table(views, schemas, now, verdicts=None, limit=None) -> Table:
    table = Table(title=f"Data sources ({len(views)})", title_justify="left", expand=False)
    table.add_column("ID", no_wrap=True)
    for column in ("Audience", "Subject", "Schema", "URL", "Status"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")  # one line per source, whatever comes
    table.add_column("Expires", no_wrap=True)
    if verdicts is not None:
        table.add_column("Signature", no_wrap=True, overflow="ellipsis")
    shown = sort_views(views, now)[:limit]
    for view in shown:
        row = [
            cell(view.short_id),
            cell(view.audience or "unknown"),
            cell(view.subject or "unknown"),
            cell(schema_name(schemas, view.schema_id)),
            cell(view.url or "unknown"),
            cell(view.status or "unknown", "green" if view.active else "red"),
            cell(expiry_text(view, now), EXPIRY_STYLES[urgency(view, now)[0]]),
        ]
        if verdicts is not None:
            verdict = verdicts[view.id]
            row.append(cell(verdict.text, "green" if verdict.state == "valid" else "yellow"))
        table.add_row(*row)
    if not views:
        table.caption = "No data sources yet: choose Register to add one."
    elif len(shown) < len(views):
        table.caption = f"The {len(shown)} most urgent of {len(views)}: type in the menu to find any, or run --list for all."
    return table


def plain_rows(views, schemas, now, verdicts) -> str:
    """--list when piped: tab-separated with full ids, easy to cut and grep."""
    header = ["id", "audience", "subject", "schema", "url", "status", "expires_at", "expires", "signature"]
    lines = ["\t".join(header)]
    for view in sort_views(views, now):
        cells = [
            view.id,
            view.audience or "unknown",
            view.subject or "unknown",
            schema_name(schemas, view.schema_id),
            view.url or "unknown",
            view.status or "unknown",
            view.expires_at.isoformat() if view.expires_at else "unknown",
            expiry_text(view, now),
            verdicts[view.id].text,
        ]
        lines.append("\t".join(safe_text(value) for value in cells))  # a tab or newline inside shows as \\t, \\n
    return "\n".join(lines)


def details_panel(view: SourceView, schemas: dict, now: datetime, verdict: Verdict | None) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    schema = schemas.get(view.schema_id) or {}
    rows = [
        ("ID", view.id),
        ("Status", view.status or "unknown"),
        ("Error message", view.error_message or "-"),
        ("Audience", view.audience or "unknown"),
        ("Subject", view.subject or "unknown"),
        ("URL", view.url or "unknown"),
        ("Schema", f"{schema_name(schemas, view.schema_id)}  {view.schema_id or ''}"),
        ("Schema description", schema.get("description") or "-"),
        ("Nonce", view.nonce or "unknown"),
        ("Token lifetime", f"{view.lifetime_minutes} minutes" if view.lifetime_minutes else "unknown"),
        ("Issued", local_time(view.issued_at)),
        ("Expires", f"{local_time(view.expires_at)}  ({expiry_text(view, now)})"),
        ("Signature", verdict.text if verdict else "not checked"),
        ("Org", view.org_id or "unknown"),
        ("Created", f"{view.raw.get('createdAt', 'unknown')} by {view.raw.get('createdBy', 'unknown')}"),
    ]
    if isinstance(view.raw.get("jwsToken"), str):
        rows.append(("Token fingerprint", fingerprint(view.raw["jwsToken"])))
    for label, value in rows:
        grid.add_row(label, Text(safe_text(value)))
    if view.claims:
        grid.add_row("Claims", Text(safe_json(view.claims)))
    for warning in view.warnings:
        grid.add_row(Text("Warning", style="yellow"), Text(safe_text(warning), style="yellow"))
    return Panel(grid, title=Text(f"Data source {safe_text(view.short_id)}"), title_align="left")


def changes_table(changes, title="Changes") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Field")
    table.add_column("Before", overflow="fold")
    table.add_column("After", overflow="fold")
    for name, before, after in changes:
        table.add_row(name, Text(safe_text(before)), Text(safe_text(after), style="bold"))
    return table


def payload_table(payload: dict, schemas: dict, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Field")
    table.add_column("Value", overflow="fold")
    for key, value in payload.items():
        shown = f"{schema_name(schemas, value)}  {value}" if key == "schemaId" else str(value)
        table.add_row(key, Text(safe_text(shown)))
    return table


def show_error(error: BaseException) -> None:
    err_console.print(Text("Error: ", style="bold red") + Text(safe_text(str(error))))


def show_warning(message: str) -> None:
    err_console.print(Text("Warning: ", style="yellow") + Text(safe_text(message)))


def show_result(result: WriteResult, now: datetime) -> None:
    if result.ok and result.view:
        done = (f"{result.operation} of {result.view.short_id}; the token now expires "
                f"{local_time(result.view.expires_at)} ({expiry_text(result.view, now)}).")
        console.print(Text("Done: ", style="green") + Text(safe_text(done)))
    elif result.ok:
        console.print(Text("Done: ", style="green") + Text(safe_text(f"{result.operation} of {result.source_id}.")))
    else:
        show_error(result.error)
    if result.record:
        console.print(Text(f"Record: {safe_text(result.record)}"))
    elif result.record_error:
        show_error(result.record_error)


def expiring_notice(views, now) -> str | None:
    urgent = [v for v in views if v.active and needs_rotation(v, now, 60)]
    if not urgent:
        return None
    return (
        f"{len(urgent)} active source(s) expire within the hour or have expired. "
        "Choose Rotate, or run: python data-sources.py --rotate-expiring 60"
    )


# ---------------------------------------------------------------------------------------------
# Prompts with questionary (imported only where a prompt is shown).
# ---------------------------------------------------------------------------------------------


def can_prompt() -> bool:
    """The one place that decides whether the tool may ask: stdin and stdout are terminals."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def ask(question):
    """A wizard's question: Ctrl-C cancels the whole wizard, and nothing is sent."""
    try:
        answer = question.unsafe_ask()
    except (KeyboardInterrupt, EOFError):
        raise Cancelled from None
    if answer is None:
        raise Cancelled
    return answer


def menu_title(view: SourceView, now: datetime) -> str:
    audience, status = clip(safe_text(view.audience or "unknown")), clip(safe_text(view.status or "unknown"), 12)
    return f"{audience} · {status} · {expiry_text(view, now)} · {safe_text(view.short_id)}"


def prompt_menu(views, now):
    import questionary

    choices = [questionary.Choice(menu_title(v, now), ("view", v.id)) for v in sort_views(views, now)]
    if choices:
        choices.append(questionary.Separator())
    choices += [
        questionary.Choice("Register a new data source", ("register", None)),
        questionary.Choice("Rotate a token (new nonce, same settings)", ("rotate", None)),
        questionary.Choice("Delete a data source", ("delete", None)),
        questionary.Choice("Schemas", ("schemas", None)),
        questionary.Choice("Replace the access token", ("token", None)),
        questionary.Choice("Refresh", ("refresh", None)),
        questionary.Choice("Quit", ("quit", None)),
    ]
    return questionary.select(
        "Choose a data source or an action (type to filter):", choices, use_search_filter=True, use_jk_keys=False
    ).unsafe_ask()


def prompt_source(views, now, message, extra_choices=()):
    import questionary

    choices = list(extra_choices) + [questionary.Choice(menu_title(v, now), v.id) for v in sort_views(views, now)]
    if not choices:
        raise Cancelled
    return ask(questionary.select(message, choices, use_search_filter=True, use_jk_keys=False))


def prompt_schema(schemas: dict, current: str | None) -> str:
    import questionary

    choices = [
        questionary.Choice(clip(safe_text(f"{s.get('serviceType') or 'unnamed'}: {s.get('description') or 'no description'}"), 2 * CELL_WIDTH), sid)
        for sid, s in schemas.items()
    ]
    if current and current not in schemas:
        choices.insert(0, questionary.Choice(f"current: {clip(safe_text(schema_name(schemas, current)))}", current))
    if not choices:
        return ask(questionary.text("Schema id (no schemas could be listed):", default=current or "", validate=validate_required))
    default = next((c for c in choices if c.value == current), None)
    return ask(questionary.select("Schema:", choices, default=default))


def prompt_text(label: str, default, validator) -> str:
    import questionary

    return ask(questionary.text(f"{label}:", default=str(default or ""), validate=validator))


def confirm(message: str, default: bool) -> bool:
    import questionary

    return ask(questionary.confirm(message, default=default))


def source_wizard(schemas: dict, start: dict, updating: bool) -> dict:
    """Register and update ask the same fields. Update keeps the schema (the API does not change
    it), may keep a URL that today's rules would refuse, and adds status and error message."""
    payload = {
        "audience": prompt_text("Audience", start.get("audience"), validate_required),
        "subject": prompt_text("Subject", start.get("subject"), validate_required),
        "url": prompt_url(start.get("url"), keep_as_is=updating),
        "schemaId": show_kept_schema(schemas, start.get("schemaId")) if updating else prompt_schema(schemas, start.get("schemaId")),
        "tokenLifetimeMinutes": int(prompt_text("Token lifetime (minutes, 1-1440)", start.get("tokenLifetimeMinutes"), validate_lifetime)),
        "nonce": prompt_text("Nonce", start.get("nonce"), validate_nonce),
    }
    if updating:
        import questionary

        status = ask(questionary.select("Status:", ["active", "disabled"], default=start.get("status") or "active"))
        payload["status"] = status
        if status == "disabled":
            payload["errorMessage"] = prompt_text("Error message", start.get("errorMessage"), validate_error_message)
        elif start.get("status") == "disabled":
            payload["errorMessage"] = ""  # re-enabling clears the message Control Hub showed
    return payload


def prompt_url(current: str | None, keep_as_is: bool) -> str:
    """A new URL is judged by today's rules; an update may keep the current one unchanged."""
    verdict = validate_url(current or "")
    if keep_as_is and current and verdict is not True:
        show_warning(f"The current URL would not be accepted for a new source: {verdict} Enter keeps it unchanged.")
        return prompt_text("URL", current, lambda text: text == current or validate_url(text))
    return prompt_text("URL", current, validate_url)


def show_kept_schema(schemas: dict, schema_id: str | None) -> str | None:
    console.print(Text(f"Schema: {safe_text(schema_name(schemas, schema_id))} (kept: to move the source to another "
                       "schema, delete it and register it again; the delete record keeps its settings)"))
    return schema_id


def prompt_instead_of_duplicate(duplicate: SourceView, now: datetime) -> bool:
    """True: update the existing source instead of registering a copy."""
    import questionary

    show_warning(f"A source with the same URL, schema, audience and subject exists: {menu_title(duplicate, now)}")
    choices = [questionary.Choice("Update that one instead", True), questionary.Choice("Register another anyway", False)]
    return ask(questionary.select("What now?", choices, default=choices[0]))


def prompt_token() -> str:
    import questionary

    return ask(questionary.password("New Service App access token (input hidden):", validate=validate_nonce)).strip()


# ---------------------------------------------------------------------------------------------
# Actions: call the client and the records, return results; they never prompt.
# ---------------------------------------------------------------------------------------------


@dataclass
class State:
    views: list[SourceView]
    schemas: dict[str, dict]
    warnings: list[str] = field(default_factory=list)
    unnamed: int = 0  # list items without an id: nothing can be decided about them

    def find(self, source_id: str) -> SourceView:
        return next(v for v in self.views if v.id == source_id)

    def put(self, view: SourceView) -> None:
        self.views = [v for v in self.views if v.id != view.id] + [view]

    def drop(self, source_id: str) -> None:
        self.views = [v for v in self.views if v.id != source_id]


@dataclass
class WriteResult:
    operation: str
    source_id: str | None
    ok: bool
    view: SourceView | None = None
    record: Path | None = None
    error: BaseException | None = None
    record_error: RecordError | None = None  # Webex answered, but the record could not be written
    reconciled: str | None = None  # a lost register answer, looked up: created, not_created, unknown


def fetch_state(client: WebexClient, known_schemas: dict | None = None) -> State:
    """Sources, and schemas side by side unless known; schemas failing still leaves the sources."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        sources = pool.submit(client.list_sources)
        schemas = pool.submit(client.list_schemas) if known_schemas is None else None
        items = sources.result()
        warnings, schema_map = [], known_schemas or {}
        if schemas:
            try:
                schema_map = {s["id"]: s for s in schemas.result()}
            except ApiError as exc:
                warnings.append(f"Schemas could not be listed, so they show as unknown: {exc}")
    views, unnamed = views_from_items(items)
    if unnamed:
        warnings.append(f"{unnamed} item(s) in Webex's list had no id (or were not objects), so they cannot be shown or changed.")
    return State(fill_sparse(client, views), schema_map, warnings, unnamed)


def fill_sparse(client: WebexClient, views: list[SourceView]) -> list[SourceView]:
    """A list item without what a decision needs (status, url, schemaId) is read on its own,
    side by side; if that fails too, the view says it cannot be judged."""
    sparse = [v for v in views if missing_fields(v.raw) and plain_id(v.id)]

    def read(view: SourceView) -> SourceView:
        try:
            body = client.get_source(view.id)
        except ApiError as exc:
            view.unjudged = f"Webex's list left out its {', '.join(missing_fields(view.raw))} and reading it failed ({exc.message})"
            return view
        return source_view({**view.raw, **(body if isinstance(body, dict) else {})})

    if not sparse:
        return views
    with ThreadPoolExecutor(max_workers=client.workers) as pool:
        filled = {view.id: view for view in pool.map(read, sparse)}
    return [filled.get(view.id, view) for view in views]


def views_from_items(items: list) -> tuple[list[SourceView], int]:
    """The items that name a source, and how many do not: those are counted, never dropped silently."""
    views = [source_view(item) for item in items if item_id(item)]
    return views, len(items) - len(views)


def write_operation(records_dir: Path, operation: str, source_id, payload, send, look_up=None) -> WriteResult:
    """Every write: check the record can be written, send, record success or failure.
    look_up(error) settles a write whose answer was lost: (reconciled, view found or None)."""
    ensure_records_dir(records_dir)
    try:
        reply, error = send(), None
    except ApiError as exc:
        reply, error = None, exc
    body = reply.body if reply and isinstance(reply.body, dict) else {}
    source_id = item_id(body) or source_id
    result = WriteResult(operation, source_id, error is None, view=source_view(body) if item_id(body) else None, error=error)
    if error and error.maybe_processed and look_up:
        result.reconciled, result.view = look_up(error)
        source_id = result.source_id = result.view.id if result.view else source_id
    name = f"data_source_{operation}_{file_safe(source_id)}" if result.ok else f"data_source_{operation}_failed"
    content = operation_record(operation, source_id, payload, reply, error)
    if result.reconciled:
        content["reconciled"] = result.reconciled
    try:
        result.record = write_record(records_dir, name, content)
    except RecordError as exc:  # what Webex did stands; the result says the record is missing
        outcome = "went through" if result.ok else "was refused"
        result.record_error = RecordError(f"The {operation} {outcome}, but no record of it was kept. {exc} "
                                          "Make room or fix the folder before the next change.")
    return result


def register_source(client, records_dir, payload) -> WriteResult:
    return write_operation(records_dir, "registration", None, payload, lambda: client.create_source(payload),
                           lambda error: find_registered(client, payload, error))


def find_registered(client, payload: dict, error: ApiError) -> tuple[str, SourceView | None]:
    """A register whose answer was lost: list once, and look for a source with the same URL whose
    token carries the nonce that was sent. The error's advice says what was found."""
    try:
        views, _ = views_from_items(client.list_sources())
    except ApiError as exc:
        error.hint = f"Whether it was created is unknown ({exc.message}): Refresh and check before registering again."
        return "unknown", None
    found = next((v for v in views if v.url == payload.get("url") and (v.claims or {}).get("jti") == payload.get("nonce")), None)
    if found:
        error.hint = f"Listing the sources shows it was created as {found.id}."
        return "created", found
    error.hint = "Listing the sources shows it was not created: safe to register again."
    return "not_created", None


def update_source(client, records_dir, source_id, payload, operation="update") -> WriteResult:
    return write_operation(records_dir, operation, source_id, payload, lambda: client.update_source(source_id, payload))


def rotate_source(client, records_dir, view: SourceView, lifetime: int | None = None) -> WriteResult:
    try:
        payload = rotation_payload(view, lifetime)
    except ValueError as exc:
        return WriteResult("rotation", view.id, False, error=ApiError(f"Cannot rotate {view.short_id}: {exc}."))
    return update_source(client, records_dir, view.id, payload, "rotation")


def delete_source(client, records_dir, view: SourceView) -> WriteResult:
    """The record keeps the last known configuration, so the source can be registered again."""
    payload = {k: v for k, v in payload_from_view(view).items() if k not in ("nonce", "status")}
    result = write_operation(records_dir, "delete", view.id, payload, lambda: client.delete_source(view.id))
    if not result.ok and result.error.status == 404:
        result.error = ApiError(f"data source {view.short_id} is already gone.", status=404, tracking_id=result.error.tracking_id)
    return result


def rotation_targets(views, selector, within_minutes, now) -> tuple[list[SourceView], list[SourceView]]:
    """(to rotate, skipped because disabled) for --rotate IDS|all and --rotate-expiring."""
    if within_minutes is not None:
        chosen = [v for v in views if needs_rotation(v, now, within_minutes)]
    elif selector == ["all"]:
        chosen = list(views)
    else:
        chosen = [resolve_id(views, wanted) for wanted in selector]
    chosen = list({v.id: v for v in chosen}.values())
    return [v for v in chosen if v.active], [v for v in chosen if not v.active]


def resolve_id(views, wanted: str) -> SourceView:
    matches = [v for v in views if v.id == wanted] or [v for v in views if v.id.startswith(wanted) and len(wanted) >= 4]
    if len(matches) != 1:
        problem = "matches several data sources" if matches else "is not a data source in this org"
        raise ConfigError(f"{wanted!r} {problem}. Run --list to see the ids (a unique prefix of 4+ characters works).")
    return matches[0]


def rotate_many(client, records_dir, views, lifetime, workers, on_result) -> list[WriteResult]:
    """Rotate concurrently with a bounded pool. If the batch stops (Ctrl-C), nothing more is sent,
    and requests already in flight still get their answer recorded."""
    ensure_records_dir(records_dir)
    results = []
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = [pool.submit(rotate_source, client, records_dir, view, lifetime) for view in views]
    try:
        for future in as_completed(futures):
            results.append(future.result())
            on_result(results[-1])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def run_to_completion(action, *args):
    """Ctrl-C during a write waits for Webex's answer, so the result is recorded, then exits."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(action, *args)
        try:
            return future.result()
        except KeyboardInterrupt:
            err_console.print("Interrupted: waiting for Webex's answer so the result is recorded...")
            show_result(future.result(), datetime.now(UTC))
            raise


# ---------------------------------------------------------------------------------------------
# The menu: wires prompts, actions and rendering. Errors are shown and the loop carries on.
# ---------------------------------------------------------------------------------------------


def countdown(seconds: float, reason: str) -> None:
    """The menu's wait before a retry: visible, second by second."""
    end = time.monotonic() + seconds
    reason = safe_text(reason).rstrip(".")
    with console.status(Text(reason)) as status:
        while (left := end - time.monotonic()) > 0:
            status.update(Text(f"{reason}: retrying in {math.ceil(left)} s"))
            time.sleep(min(1.0, left))


def announce_wait(seconds: float, reason: str) -> None:
    """The scripted wait before a retry: one line on stderr, then wait."""
    err_console.print(Text(f"{safe_text(reason).rstrip('.')}: retrying in {seconds:g} s."))
    time.sleep(seconds)


class Menu:
    """State that is real: the client, the sources on screen, and where records go."""

    def __init__(self, client: WebexClient, settings: Settings, state: State):
        self.client = client
        self.settings = settings
        self.state = state
        self.verifier = TokenVerifier(settings.trusted_issuers, settings.connect_timeout)

    def run(self) -> int:
        while True:
            now = datetime.now(UTC)
            console.print(sources_table(self.state.views, self.state.schemas, now, limit=MENU_TABLE_ROWS))
            for warning in self.state.warnings:
                show_warning(warning)
            notice = expiring_notice(self.state.views, now)
            if notice:
                console.print(Text(notice, style="bold yellow"))
            kind, source_id = prompt_menu(self.state.views, now)  # Ctrl-C here exits with 130
            if kind == "quit":
                return 0
            action = getattr(self, f"do_{kind}")
            try:
                self.with_token_recovery(action, source_id)
            except Cancelled:
                console.print("Cancelled: nothing was sent.")
            except (ApiError, RecordError, ConfigError) as exc:
                show_error(exc)

    def with_token_recovery(self, action, *args) -> None:
        """On a 401, offer to paste a new token, then carry on with the same action."""
        try:
            action(*args)
        except ApiError as exc:
            if exc.status != 401:
                raise
            show_error(exc)
            if self.recover_token():
                action(*args)

    def recover_token(self) -> bool:
        if not confirm("Paste a new access token now?", True):
            return False
        self.do_token()
        return True

    def write(self, action, *args) -> WriteResult:
        """Send one write; after a 401 and a new token, send the same thing again."""
        result = run_to_completion(action, self.client, self.settings.records_dir, *args)
        show_result(result, datetime.now(UTC))
        if not result.ok and getattr(result.error, "status", None) == 401 and self.recover_token():
            return self.write(action, *args)
        if result.view:  # done, or a lost register answer found it created
            self.state.put(result.view)
        return result

    def write_until_done(self, wizard, send, start: dict) -> None:
        """If Webex refuses what was typed, offer it again prefilled: typed work is never lost."""
        while True:
            payload = wizard(start)
            result = self.write(send, payload)
            refused = result.error and (result.error.status is not None or result.reconciled == "not_created")
            if not refused or not confirm("Edit and try again?", True):
                return
            start = payload

    def do_view(self, source_id: str) -> None:
        view = self.state.find(source_id)
        now = datetime.now(UTC)
        console.print(details_panel(view, self.state.schemas, now, self.verifier.verify(view, now)))
        if confirm("Update this data source?", False):
            self.do_update(view)

    def do_update(self, view: SourceView) -> None:
        schemas = self.state.schemas

        def wizard(start):
            payload = source_wizard(schemas, start, updating=True)
            console.print(changes_table(changed_fields(payload_from_view(view), payload), "What will change"))
            if not confirm(f"Send this update to {safe_text(view.short_id)}?", False):
                raise Cancelled
            return payload

        start = {**payload_from_view(view), "nonce": str(uuid.uuid4())}
        start["tokenLifetimeMinutes"] = start["tokenLifetimeMinutes"] or DEFAULT_LIFETIME
        self.write_until_done(wizard, lambda client, records, payload: update_source(client, records, view.id, payload), start)

    def do_register(self, _=None) -> None:
        schemas = self.state.schemas

        def wizard(start):
            payload = source_wizard(schemas, start, updating=False)
            duplicate = find_duplicate(self.state.views, payload)
            if duplicate and prompt_instead_of_duplicate(duplicate, datetime.now(UTC)):
                raise UpdateInstead(duplicate)
            console.print(payload_table(payload, schemas, "What will be registered"))
            if not confirm("Register this data source?", False):
                raise Cancelled
            return payload

        start = {
            "audience": DEFAULT_AUDIENCE,
            "subject": DEFAULT_SUBJECT,
            "nonce": str(uuid.uuid4()),
            "tokenLifetimeMinutes": DEFAULT_LIFETIME,
            "schemaId": next(iter(schemas), None),
        }
        try:
            self.write_until_done(wizard, register_source, start)
        except UpdateInstead as instead:
            self.do_update(instead.view)

    def do_rotate(self, _=None) -> None:
        import questionary

        now = datetime.now(UTC)
        active = [v for v in self.state.views if v.active]
        if not active:
            console.print("No active data source to rotate.")
            return
        urgent = [v for v in active if needs_rotation(v, now, 60)]
        extra = [questionary.Choice(f"All {len(urgent)} active sources expiring within the hour", "urgent")] if len(urgent) > 1 else []
        chosen = prompt_source(active, now, "Rotate which source?", extra)
        targets = urgent if chosen == "urgent" else [self.state.find(chosen)]
        for view in targets:
            lifetime = view.lifetime_minutes or DEFAULT_LIFETIME
            console.print(Text(f"{cell(view.short_id)} {cell(view.audience or '')}: new nonce, lifetime {lifetime} minutes, everything else as it is."))
        if not confirm(f"Rotate {len(targets)} token(s) now?", True):
            raise Cancelled
        if len(targets) == 1:
            self.write(rotate_source, targets[0])
            return
        results = run_bulk_rotation(self.client, self.settings.records_dir, targets, None, DEFAULT_WORKERS, interactive=True)
        console.print(rotation_summary(results, 0, datetime.now(UTC)))
        for result in results:
            if result.ok and result.view:
                self.state.put(result.view)

    def do_delete(self, _=None) -> None:
        now = datetime.now(UTC)
        view = self.state.find(prompt_source(self.state.views, now, "Delete which source?"))
        console.print(details_panel(view, self.state.schemas, now, None))
        typed = prompt_text(f"To delete, type its audience ({cell(view.audience)}) or the first 8 characters of its id", "", lambda t: True)
        if not typed or typed not in (view.audience, view.short_id):
            console.print("That does not match: nothing was deleted.")
            return
        result = run_to_completion(delete_source, self.client, self.settings.records_dir, view)
        show_result(result, now)
        if result.ok or result.error.status == 404:
            self.state.drop(view.id)

    def do_schemas(self, _=None) -> None:
        import questionary

        schemas = self.client.list_schemas()
        self.state.schemas = {s["id"]: s for s in schemas}
        table = Table(title=f"Schemas ({len(schemas)})", title_justify="left")
        for column in ("Service type", "Description", "Protocol", "App type", "ID", "URL"):
            table.add_column(column, overflow="fold")
        for s in schemas:
            table.add_row(*(cell(s.get(k) or "-") for k in ("serviceType", "description", "protocol", "appType", "id", "url")))
        console.print(table)
        choices = [questionary.Choice(str(cell(s.get("serviceType") or s["id"])), s["id"]) for s in schemas] + [questionary.Choice("Back", None)]
        schema_id = ask(questionary.select("Show which schema?", choices))
        if schema_id:
            detail = self.client.get_schema(schema_id)
            console.print(Panel(Text(safe_json(detail)), title=Text(f"Schema {safe_text(schema_id)}"), title_align="left"))

    def do_token(self, _=None) -> None:
        """Check a pasted token with one list call before it replaces the one in .env."""
        while True:
            token = prompt_token()
            try:
                self.client.check_token(token)
                break
            except ApiError as exc:
                show_error(exc)
        self.client.use_token(token)
        save_env_values(self.settings.env_file, {"WEBEX_ACCESS_TOKEN": token})
        console.print(Text(f"The new access token works and was saved to {self.settings.env_file}."))

    def do_refresh(self, _=None) -> None:
        self.state = fetch_state(self.client, self.state.schemas or None)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="data-sources.py",
        description="List, register, update, rotate and delete Webex BYODS data sources.",
        epilog="Exit codes: 0 success, 1 an API operation failed, 2 bad usage or configuration, 130 interrupted.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="print the sources table and exit")
    action.add_argument("--rotate", nargs="+", metavar="ID", help="rotate these sources (ids or unique prefixes), or 'all' active ones")
    action.add_argument(
        "--rotate-expiring",
        type=argparse_type(validate_minutes, int),
        metavar="MINUTES",
        help="rotate every active source whose token expires within MINUTES (expired included)",
    )
    parser.add_argument("--save-list", action="store_true", help="write data_sources_list_{TS}.json at startup")
    parser.add_argument("--lifetime", type=argparse_type(validate_lifetime, int), metavar="MINUTES", help="new token lifetime for rotation (1-1440); default: keep each source's own")
    parser.add_argument("--workers", type=argparse_type(validate_workers, int), default=DEFAULT_WORKERS, metavar="N", help=f"parallel rotations (default {DEFAULT_WORKERS})")
    parser.add_argument("--records-dir", metavar="DIR", help="where record files go (default: records/ beside the script)")
    parser.add_argument("--env-file", metavar="PATH", help="read settings from this file instead of .env beside the script")
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    return parser.parse_args(argv)


def save_token_to_env(settings: Settings):
    def save(values: dict[str, str]) -> None:
        save_env_values(settings.env_file, values)
        err_console.print(Text(f"The access token was renewed with the refresh token and saved to {settings.env_file}."))

    return save


def refresh_token_warning(settings: Settings, now: datetime) -> str | None:
    expires = settings.refresh_token_expires_at
    if expires is None or (expires - now).days >= REFRESH_TOKEN_WARNING_DAYS:
        return None
    when = f"expired {duration_text((expires - now).total_seconds())} ago" if expires <= now else f"expires in {duration_text((expires - now).total_seconds())}"
    return (f"The refresh token in {settings.env_file} {when} ({local_time(expires)}): create a new one for the "
            "Service App in the developer portal before then, or the access token can no longer renew itself.")


def save_list(settings: Settings, state: State) -> None:
    path = write_record(settings.records_dir, "data_sources_list", list_record(state.views))
    err_console.print(Text(f"Saved the list of {len(state.views)} sources to {path}"))


def run_list(client: WebexClient, settings: Settings, state: State) -> int:
    now = datetime.now(UTC)
    verifier = TokenVerifier(settings.trusted_issuers, settings.connect_timeout)
    verdicts = {view.id: verifier.verify(view, now) for view in state.views}
    for warning in state.warnings:
        show_warning(warning)
    if sys.stdout.isatty():
        console.print(sources_table(state.views, state.schemas, now, verdicts))
    else:
        print(plain_rows(state.views, state.schemas, now, verdicts))
    for view in state.views:
        for warning in view.warnings:
            show_warning(f"{view.short_id}: {warning}")
    return 0


def rotation_line(result: WriteResult) -> str:
    if result.ok:
        expires = local_time(result.view.expires_at) if result.view else "unknown"
        line = f"rotated  {result.source_id}  expires {expires}"
    else:
        line = f"failed   {result.source_id}  {result.error}"
    return safe_text(f"{line}  {result.record_error}" if result.record_error else line)


def rotation_summary(results: list[WriteResult], skipped: int, now: datetime) -> str:
    failed = sum(not r.ok for r in results)
    summary = f"Rotated {len(results) - failed}, skipped {skipped}, failed {failed}."
    if unrecorded := sum(r.record_error is not None for r in results):
        summary += f" {unrecorded} left no record."
    rotated = [r.view for r in results if r.ok and r.view and r.view.expires_at]
    if rotated:
        earliest = min(rotated, key=lambda v: v.expires_at)
        summary += f" Earliest new expiry: {local_time(earliest.expires_at)} ({expiry_text(earliest, now)})."
    return summary


def run_bulk_rotation(client, records_dir, targets, lifetime, workers, interactive) -> list[WriteResult]:
    """A progress bar on a terminal; one plain line per source otherwise (cron mail)."""
    if not interactive:
        return rotate_many(client, records_dir, targets, lifetime, workers, lambda r: print(rotation_line(r), flush=True))
    from rich.progress import Progress

    with Progress(console=console) as progress:
        task = progress.add_task("Rotating", total=len(targets))

        def advance(result: WriteResult) -> None:
            progress.advance(task)
            if not result.ok or result.record_error:
                progress.console.print(Text(rotation_line(result)))

        return rotate_many(client, records_dir, targets, lifetime, workers, advance)


def unnamed_results(count: int) -> list[WriteResult]:
    """List items without an id cannot be judged: a rotation over everything fails for them, never a quiet 0."""
    error = ApiError("Webex listed it without an id, so it cannot be judged or rotated.")
    return [WriteResult("rotation", "(no id)", False, error=error) for _ in range(count)]


def run_rotation(client, settings, state, args) -> int:
    now = datetime.now(UTC)
    targets, skipped = rotation_targets(state.views, args.rotate, args.rotate_expiring, now)
    for view in skipped:
        print(f"skipped  {safe_text(view.id)}  disabled")
    for warning in state.warnings:
        show_warning(warning)
    unjudged = unnamed_results(state.unnamed if args.rotate_expiring is not None or args.rotate == ["all"] else 0)
    for result in unjudged:
        print(rotation_line(result))
    results = run_bulk_rotation(client, settings.records_dir, targets, args.lifetime, args.workers, sys.stdout.isatty()) + unjudged
    print(rotation_summary(results, len(skipped), datetime.now(UTC)))
    failed = [r for r in results if not r.ok]
    if any(getattr(r.error, "status", None) == 401 for r in failed):
        return 2
    return 1 if failed or any(r.record_error for r in results) else 0


def open_menu(client: WebexClient, settings: Settings, pending) -> int:
    """The startup fetch is already on its way; questionary loads while Webex answers."""
    import questionary  # noqa: F401

    try:
        state = pending.result()
    except ApiError as exc:
        show_error(exc)
        state = State([], {}, ["The data sources could not be listed: choose Refresh to try again."])
    return Menu(client, settings, state).run()


def run(args, settings: Settings) -> int:
    rotating = args.rotate is not None or args.rotate_expiring is not None
    acting = args.list or rotating or (args.save_list and not can_prompt())  # runs and exits
    menu = not acting
    if menu and not can_prompt():
        raise ConfigError(
            "No terminal to show the menu on. Use --list to print the sources, --save-list to snapshot them, "
            "or --rotate ID|all / --rotate-expiring MINUTES to rotate tokens."
        )
    client = WebexClient(settings, pool_size=args.workers, sleeper=countdown if menu else announce_wait)
    client.on_token_renewed = save_token_to_env(settings)
    if warning := refresh_token_warning(settings, datetime.now(UTC)):
        if args.rotate_expiring is None:
            show_warning(warning)
        else:  # the cron job's own output, which is what gets mailed
            print(f"warning  {safe_text(warning)}")
    if rotating or args.save_list:
        ensure_records_dir(settings.records_dir)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch_state, client, {} if rotating else None)
        if menu and not args.save_list:
            return open_menu(client, settings, pending)
        state = pending.result()
    if args.save_list:
        save_list(settings, state)
    if args.list:
        return run_list(client, settings, state)
    if rotating:
        return run_rotation(client, settings, state, args)
    return Menu(client, settings, state).run() if menu else 0


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        settings = load_settings(args.env_file, args.records_dir)
        return run(args, settings)
    except ConfigError as exc:
        show_error(exc)
        return 2
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        return 130
    except ApiError as exc:
        show_error(exc)
        return 2 if exc.status == 401 else 1
    except RecordError as exc:
        show_error(exc)
        return 1
    except Exception as exc:  # noqa: BLE001 (the last guard: a sentence, never a traceback)
        show_error(RuntimeError(f"unexpected {type(exc).__name__}: {exc}. Please report it with the command you ran."))
        return 1


if __name__ == "__main__":
    sys.exit(main())
