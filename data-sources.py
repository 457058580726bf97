#!/usr/bin/env python3
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
"""data-sources.py: keep Webex BYODS data sources registered, visible and alive.

A Data Access Provider registers, per customer org, a URL where Webex sends data. Webex
authenticates each delivery with a JWS token that lives at most 24 hours; when it lapses, data
stops. This script lists every source with its expiry, views, registers, updates, rotates and
deletes them, verifies the token signatures, and records every change in a JSON file.

    cp .env.sample .env        # put the Service App access token in it
    python data-sources.py     # the sources, then the menu

Unattended: `python data-sources.py --rotate-expiring 180` from cron keeps every source alive.
Many customer orgs: `--env-file orgs/*.env`, one file per org; one org is a fleet of one.

The chapters, each using only what stands above it:
  1. Constants and defaults          10. Records (one JSON file per operation)
  2. Secrets and safe text           11. Orgs and the fleet (one row per source)
  3. Errors and exit codes           12. Outputs for other tools (TSV, JSON, Nagios, metrics)
  4. The screen (the one door out)   13. Rendering (rich tables and panels)
  5. Validators                      14. Prompts (questionary)
  6. Settings (env files)            15. Writes and their records
  7. WebexClient (and minting)       16. Customers joining and leaving
  8. Data source view                17. The menu (one org; the org overview)
  9. Token verification              18. Command line and main()
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # noqa: UP036 (an older Python gets a sentence, not an ImportError)
    sys.exit(f"data-sources.py needs Python 3.11 or newer; this is Python {sys.version.split()[0]}. Install 3.11+ and "
             "make the virtual environment with it (python3.11 -m venv .venv), or run it with uv.")

import argparse
import base64
import difflib
import errno
import fcntl
import functools
import gc
import glob
import hashlib
import heapq
import http.cookiejar
import importlib.util
import io
import ipaddress
import json
import logging
import math
import os
import re
import shlex
import signal
import stat
import tempfile
import textwrap
import threading
import time
import unicodedata
import uuid
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

PACKAGES = {"requests": "requests", "dotenv": "python-dotenv", "rich": "rich", "questionary": "questionary",
            "jwt": "pyjwt"}
if missing := [package for module, package in PACKAGES.items() if not importlib.util.find_spec(module)]:
    # a new shell, or cron, without the virtual environment: one sentence, not a traceback
    print(f"data-sources.py needs {', '.join(missing)}, which this Python ({sys.executable}) does not have. Set it up "
          "once: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt, then run it with .venv/bin/python "
          "data-sources.py (or first: . .venv/bin/activate).", file=sys.stderr)
    sys.exit(2)
if __name__ == "__main__":
    # Startup makes only objects that live as long as the program: the collector rests until the
    # startup fetch is in, then they are frozen out of its sight (9 % of time to menu at 0 ms).
    gc.disable()
import requests
import urllib3.exceptions as u3
from dotenv import dotenv_values
from requests.adapters import HTTPAdapter

# ---------------------------------------------------------------------------------------------
# 1. Constants and defaults
# ---------------------------------------------------------------------------------------------

VERSION = "1.1.0"
SCRIPT_DIR = Path(__file__).resolve().parent
SHARED_ENV_FILE = SCRIPT_DIR / ".env"  # beside the script: the one settings file, or what several orgs share
COMMAND = "python data-sources.py"  # how the tool is started, the start of every command it suggests

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
DEFAULT_TOTAL_TIMEOUT = 30.0  # one request in all, however slowly the answer trickles in
DEFAULT_LOCK_WAIT = 60.0  # how long a write waits for another run that writes to the same org
MAX_ANSWER_BYTES = 16 * 1024 * 1024
MAX_KEY_SET_BYTES, MAX_KEYS = 1024 * 1024, 100
MAX_JSON_DEPTH = 100
MAX_FILE_BYTES = 1024 * 1024  # an env file, a marker, a record: more is not one of them
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
EXPIRING_SOON_SECONDS = 3600
MAX_CLOCK_SKEW = 300  # seconds: a signature check allows this much; beyond it, the local clock is said to be wrong
REFRESH_TOKEN_WARNING_DAYS = 14
MAX_TEXT_LENGTH = 1024
MAX_SHOWN_ID = 100  # a rotation's line in cron mail (real ids are 36 characters)
CELL_WIDTH = 60  # a table cell or menu line shows this much of a value; details show it whole
MAX_SHOWN_MESSAGE = 500  # an error message from outside, on screen, in a pipe or in cron mail
MAX_RECORDED_MESSAGE = 64 * 1024  # ... and in a record, as an answer's body is
MIN_CUT_WIDTH = 16  # a column that gives way keeps this much (or its title), else it goes: "https:/…" helps no one

# Retries: 429/423/502-504 are retried, bounded in count and in total time. A POST is retried
# only where the server said it did not process it, because a lost answer may hide a new source.
RETRY_STATUSES = frozenset({423, 429, 502, 503, 504})
POST_RETRY_STATUSES = frozenset({423, 429, 503})
MAX_ATTEMPTS = 5
RATE_LIMITED_ATTEMPTS = 20  # a 429 says the request was not processed: retried longer, within RETRY_BUDGET
RETRY_WAIT_CAP = 60.0
RETRY_BUDGET = 120.0
DEFAULT_BACKOFF = 0.5  # the first wait before retrying a request that got no answer or a 5xx; it doubles
MIN_PACE = 0.2  # requests a second: the slowest a run of 429s brings the pace down to
PACE_UNDER = 0.9  # after a 429 the run goes on at this share of what Webex let through just before
PACE_RECOVERY = 5.0  # requests a second regained each second, up to just under the limit learned
PACE_PROBE = 0.005  # above that, this share a second: probing, in case Webex raised its limit
PACE_MEMORY = 60.0  # seconds: how far back what went through is kept (a Retry-After is at most a minute)
PACE_SPANS = (1.0, 2.0, 5.0, 10.0, 30.0, PACE_MEMORY)  # seconds over which what went through is measured
PACE_EVIDENCE = 20  # requests: fewer through before a 429 teach nothing of the limit (others may be using it up)

TOKEN_PLACEHOLDER = "paste-your-service-app-access-token-here"
READ_SCOPE, WRITE_SCOPE = "spark-admin:datasource_read", "spark-admin:datasource_write"
JWKS_PATH = "/oauth2/v2/keys/verificationjwk"
CLAIM_URL = "com.cisco.datasource.url"
CLAIM_SCHEMA = "com.cisco.datasource.schema.uuid"
CLAIM_ORG = "com.cisco.org.uuid"
DECISION_FIELDS = ("status", "url", "schemaId")  # a list item without one is read on its own


# ---------------------------------------------------------------------------------------------
# 2. Secrets and safe text: every secret is scrubbed from what is shown or written, and one
#    sanitizer stands between any outside string and the terminal.
# ---------------------------------------------------------------------------------------------

SECRETS: set[str] = set()  # every secret the run knows
SECRET_STARTS: set[str] = set()  # their first 8 characters: with a thousand orgs, most text holds none


# Text shaped like a JWS (three base64url parts, the first a JSON header): a token inside an
# error message or an answer is shown and recorded as its fingerprint, never raw.
JWS_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def fingerprint(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def scrub(text: str) -> str:
    """Every secret the run knows redacted, and every JWS-shaped text fingerprinted. A thousand
    orgs bring thousands of secrets: only text holding the start of one is searched for them."""
    if len(SECRETS) <= 32 or any(text[i:i + 8] in SECRET_STARTS for i in range(len(text) - 7)):
        for secret in SECRETS:
            text = text.replace(secret, "[redacted]")
    return JWS_SHAPED.sub(lambda match: fingerprint(match[0]), text) if "eyJ" in text else text


def remember_secret(value: str | None) -> None:
    if value and len(value) >= 8:
        SECRETS.add(value)
        SECRET_STARTS.add(value[:8])


# C0 and C1 controls, ESC, BEL, DEL, line separators, and every Unicode format character
# (category Cf: bidi overrides and marks, zero-width spaces and joiners, BOM, soft hyphen, tag
# characters): any of them from an answer could clear the screen, retitle the window, reorder
# or hide text, or split a row.
UNSAFE_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029"
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def visible_escape(char: str) -> str:
    code = ord(char)
    return NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                                       else f"\\U{code:08x}")


def safe_text(value) -> str:
    """The one way an outside string reaches the terminal: secrets redacted, control characters
    and bidi overrides shown as visible escapes (\\x1b, \\n, \\u202e), printable Unicode kept.
    Records keep exact values: this is for the screen and the pipe only."""
    text = value if isinstance(value, str) else str(value)
    return UNSAFE_CHARS.sub(lambda match: visible_escape(match[0]), scrub(text))


def safe_lines(text: str) -> str:
    """Text of several lines, each made safe: its own line breaks kept."""
    return "\n".join(safe_text(line) for line in text.split("\n"))


def safe_json(value) -> str:
    """Indented JSON to show: its own line breaks kept, everything inside the values made safe."""
    return safe_lines(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def clip(text: str, width: int = CELL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def has_space(text: str) -> bool:
    return any(map(str.isspace, text))


# ---------------------------------------------------------------------------------------------
# 3. Errors and exit codes: one family. Each error carries the sentence the user reads (what
#    went wrong, what to do) and its exit code; the codes and their meanings live here alone.
# ---------------------------------------------------------------------------------------------

OK, FAILED, USAGE, UNKNOWN = 0, 1, 2, 3
EXIT_CODES = {  # --help's list, in order
    OK: "done (or nothing to do)",
    FAILED: "Webex refused or failed a write, or an org could not be read",
    USAGE: "bad usage or configuration, or every org's token refused",
    UNKNOWN: "--check only: UNKNOWN (its 0, 1 and 2 are OK, WARNING and CRITICAL)",
    128 + signal.SIGHUP: "stopped by SIGHUP",
    128 + signal.SIGINT: "interrupted (Ctrl-C)",
    128 + signal.SIGTERM: "stopped by SIGTERM",
}


class ToolError(Exception):
    """Something the user must hear about: a sentence, an optional next step, an exit code."""

    exit_code = FAILED
    status: int | None = None  # what Webex answered, for those that reached it
    tracking_id: str | None = None
    body: object = None
    maybe_processed = False  # no answer came, but the request may have arrived

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = scrub(message)[:MAX_RECORDED_MESSAGE]  # a token inside is fingerprinted before any cut
        self.hint = hint

    def text(self, limit: int = MAX_RECORDED_MESSAGE) -> str:
        """The sentence, its (outside) message cut at limit characters; what Webex answered, if it did."""
        message = clip(self.message, limit)
        parts = (f"Webex answered {self.status}: {message}" if self.status else message,
                 self.tracking_id and f"(tracking id {self.tracking_id})", self.hint)
        return scrub(" ".join(part for part in parts if part))

    def __str__(self) -> str:
        return self.text()  # what a record keeps


def shown(error: BaseException) -> str:
    """An error as the screen, the pipe and cron mail show it: Webex's message cut at 500 characters."""
    return error.text(MAX_SHOWN_MESSAGE) if isinstance(error, ToolError) else clip(scrub(str(error)), MAX_SHOWN_MESSAGE)


class ConfigError(ToolError):
    """Bad usage or configuration, with a sentence saying what to fix."""

    exit_code = USAGE


class RecordError(ToolError):
    """A record file could not be written, or the records folder cannot be used."""


class Busy(ToolError):
    """Another run holds the org's writer lock: this run left the org alone. Not a failure."""

    exit_code = OK


class NotSent(ToolError):
    """The tool would not send a request (an id it cannot trust, a source it cannot judge):
    nothing reached Webex."""


class ApiError(ToolError):
    """An API call that failed: the HTTP status (None if no answer), Webex's message, tracking id."""

    def __init__(self, message, status=None, tracking_id=None, hint="", body=None, maybe_processed=False):
        super().__init__(message, hint)
        self.status, self.tracking_id, self.body, self.maybe_processed = status, tracking_id, body, maybe_processed


class TokenRefused(ApiError):
    """Webex refused a token (401 from the API or a token endpoint) and no renewal helped:
    nothing can be done in that org until its token is fixed; alone, it is bad configuration."""

    exit_code = USAGE


class NotAuthorized(ApiError):
    """Webex would not mint a token for an org (403): it has not authorized the Service App, or
    has withdrawn it. Nothing can be done in it; a customer that left is offboarded."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP, which all stop a run the same way; it exits 128 + the signal."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__()
        self.signum = signum


class StopRequest:
    """Set when the run is told to stop: no new write starts, no retry waits; the writes in
    flight finish within their timeout and are recorded, and the summary is printed."""

    def __init__(self):
        self.signum = signal.SIGINT
        self.asked = threading.Event()

    def __bool__(self) -> bool:
        return self.asked.is_set()

    def ask(self, signum: int) -> None:
        if not self:
            self.signum = signum
            self.asked.set()

    def on_signal(self, signum, frame) -> None:
        """The handler for SIGINT, SIGTERM and SIGHUP: the first one stops the run; the others
        wait, so that the writes in flight can finish and be recorded."""
        if not self:
            self.ask(signum)
            raise Interrupted(signum)


STOP = StopRequest()


class Cancelled(Exception):
    """The user backed out of a wizard; nothing was sent."""


class UpdateInstead(Exception):
    """Register found the same source already there, and the user chose to update that one."""

    def __init__(self, view):
        super().__init__(view.id)
        self.view = view


# ---------------------------------------------------------------------------------------------
# 4. The screen: the one door out. Every line for a person goes through it and is made safe
#    there; machine output (TSV, JSON, metrics, the Nagios line) comes from the formatters of
#    chapter 12 and goes out through data(). Made in main() once the startup fetch is on its
#    way, so that rich's import overlaps Webex's answer; questionary only when a question is asked.
# ---------------------------------------------------------------------------------------------


@contextmanager
def reader_gone(stream):
    """A pipe whose reader left (| head -1) stops no run: what follows goes nowhere, and the writes
    in flight still finish and are recorded."""
    try:
        yield
    except (BrokenPipeError, ValueError):
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


class Screen:
    """One console for results (stdout), one for messages (stderr). At a terminal, messages wrap at
    spaces; piped, they are never wrapped (one line each in cron mail). It counts what it shows, so
    the menu knows whether an action left something to read. Tests give a buffer and a width."""

    def __init__(self, file=None, width: int | None = None):
        from rich.console import Console
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        self.Panel, self.Table, self.Text = Panel, Table, Text
        options = {"highlight": False, "width": width}
        self.out = Console(file=file, **options)
        self.err = Console(file=file, **options) if file else Console(stderr=True, **options)
        self.live = threading.Lock()  # rich shows one live display at a time; other waits are silent
        self.shown = 0  # how many things were shown: the menu waits for a key when an action showed any
        self.asked_at = 0  # what had been shown when the last question was answered

    @functools.cached_property
    def questionary(self):
        """questionary, imported on first use: --list and the rotation never load it."""
        import questionary

        return questionary

    @property
    def size(self) -> tuple[int, int]:
        """The terminal's columns and rows."""
        return max(self.out.size.width, 20), max(self.out.size.height, 8)

    @property
    def at_terminal(self) -> bool:
        return self.out.is_terminal

    def text(self, value, style: str = "", width: int | None = CELL_WIDTH):
        """Outside text for a table cell or a label: made safe, cut to width (None: whole)."""
        text = safe_text(value if value is not None else "")
        return self.Text(clip(text, width) if width else text, style=style)

    def print(self, renderable) -> None:
        """A table or a panel (built from safe texts), on stdout."""
        self.shown += 1
        with reader_gone(sys.stdout):
            self.out.print(renderable)

    def message(self, console, lead: str, style: str, message: str) -> None:
        self.shown += 1
        with reader_gone(console.file):
            text = self.Text(lead, style=style) + self.Text(safe_lines(message))
            console.print(text, soft_wrap=not console.is_terminal)

    def say(self, message: str, lead: str = "", style: str = "") -> None:
        """What was done, on stdout; lead: a word before it, in style ("Done: ")."""
        self.message(self.out, lead, style, message)

    def tell(self, message: str) -> None:
        """A note on stderr, from any thread."""
        self.message(self.err, "", "", message)

    def warning(self, message: str) -> None:
        self.message(self.err, "Warning: ", "yellow", message)

    def error(self, error) -> None:
        self.message(self.err, "Error: ", "bold red", shown(error) if isinstance(error, BaseException) else error)

    def data(self, text: str) -> None:
        """Output for other tools, as its formatter made it: never wrapped, never styled."""
        with reader_gone(sys.stdout):
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()

    def lines(self, renderable) -> int:
        """How many lines a renderable takes on this terminal."""
        return len(self.out.render_lines(renderable, pad=False))

    def ask(self, question, cancel: bool = True):
        """A question's answer. cancel: Ctrl-C (or the end of input) cancels the wizard it is in, and
        nothing is sent; otherwise it goes up (the menu's own question: exit 130)."""
        try:
            answer = question.unsafe_ask()
        except (KeyboardInterrupt, EOFError):
            if not cancel:
                raise
            raise Cancelled from None
        finally:
            self.asked_at = self.shown
        if answer is None and cancel:
            raise Cancelled
        return answer

    def pause(self) -> None:
        """When something was shown since the last answer: wait for a key before the menu is drawn
        over it (a long menu would scroll it off the screen)."""
        if self.shown > self.asked_at:
            with suppress(KeyboardInterrupt, EOFError):
                self.questionary.press_any_key_to_continue("Press any key to return to the menu...").unsafe_ask()
            self.asked_at = self.shown


# ---------------------------------------------------------------------------------------------
# 5. Validators: one judgement for values typed at a prompt and passed on the command line.
#    Each returns True or the reason the value is refused.
# ---------------------------------------------------------------------------------------------

HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


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
    if verdict is True and has_space(text):
        return "A nonce has no spaces; keep the generated UUID or type one without spaces."
    return verdict


def validate_token(text: str) -> bool | str:
    """A token or secret as pasted: what an HTTP header and an env file line can carry, and nothing
    around it (smart quotes, an ellipsis, a space)."""
    if not text:
        return "Paste the token: it is required."
    if odd := next((char for char in text if not "!" <= char <= "~" or char in "\"'`\\$#"), None):
        name = unicodedata.name(odd, "a control character")
        what = "a space" if odd.isspace() else f"{safe_text(odd)} (U+{ord(odd):04X} {name})"
        return f"It holds {what}, which no token does: paste the token again, whole, with nothing around it."
    return True


def validate_lifetime(text: str) -> bool | str:
    if not re.fullmatch(r"[0-9]{1,5}", text or ""):
        return f"Give a whole number of minutes from {MIN_LIFETIME} to {MAX_LIFETIME}."
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
    return all(HOST_LABEL.match(label) for label in labels)


def validate_url(text: str) -> bool | str:
    if not text:
        return "The URL is required: where Webex sends data, e.g. https://dap.example.com/byods."
    if has_space(text) or not text.isprintable():
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


PLAIN_ID = re.compile(r"[A-Za-z0-9_=.-]{1,256}")


def plain_id(value) -> bool:
    """Ids go into URL paths and file names: letters, digits, - _ = . only, and never . or .."""
    return isinstance(value, str) and bool(PLAIN_ID.fullmatch(value)) and value not in (".", "..")


def validate_org_id(text: str) -> bool | str:
    if not plain_id(text):
        return "Give the customer org's id (letters, digits, -, _, =, .), e.g. ce861fba-6e2f-49f9-9a84-b354008fac9e."
    return True


ORG_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def validate_org_name(text: str) -> bool | str:
    """An org's name names its file and records folder: one path segment, never . or .."""
    if not ORG_NAME.fullmatch(text or "") or text in (".", ".."):
        return ("An org's name is letters, digits, -, _ and . only (and not . or ..): it names the org's file and "
                "records folder.")
    return True


def file_safe(source_id) -> str:
    """An id as part of a record's name: only plain characters, so the file stays in its folder."""
    return re.sub(r"[^A-Za-z0-9_=.-]", "_", str(source_id))[:100]


def parse_iso(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def argparse_type(validator, convert=str):
    """Turn a validator into an argparse type, so a flag is judged like a typed value."""

    def parse(text: str):
        verdict = validator(text)
        if verdict is not True:
            raise argparse.ArgumentTypeError(verdict)
        return convert(text)

    return parse


def whole_number(digits: int, least: int, most: float, message: str) -> Callable[[str], bool | str]:
    """A validator of a whole number of at most digits digits, from least to most."""
    pattern = re.compile(rf"[0-9]{{1,{digits}}}")
    return lambda text: bool(pattern.fullmatch(text or "")) and least <= int(text) <= most or message


validate_minutes = whole_number(6, 0, math.inf, "Give a whole number of minutes, e.g. 180.")
validate_rate = whole_number(6, 1, math.inf, "Give a whole number of requests a minute, e.g. 300.")
validate_limit = whole_number(7, 0, math.inf, "Give a whole number of operations, e.g. 50 (0: all).")
validate_workers = whole_number(3, 1, MAX_WORKERS, f"Give a whole number of workers from 1 to {MAX_WORKERS}.")


def validate_duration(text: str) -> bool | str:
    return True if re.fullmatch(r"[1-9][0-9]{0,5}[mhd]", text or "") else "Give a duration like 90m, 12h or 7d."


def parse_duration(text: str) -> datetime:
    """A duration back from now (90m, 12h, 7d): the moment it began."""
    unit = {"m": 60, "h": 3600, "d": 86400}[text[-1]]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)  # no record is older: a longer duration means all of them
    return max(epoch, datetime.now(UTC) - min(timedelta(seconds=int(text[:-1]) * unit), datetime.now(UTC) - epoch))


# ---------------------------------------------------------------------------------------------
# 6. Settings: one profile per org. With one env file (or .env beside the script), real
#    environment variables win over it. With several, each org's file wins, then the shared .env
#    beside the script, then the environment; per-org keys come only from the org's own file.
# ---------------------------------------------------------------------------------------------

TOKEN_KEYS = ("WEBEX_ACCESS_TOKEN", "WEBEX_REFRESH_TOKEN", "WEBEX_REFRESH_TOKEN_EXPIRES_AT")  # what the tool writes
PER_ORG_KEYS = frozenset({"WEBEX_ORG_NAME", "WEBEX_TARGET_ORG_ID", *TOKEN_KEYS})
# Keys that decide where secrets and customers' data go, or that are the Service App's own: never
# from an org's file.
SHARED_KEYS = frozenset({"WEBEX_API_BASE_URL", "WEBEX_TRUSTED_ISSUERS", "WEBEX_SERVICE_APP_ID", "WEBEX_CLIENT_ID",
                         "WEBEX_CLIENT_SECRET", "WEBEX_INTEGRATION_TOKEN", "WEBEX_INTEGRATION_REFRESH_TOKEN",
                         "WEBEX_INTEGRATION_CLIENT_ID", "WEBEX_INTEGRATION_CLIENT_SECRET", "WEBEX_STATE_DIR",
                         "WEBEX_ORGS_DIR", "WEBEX_SOURCE_URL", "WEBEX_SOURCE_AUDIENCE", "WEBEX_SOURCE_SUBJECT",
                         "WEBEX_SOURCE_SCHEMA_ID", "WEBEX_SOURCE_LIFETIME"})
# Each goes into a header or a form: a pasted quote or ellipsis in one is caught and named at start.
SENT_KEYS = ("WEBEX_REFRESH_TOKEN", "WEBEX_CLIENT_ID", "WEBEX_CLIENT_SECRET", "WEBEX_INTEGRATION_TOKEN",
             "WEBEX_INTEGRATION_REFRESH_TOKEN", "WEBEX_INTEGRATION_CLIENT_ID", "WEBEX_INTEGRATION_CLIENT_SECRET")
MINT_KEYS = ("WEBEX_SERVICE_APP_ID", "WEBEX_CLIENT_ID", "WEBEX_CLIENT_SECRET", "WEBEX_TARGET_ORG_ID",
             "WEBEX_INTEGRATION_TOKEN")
SAMPLE_ORG_ID = "ce861fba-6e2f-49f9-9a84-b354008fac9e"  # the API guide's, for examples and for checking the template


@dataclass(frozen=True)
class SourceTemplate:
    """The data source every customer org gets (WEBEX_SOURCE_*): what onboarding registers, and
    what drift is judged against. {org_id} and {org_name} in the URL are filled in per org."""

    url: str
    audience: str = DEFAULT_AUDIENCE
    subject: str = DEFAULT_SUBJECT
    schema_id: str = ""  # "": the Service App's only schema
    lifetime: int = DEFAULT_LIFETIME

    def url_for(self, org_id: str, org_name: str) -> str:
        return self.url.replace("{org_id}", org_id).replace("{org_name}", org_name)


@dataclass(frozen=True)
class Integration:
    """The integration (or personal) token that mints org tokens; shared by the orgs that name it."""

    token: str
    file: Path | None  # where it came from, so a renewed one is saved there (None: the environment)
    refresh_token: str = ""
    client_id: str = ""
    client_secret: str = ""

    @property
    def can_renew(self) -> bool:
        return bool(self.refresh_token and self.client_id and self.client_secret)


@dataclass
class Tokens:
    """An org's access and refresh tokens: the one part of its settings that changes during a run."""

    access: str = ""
    refresh: str = ""


@dataclass(frozen=True)
class Timeouts:
    """How long a request may take, in seconds: to connect, between two pieces of the answer, in all."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT
    total: float = DEFAULT_TOTAL_TIMEOUT


@dataclass(frozen=True)
class Settings:
    """One org's settings, from its env file, the shared .env and the environment (load_settings)."""

    env_file: Path | None
    tokens: Tokens = field(default_factory=Tokens)
    org_name: str = "default"
    base_url: str = DEFAULT_BASE_URL
    records_dir: Path = SCRIPT_DIR / "records"
    client_id: str = ""
    client_secret: str = ""
    refresh_token_expires_at: datetime | None = None
    trusted_issuers: tuple[str, ...] = DEFAULT_TRUSTED_ISSUERS
    timeouts: Timeouts = Timeouts()
    backoff: float = DEFAULT_BACKOFF
    lock_wait: float = DEFAULT_LOCK_WAIT
    target_org_id: str = ""
    service_app_id: str = ""
    integration: Integration | None = None
    from_environment: frozenset[str] = frozenset()  # the keys whose value in use came from the environment
    notes: tuple[str, ...] = ()  # warnings about the settings, shown with the org's
    state_dir: Path | None = None  # WEBEX_STATE_DIR: where tokens go when env_file cannot be written
    template: SourceTemplate | None = None  # WEBEX_SOURCE_*: the source every customer org gets
    own_file: bool = False  # env_file is an org's own, read over the shared .env (offboarding sets it aside)

    @property
    def can_renew(self) -> bool:
        return bool(self.client_id and self.client_secret and self.tokens.refresh)

    @property
    def can_onboard(self) -> bool:
        """The Service App's minting keys are there: any org that authorized it can be onboarded."""
        return bool(self.integration and self.service_app_id and self.client_id and self.client_secret)

    @property
    def can_mint(self) -> bool:
        return self.can_onboard and bool(self.target_org_id)

    @property
    def token_origin(self) -> str:
        """Where the access token in use was read: the environment wins over a single file."""
        return "the environment" if "WEBEX_ACCESS_TOKEN" in self.from_environment else str(self.env_file)


class DotenvComplaints(logging.Handler):
    """python-dotenv skips a line it cannot read and says so in a log record; the line's number is
    what the sentence about it names ("fail fast, saying exactly what to put where"), and its
    public API tells it no other way. Per thread: workers save tokens while others read."""

    def __init__(self):
        super().__init__()
        self.found = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if "could not parse" in record.getMessage() and record.args:
            self.found.lines = [*getattr(self.found, "lines", []), record.args[0]]


DOTENV_COMPLAINTS = DotenvComplaints()
logging.getLogger("dotenv").addHandler(DOTENV_COMPLAINTS)
logging.getLogger("dotenv").propagate = False  # said once, in our sentence


def read_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """A file's bytes, if it is a regular file of at most limit bytes: a FIFO, a device or a folder
    where a file is expected would hang or flood the run. OSError otherwise, saying which."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a folder, a FIFO or a device)", str(path))
        if found.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit // 1024} KiB", str(path))
        with os.fdopen(os.dup(fd), "rb") as handle:  # read(n) allocates n bytes up front: the size first
            data = handle.read(found.st_size + 1)
            if len(data) > found.st_size:  # it grew since, or its size says 0 (/proc): the rest, up to the limit
                data += handle.read(limit + 1 - len(data))
            return data[:limit]
    finally:
        os.close(fd)


def read_env_file(path: Path, required: bool = False) -> dict[str, str]:
    """KEY=value pairs of an env file, as python-dotenv reads them (none when it is missing, unless
    required); a line it cannot read is an error with its number."""
    try:
        text = read_file(path).decode("utf-8-sig")
    except FileNotFoundError:
        if path.is_symlink():
            raise ConfigError(f"{path} is a symbolic link to a file that does not exist: point it at the org's file, "
                              "or remove it.") from None
        if required:
            raise ConfigError(f"The env file {path} does not exist. Copy .env.sample to it, or drop --env-file.") \
                from None
        return {}
    except OSError as exc:
        raise ConfigError(f"Cannot read {path} ({exc.strerror or exc}): an env file is a readable text file.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Cannot read {path}: {exc}. Make it a readable UTF-8 text file.") from None
    DOTENV_COMPLAINTS.found.lines = []
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    if DOTENV_COMPLAINTS.found.lines:
        raise ConfigError(f"Line {DOTENV_COMPLAINTS.found.lines[0]} of {path} is not KEY=value. "
                          "Fix or remove it (see .env.sample for the format).")
    return {key: value or "" for key, value in values.items()}


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@functools.cache  # a fleet's thousand orgs share a few URLs
def check_service_url(name: str, url: str) -> str:
    """An API base or issuer: https, or http on this machine only (the fake API for testing). User
    info, backslashes and whitespace are refused outright: parsers disagree on where such a URL
    connects, and the one that judges it must be the one that connects."""
    if "@" in url or "\\" in url or has_space(url) or not url.isprintable():
        raise ConfigError(f"{name} must be a plain https:// URL without user names, backslashes or spaces, "
                          f"e.g. {DEFAULT_BASE_URL}; got {clip(safe_text(url), 80)!r}.")
    parts = urlsplit(url)
    secure = parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))
    if not parts.hostname or not secure:
        raise ConfigError(f"{name} must be an https:// URL, e.g. {DEFAULT_BASE_URL}; got {url!r}.")
    return url.rstrip("/")


SECRET_KEYS = ("WEBEX_ACCESS_TOKEN", "WEBEX_REFRESH_TOKEN", "WEBEX_CLIENT_SECRET", "WEBEX_INTEGRATION_TOKEN",
               "WEBEX_INTEGRATION_REFRESH_TOKEN", "WEBEX_INTEGRATION_CLIENT_SECRET")


def readable_by_others(path: Path, values: dict[str, str]) -> str | None:
    """A warning for a file of secrets that other users of the machine can read (as `cp .env.sample .env` makes it)."""
    with suppress(OSError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 and any(values.get(key) for key in SECRET_KEYS):
            return (f"{path} holds secrets, and other users of this machine can read it (mode {mode:04o}): "
                    f"chmod 600 {shlex.quote(str(path))}")
    return None


def org_name_for(path: Path) -> str:
    """An org's default name: its file's name without .env (the plain .env is "default")."""
    return file_safe(path.name.removesuffix(".env").strip(". ") or "default")


def file_digest(path: Path) -> str:
    """What a file holds, in short: the state saved beside it is stale once this changes."""
    try:
        return fingerprint(path.read_bytes().decode("utf-8", errors="surrogateescape"))
    except OSError:
        return ""


@functools.cache  # the shared .env is read once a run, however many orgs there are
def shared_env() -> dict[str, str]:
    return read_env_file(SHARED_ENV_FILE)


def same_file(one: Path, other: Path) -> bool:
    """Whether two paths lead to one file, whatever symlinks lie between."""
    with suppress(OSError):
        return os.path.samefile(one, other)
    return False


def shared_value(key: str) -> str:
    """A shared key as every org reads it: the shared .env beside the script, else the environment."""
    return (shared_env().get(key) or os.environ.get(key) or "").strip()


def webex_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("WEBEX_")}


def layered_values(path: Path, own: dict[str, str], layered: bool,
                   environment: dict[str, str]) -> tuple[dict[str, str], dict[str, Path | None]]:
    """The settings for one org, and where each came from (a file, or None for the environment).
    own: what path holds. An org's file may not set a shared key: they decide where every org's
    secrets are sent."""
    if layered:  # later layers win: environment, then the shared .env, then the org's own file
        layers = [(None, environment), (SHARED_ENV_FILE, {} if same_file(path, SHARED_ENV_FILE) else shared_env())]
        layers = [(origin, {k: v for k, v in layer.items() if k not in PER_ORG_KEYS}) for origin, layer in layers]
        if trespass := sorted(key for key in own if key in SHARED_KEYS):
            raise ConfigError(f"{path} sets {', '.join(trespass)}, which only the shared .env beside the script or the "
                              "environment may set (they decide where every org's tokens and secrets go): move it "
                              "there, or remove it.")
        layers.append((path, own))
    else:  # one file: real environment variables win, as they always have
        layers = [(path, own), (None, environment)]
    values, origins = {}, {}
    for origin, layer in layers:
        for key, value in layer.items():
            values[key], origins[key] = value, origin
    return values, origins


def load_settings(path: Path, own: dict[str, str], records_dir: str | None, layered: bool = False,
                  environment: dict | None = None) -> Settings:
    """One org's profile from what its file holds (own). layered: one of several org files, read
    over the shared .env."""
    values, origins = layered_values(path, own, layered, webex_environment() if environment is None else environment)

    def value(key: str) -> str:
        return values.get(key, "").strip()

    def seconds(key: str, default: float, least: float = 0.1, most: float = 600) -> float:
        try:
            seconds = float(value(key)) if value(key) else default
        except ValueError:
            seconds = -1.0
        if not least <= seconds <= most:
            raise ConfigError(f"{key} must be a number of seconds from {least:g} to {most:g}; got {value(key)!r}.")
        return seconds

    for key in SECRET_KEYS:
        remember_secret(value(key))  # before any check, so that no message can show them
    for key in SENT_KEYS:
        if value(key) and (verdict := validate_token(value(key))) is not True:
            raise ConfigError(f"{key} in {origins[key] or 'the environment'} {verdict.removeprefix('It ')}")
    name = value("WEBEX_ORG_NAME") or org_name_for(path)
    if validate_org_name(name) is not True:
        raise ConfigError(f"WEBEX_ORG_NAME in {path} must be letters, digits, -, _ and . only (and not . or ..), "
                          f"because it names the org's records folder; got {clip(safe_text(name), 40)!r}.")
    notes = [note] if (note := readable_by_others(path, own)) else []
    state_dir = Path(value("WEBEX_STATE_DIR")) if value("WEBEX_STATE_DIR") else None
    if state_dir:  # tokens saved there when the org's file could not be written, unless that file changed since
        saved = read_env_file(state_dir / f"{name}.env")
        notes += [note] if (note := readable_by_others(state_dir / f"{name}.env", saved)) else []
        if saved.get("WEBEX_STATE_OF") == file_digest(path):
            values.update({key: saved[key] for key in TOKEN_KEYS if saved.get(key)})
            origins.update({key: state_dir for key in TOKEN_KEYS if saved.get(key)})
    integration = None
    if value("WEBEX_INTEGRATION_TOKEN"):
        integration = Integration(value("WEBEX_INTEGRATION_TOKEN"), origins["WEBEX_INTEGRATION_TOKEN"],
                                  value("WEBEX_INTEGRATION_REFRESH_TOKEN"), value("WEBEX_INTEGRATION_CLIENT_ID"),
                                  value("WEBEX_INTEGRATION_CLIENT_SECRET"))
    base = Path(records_dir) if records_dir else SCRIPT_DIR / (value("WEBEX_RECORDS_DIR") or "records")
    settings = Settings(
        env_file=path,
        tokens=Tokens(value("WEBEX_ACCESS_TOKEN"), value("WEBEX_REFRESH_TOKEN")),
        org_name=name,
        base_url=check_service_url("WEBEX_API_BASE_URL", value("WEBEX_API_BASE_URL") or DEFAULT_BASE_URL),
        records_dir=base / name if layered else base,
        client_id=value("WEBEX_CLIENT_ID"),
        client_secret=value("WEBEX_CLIENT_SECRET"),
        refresh_token_expires_at=parse_iso(value("WEBEX_REFRESH_TOKEN_EXPIRES_AT")),
        trusted_issuers=tuple(check_service_url("WEBEX_TRUSTED_ISSUERS", issuer) for issuer in
                              [i.strip() for i in value("WEBEX_TRUSTED_ISSUERS").split(",") if i.strip()]
                              or DEFAULT_TRUSTED_ISSUERS),
        timeouts=Timeouts(seconds("WEBEX_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
                          seconds("WEBEX_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
                          seconds("WEBEX_TIMEOUT", DEFAULT_TOTAL_TIMEOUT)),
        backoff=seconds("WEBEX_RETRY_BACKOFF", DEFAULT_BACKOFF, least=0.01, most=60),
        lock_wait=seconds("WEBEX_LOCK_WAIT", DEFAULT_LOCK_WAIT, least=0, most=3600),
        target_org_id=value("WEBEX_TARGET_ORG_ID"),
        service_app_id=value("WEBEX_SERVICE_APP_ID"),
        integration=integration,
        from_environment=frozenset(key for key, origin in origins.items() if origin is None),
        notes=tuple(notes),
        state_dir=state_dir,
        template=source_template(value) if value("WEBEX_SOURCE_URL") else None,
        own_file=layered,
    )
    return checked_token(settings, values)


def source_template(value: Callable[[str], str]) -> SourceTemplate:
    """WEBEX_SOURCE_*, judged as Register judges what is typed, so onboarding never sends what
    Register would refuse."""
    lifetime = value("WEBEX_SOURCE_LIFETIME") or str(DEFAULT_LIFETIME)
    template = SourceTemplate(value("WEBEX_SOURCE_URL"), value("WEBEX_SOURCE_AUDIENCE") or DEFAULT_AUDIENCE,
                              value("WEBEX_SOURCE_SUBJECT") or DEFAULT_SUBJECT, value("WEBEX_SOURCE_SCHEMA_ID"),
                              int(lifetime) if validate_lifetime(lifetime) is True else 0)
    example = template.url_for(SAMPLE_ORG_ID, "acme")
    verdicts = {
        "WEBEX_SOURCE_URL": validate_url(example) if "{" not in example and "}" not in example else
        "Only {org_id} and {org_name} are filled in: remove any other braces.",
        "WEBEX_SOURCE_AUDIENCE": validate_required(template.audience),
        "WEBEX_SOURCE_SUBJECT": validate_required(template.subject),
        "WEBEX_SOURCE_SCHEMA_ID": True if not template.schema_id or plain_id(template.schema_id) else
        "Give the schema's id (--schemas lists them).",
        "WEBEX_SOURCE_LIFETIME": validate_lifetime(lifetime),
    }
    for key, verdict in verdicts.items():
        if verdict is not True:
            raise ConfigError(f"{key} (the onboarding template) is not usable: {verdict}")
    return template


def checked_token(settings: Settings, values: dict[str, str]) -> Settings:
    """A usable access token, or what renews or mints one; otherwise say exactly what is wrong and where."""
    token = settings.tokens.access
    if re.match(r"(?i)bearer\s+", token):  # pasted with the header's word
        token = re.sub(r"(?i)^bearer\s+", "", token)
        note = ("WEBEX_ACCESS_TOKEN starts with 'Bearer ': the tool sends that word itself, so it was left out. "
                f"Remove it from {settings.token_origin} to silence this.")
        settings = replace(settings, tokens=Tokens(token, settings.tokens.refresh), notes=(*settings.notes, note))
    if token and token != TOKEN_PLACEHOLDER and validate_token(token) is True:
        return settings
    settings.tokens.access = ""
    if settings.can_mint or settings.can_renew:
        return settings  # the first request renews or mints one
    missing = [key for key in MINT_KEYS if not values.get(key, "").strip()]
    minting = f" Or let the tool mint one: set {', '.join(missing)} (see the README)." if len(missing) < 5 else ""
    where = settings.token_origin
    portal = f"Get it from the developer portal: your Service App, Org authorizations.{minting}"
    if token == TOKEN_PLACEHOLDER:
        problem = f"WEBEX_ACCESS_TOKEN in {where} is still the placeholder from .env.sample: replace it with the token."
    elif "WEBEX_ACCESS_TOKEN" in values and not token:
        problem = f"WEBEX_ACCESS_TOKEN in {where} is empty: put the Service App access token after the = sign."
    elif token:
        problem = f"WEBEX_ACCESS_TOKEN in {where} {validate_token(token).removeprefix('It ')}"
    else:
        problem = (f"No Service App access token. Put it in {settings.env_file} as WEBEX_ACCESS_TOKEN=<token> "
                   "(copy .env.sample to start), or set the WEBEX_ACCESS_TOKEN environment variable.")
    raise ConfigError(f"{problem} {portal}")


def env_file_paths(given: list[str] | None) -> list[Path] | None:
    """--env-file as given, a pattern that no shell expanded (a systemd unit, a quoted argument)
    expanded here: orgs/*.env means the same wherever it is written."""
    if given is None:
        return None
    paths = []
    for item in given:
        if not any(char in item for char in "*?[") or Path(item).exists():
            paths.append(Path(item))
        elif matches := sorted(glob.glob(item)):
            paths += map(Path, matches)
        else:
            raise ConfigError(f"No file matches {item}. Check the folder (onboarding writes org files there), or name "
                              "the files.")
    return list(dict.fromkeys(paths))


def org_profiles(env_files: list[Path] | None, records_dir: str | None) -> list[tuple[str, Settings | ConfigError]]:
    """(org name, profile) per env file; a profile that cannot be read is its error, so the others
    go on. A missing file, or two files for one org (its name, its id or its token), stop
    everything (bad usage): nothing may be sent twice."""
    paths = env_files or [SHARED_ENV_FILE]
    profiles, environment = [], webex_environment()
    for path in paths:
        try:
            own = read_env_file(path, required=bool(env_files))
            layered = len(paths) > 1 or (not same_file(path, SHARED_ENV_FILE) and bool(
                own.get("WEBEX_ORG_NAME") or own.get("WEBEX_TARGET_ORG_ID")))  # an org's own file
            settings = load_settings(path, own, records_dir, layered, environment)
            profiles.append((settings.org_name, settings))
        except ConfigError as exc:
            if not os.path.lexists(path) and env_files:  # a file that is not there stops everything; a bad one, its org
                raise
            profiles.append((org_name_for(path), exc))
    if duplicate := next((name for name, count in Counter(name for name, _ in profiles).items() if count > 1), None):
        raise ConfigError(f"Two env files name the org {duplicate!r}: give each its own WEBEX_ORG_NAME or file name.")
    for what, key in (("WEBEX_TARGET_ORG_ID", lambda s: s.target_org_id), ("access token", lambda s: s.tokens.access)):
        seen = {}
        for settings in (profile for _, profile in profiles if isinstance(profile, Settings)):
            if (value := key(settings)) and value in seen:
                raise ConfigError(f"{seen[value]} and {settings.env_file} have the same {what}: they are one org, "
                                  "whose sources would be written twice. Keep one of the files. Nothing was sent.")
            seen[value] = settings.env_file
    return profiles


ENV_KEY_LINE = re.compile(r"([ \t]*(?:export[ \t]+)?)([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=")


def save_env_values(path: Path, updates: dict[str, str]) -> None:
    """Set KEY=value in an env file on the line the tool reads it from (the last of a key that is
    there twice), keeping every other byte: comments, other keys, `export` prefixes, line endings,
    a BOM. A symlink is followed and its target updated; an existing file keeps its mode and owner,
    a new one is 0600; the write is atomic. Written by hand because python-dotenv's set_key keeps
    none of these (the contract's "Saving tokens"). A value a token cannot hold is never written:
    a line break or a quote in it could smuggle a line into the file, or change what is read back."""
    if bad := [key for key, value in updates.items() if validate_token(value) is not True]:
        raise ConfigError(f"Refused to write {', '.join(bad)} to {path}: the value holds a control character or a "
                          "space, or another character no token holds.")
    target = path.resolve()
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        raw = b""
    except OSError as exc:
        raise ConfigError(f"Could not read {path} ({exc.strerror or exc}) to save the new token in it.") from None
    lines = raw.decode("utf-8-sig", errors="surrogateescape").splitlines(keepends=True)
    last = {match[2]: number for number, line in enumerate(lines)
            if (match := ENV_KEY_LINE.match(line)) and match[2] in updates}
    for key, number in last.items():
        body = lines[number].rstrip("\r\n")
        lines[number] = f"{ENV_KEY_LINE.match(body)[1]}{key}={updates[key]}{lines[number][len(body):]}"
    if missing := [key for key in updates if key not in last]:
        newline = "\r\n" if any(line.endswith("\r\n") for line in lines) else "\n"
        if lines and not lines[-1].endswith("\n"):
            lines.append(newline)
        lines += [f"{key}={updates[key]}{newline}" for key in missing]
    content = ("\ufeff" if raw.startswith(b"\xef\xbb\xbf") else "") + "".join(lines)
    try:
        write_file_atomically(target, content, keep_owner=bool(raw) or target.exists())
    except OSError as exc:
        raise ConfigError(f"Could not save {path} ({exc.strerror or exc}): make it writable, or update it by "
                          "hand.") from None


def save_tokens(settings: Settings, values: dict[str, str]) -> str:
    """Renewed tokens, saved where the next run reads them: the org's file; if it cannot be
    written (a read-only mounted secret), {WEBEX_STATE_DIR}/{org}.env. Returns where, as the end
    of a sentence; raises ConfigError when neither could be written."""
    try:
        save_env_values(settings.env_file, values)
        where = f"saved to {settings.env_file}"
    except ConfigError as exc:
        if not settings.state_dir:
            raise ConfigError(f"{exc.message} The new token is used for this run only, so the next run must renew it "
                              "again: set WEBEX_STATE_DIR to a writable folder to keep it there.") from None
        make_private_folder(settings.state_dir)
        state = settings.state_dir / f"{settings.org_name}.env"
        save_env_values(state, {**values, "WEBEX_STATE_OF": file_digest(settings.env_file)})
        where = (f"kept in {state}, because {settings.env_file} cannot be written; the next run reads it from there "
                 "until that file changes")
    if overridden := [key for key in values if key in settings.from_environment]:
        where += (f". {', '.join(overridden)} is set in the environment, which overrides the file: update or unset it "
                  "before the next run, or the old value comes back")
    return where


def make_private_folder(folder: Path) -> None:
    """Make folder and any missing parent 0700, whatever the umask; safe when workers race."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            continue
        level.chmod(0o700)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a file just linked or renamed into it survives a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_first_free(source, folder: Path, names) -> Path:
    """A hard link to source under the first of names free in folder (a link never overwrites a
    file), the folder synced. FileExistsError when every name is taken."""
    for name in names:
        try:
            os.link(source, folder / name, follow_symlinks=False)
        except FileExistsError:
            continue
        sync_folder(folder)  # the link itself survives a power loss
        return folder / name
    raise FileExistsError(f"every name for the new file in {folder} is taken")


def write_new_file(folder: Path, text: str, names) -> Path:
    """A new file, whole or not at all, under the first of names that is free: temporary file,
    fsync, then link_first_free; 0600."""
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=".new-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        return link_first_free(temp_name, folder, names)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def write_file_atomically(path: Path, content: str, keep_owner: bool = False) -> None:
    """Temporary file in the same folder, fsync, rename: a crash leaves the old file whole. New
    files are 0600; keep_owner: the file there keeps its mode and owner (a root run must not
    leave the service user's file unreadable to it)."""
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as handle:
            if keep_owner and path.exists():
                was = path.stat()
                os.fchmod(handle.fileno(), stat.S_IMODE(was.st_mode))
                if (was.st_uid, was.st_gid) != (os.geteuid(), os.getegid()):
                    os.fchown(handle.fileno(), was.st_uid, was.st_gid)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
        sync_folder(path.parent)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# 7. WebexClient: one per org, one method per API operation, one ApiError. What every org's client
#    shares (a connection pool per API host, the --workers bound, one pace, the run's writes pool)
#    is in Connections; the Minter mints an org's token with the integration token.
# ---------------------------------------------------------------------------------------------


def token_env_values(body: dict) -> dict[str, str]:
    """What a token answer changes in an env file, the refresh token's expiry included."""
    values = {"WEBEX_ACCESS_TOKEN": body["access_token"]}
    if body.get("refresh_token"):
        values["WEBEX_REFRESH_TOKEN"] = body["refresh_token"]
    lasts = body.get("refresh_token_expires_in")
    if isinstance(lasts, (int, float)) and not isinstance(lasts, bool) and 0 < lasts < 10**9:
        ends = datetime.now(UTC) + timedelta(seconds=lasts)
        values["WEBEX_REFRESH_TOKEN_EXPIRES_AT"] = ends.isoformat(timespec="seconds")
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


@dataclass
class Answer:
    """Webex's whole answer to one request: the response (status, headers) and its body's bytes."""

    response: requests.Response
    content: bytes
    after_lost: bool = False  # an earlier attempt of the same request got no answer, and may have arrived

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def tracking_id(self) -> str | None:
        return self.response.headers.get("TrackingID")

    def json(self):
        """The JSON body, or None for an empty one. Raises ApiError for anything else: not JSON, or
        JSON nested deeper than MAX_JSON_DEPTH (which no Webex answer is)."""
        if not self.content:
            return None
        try:
            body = json.loads(self.content)
        except RecursionError:
            body = None
        except ValueError:
            if self.status >= 400:
                return None  # the status speaks; its body does not matter
            looks_like = "an HTML page" if b"<html" in self.content[:512].lower() else "text"
            raise ApiError(f"Webex answered with {looks_like}, not JSON. This is usually a proxy or an outage: try "
                           "again later.", status=self.status, tracking_id=self.tracking_id) from None
        if body is None or json_depth(body) > MAX_JSON_DEPTH:
            raise ApiError(f"Webex's answer nests deeper than {MAX_JSON_DEPTH} levels, which no Webex answer does: it "
                           "was not read. Try again later, or report it to Webex support.", status=self.status,
                           tracking_id=self.tracking_id)
        return body

    def error(self, method: str, path: str = "") -> ApiError:
        """The refusal as one ApiError: Webex's message, the status, the tracking id, what to do."""
        body = self.json()
        message, tracking = "", None
        if isinstance(body, dict):
            details = [e.get("description") for e in body.get("errors") or [] if isinstance(e, dict)]
            message = str(body.get("message") or "; ".join(str(d) for d in details if d))
            tracking = body.get("trackingId")
        hint = status_hint(self.status, method, path)
        if self.response.is_redirect:
            hint = (f"It pointed to {self.response.headers['Location']}, which this tool does not follow, so nothing "
                    f"was changed: check WEBEX_API_BASE_URL (normally {DEFAULT_BASE_URL}).")
        kind = TokenRefused if self.status == 401 else ApiError
        return kind(message or self.response.reason or "no message", status=self.status,
                    tracking_id=self.tracking_id or tracking, hint=hint, body=body)


def json_depth(value) -> int:
    """How deeply a parsed JSON value nests, found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


class TooSlow(requests.exceptions.Timeout):
    """The whole answer did not come within the total timeout."""


def exchange(session: requests.Session, method: str, url: str, timeouts: Timeouts, limit: int = MAX_ANSWER_BYTES,
             **kwargs) -> Answer:
    """One HTTP exchange, bounded: at most limit bytes, and the body whole within timeouts.total of
    the start however slowly it trickles in (each read of the socket waits only what is left; the
    wait for the answer's head is bounded by each read's timeout). No redirect is followed: a
    redirected PUT would come back a GET, and "succeed"."""
    deadline = time.monotonic() + timeouts.total
    response = session.request(method, url, stream=True, timeout=(timeouts.connect, min(timeouts.read, timeouts.total)),
                               allow_redirects=False, **kwargs)
    with response:
        body = bytearray()
        while (left := deadline - time.monotonic()) > 0:
            if (connection := response.raw.connection) and connection.sock:
                connection.sock.settimeout(min(left, timeouts.read))
            try:
                chunk = response.raw.read1(64 * 1024, decode_content=True)
            except u3.ReadTimeoutError:
                break
            except (u3.ProtocolError, u3.DecodeError, OSError) as exc:
                raise requests.exceptions.ConnectionError(exc) from None
            if not chunk:
                return Answer(response, bytes(body))
            body += chunk
            if len(body) > limit:
                raise ApiError(f"Webex's answer was larger than {limit // (1024 * 1024) or 1} MiB, which no Webex "
                               "answer is: it was not read. Try again later, or report it to Webex support.",
                               status=response.status_code, tracking_id=response.headers.get("TrackingID"))
    raise TooSlow(f"no whole answer within {timeouts.total:g} s")


def causes(exc: BaseException):
    """Every exception requests and urllib3 wrapped inside this one."""
    seen, stack = set(), [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        stack.extend(x for x in (getattr(item, "reason", None), item.__cause__, item.__context__)
                     if isinstance(x, BaseException))


def network_error(exc: requests.RequestException, method: str, host: str, timeouts: Timeouts) -> ApiError:
    """One sentence for a request that got no answer; maybe_processed if it may have arrived."""
    found = list(causes(exc))
    if isinstance(exc, requests.exceptions.SSLError):
        message, sent = f"TLS failed with {host}: check the system clock, any proxy, or REQUESTS_CA_BUNDLE.", False
    elif isinstance(exc, requests.exceptions.ConnectTimeout):
        message, sent = (f"Could not connect to {host} within {timeouts.connect:g} s: check the network or "
                         "WEBEX_API_BASE_URL."), False
    elif isinstance(exc, TooSlow):
        message, sent = f"{host} did not send its whole answer within {timeouts.total:g} s (WEBEX_TIMEOUT).", True
    elif isinstance(exc, requests.exceptions.ReadTimeout):
        message, sent = f"{host} did not answer within {timeouts.read:g} s (WEBEX_READ_TIMEOUT).", True
    elif any(isinstance(c, u3.NameResolutionError) for c in found):
        message, sent = f"Cannot resolve the host {host}: check WEBEX_API_BASE_URL and your DNS.", False
    elif any(isinstance(c, (ConnectionRefusedError, u3.NewConnectionError)) for c in found):
        message, sent = f"{host} refused the connection: check WEBEX_API_BASE_URL and that the service is up.", False
    elif isinstance(exc, requests.exceptions.ConnectionError):
        message, sent = f"The connection to {host} dropped before an answer came.", True
    else:
        message, sent = f"The request to {host} failed: {type(exc).__name__}.", False
    created = "The data source may have been created: Refresh and check before registering again."
    hint = created if sent and method == "POST" else ""
    return ApiError(message, hint=hint, maybe_processed=sent)


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


@dataclass
class Reply:
    """Webex's answer to a request that succeeded: its status, TrackingID and parsed JSON body."""

    status: int | None
    tracking_id: str | None
    body: object


def source_path(*ids: str) -> str:
    """/dataSources/{id...}: each id checked, then percent-encoded, so no id can change the path."""
    for value in ids:
        if not plain_id(value):
            raise NotSent(f"The id {clip(str(value), 40)!r} is not a plain identifier (letters, digits, -, _, =, .), "
                          "so it was not sent to Webex. Report the source to Webex support.")
    return "/dataSources/" + "/".join(quote(value, safe="") for value in ids)

class Pace:
    """One pace for every request of the run: Webex limits the Service App as a whole, across all
    the orgs it serves. A 429 pauses every worker of every org for its Retry-After, and teaches the
    run the limit: what Webex let through just before (over the Retry-After, a second at least).
    The run goes on a little under it, climbs back to just under it quickly, then creeps above it
    slowly in case the limit was raised: each 429 costs everyone a pause, so they stay rare. A 429
    after a mere trickle teaches nothing (another run may be using the limit up): it is only a
    pause. per_minute (--rate) caps it from the start; without it there is no cap until the
    first 429 that teaches the limit."""

    def __init__(self, per_minute: float | None = None):
        self.cap = per_minute / 60 if per_minute else None  # requests a second
        self.rate = self.cap
        self.limit: float | None = None  # requests a second that Webex let through, as the last 429 taught
        self.throttled = 0  # the 429s met
        self.slowest: float | None = None  # the lowest pace the run came down to
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._next_turn = self._paused_until = 0.0
        self._through: deque[float] = deque()  # when requests went through, over the last PACE_MEMORY seconds

    def turn(self) -> None:
        """Wait for this request's turn."""
        with self._lock:
            now = time.monotonic()
            at = max(now, self._paused_until, self._next_turn if self.rate else now)
            if self.rate:
                self._next_turn = at + 1 / self.rate
        if at > now:
            time.sleep(at - now)

    def slow_down(self, pause: float) -> None:
        """A 429: everyone pauses, and the pace goes under what Webex let through, once a burst.
        Webex does not say whether it counts a bucket or a rolling window of some seconds, so what
        went through is measured over several spans (the whole run, while it is younger than a
        span), and the slowest of them is the limit: a window's limit shows in the span of its length."""
        with self._lock:
            now = time.monotonic()
            self.throttled += 1
            if now < self._paused_until:  # the same burst: already slowed
                self._paused_until = max(self._paused_until, now + pause)
                return
            ran = min(PACE_MEMORY, max(1.0, now - self._started))
            self._paused_until = now + pause
            rates = [let_through / span for span in (*(span for span in PACE_SPANS if span < ran), ran)
                     if (let_through := sum(1 for moment in self._through if moment > now - span)) >= PACE_EVIDENCE]
            if rates:
                self.limit = min(rates)
                self.rate = max(MIN_PACE, min(self.rate or math.inf, self.limit) * PACE_UNDER)
                self.slowest = min(self.slowest or self.rate, self.rate)

    def went_through(self) -> None:
        """A request that was not limited: remembered, and the pace regains ground (PACE_RECOVERY
        requests a second each second up to just under the limit learned, PACE_PROBE above)."""
        with self._lock:
            now = time.monotonic()
            self._through.append(now)
            while self._through[0] < now - PACE_MEMORY:
                self._through.popleft()
            if self.rate and self.limit:
                near = self.limit * (1 + PACE_UNDER) / 2
                step = PACE_RECOVERY / self.rate if self.rate < near else PACE_PROBE
                self.rate = min(self.rate + step, self.cap or math.inf)

    def summary(self) -> str | None:
        """For the run's summary: the 429s met, the limit learned and the pace reached, when it was limited at all."""
        if not self.throttled:
            return f"Paced at {self.cap * 60:g} requests a minute (--rate)." if self.cap else None
        if not self.limit:
            return f"Webex limited the rate {self.throttled} time(s); the run paused each time as it asked."
        return (f"Webex limited the rate {self.throttled} time(s), letting about {self.limit * 60:.0f} requests a "
                f"minute through: the run slowed to {self.slowest * 60:.0f} a minute at the slowest and ended at "
                f"{self.rate * 60:.0f}.")


def keep_headers(request):
    """A session's auth that changes nothing. requests lets a ~/.netrc entry for the host replace
    the Authorization header unless the session has an auth of its own: a curl user's entry for
    webexapis.com would turn the bearer token into Basic credentials, and every answer into a 401."""
    return request


def wait_quietly(seconds: float, reason: str) -> None:
    time.sleep(seconds)


class Connections:
    """What every org's client shares: one session (one connection pool) per API host, which keeps
    no cookie (one org's answers never reach another's requests); one bound on the requests in
    flight across the fleet (--workers); one pace for the Service App's rate limit; one minter per
    integration token; one pool for the run's writes; and whether writes are sent at all."""

    def __init__(self, workers: int = DEFAULT_WORKERS, notify: Callable[[str], None] = print,
                 rate: float | None = None, dry_run: bool = False):
        self.workers = workers
        self.dry_run = dry_run  # --dry-run: every write says what it would send, and nothing is sent
        self.notify = notify  # one line for the user, from any thread (Screen.tell)
        self.gate = threading.BoundedSemaphore(workers)
        self.closing = threading.Event()  # the run is ending: no request starts after this
        self.pace = Pace(rate)
        self.sessions: dict[tuple, requests.Session] = {}  # by (scheme, host)
        self.minters: dict[tuple, Minter] = {}
        self.lock = threading.Lock()
        self.skew: float | None = None  # seconds Webex's clock (its answers' Date) is ahead of this machine's

    @functools.cached_property
    def writes(self) -> ThreadPoolExecutor:
        """The run's writes: a menu write goes on there, so that Ctrl-C can wait for its answer."""
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="write")

    def session_for(self, base_url: str) -> requests.Session:
        host = urlsplit(base_url)[:2]
        with self.lock:
            if host not in self.sessions:
                session = requests.Session()
                session.headers["User-Agent"] = f"data-sources.py/{VERSION}"
                session.auth = keep_headers  # the token in the header, whatever ~/.netrc says
                session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))  # keeps none
                adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(self.workers, 2), max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                self.sessions[host] = session
            return self.sessions[host]

    def minter_for(self, settings: Settings, sleeper) -> Minter | None:
        if not settings.can_mint:
            return None
        key = (settings.base_url, settings.integration.token)
        with self.lock:
            if key not in self.minters:
                self.minters[key] = Minter(settings, self, sleeper)
            return self.minters[key]

    def send(self, method: str, url: str, timeouts: Timeouts, backoff: float, sleeper, retry_on=RETRY_STATUSES,
             **kwargs) -> Answer:
        """One request to Webex, in turn with the run's pace and within --workers, retried as it
        allows: after no answer (not a POST, which may have arrived), and for the statuses in
        retry_on, with Retry-After honoured, within MAX_ATTEMPTS (RATE_LIMITED_ATTEMPTS for 429s,
        counted apart) and RETRY_BUDGET. The last answer comes back whatever its status (after_lost:
        an earlier attempt may have arrived unanswered, so a refusal may be of a write that went
        through); ApiError when none came."""
        started, path, lost = time.monotonic(), urlsplit(url).path, False
        tries = Counter()  # attempts by how they failed: "limited" (429) or "failed"
        while True:
            try:
                with self.gate:  # --workers bounds the requests in flight across every org
                    self.pace.turn()  # here, not before: a request that waited at the gate still heeds a 429's pause
                    if self.closing.is_set():  # a read still waiting its turn when the run ends is not sent
                        raise NotSent("The run ended before this request was sent.")
                    answer = exchange(self.session_for(url), method, url, timeouts, **kwargs)
            except requests.RequestException as exc:
                error = network_error(exc, method, urlsplit(url).netloc, timeouts)
                tries["failed"] += 1
                wait = backoff * 2 ** (tries["failed"] - 1)
                fits = time.monotonic() - started + wait <= RETRY_BUDGET
                if not (error.maybe_processed and method != "POST" and tries["failed"] < MAX_ATTEMPTS and fits) or STOP:
                    raise error from None
                lost = True
                sleeper(wait, error.message)
                continue
            answer.after_lost = lost
            with suppress(TypeError, ValueError):
                webex_time = parsedate_to_datetime(answer.response.headers.get("Date"))
                self.skew = (webex_time - datetime.now(UTC)).total_seconds()
            if answer.status == 429:
                asked = retry_after_seconds(answer.response)
                self.pace.slow_down(min(RETRY_WAIT_CAP, backoff if asked is None else asked))
            else:
                self.pace.went_through()
            if answer.status not in retry_on:
                return answer
            how, allowed = ("limited", RATE_LIMITED_ATTEMPTS) if answer.status == 429 else ("failed", MAX_ATTEMPTS)
            tries[how] += 1
            asked = retry_after_seconds(answer.response)
            wait = min(backoff * 2 ** (tries[how] - 1), RETRY_WAIT_CAP) if asked is None else asked
            if wait <= RETRY_WAIT_CAP and time.monotonic() - started + wait <= RETRY_BUDGET and tries[how] < allowed \
                    and not STOP:  # a run told to stop retries nothing
                sleeper(wait, f"Webex answered {answer.status}")
                continue
            error = answer.error(method, path)
            if asked is not None:
                error.hint = f"Webex asked to wait {asked:g} s: try again after that."
            error.maybe_processed = lost
            raise error


def checked_token_answer(answer: Answer, what: str) -> dict:
    """A token answer's tokens, each what a token can be: a line break, a space or a quote in one
    could smuggle a line into an env file or change what is read back, so such an answer is refused whole."""
    body = answer.json()
    tokens = [body.get("access_token"), body.get("refresh_token")] if isinstance(body, dict) else [None]
    for token in tokens:
        remember_secret(token if isinstance(token, str) else None)
    if not tokens[0]:
        raise ApiError(f"The answer to {what} had no access_token: try again later.", status=answer.status)
    if any(token is not None and (not isinstance(token, str) or validate_token(token) is not True) for token in tokens):
        raise ApiError(f"The answer to {what} held a token with a control character, a space or a quote, which no "
                       "token holds, so it was refused and nothing was saved. Check WEBEX_API_BASE_URL: that is not "
                       "how Webex answers.")
    return body


def renewed_tokens(connections: Connections, settings: Settings, sleeper, form: dict, what: str, advice: str) -> dict:
    """POST /access_token with a refresh token, retried like any call (429, 5xx); only a 400 or 401
    means the refresh token is refused (TokenRefused, with what to do: advice)."""
    answer = connections.send("POST", f"{settings.base_url}/access_token", settings.timeouts, settings.backoff, sleeper,
                              data={"grant_type": "refresh_token", **form})
    if answer.status in (400, 401):
        error = answer.error("POST")
        raise TokenRefused(f"Could not renew {what} with its refresh token ({error.message}).", status=error.status,
                           tracking_id=error.tracking_id, hint=advice)
    if answer.status >= 300:
        raise answer.error("POST")
    return checked_token_answer(answer, f"renewing {what}")


class Minter:
    """Mints an org's access token with the integration token (POST /applications/{app}/token).
    Shared by the orgs that use the same integration token, so it renews itself once per run."""

    def __init__(self, settings: Settings, connections: Connections, sleeper):
        self.integration, self.connections, self.sleeper = settings.integration, connections, sleeper
        self.settings = settings  # the base URL, timeouts and Service App: the same for every org that shares it
        self.token = settings.integration.token
        self.lock = threading.Lock()
        self.renewed = False

    def mint(self, settings: Settings) -> dict:
        body = {"clientId": settings.client_id, "clientSecret": settings.client_secret,
                "targetOrgId": settings.target_org_id}
        url = f"{settings.base_url}/applications/{quote(settings.service_app_id, safe='')}/token"
        for attempt in (1, 2):
            token = self.token
            answer = self.connections.send("POST", url, settings.timeouts, settings.backoff, self.sleeper,
                                           POST_RETRY_STATUSES, json=body, headers={"Authorization": f"Bearer {token}"})
            if answer.status == 401 and attempt == 1 and self.renew(token):
                continue
            if answer.status >= 300:
                raise self.refusal(answer, settings)
            return checked_token_answer(answer, f"minting a token for org {settings.target_org_id}")
        raise AssertionError("unreachable: the second attempt returns or raises")

    def refusal(self, answer: Answer, settings: Settings) -> ApiError:
        error = answer.error("POST")
        where = self.integration.file or "the environment"
        if answer.status == 401:
            error.message = f"The integration token (WEBEX_INTEGRATION_TOKEN in {where}) was refused ({error.message})"
            error.hint = ("It must be a personal or integration token with the scope spark:applications_token: get a "
                          "new one from the developer portal (a personal token lives 12 hours), or set "
                          "WEBEX_INTEGRATION_REFRESH_TOKEN, WEBEX_INTEGRATION_CLIENT_ID and "
                          "WEBEX_INTEGRATION_CLIENT_SECRET so it renews itself.")
        elif answer.status == 403:
            return NotAuthorized(error.message, status=403, tracking_id=error.tracking_id, body=error.body,
                                 hint=f"Org {settings.target_org_id} has not authorized the Service App: a Full Admin "
                                 "of that org authorizes it in Control Hub.")
        elif answer.status == 404:
            error.hint = (f"Webex would not mint a token for org {settings.target_org_id}: WEBEX_SERVICE_APP_ID, "
                          "WEBEX_CLIENT_ID or WEBEX_TARGET_ORG_ID is wrong, or the org has not authorized the Service "
                          "App.")
        return error

    def renew(self, rejected: str) -> bool:
        """Renew the integration token once per run and save it where it came from; True if a new one is there."""
        with self.lock:
            if self.token != rejected:
                return True  # another org's mint already renewed it
            if self.renewed or not self.integration.can_renew:
                return False
            self.renewed = True
            i = self.integration
            form = {"client_id": i.client_id, "client_secret": i.client_secret, "refresh_token": i.refresh_token}
            answer = renewed_tokens(self.connections, self.settings, self.sleeper, form, "the integration token",
                                    "Authorize the integration again in the developer portal and put its tokens in "
                                    "WEBEX_INTEGRATION_TOKEN and WEBEX_INTEGRATION_REFRESH_TOKEN.")
            self.token = answer["access_token"]
            updates = {"WEBEX_INTEGRATION_TOKEN": self.token}
            if answer.get("refresh_token"):
                updates["WEBEX_INTEGRATION_REFRESH_TOKEN"] = answer["refresh_token"]
            if i.file:
                try:
                    save_env_values(i.file, updates)
                except ConfigError as exc:  # the new token still serves this run
                    self.connections.notify(f"Warning: the integration token was renewed, but {exc.message} It is used "
                                            "for this run only.")
                    return True
                self.connections.notify(f"The integration token was renewed and saved to {i.file}.")
            else:
                self.connections.notify("Warning: the integration token was renewed, but it came from the environment: "
                                        "export the new one before the next run.")
            return True


class WebexClient:
    """The Webex BYODS API for one org. Thread-safe: bulk rotation shares one client among workers.
    Token order: the access token; on a 401 (or with none) the refresh token; then one mint."""

    def __init__(self, settings: Settings, sleeper=wait_quietly, connections: Connections | None = None):
        self.settings, self.tokens = settings, settings.tokens
        self.connections = connections or Connections()
        self.workers = self.connections.workers
        self.sleeper = sleeper  # called with (seconds, reason) for every wait before a retry
        self.minter = self.connections.minter_for(settings, sleeper)
        self.on_token_renewed = None  # called with the env values a renewal or mint changed, and how
        self.token_state = "ok"  # ok, renewed, minted
        self.lock = threading.Lock()
        self.renew_failed: ApiError | None = None  # kept, so every worker reports the same reason
        self.minted = False

    # One method per API operation.
    def list_sources(self) -> list:
        """Every item Webex listed, as it came: fetch_state counts the ones it cannot use."""
        return self.items(self.request("GET", "/dataSources/").body, "data sources")

    def get_source(self, source_id: str) -> dict:
        return self.request("GET", source_path(source_id)).body

    def create_source(self, payload: dict) -> Reply:
        return self.request("POST", "/dataSources", payload)

    def update_source(self, source_id: str, payload: dict) -> Reply:
        return self.request("PUT", source_path(source_id), payload)

    def delete_source(self, source_id: str) -> Reply:
        return self.request("DELETE", source_path(source_id))

    def list_schemas(self) -> list[dict]:
        items = self.items(self.request("GET", "/dataSources/schemas").body, "schemas")
        return [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]

    def get_schema(self, schema_id: str) -> dict:
        return self.request("GET", source_path("schemas", schema_id)).body

    # The token: renewed with the refresh token, else minted, at most once each per run.
    def take_tokens(self, answer: dict, how: str) -> None:
        self.tokens.access = answer["access_token"]
        self.tokens.refresh = answer.get("refresh_token") or self.tokens.refresh
        self.token_state = how
        if self.on_token_renewed:
            self.on_token_renewed(token_env_values(answer), how)

    def recover_token(self, rejected_token: str) -> None:
        """The refresh token first, then one mint; raises ApiError when neither gives a token."""
        with self.lock:
            if self.tokens.access != rejected_token:
                return  # another worker already has a new one
            if self.settings.can_renew and not self.renew_failed:
                s = self.settings
                form = {"client_id": s.client_id, "client_secret": s.client_secret,
                        "refresh_token": self.tokens.refresh}
                try:
                    return self.take_tokens(renewed_tokens(self.connections, s, self.sleeper, form, "the access token",
                                                           "Create a new refresh token for the Service App in the "
                                                           "developer portal, or put a fresh access token in "
                                                           "WEBEX_ACCESS_TOKEN."), "renewed")
                except ApiError as exc:
                    self.renew_failed = exc
            if self.minter is None or self.minted:
                raise self.renew_failed or TokenRefused("The access token was refused again.", status=401,
                                                        hint=status_hint(401, "GET"))
            self.minted = True
            self.take_tokens(self.minter.mint(self.settings), "minted")

    @staticmethod
    def items(body, what: str) -> list:
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ApiError(f"Webex's answer had no list of {what} ('items' is missing): try Refresh later.")
        return body["items"]

    def request(self, method: str, path: str, payload: dict | None = None, token: str | None = None) -> Reply:
        if token is None and not self.tokens.access:
            self.recover_token("")
        retry_on = POST_RETRY_STATUSES if method == "POST" else RETRY_STATUSES
        for recovered in (False, True):
            sent_token = token or self.tokens.access
            answer = self.connections.send(method, self.settings.base_url + path, self.settings.timeouts,
                                           self.settings.backoff, self.sleeper, retry_on, json=payload,
                                           headers={"Authorization": f"Bearer {sent_token}"})
            can_recover = (self.settings.can_renew and not self.renew_failed) or (self.minter and not self.minted)
            if answer.status == 401 and token is None and not recovered and can_recover:
                self.recover_token(sent_token)
                continue
            if answer.status == 401 and token is None and self.renew_failed:
                raise self.renew_failed  # every worker gives the same reason: why the renewal failed
            if answer.status >= 300:
                error = answer.error(method, path)
                error.maybe_processed = answer.after_lost
                exported = "WEBEX_ACCESS_TOKEN" in self.settings.from_environment
                if isinstance(error, TokenRefused) and token is None and exported:
                    error.hint += (" The token in use comes from the WEBEX_ACCESS_TOKEN environment variable, which "
                                   f"overrides {self.settings.env_file}: update or unset the variable.")
                raise error
            return Reply(answer.status, answer.tracking_id, answer.json())
        raise AssertionError("unreachable: the second attempt returns or raises")


# ---------------------------------------------------------------------------------------------
# 8. Data source view: the API's dict plus what the JWS claims tell.
# ---------------------------------------------------------------------------------------------


def decode_claims(token) -> tuple[dict | None, str | None]:
    """The claims of a JWS, unverified (chapter 9 verifies them with pyjwt), or why they cannot be read.
    By hand: importing pyjwt loads cryptography, which alone would put time to menu past its 10 %."""
    if not isinstance(token, str) or not token:
        return None, "no token"
    try:
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("not three parts")
        header, claims = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in parts[:2])
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise TypeError("its header or claims are not a JSON object")
        return claims, None
    except (RecursionError, TypeError, ValueError) as exc:  # ValueError: binascii, Unicode and JSON errors
        return None, f"token unreadable ({clip(str(exc), 80)})"


def epoch_to_datetime(value) -> datetime | None:
    """An epoch claim as a moment, or None when it is not one (a 400-digit number is not a date)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > 10**11 or not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def lifetime_minutes(issued: datetime | None, expires: datetime | None) -> int | None:
    """exp - iat, in whole minutes (at least 1), or None when the claims do not say."""
    if issued is None or expires is None or expires <= issued:
        return None
    return max(1, round((expires - issued).total_seconds() / 60))


def claim_text(value) -> str | None:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return value if isinstance(value, str) and value else None


@dataclass
class SourceView:
    """One data source as Webex lists it, with what its token's claims tell (audience, subject,
    lifetime, expiry); raw keeps the API's dict."""

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
    issued, expires = epoch_to_datetime(c.get("iat")), epoch_to_datetime(c.get("exp"))
    api_lifetime = str(item.get("tokenLifetimeMinutes"))
    lifetime = int(api_lifetime) if re.fullmatch(r"[1-9][0-9]{0,4}", api_lifetime) else \
        lifetime_minutes(issued, expires)
    view = SourceView(
        id=item_id(item),
        status=claim_text(item.get("status")) or ("disabled" if item.get("errorMessage") else "active"),
        schema_id=claim_text(item.get("schemaId")) or claim_text(c.get(CLAIM_SCHEMA)),
        url=claim_text(item.get("url")) or claim_text(c.get(CLAIM_URL)),
        audience=claim_text(item.get("audience")) or claim_text(c.get("aud")),
        subject=claim_text(item.get("subject")) or claim_text(c.get("sub")),
        nonce=claim_text(item.get("nonce")) or claim_text(c.get("jti")),
        lifetime_minutes=lifetime,
        issued_at=issued,
        expires_at=expires or parse_iso(item.get("tokenExpiryTime")),
        error_message=claim_text(item.get("errorMessage")),
        org_id=claim_text(item.get("orgId")) or claim_text(c.get(CLAIM_ORG)),
        claims=claims,
        token_problem=problem,
        raw=item,
    )
    view.warnings = claim_mismatches(view)
    if c.get("exp") is not None and expires is None:
        view.warnings.append(f"its token's exp claim ({clip(safe_text(c.get('exp')), 24)}) is not a date, so its "
                             "expiry comes from Webex's tokenExpiryTime, if any")
    if not claim_text(item.get("status")):  # as Cisco's gateway reads it: no status and no error message is active
        view.warnings.append(f"Webex did not give its status: taken as {view.status}")
    if not plain_id(view.id):
        view.warnings.append("its id is not a plain identifier (letters, digits, -, _, =, .): it is never sent to "
                             "Webex")
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


def new_nonce() -> str:
    return str(uuid.uuid4())


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


def rotation_payload(view: SourceView, lifetime: int | None = None, changes: dict | None = None) -> dict:
    """A new nonce, these changes, and everything else as it is. Raises ValueError when it cannot be
    judged, or a field it needs can be read neither from the source nor from the changes."""
    if view.unjudged:
        raise ValueError(f"it cannot be judged: {view.unjudged}")
    payload = {**payload_from_view(view), **(changes or {})}
    missing = [name for name in ("schemaId", "url", "audience", "subject") if not payload[name]]
    if missing:
        raise ValueError(f"its {', '.join(missing)} cannot be read from the source or its token: give them (Update, "
                         "or --update ID with --url, --audience, --subject)")
    chosen = (changes or {}).get("tokenLifetimeMinutes") or lifetime or view.lifetime_minutes or DEFAULT_LIFETIME
    payload["tokenLifetimeMinutes"] = min(max(chosen, MIN_LIFETIME), MAX_LIFETIME)
    payload["nonce"] = new_nonce()
    return payload


def schema_name(schemas: dict, schema_id: str | None) -> str:
    schema = schemas.get(schema_id)
    if schema and schema.get("serviceType"):
        return schema["serviceType"]
    return f"unknown ({(schema_id or '?')[:8]})"


def sort_views(views: list[SourceView], now: datetime) -> list[SourceView]:
    return sorted(views, key=lambda v: urgency(v, now))


def find_duplicate(views: list[SourceView], payload: dict) -> SourceView | None:
    """A source with the same url, schema, audience and subject: registering would copy it."""
    same = ("url", "schema_id", "audience", "subject")
    wanted = (payload.get("url"), payload.get("schemaId"), payload.get("audience"), payload.get("subject"))
    return next((v for v in views if tuple(getattr(v, name) for name in same) == wanted), None)


def registered_as(views: list[SourceView], payload: dict) -> SourceView | None:
    """The source a register with this payload made, if any: its URL, and the nonce in its token."""
    sent = (payload.get("url"), payload.get("nonce"))
    return next((v for v in views if (v.url, (v.claims or {}).get("jti")) == sent), None)


def template_fields(template: SourceTemplate, org_id: str, org_name: str, schemas: dict) -> dict:
    """What the template says one org's source is; schemaId None when the template names none and
    the Service App has more than one schema (or none could be listed)."""
    only = next(iter(schemas)) if len(schemas) == 1 else None
    return {"schemaId": template.schema_id or only, "url": template.url_for(org_id, org_name),
            "audience": template.audience, "subject": template.subject}


def template_source(views: list[SourceView], wanted: dict) -> SourceView | None:
    """The org's source that the template describes: the one at its URL, else the only one with its
    audience and subject (its URL drifted). Any other source is the org's own business."""
    at_url = [v for v in views if v.url == wanted["url"]]
    alike = [v for v in views if (v.audience, v.subject) == (wanted["audience"], wanted["subject"])]
    return at_url[0] if at_url else alike[0] if len(alike) == 1 else None


TEMPLATE_FIELDS = {"url": "url", "audience": "audience", "subject": "subject", "schemaId": "schema_id"}  # payload: view


def template_drift(view: SourceView, wanted: dict) -> list[tuple[str, object, object]]:
    """(field, what the source has, what the template says), for each field that differs."""
    return [(key, getattr(view, attr), wanted[key]) for key, attr in TEMPLATE_FIELDS.items()
            if wanted[key] and getattr(view, attr) != wanted[key]]


def drift_warning(changes: list[tuple[str, object, object]]) -> str:
    differences = "; ".join(f"{name} {clip(str(have))!r}, the template {clip(str(want))!r}"
                            for name, have, want in changes)
    return f"differs from the template (WEBEX_SOURCE_*): {differences}. --onboard with the org's id updates it."


def changed_fields(before: dict, after: dict) -> list[tuple[str, object, object]]:
    keys = dict.fromkeys([*before, *after])
    return [(key, before.get(key), after.get(key)) for key in keys if before.get(key) != after.get(key)]


# ---------------------------------------------------------------------------------------------
# 9. Token verification: RS256 against the issuer's published keys, trusted issuers only.
# ---------------------------------------------------------------------------------------------


class KeysUnreachable(Exception):
    """The issuer's key set could not be fetched (no answer, or not a 200)."""


@dataclass
class Verdict:
    """What checking a source token's signature found."""

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


@functools.cache
def pyjwt():
    """pyjwt, imported when a signature is first checked: it loads cryptography, which the menu's
    first screen does not need."""
    import jwt

    return jwt


class TokenVerifier:
    """Keys are fetched through sessions made like the API's (so REQUESTS_CA_BUNDLE and proxies apply), once
    per issuer per run, again once if a token names a kid the set lacks (key sets rotate); at
    most MAX_KEYS keys and MAX_KEY_SET_BYTES. An untrusted issuer is never contacted. The key is
    the one with the token's kid; failing that, each RSA signing key is tried, as Cisco's
    verifiers do (key sets without kids exist)."""

    def __init__(self, trusted_issuers, session_for: Callable[[str], requests.Session], timeouts: Timeouts):
        self.trusted = set(trusted_issuers)
        self.session_for = session_for  # Connections.session_for: one pool per host
        self.timeouts = timeouts
        self._key_sets: dict[str, list] = {}
        self._refetched: set[str] = set()
        self._unreachable: set[str] = set()
        self._lock = threading.Lock()

    def _keys_for(self, issuer: str, kid=None) -> list:
        """The issuer's RSA signing keys. Raises KeysUnreachable, or ValueError when the set is unusable."""
        with self._lock:
            known = self._key_sets.get(issuer)
            stale = known is not None and kid and all(k.key_id != kid for k in known) and issuer not in self._refetched
            if known is None or stale:
                if stale:
                    self._refetched.add(issuer)
                self._key_sets[issuer] = self._fetch(issuer)
            return self._key_sets[issuer]

    def _fetch(self, issuer: str) -> list:
        try:
            answer = exchange(self.session_for(issuer), "GET", issuer + JWKS_PATH, self.timeouts,
                              limit=MAX_KEY_SET_BYTES)
            body = answer.json() if answer.status == 200 else None
        except requests.RequestException:
            raise KeysUnreachable from None
        except ApiError as exc:  # larger than MAX_KEY_SET_BYTES, or not JSON
            raise ValueError(exc.message) from None
        if answer.status != 200:
            raise KeysUnreachable
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list) or len(keys) > MAX_KEYS:
            raise ValueError(f"it must list at most {MAX_KEYS} keys")
        try:
            key_set = pyjwt().PyJWKSet.from_dict({"keys": keys})
        except pyjwt().PyJWTError as exc:
            raise ValueError(str(exc)) from None
        return [k for k in key_set.keys if k.key_type == "RSA" and k.public_key_use in ("sig", None)]

    def verify(self, view: SourceView, now: datetime | None = None, skew: float = 0.0) -> Verdict:
        """skew: seconds Webex's clock is ahead of ours; the token is judged by Webex's clock."""
        token = view.raw.get("jwsToken")
        if not isinstance(token, str) or not token:
            return Verdict("missing")
        try:
            header = pyjwt().get_unverified_header(token)
        except pyjwt().PyJWTError:
            return Verdict("invalid", "the token cannot be parsed")
        if header.get("alg") != "RS256":
            return Verdict("invalid", f"algorithm {clip(safe_text(header.get('alg')), 40)!r} is not RS256")
        issuer = (view.claims or {}).get("iss")
        if not isinstance(issuer, str) or issuer.rstrip("/") not in self.trusted:
            return Verdict("untrusted", f"issuer {clip(safe_text(issuer), 80)!r} is not in WEBEX_TRUSTED_ISSUERS")
        issuer = issuer.rstrip("/")
        try:
            keys = [] if issuer in self._unreachable else self._keys_for(issuer, header.get("kid"))
        except KeysUnreachable:
            self._unreachable.add(issuer)  # once per run: a thousand tokens must not wait a thousand times
        except ValueError as exc:
            return Verdict("invalid", f"the issuer's key set is unusable ({exc})")
        if issuer in self._unreachable:
            return Verdict("unreachable", "the issuer's keys could not be fetched")
        return self._check_signature(token, header.get("kid"), keys, now or datetime.now(UTC), skew)

    @staticmethod
    def _check_signature(token: str, kid, keys: list, now: datetime, skew: float) -> Verdict:
        by_kid = [k for k in keys if kid and k.key_id == kid]
        now += timedelta(seconds=skew)
        for key in by_kid or keys:
            try:  # pyjwt reads our clock for iat: a clock behind Webex's widens the leeway by as much
                claims = pyjwt().decode(token, key.key, algorithms=["RS256"], leeway=MAX_CLOCK_SKEW + max(0.0, skew),
                                    options={"verify_aud": False, "verify_exp": False})
            except pyjwt().InvalidSignatureError:
                continue
            except pyjwt().PyJWTError as exc:
                return Verdict("invalid", str(exc))
            expires = epoch_to_datetime(claims.get("exp"))
            if expires is None:
                return Verdict("invalid", "the token has no expiry")
            state = "expired" if expires <= now else "valid"
            reason = "the signature is valid but the token has expired" if state == "expired" else ""
            return Verdict(state, reason, by_trial=not by_kid)
        if by_kid:
            return Verdict("invalid", "the signature does not match")
        return Verdict("invalid", f"no key in the issuer's set verifies it (none has kid {kid!r})")


# ---------------------------------------------------------------------------------------------
# 10. Records: one JSON file per operation, atomic, never overwritten, secrets redacted.
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


def unwritable(records_dir: Path, exc: OSError) -> RecordError:
    return RecordError(f"Cannot write records to {records_dir} ({exc.strerror or exc}). Nothing was sent. "
                       "Fix the folder's permissions, or choose another with --records-dir or WEBEX_RECORDS_DIR.")


def ensure_records_dir(records_dir: Path) -> None:
    """Fail before anything is sent if a record could not be written: a real write, synced, so
    that a full disk fails here and not after Webex has changed something."""
    try:
        make_private_folder(records_dir)
        with tempfile.TemporaryFile(dir=records_dir) as probe:
            probe.write(b"probe" * 1024)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise unwritable(records_dir, exc) from None


def write_record(records_dir: Path, name: str, content: dict) -> Path:
    """Write {name}_{TS}.json, never over another (in the same microsecond: the next timestamp).
    Before anything is sent, callers know the folder takes a write (Trail.ensure, the write's marker)."""
    text = scrub(json.dumps(redact(content), indent=2, ensure_ascii=False, default=str)) + "\n"
    try:
        return write_new_file(records_dir, text, iter(lambda: f"{name}_{file_timestamp()}.json", None))
    except OSError as exc:
        raise RecordError(f"Could not write the record {name} in {records_dir}: {exc.strerror or exc}.") from None


class OrgLock:
    """One writer per org, across processes and hosts: an exclusive lock on {records folder}/.lock
    (flock, which Linux's NFS carries between hosts). This process holds it while any of its
    threads writes, so a rotation that renews a token on the way does not wait for itself."""

    def __init__(self, folder: Path, wait: float = DEFAULT_LOCK_WAIT):
        self.path = folder / ".lock"
        self.wait = wait
        self._mutex = threading.Lock()
        self._holders = 0
        self._fd: int | None = None

    def acquire(self, wait: float | None = None) -> bool:
        """True once held; False if another run still holds it after wait seconds."""
        wait = self.wait if wait is None else wait
        with self._mutex:
            if self._holders:
                self._holders += 1
                return True
            try:
                make_private_folder(self.path.parent)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)  # a link there is nobody's lock
            except OSError as exc:
                raise unwritable(self.path.parent, exc) from None
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        return False
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            self._fd, self._holders = fd, 1
            return True

    def release(self) -> None:
        with self._mutex:
            self._holders -= 1
            if self._holders == 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    @contextmanager
    def held(self, what: str):
        """Hold the lock for a write, or raise Busy: another run is writing to this org."""
        if not self.acquire():
            raise Busy(f"Another run is writing to this org ({what} waited {self.wait:g} s "
                       f"for {self.path}): nothing was sent. Try again in a minute; WEBEX_LOCK_WAIT sets how long.")
        try:
            yield
        finally:
            self.release()


@dataclass
class History:
    """What --history (or the menu's History) shows: the chosen records, with what else was found."""

    entries: list[dict]  # newest first
    skipped: int  # files among those read that are not records of ours
    total: int  # how many records there are to show (read or not)


STAMP = "%Y%m%d_%H%M%S_%f"  # a record's name: the local time of the run that wrote it
OFFSET_SPREAD = timedelta(hours=26)  # two local times of one moment differ by at most this (UTC-12 to UTC+14)


def read_history(folders: list[tuple[str, Path]], wanted: str = "", limit: int = 0,
                 since: datetime | None = None) -> History:
    """The operation records in these (org name, folder) pairs, newest first: those of one id or
    prefix when wanted, the newest limit of them (0: all), none older than since. The file names
    say enough to choose (data_source_{operation}_{id}_{TS}.json), so a file that is not shown is
    never opened; a failed operation's name carries no id, so with wanted those are read to see
    whose. A name's time is local to the run that wrote it (another time zone, before a change of
    daylight saving time): where names alone cannot decide, the files' modification times do."""
    since_utc = since.astimezone(UTC).replace(tzinfo=None) if since else None
    floor = (since_utc - OFFSET_SPREAD).strftime(STAMP) if since else ""
    wanted_part = f"_{file_safe(wanted)}" if wanted else ""
    candidates, odd = [], []  # (TS, org, name, failed, folder); files of ours whose names carry no TS
    for org_name, folder in folders:
        for name in os.listdir(folder) if folder.is_dir() else ():
            if not name.startswith("data_source_") or not name.endswith(".json"):
                continue
            stamp, what = name[-27:-5], name[12:-28]  # data_source_{what}_{TS}.json
            if len(name) < 41 or name[-28] != "_" or stamp[8] != "_" or stamp[15] != "_" or not stamp[:8].isdigit():
                odd.append((org_name, folder / name))
                continue
            failed = what.endswith("_failed")
            if stamp >= floor and not (wanted and not failed and wanted_part not in what):
                candidates.append((stamp, org_name, name, failed, folder))

    def written(candidate) -> float:
        with suppress(OSError):
            return (candidate[4] / candidate[2]).stat().st_mtime
        return 0.0

    if since:  # within a day of the line, the name cannot tell: the time it was written does
        surely = (since_utc + OFFSET_SPREAD).strftime(STAMP)
        candidates = [c for c in candidates if c[0] >= surely or written(c) >= since.timestamp()]
    others = sum(1 for c in candidates if not (wanted and c[3]))  # the failed ones of another source do not count
    if limit and not wanted and len(candidates) > limit:  # those that may be newer than the limit-th, in true order
        near = (datetime.strptime(heapq.nlargest(limit, candidates)[-1][0], STAMP) - OFFSET_SPREAD).strftime(STAMP)
        candidates = sorted((c for c in candidates if c[0] >= near), key=lambda c: (written(c), c), reverse=True)
    else:
        candidates.sort(reverse=True)
    entries, skipped = [], 0
    for _, org_name, name, _, folder in [*candidates, *((None, org, p.name, False, p.parent) for org, p in odd)]:
        if limit and len(entries) >= limit:
            break
        path = folder / name
        try:
            entry = history_entry(json.loads(read_file(path)), org_name, path)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            entry = None
        if entry is None:
            skipped += 1
        elif str(entry["data_source_id"] or "").startswith(wanted):
            entries.append(entry)
    entries.sort(key=lambda entry: parse_iso(entry["time"]), reverse=True)
    return History(entries, skipped, max(others, len(entries)))


def history_entry(record, org_name: str, path: Path) -> dict | None:
    """What a record says about one operation, or None when it is not one of ours."""
    ours = isinstance(record, dict) and isinstance(record.get("operation_type"), str)
    if not ours or not parse_iso(record.get("operation_timestamp")):
        return None
    response = record.get("api_response") if isinstance(record.get("api_response"), dict) else {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    configuration = record.get("configuration") if isinstance(record.get("configuration"), dict) else {}
    claims = body.get("jwsTokenClaims") if isinstance(body.get("jwsTokenClaims"), dict) else {}
    return {
        "time": parse_iso(record["operation_timestamp"]).isoformat(),
        "operation": record["operation_type"],
        "org": record.get("org_name") or org_name,
        "data_source_id": record.get("data_source_id"),
        "audience": configuration.get("audience") or claims.get("aud"),
        "success": record.get("success") is True,
        "status_code": response.get("status_code"),
        "tracking_id": response.get("tracking_id"),
        "error": record.get("error"),
        "reconciled": record.get("reconciled"),
        "file": str(path),
    }


# ---------------------------------------------------------------------------------------------
# 11. Orgs and the fleet: every org of the run and what was read from it. A run with one env
#     file is a fleet of one, and reads exactly as a single org always has. One SourceRow per
#     source feeds every output; COLUMNS below is the only list of what they show.
# ---------------------------------------------------------------------------------------------


OPERATIONS = ("registration", "update", "rotation", "delete")


@dataclass
class WriteResult:
    """What one write (a registration, an update, a rotation or a delete) came to, and its record."""

    operation: str
    source_id: str | None
    ok: bool
    org: str = "default"
    view: SourceView | None = None
    record: Path | None = None
    error: BaseException | None = None
    record_error: RecordError | None = None  # Webex answered, but the record could not be written
    reconciled: str | None = None  # a lost answer, settled by reading the source
    would_send: dict | None = None  # --dry-run: what would have been sent (nothing was)
    before: dict | None = None  # --dry-run of a change to a source: the source as it is

    @property
    def word(self) -> str:
        """What came of it, for --json: ok, failed or dry-run."""
        return "dry-run" if self.would_send is not None else "ok" if self.ok else "failed"

    @property
    def gone(self) -> bool:
        """A delete that Webex answered 404: the source was gone already, which is what was wanted."""
        return self.operation == "delete" and getattr(self.error, "status", None) == 404


@dataclass
class State:
    """What was read of one org: its sources, the schemas, and the warnings to show with them."""

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


def read_sources(client: WebexClient, schemas: dict) -> State:
    """An org's sources as Webex lists them (a sparse item read on its own), with the run's schemas."""
    views, unnamed = views_from_items(client.list_sources())
    unusable = f"{unnamed} item(s) in Webex's list had no id (or were not objects), so they cannot be shown or changed."
    warnings = [unusable] if unnamed else []
    return State(fill_sparse(client, views), schemas, warnings, unnamed)


def fill_sparse(client: WebexClient, views: list[SourceView]) -> list[SourceView]:
    """A list item without what a decision needs (status, url, schemaId) is read on its own,
    side by side; if that fails too, the view says it cannot be judged."""
    sparse = [v for v in views if missing_fields(v.raw) and plain_id(v.id)]

    def read(view: SourceView) -> SourceView:
        try:
            body = client.get_source(view.id)
        except ApiError as exc:
            view.unjudged = (f"Webex's list left out its {', '.join(missing_fields(view.raw))} and reading it failed "
                             f"({exc.message})")
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


def settle(client: WebexClient, operation: str, source_id, payload: dict) -> tuple[str, SourceView | None]:
    """What became of a write whose answer was lost, or did not show what was sent: the source
    read again. A registration: created if a source has the URL and nonce sent, else not_created;
    a delete: applied if the source is gone; another write: applied if the source carries the
    nonce sent. unknown when Webex cannot be read either."""
    try:
        if operation == "registration":
            found = registered_as(views_from_items(client.list_sources())[0], payload)
            return ("created", found) if found else ("not_created", None)
        found = source_view(client.get_source(source_id))
    except ApiError as exc:
        return ("applied" if operation == "delete" and exc.status == 404 else "unknown"), None
    except NotSent:
        return "unknown", None
    if operation == "delete" or (found.claims or {}).get("jti", found.nonce) != payload.get("nonce"):
        return "not_applied", found
    return "applied", found


class Org:
    """One customer org in the run: its settings and tokens (the client holds them), its records
    folder and writer lock, its snapshot, and what was read from it. An org whose settings could
    not be read is one too: it carries why (problem), and one org's problem never stops another."""

    def __init__(self, name: str, profile: Settings | ToolError, connections: Connections, sleeper=wait_quietly):
        self.name = name
        self.settings = profile if isinstance(profile, Settings) else None
        self.problem: ToolError | None = None if self.settings else profile  # also: a refused token, the network, busy
        self.client = WebexClient(self.settings, sleeper, connections) if self.settings else None
        self.records = self.settings.records_dir if self.settings else None
        self.lock = OrgLock(self.records, self.settings.lock_wait) if self.settings else None
        self.org_id = self.settings.target_org_id or None if self.settings else None  # then the list's orgId
        self.state: State | None = None
        self.holds_lock = False  # a rotation holds the org's writer lock from its list to its last write
        self.read_at: datetime | None = None  # when what is shown was read, if by an earlier run (its snapshot)
        self.retired = False  # offboarded during this run: its file is set aside
        self.checked = False  # its records folder took a real write in this run
        self.fresh = threading.Event()  # set once this run has read it

    @property
    def refused(self) -> bool:
        """Nothing can be done in this org until its settings or token are fixed."""
        return isinstance(self.problem, (ConfigError, TokenRefused))

    @property
    def token_state(self) -> str:
        if self.refused:
            return f"refused: {shown(self.problem)}"
        return self.client.token_state if self.client else "unknown"

    def trouble(self, short: bool = False) -> str:
        """Why it could not be read: in a few words (a monitoring line, the overview) or whole,
        with what to do next."""
        problem = self.problem
        if isinstance(problem, NotAuthorized):
            files = ["--env-file", str(self.settings.env_file)] if self.settings else []
            offboard = " ".join([COMMAND, *map(shlex.quote, [*files, "--offboard", self.name])])
            return (f"not authorized (403): --offboard {self.name} if the customer left" if short else
                    f"{shown(problem)} If the customer left, offboard it: {offboard} (disables its sources and sets "
                    "its file aside).")
        if not short:
            return shown(problem)
        words = {ConfigError: "bad settings", TokenRefused: "token refused", RecordError: "records folder unusable",
                 Busy: "busy: another run is writing to it"}
        if type(problem) in words:
            return words[type(problem)]
        if isinstance(problem, ApiError):
            return f"Webex answered {problem.status}" if problem.status else "no answer from Webex"
        return "failed (its error says why)"

    # Reading it.
    def fetch(self, writing: bool = False, schemas: dict | None = None) -> None:
        """Read the org's sources. A run that writes from the list on (a rotation, an offboarding)
        first takes the org's writer lock and keeps it to its last write (release), so that two runs
        never rotate one source twice: the second waits, then reads what the first wrote. Writes an
        earlier run left unrecorded are settled first. Whatever goes wrong is this org's problem."""
        try:
            self.read(writing, schemas or {})
        finally:
            self.fresh.set()

    def read(self, writing: bool, schemas: dict) -> None:
        if self.client is None:
            return
        if writing and not self.lock.acquire():
            self.state, self.problem = None, Busy(f"Another run is writing to this org, so it was left alone (waited "
                                                  f"{self.lock.wait:g} s for {self.lock.path}; WEBEX_LOCK_WAIT sets "
                                                  "how long).")
            return
        self.holds_lock = writing
        try:
            self.check_owner()
            settled = []
            dry_run = self.client.connections.dry_run  # a dry run writes no record, not even a settled one
            if not dry_run and self.pending() and (writing or self.lock.acquire(0)):  # never a live run's markers
                try:
                    settled = self.resolve_pending()
                finally:
                    if not writing:
                        self.lock.release()
            state = read_sources(self.client, schemas)
            self.org_id = self.org_id or next((v.org_id for v in state.views if v.org_id), None)
            self.check_owner()
            self.state, self.problem, self.read_at = state, None, None
            self.state.warnings += settled
        except ToolError as exc:
            self.state, self.problem = None, exc
        except OSError as exc:  # its records folder (markers, the lock) cannot be used
            self.state, self.problem = None, RecordError(
                f"Cannot use {exc.filename or self.records} ({exc.strerror or exc}): whoever runs the tool must be "
                "able to read and write the org's records folder. Fix its owner or mode, or choose another with "
                "--records-dir.")
        except Exception as exc:  # noqa: BLE001 (a crash in our code stays this org's failure)
            self.state, self.problem = None, ToolError(f"unexpected {type(exc).__name__} while reading it: {exc}. "
                                                       "Please report it with the command you ran.")

    def check_owner(self) -> None:
        """An org name's records belong to one org: a folder that holds another org's is refused
        (a name reused after offboarding would mix two customers' records)."""
        if not self.org_id or not self.settings.own_file:
            return
        with suppress(OSError, ValueError, AttributeError, RecursionError):
            owner = self.snapshot().get("org_id")
            if isinstance(owner, str) and owner != self.org_id:
                raise ConfigError(f"The name {self.name} belongs to another org: its records folder {self.records} "
                                  f"holds the records of org {owner}, and this org is {self.org_id}. Give this org "
                                  "another WEBEX_ORG_NAME (or file name), or move that folder away. Nothing was sent.")

    def release(self) -> None:
        """The end of this run's writes to the org (the rotation's lock)."""
        if self.holds_lock:
            self.holds_lock = False
            self.lock.release()

    # Its records: checked before the first write, a marker before each write, a record after it.
    def ensure_records(self) -> None:
        """Before the run's first write to the org: can a record be written there? A real write,
        once a run; after that, each write's own marker is the check (mark_pending). A dry run writes nothing."""
        if not self.checked and not self.client.connections.dry_run:
            ensure_records_dir(self.records)
            self.checked = True

    @property
    def pending_dir(self) -> Path:
        return self.records / ".pending"

    def mark_pending(self, operation: str, source_id, payload) -> Path:
        """Before a write is sent: what is about to be sent, made durable, so that even after a
        SIGKILL or a power loss the next run knows to look. Removed once the record is written. A
        marker that cannot be written stops the write: nothing is sent that could go unrecorded."""
        content = {"operation_type": operation, "data_source_id": source_id, "configuration": payload,
                   "marked_timestamp": now_iso(), "org_name": self.name, "org_id": self.org_id}
        name = f"{file_timestamp()}_{operation}_{file_safe(source_id or 'new')}.json"
        try:
            make_private_folder(self.pending_dir)
            text = scrub(json.dumps(redact(content), ensure_ascii=False, default=str))
            return write_new_file(self.pending_dir, text, [name])  # whole or not at all
        except OSError as exc:
            raise unwritable(self.records, exc) from None

    def pending(self) -> list[Path]:
        """The markers of writes sent by a run that did not live to record them, oldest first; and
        for an org read here for the first time (its file renamed?), its markers left under another name."""
        markers = sorted(self.pending_dir.glob("*.json")) if self.pending_dir.is_dir() else []
        if self.settings.own_file and self.org_id and not self.snapshot_path.exists():
            for marker in sorted(self.records.parent.glob("*/.pending/*.json")):
                with suppress(OSError, ValueError, AttributeError, RecursionError):
                    if marker.parent != self.pending_dir and json.loads(read_file(marker)).get("org_id") == self.org_id:
                        markers.append(marker)
        return markers

    def operation_record(self, operation: str, source_id, payload, reply: Reply | None, error: ApiError | None) -> dict:
        return {
            "operation_timestamp": now_iso(),
            "org_name": self.name,
            "org_id": self.org_id,
            "operation_type": operation,
            "data_source_id": source_id,
            "configuration": payload,
            "api_response": {
                "status_code": reply.status if reply else error.status,
                "tracking_id": reply.tracking_id if reply else error.tracking_id,
                **self.kept_body(reply.body if reply else error.body),
            },
            "success": error is None,
            "error": str(error) if error else None,
        }

    @staticmethod
    def kept_body(body) -> dict:
        """An answer's body as a record keeps it: whole up to MAX_RECORDED_MESSAGE, else the start of its
        text and body_truncated (a 5 MB error page per failed write would fill the disk of a cron host)."""
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, default=str)
        if len(text) <= MAX_RECORDED_MESSAGE:
            return {"body": body}
        return {"body": text[:MAX_RECORDED_MESSAGE], "body_truncated": True}

    def keep_record(self, operation: str, source_id, ok: bool, content: dict,
                    marker: Path) -> tuple[Path | None, RecordError | None]:
        """Write the record of a write that was sent, then drop its marker. A record that cannot be
        written leaves the marker, so the next run writes it: what Webex did is never unrecorded."""
        name = f"data_source_{operation}_{file_safe(source_id)}" if ok else f"data_source_{operation}_failed"
        try:
            path = write_record(self.records, name, content)
        except RecordError as exc:  # what Webex did stands; the result says the record is missing
            how = "went through" if ok else "was refused"
            return None, RecordError(f"The {operation} {how}, but no record of it was kept. {exc} "
                                     "Make room or fix the folder: the next run writes it.")
        marker.unlink(missing_ok=True)
        sync_folder(marker.parent)
        return path, None

    def resolve_pending(self) -> list[str]:
        """Writes that a run sent but did not live to record (its markers are still there): the
        source read again and the missing record written, reconciled as applied, not_applied or
        unknown. Called holding the org's lock, so no live run's marker is taken. A note for each."""
        notes = []
        for marker in self.pending():
            try:
                sent = json.loads(read_file(marker))
                operation, source_id, payload = sent["operation_type"], sent["data_source_id"], sent["configuration"]
                if operation not in OPERATIONS or not isinstance(payload, dict) or \
                        not isinstance(source_id, str | None):
                    raise TypeError("not a marker of ours")
            except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
                marker.rename(marker.with_suffix(".unreadable"))  # kept for a person to look at, never read again
                notes.append(f"A marker of an unrecorded write that cannot be read was set aside: "
                             f"{marker.with_suffix('.unreadable')}.")
                continue
            reconciled, found = settle(self.client, operation, source_id, payload)
            reconciled = {"created": "applied", "not_created": "not_applied"}.get(reconciled, reconciled)
            source_id = found.id if found and operation == "registration" else source_id
            read = Reply(None, None, found.raw if found else None)
            content = self.operation_record(operation, source_id, payload, read, None)
            content.update(success=reconciled == "applied", reconciled=reconciled,
                           sent_timestamp=sent.get("marked_timestamp"),
                           error=None if reconciled == "applied" else "The run that sent this stopped before it "
                           "recorded Webex's answer; reading the source afterwards shows it "
                           f"{reconciled.replace('_', ' ')}.")
            path, error = self.keep_record(operation, source_id, reconciled == "applied", content, marker)
            notes.append(f"A {operation} of {source_id or 'a new source'} sent by an earlier run that stopped before "
                         f"recording it: {reconciled}; " + (f"recorded in {path}." if path else f"{error}"))
        return notes

    # Its snapshot: what the last run read, shown until this run's answer comes.
    @property
    def snapshot_path(self) -> Path:
        return self.records / "state.json"

    def snapshot(self):
        """The last snapshot's JSON; OSError or ValueError when there is none to read."""
        return json.loads(read_file(self.snapshot_path, MAX_SNAPSHOT_BYTES))

    def save_snapshot(self) -> None:
        """What was just read, for the next run to show at once: the views with their claims and
        their token's fingerprint, never a raw token, and the names of the schemas they use. What
        is shown from the raw answer (details, a rotation's payload) always comes from a fresh read.
        Not a record."""
        views = [{**{k: v for k, v in vars(view).items() if k != "raw"},
                  "raw": {"jwsTokenFingerprint": fingerprint(token)}
                  if isinstance(token := view.raw.get("jwsToken"), str) else {}} for view in self.state.views]
        schemas = self.state.schemas
        if not schemas:  # a rotation reads no schemas: keep the ones the last snapshot had
            with suppress(OSError, ValueError, AttributeError):
                schemas = self.snapshot().get("schemas") or {}
        used = {view.schema_id for view in self.state.views}
        schemas = {sid: {"id": sid, "serviceType": schema.get("serviceType")} for sid, schema in schemas.items()
                   if sid in used and isinstance(schema, dict)}
        content = {"org_name": self.name, "org_id": self.org_id, "read_at": now_iso(), "views": views,
                   "schemas": schemas, "unnamed": self.state.unnamed}
        make_private_folder(self.records)
        write_file_atomically(self.snapshot_path, scrub(json.dumps(content, ensure_ascii=False, default=str)))

    def load_snapshot(self) -> bool:
        """What an earlier run read, shown until this run's answer comes; False when there is none,
        or none to trust (not ours, wrong types, read in the future): then the fresh read shows."""
        try:
            content = self.snapshot()
            views = [SourceView(**{**view, "issued_at": parse_iso(view["issued_at"]),
                                   "expires_at": parse_iso(view["expires_at"])}) for view in content["views"]]

            read_at, schemas, unnamed = parse_iso(content["read_at"]), content["schemas"], content["unnamed"]
            texts = [value for view in views for value in (view.status, view.schema_id, view.url, view.audience,
                                                           view.subject, view.nonce, view.error_message, view.org_id)]
            if not (isinstance(schemas, dict) and all(isinstance(schema, dict) for schema in schemas.values())
                    and type(unnamed) is int and all(isinstance(v.id, str) for v in views)
                    and all(v.lifetime_minutes is None or type(v.lifetime_minutes) is int for v in views)
                    and all(value is None or isinstance(value, str) for value in texts)
                    and all(isinstance(v.warnings, list) and isinstance(v.raw, dict) for v in views)
                    and read_at and read_at < datetime.now(UTC) + timedelta(minutes=5)):
                return False
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return False
        self.state, self.read_at = State(views, schemas, [], unnamed), read_at
        return True

    def drift(self) -> dict[str, list]:
        """How the source that the template describes differs from it, by the source's id: nothing
        without a template, or before the org's id is known."""
        template = self.settings.template if self.settings else None
        if template is None or self.state is None or not self.org_id:
            return {}
        wanted = template_fields(template, self.org_id, self.name, self.state.schemas)
        source = template_source(self.state.views, wanted)
        changes = template_drift(source, wanted) if source else []
        return {source.id: changes} if changes else {}


EXPIRY_STYLES = {0: "bold red", 1: "magenta", 2: "yellow", 3: "green"}  # by urgency()


@dataclass(frozen=True)
class SourceRow:
    """Everything any output shows of one source. The table, the piped TSV, --json, the Nagios
    line and the metrics are short formatters over these rows."""

    org: str
    org_label: str | None  # the org as outputs name it: None in a fleet of one, which names none
    id: str
    short_id: str
    audience: str | None
    subject: str | None
    schema_id: str | None
    schema_name: str | None  # None: the schema is not among those listed
    url: str | None
    status: str | None
    active: bool
    expires_at: datetime | None
    seconds_left: float | None
    lifetime_minutes: int | None
    urgency: int  # 0 expired, 1 unknown, 2 within the hour, 3 fine
    expiry: str  # "in 3h 2m", "expired 5m ago", "unknown"
    signature: Verdict | None  # None where signatures were not checked (the menu's list)
    warnings: tuple[str, ...]
    drift: tuple[str, ...] = ()  # the fields in which it differs from the onboarding template


def source_row(org: Org, org_label: str | None, view: SourceView, verdict: Verdict | None, now: datetime,
               changes: list = ()) -> SourceRow:
    schema = org.state.schemas.get(view.schema_id) or {}
    return SourceRow(
        org=org.name, org_label=org_label, id=view.id, short_id=view.short_id, audience=view.audience,
        subject=view.subject,
        schema_id=view.schema_id, schema_name=schema.get("serviceType") or None, url=view.url, status=view.status,
        active=view.active, expires_at=view.expires_at, seconds_left=seconds_left(view, now),
        lifetime_minutes=view.lifetime_minutes, urgency=urgency(view, now)[0], expiry=expiry_text(view, now),
        signature=verdict, warnings=(*view.warnings, *([drift_warning(changes)] if changes else [])),
        drift=tuple(name for name, _, _ in changes),
    )


def utc_iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


@dataclass(frozen=True)
class Column:
    """One column of the sources table, the piped TSV and --json. title: the table's header ("":
    not in the table); key: the TSV's header ("": not in the TSV); json: the keys it gives --json,
    each with its value. priority 0 is never cut; on a narrow terminal the higher give way first."""

    title: str
    key: str
    text: Callable[[SourceRow], str]  # the table's cell
    plain: Callable[[SourceRow], str] | None = None  # the TSV's value, where it differs
    json: tuple[tuple[str, Callable], ...] = ()
    style: Callable[[SourceRow], str] = lambda row: ""
    priority: int = 0
    wanted: Callable[[list[SourceRow]], bool] = lambda rows: True  # shown at all for these rows


COLUMNS = (
    Column("Org", "org", lambda r: r.org_label, json=(("org", lambda r: r.org_label),),
           wanted=lambda rows: any(r.org_label for r in rows)),
    Column("ID", "id", lambda r: r.short_id, plain=lambda r: r.id, json=(("id", lambda r: r.id),)),
    Column("Audience", "audience", lambda r: r.audience or "unknown", json=(("audience", lambda r: r.audience),),
           priority=1),
    Column("Subject", "subject", lambda r: r.subject or "unknown", json=(("subject", lambda r: r.subject),),
           priority=3),
    Column("Schema", "schema", lambda r: r.schema_name or schema_name({}, r.schema_id), priority=4,
           json=(("schema_id", lambda r: r.schema_id), ("schema_name", lambda r: r.schema_name))),
    Column("URL", "url", lambda r: r.url or "unknown", json=(("url", lambda r: r.url),), priority=5),
    Column("Status", "status", lambda r: (r.status or "unknown") + (" · drift" if r.drift else ""),
           plain=lambda r: r.status or "unknown", json=(("status", lambda r: r.status),),
           style=lambda r: "yellow" if r.drift else "green" if r.active else "red"),
    Column("", "expires_at", lambda r: r.expires_at.isoformat() if r.expires_at else "unknown",
           json=(("expires_at", lambda r: utc_iso(r.expires_at)),)),
    Column("Expires", "expires", lambda r: r.expiry, style=lambda r: EXPIRY_STYLES[r.urgency],
           json=(("seconds_left", lambda r: None if r.seconds_left is None else math.floor(r.seconds_left)),
                 ("lifetime_minutes", lambda r: r.lifetime_minutes))),
    Column("Signature", "signature", lambda r: r.signature.text, priority=2,
           json=(("signature", lambda r: r.signature.text if r.signature else None),),  # None: not checked (--cached)
           style=lambda r: "green" if r.signature.state == "valid" else "yellow",
           wanted=lambda rows: any(r.signature for r in rows)),
    Column("", "", lambda r: "", json=(("warnings", lambda r: list(r.warnings)),)),
)


@dataclass(frozen=True)
class OrgRow:
    """One org at a glance: the overview, --check and the metrics."""

    name: str
    readable: bool
    sources: int
    expired: int  # active sources whose token has lapsed
    soon: int  # active sources that lapse within the hour
    soonest: SourceRow | None  # the active source that lapses first
    token: str  # ok, renewed, minted, or refused: why
    problem: str | None  # why it could not be read, in a few words (None: still being read)
    why: str | None = None  # ... and whole, with what to do next
    busy: bool = False  # another run held its writer lock: left alone
    as_of: str | None = None  # how old what is shown is, when it comes from the last run's snapshot
    active: int = 0  # its active sources: none means Webex sends it nothing

    @property
    def need(self) -> tuple:
        """Sort key, most in need first: unreadable, then the most expired, the most due, the soonest."""
        return (self.readable, -self.expired, -self.soon, self.soonest.seconds_left if self.soonest else math.inf)


class Fleet:
    """Every org of the run. It answers what the outputs ask of them all: the rows in
    trouble-first order, each token's verdict (keyed by org and id: two orgs may list the same
    id), the notes to show, the exit code of a piece of work."""

    def __init__(self, orgs: list[Org], connections: Connections, files: tuple[str, ...] = (),
                 records_dir: str | None = None, sleeper=wait_quietly):
        self.orgs = orgs
        self.connections = connections
        self.files = files  # --env-file as given: part of every command the run suggests
        self.records_dir, self.sleeper = records_dir, sleeper  # for an org that joins during the run
        self.verdicts: dict[tuple[str, str], Verdict] = {}
        self.schemas: dict[str, dict] | None = None  # the Service App's, read once per run
        self.unsaved = False  # read since the snapshots were last saved
        self.verifiers: dict[tuple, TokenVerifier] = {}
        self.reading: ThreadPoolExecutor | None = None  # the reads under way, so that leaving can drop the rest
        self.shared_note: str | None = None  # about the shared .env

    def load(self, env_files: list[Path] | None) -> Fleet:
        """An Org per env file, their clients sharing connections: the --workers bound and one pace."""
        self.orgs = [self.org_for(name, profile) for name, profile in org_profiles(env_files, self.records_dir)]
        if any(org.settings and org.settings.own_file for org in self.orgs):  # the shared .env holds secrets too
            self.shared_note = readable_by_others(SHARED_ENV_FILE, shared_env())
        return self

    def command(self, *args: str) -> str:
        """A command to suggest: how this run was started (its files and records folder), then args."""
        files = ["--env-file", *self.files] if self.files else []
        folder = ["--records-dir", self.records_dir] if self.records_dir else []
        return " ".join([COMMAND, *map(shlex.quote, [*files, *folder, *args])])

    def org_for(self, name: str, profile: Settings | ToolError) -> Org:
        """An org of this fleet from its profile (or the reason it has none): its client shares the connections."""
        org = Org(name, profile, self.connections, self.sleeper)
        if org.client:
            org.client.on_token_renewed = self.token_saver(org)
        return org

    def token_saver(self, org: Org):
        """A renewed or minted token goes back into the org's own file, under the org's lock, after
        re-reading it; a failure warns and the run goes on."""

        def save(values: dict[str, str], how: str) -> None:
            means = "with the refresh token" if how == "renewed" else "with the integration token"
            try:
                with org.lock.held("saving the new token"):
                    where = save_tokens(org.settings, values)
            except (ToolError, OSError) as exc:
                self.connections.notify(f"{self.label(org.name)}Warning: the access token was {how} {means}, but "
                                        f"{shown(exc)}")
                return
            self.connections.notify(f"{self.label(org.name)}The access token was {how} {means} and {where}.")

        return save

    @property
    def several(self) -> bool:
        return len(self.orgs) > 1

    @property
    def alone(self) -> Org | None:
        """The org of a fleet of one (whose menu opens directly), else None."""
        return None if self.several else self.orgs[0]

    def label(self, org_name: str) -> str:
        """A message's prefix: the org's name when there are several, nothing in a fleet of one."""
        return f"{org_name}: " if self.several else ""

    def label_of(self, org_name: str) -> str | None:
        """The org as an output's column names it, or None in a fleet of one."""
        return org_name if self.several else None

    def read_schemas(self, client: WebexClient) -> list[str]:
        """The Service App's schemas, the same for every org: read once per run, with an org's token.
        Failing, they show as unknown: the warning to show with that org."""
        try:
            self.schemas = {schema["id"]: schema for schema in client.list_schemas()}
        except ToolError as exc:
            return [f"Schemas could not be listed, so they show as unknown: {shown(exc)}"]
        return []

    def fetch(self, writing: bool = False) -> Fleet:
        """Every org side by side; the requests in flight stay within --workers. The schemas are read
        once per run (not for a rotation or an offboarding), beside the first org's list, which is
        asked first: for one org it is the answer the menu waits for, and the longer one."""
        readers = [org for org in self.orgs if org.client]
        with ThreadPoolExecutor(max_workers=max(1, min(len(self.orgs) + 1, MAX_WORKERS))) as pool:
            self.reading = pool
            reads = [pool.submit(org.fetch, writing, self.schemas) for org in self.orgs[:1]]
            asking = readers and not writing and self.schemas is None
            asked = pool.submit(self.read_schemas, readers[0].client) if asking else None
            reads += [pool.submit(org.fetch, writing, self.schemas) for org in self.orgs[1:]]
            for read in reads:
                read.result()
            warnings = asked.result() if asked else []
        for org in self.orgs:
            if org.state and not org.state.schemas:
                org.state.schemas = self.schemas or {}
        if readers and readers[0].state:
            readers[0].state.warnings += warnings
        self.unsaved = True
        return self

    def take(self, results: list[WriteResult]) -> None:
        """What went through, into each org's state: the table and the snapshots show the new expiries."""
        by_name = {org.name: org for org in self.orgs}
        for result in results:
            if result.ok and result.view and result.org in by_name:
                by_name[result.org].state.put(result.view)

    def stop_reading(self) -> None:
        """The run is ending: the orgs not yet asked are not asked, and those on their way finish
        within their timeout. Otherwise a thousand orgs still loading would hold the exit for minutes."""
        self.connections.closing.set()
        if self.reading:
            self.reading.shutdown(wait=False, cancel_futures=True)

    def save_snapshots(self, in_background: bool = False) -> None:
        """A snapshot of each org read since the last save; one that cannot be written is only a
        slower next start. in_background: on a thread of its own (the menu, once it is drawn)."""
        if not self.unsaved:
            return
        self.unsaved = False

        def write() -> None:
            for org in self.orgs:
                if org.state is not None and org.problem is None and org.read_at is None:
                    with suppress(OSError, TypeError, ValueError):
                        org.save_snapshot()

        if in_background:
            threading.Thread(target=write, name="snapshots").start()  # joined at exit
        else:
            write()

    def load_snapshots(self) -> bool:
        """Every org's last snapshot (what an earlier run read); True if any org had one."""
        return sum(org.load_snapshot() for org in self.orgs if org.records) > 0

    def entries(self, now: datetime) -> list[tuple[Org, SourceView]]:
        """Every (org, source) that was read, trouble on top across all orgs."""
        pairs = [(org, view) for org in self.orgs if org.state for view in org.state.views]
        return sorted(pairs, key=lambda pair: urgency(pair[1], now))

    def verdict(self, org: Org, view: SourceView, now: datetime) -> Verdict:
        """The token's signature; one verifier (one key fetch per issuer) per trust setting."""
        key = (org.settings.trusted_issuers, org.settings.timeouts)
        if key not in self.verifiers:
            self.verifiers[key] = TokenVerifier(key[0], self.connections.session_for, key[1])
        self.verdicts[org.name, view.id] = self.verifiers[key].verify(view, now, self.connections.skew or 0.0)
        return self.verdicts[org.name, view.id]

    def verify(self, now: datetime) -> Fleet:
        for org, view in self.entries(now):
            self.verdict(org, view, now)
        return self

    def rows(self, now: datetime, org: Org | None = None) -> list[SourceRow]:
        """One row per source, trouble first: of every org, with the verdicts found by verify; or of
        one org, for its menu, which names no org and shows no signatures."""
        if org:
            drifted = org.drift()
            return [source_row(org, None, view, None, now, drifted.get(view.id, ()))
                    for view in sort_views(org.state.views, now)]
        drifted = {o.name: o.drift() for o in self.orgs if o.state}
        return [source_row(o, self.label_of(o.name), v, self.verdicts.get((o.name, v.id)), now,
                           drifted[o.name].get(v.id, ())) for o, v in self.entries(now)]

    def org_rows(self, now: datetime) -> list[OrgRow]:
        rows = []
        for org in self.orgs:
            if org.state is None:  # problem None: its first answer is still on its way
                short, whole = (org.trouble(short=True), org.trouble()) if org.problem else (None, None)
                rows.append(OrgRow(org.name, False, 0, 0, 0, None, org.token_state, short, whole,
                                   isinstance(org.problem, Busy)))
                continue
            views = org.state.views  # counted as they are: only the soonest needs a whole row
            timed = [(left, view) for view in views if view.active and (left := seconds_left(view, now)) is not None]
            soonest = min(timed, key=lambda pair: pair[0], default=None)
            as_of = f"{duration_text((now - org.read_at).total_seconds())} ago" if org.read_at else None
            rows.append(OrgRow(org.name, True, len(views), sum(left <= 0 for left, _ in timed),
                               sum(0 < left < EXPIRING_SOON_SECONDS for left, _ in timed),
                               source_row(org, None, soonest[1], None, now) if soonest else None, org.token_state, None,
                               as_of=as_of, active=sum(view.active for view in views)))
        return rows

    def warnings(self) -> list[str]:
        """What concerns the whole run: the shared .env readable by others, a local clock that is wrong."""
        skew = self.connections.skew
        clock = (f"The local clock looks about {duration_text(abs(skew))} {'behind' if skew > 0 else 'ahead of'} "
                 "Webex's (the Date of its answers): expiries and signature checks are off by as much. Set it right "
                 "(NTP)."
                 if skew is not None and abs(skew) > MAX_CLOCK_SKEW else None)
        return [note for note in (self.shared_note, clock) if note]

    def notes(self, orgs: list[Org] | None = None, summarized: bool = False) -> list[tuple[str, str]]:
        """("warning" or "error", text): the run's and each org's warnings, and why an org could not
        be read. summarized: a summary that names each org says why it could not be read, so once is enough."""
        notes = [("warning", warning) for warning in self.warnings()] if orgs is None else []
        for org in self.orgs if orgs is None else orgs:
            warnings = [*(org.settings.notes if org.settings else ()), *(org.state.warnings if org.state else ())]
            notes += [("warning", self.label(org.name) + warning) for warning in warnings]
            told = isinstance(org.problem, Busy) or (summarized and self.several)  # busy: the rotation's lines say so
            if org.problem and not told:
                notes.append(("error", f"{self.label(org.name)}{org.trouble()}"))
        return notes

    def read_any(self) -> bool:
        """Whether any org was read (or left alone because another run was writing to it)."""
        return any(org.state is not None or isinstance(org.problem, Busy) for org in self.orgs)

    def unreadable(self) -> list[Org]:
        return [org for org in self.orgs if org.state is None and not isinstance(org.problem, Busy)]

    def history_folders(self) -> list[tuple[str, Path]]:
        return [(org.name, org.records) for org in self.orgs if org.records]

    def exit_code(self, results: list[WriteResult] = ()) -> int:
        """OK when all went well; FAILED if an org could not be read or a write failed (or left no
        record); USAGE when nothing could be done because every org, or every write, was refused
        (settings or token)."""
        failed_orgs = [org for org in self.orgs if org.problem and not isinstance(org.problem, Busy)]
        if failed_orgs and len(failed_orgs) == len(self.orgs) and all(org.refused for org in failed_orgs):
            return USAGE
        failed = [r for r in results if not r.ok and not isinstance(r.error, Busy)]
        if failed and not any(r.ok for r in results) and all(isinstance(r.error, TokenRefused) for r in failed):
            return USAGE
        return FAILED if failed_orgs or failed or any(r.record_error for r in results) else OK


# ---------------------------------------------------------------------------------------------
# 12. Outputs for other tools: plain text and JSON made from rows, for pipes, cron mail,
#     monitoring and Prometheus. Everything from outside goes through safe_text (or ASCII JSON);
#     the screen's data() prints them as they are.
# ---------------------------------------------------------------------------------------------


def tsv(header: list[str], rows) -> str:
    """Tab-separated, for pipes: a tab or newline inside a value shows as \\t, \\n."""
    return "\n".join("\t".join(safe_text(value) for value in line) for line in [header, *rows])


def tsv_text(rows: list[SourceRow]) -> str:
    """--list when piped: full ids, easy to cut and grep; org first with several."""
    columns = [column for column in COLUMNS if column.key and column.wanted(rows)]
    return tsv([c.key for c in columns], ([(c.plain or c.text)(row) for c in columns] for row in rows))


def row_notes(rows: list[SourceRow]) -> list[tuple[str, str]]:
    """Each source's warnings, as notes for stderr: what the piped rows have no column for."""
    return [("warning", f"{row.org_label + ': ' if row.org_label else ''}{row.short_id}: {warning}") for row in rows
            for warning in row.warnings]


def json_text(value) -> str:
    """JSON for other tools: ASCII only, so no control or bidi character from Webex reaches a terminal raw."""
    return json.dumps(value, indent=2, ensure_ascii=True, default=str)


def source_json(row: SourceRow) -> dict:
    """One source for --list --json: the keys of COLUMNS (org only where there are several)."""
    return {key: value(row) for column in COLUMNS for key, value in column.json if key != "org" or row.org_label}


def result_json(result: WriteResult, org_label: str | None, skipped: bool = False) -> dict:
    """One rotation result for --json; the keys are listed in the README."""
    return {
        **({"org": org_label} if org_label else {}),
        "id": result.source_id,
        "result": "skipped" if skipped else outcome(result),
        **({"would_send": result.would_send} if result.would_send is not None else {}),
        "expires_at": utc_iso(result.view.expires_at) if result.ok and result.view else None,
        "error": shown(result.error) if result.error else "disabled" if skipped else None,
        "record": str(result.record) if result.record else None,
        "record_error": str(result.record_error) if result.record_error else None,
    }


def history_result(entry: dict) -> str:
    result = "ok" if entry["success"] else f"failed ({entry['status_code'] or 'no answer'})"
    return result + (f", {entry['reconciled']}" if entry["reconciled"] else "")


def history_tsv(entries: list[dict], org_column: bool) -> str:
    """--history when piped: tab-separated with whole values (full ids, tracking ids), as --list is."""
    keys = ["time", "operation", *(["org"] if org_column else []), "data_source_id", "audience", "result",
            "tracking_id"]
    values = ({**entry, "result": history_result(entry)} for entry in entries)
    return tsv([key.replace("data_source_id", "id") for key in keys],
               ([v[key] if v[key] is not None else "-" for key in keys] for v in values))


def check_line(rows: list[SourceRow], unread: list[str], minutes: int, idle: list[str | None] = (), unnamed: int = 0,
               clock: str | None = None) -> tuple[int, str]:
    """The Nagios/Icinga plugin line and its exit code: CRITICAL if an active source has expired
    or its signature is invalid, else UNKNOWN if an org could not be read, else WARNING if one
    expires within MINUTES, or an org has no active source (idle: their labels), or what it cannot
    see (an active source of unknown expiry, a list item without an id, a wrong clock), else OK."""
    active = [row for row in rows if row.active]
    timed = [row for row in active if row.seconds_left is not None]
    expired = [row for row in timed if row.seconds_left <= 0]
    expiring = [row for row in timed if 0 < row.seconds_left <= minutes * 60]
    unknown = [row for row in active if row.seconds_left is None]
    invalid = [row for row in active if row.signature.state == "invalid"]

    def names(found: list[SourceRow]) -> str:
        labels = [f"{r.org_label}/{r.audience or r.short_id}" if r.org_label else r.audience or r.short_id
                  for r in found]
        return ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")

    parts = [f"{len(found)} {what} ({names(found)})" for found, what in
             ((expired, "expired"), (invalid, "invalid signature"), (expiring, f"within {minutes}m"),
              (unknown, "of unknown expiry")) if found]
    if unread:
        parts.append(f"{len(unread)} org(s) unreadable ({', '.join(unread)})")
    if idle:  # Webex sends such an org nothing: onboarding left undone, or every source disabled
        named = ", ".join(label for label in idle if label)
        parts.append(f"{len(idle)} org(s) with no active data source ({named})" if named else "no active data source")
    if unnamed:
        parts.append(f"{unnamed} list item(s) without an id, not judged")
    parts += [clock] if clock else []
    state = 2 if expired or invalid else 3 if unread else 1 if expiring or idle or unknown or unnamed or clock else 0
    summary = ", ".join(parts) or f"{len(active)} active source(s), none expires within {minutes}m"
    perf = (f"expired={len(expired)} expiring={len(expiring)} invalid={len(invalid)} sources={len(rows)} "
            f"unreadable_orgs={len(unread)} unknown_expiry={len(unknown)}")
    return state, safe_text(f"{('OK', 'WARNING', 'CRITICAL', 'UNKNOWN')[state]} - {summary} | {perf}")


def metric_label(value) -> str:
    """A label value in the exposition format: made safe, then \\, " and newline escaped."""
    return safe_text(value if value is not None else "").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(rows: list[SourceRow], org_rows: list[OrgRow], now: datetime) -> str:
    """Prometheus text exposition: per source, expiry, active and signature; per org, up and sources."""
    def source(r: SourceRow) -> str:
        return f'{{org="{metric_label(r.org)}",id="{metric_label(r.id)}",audience="{metric_label(r.audience)}"}}'

    def org(o: OrgRow) -> str:
        return f'{{org="{metric_label(o.name)}"}}'

    families = [  # (name, help, what it is per, its labels, its value: None leaves the line out)
        ("byods_source_expiry_timestamp_seconds", "When the data source's token expires, in Unix time.", rows,
         source, lambda r: r.expires_at.timestamp() if r.expires_at else None),
        ("byods_source_active", "1 if the data source is active, 0 if disabled.", rows, source,
         lambda r: int(r.active)),
        ("byods_source_signature_valid", "1 if the token's RS256 signature verified (an expired token still counts).",
         rows, source, lambda r: int(r.signature.state in ("valid", "expired"))),
        ("byods_org_up", "1 if the org's data sources could be read.", org_rows, org, lambda o: int(o.readable)),
        ("byods_org_sources", "How many data sources the org has.", org_rows, org,
         lambda o: o.sources if o.readable else None),
        ("byods_org_active_sources", "How many of the org's data sources are active (0: Webex sends it nothing).",
         org_rows, org, lambda o: o.active if o.readable else None),
        ("byods_run_timestamp_seconds", "When these metrics were made, in Unix time.", [now], lambda _: "",
         lambda moment: moment.timestamp()),
    ]
    lines = []
    for name, help_text, items, labels, value_of in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{labels(item)} {value if isinstance(value, int) else f'{value:.3f}'}" for item in items
                  if (value := value_of(item)) is not None]
    return "\n".join(lines) + "\n"


def outcome(result: WriteResult) -> str:
    """rotated, failed, dry-run, or busy (another run was writing to the org: it was left alone)."""
    if result.would_send is not None:
        return "dry-run"
    return "rotated" if result.ok else "busy" if isinstance(result.error, Busy) else "failed"


def rotation_line(result: WriteResult, org_label: str | None = None) -> str:
    where = f"{org_label}  " if org_label else ""
    if outcome(result) == "busy":
        line = f"busy     {where}{shown(result.error)}"
    elif result.would_send is not None:
        line = f"dry-run  {where}{clip(result.source_id, MAX_SHOWN_ID)}  would send {json.dumps(result.would_send)}"
    elif result.ok:
        expires = local_time(result.view.expires_at) if result.view else "unknown"
        line = f"rotated  {where}{clip(result.source_id, MAX_SHOWN_ID)}  expires {expires}"
    else:
        line = f"failed   {where}{clip(result.source_id, MAX_SHOWN_ID)}  {shown(result.error)}"
    return safe_text(f"{line}  {result.record_error}" if result.record_error else line)


def offboard_line(view: SourceView, result: WriteResult | None) -> str:
    """One line per source of an org being offboarded (None: it was disabled already), as
    rotation_line is per rotated source."""
    if result is None:
        word, why = "unchanged", "(disabled already)"
    elif result.would_send is not None:
        word, why = "dry-run", f"would be {'deleted' if result.operation == 'delete' else 'disabled'}"
    elif result.ok or result.gone:
        word, why = "deleted" if result.operation == "delete" else "disabled", ""
    else:
        word, why = "failed", shown(result.error)
    line = f"{word:<9} {view.id}  {view.audience or ''}  {why}".rstrip()
    return safe_text(f"{line}  {result.record_error}" if result and result.record_error else line)


def rotation_counts(results: list[WriteResult], skipped: int) -> str:
    tally = Counter(outcome(r) for r in results)
    counts = f"Rotated {tally['rotated']}, skipped {skipped}, failed {tally['failed']}."
    if tally["dry-run"]:
        counts = (f"Dry run: {tally['dry-run']} would be rotated, skipped {skipped}, failed {tally['failed']}; "
                  "nothing was sent.")
    if tally["busy"]:
        counts += f" Busy {tally['busy']}: another run was writing (left alone)."
    if unrecorded := sum(r.record_error is not None for r in results):
        counts += f" {unrecorded} left no record."
    return counts


def earliest_new_expiry(results: list[WriteResult]) -> SourceView | None:
    """The rotated source whose new token lapses first: when the next run must come at the latest."""
    rotated = [r.view for r in results if r.ok and r.view and r.view.expires_at]
    return min(rotated, key=lambda v: v.expires_at, default=None)


def rotation_summary(results: list[WriteResult], skipped: Counter, now: datetime, org_rows: list[OrgRow] = ()) -> str:
    """The totals; given the orgs (with several), first a line per org that had work or trouble."""
    lines, by_org = [], {}
    for result in results:
        by_org.setdefault(result.org, []).append(result)
    for org in org_rows:
        mine = by_org.get(org.name, [])
        if not org.readable and not org.busy:
            lines.append(f"{org.name}: could not be read: {org.why}")
        elif mine or skipped[org.name]:
            lines.append(f"{org.name}: {rotation_counts(mine, skipped[org.name])}")
    total = rotation_counts(results, sum(skipped.values()))
    if unread := sum(not org.readable and not org.busy for org in org_rows):
        total += f" {unread} of {len(org_rows)} orgs could not be read."
    if earliest := earliest_new_expiry(results):
        total += f" Earliest new expiry: {local_time(earliest.expires_at)} ({expiry_text(earliest, now)})."
    return "\n".join(safe_text(line) for line in [*lines, total])


def rotation_json(results: list[WriteResult], skipped: int, org_count: int, unreadable: list[str], pace: Pace) -> dict:
    earliest = earliest_new_expiry(results)
    return {
        "rotated": sum(outcome(r) == "rotated" for r in results),
        "skipped": skipped,
        "failed": sum(outcome(r) == "failed" for r in results),
        "busy": sum(outcome(r) == "busy" for r in results),
        "unrecorded": sum(r.record_error is not None for r in results),
        "earliest_expiry": utc_iso(earliest.expires_at if earliest else None),
        "orgs": org_count,
        "orgs_unreadable": unreadable,
        "throttled": pace.throttled,
        "slowest_per_minute": round(pace.slowest * 60) if pace.slowest else None,
        "limit_per_minute": round(pace.limit * 60) if pace.limit else None,
    }


def is_due(row: SourceRow) -> bool:
    """Active, and its token lapses within the hour, or within half its lifetime when that is shorter:
    a source that lives 60 minutes is not due again right after its rotation."""
    if not row.active or row.seconds_left is None:
        return False
    return row.seconds_left <= min(EXPIRING_SOON_SECONDS, (row.lifetime_minutes or math.inf) * 30)


def due_notice(rows: list[SourceRow], command: str) -> list[str]:
    """What to do now, in a few lines: the sources due (and the command that rotates them from a
    script, whole on its line), and the active sources whose expiry nobody knows."""
    lines = []
    if due := [row for row in rows if is_due(row)]:
        lines += [f"To rotate the {len(due)} expired or expiring within the hour: choose Rotate, or run",
                  f"{command} --rotate-expiring 60"]
        if short := sorted(row.lifetime_minutes for row in due if row.lifetime_minutes and row.lifetime_minutes <= 60):
            lines.append(f"({len(short)} of them live(s) only {short[0]} minutes: Update gives a longer Token "
                         "lifetime.)")
    if unknown := [row.short_id for row in rows if row.active and row.seconds_left is None]:
        lines.append(f"{len(unknown)} active source(s) with an unknown expiry ({', '.join(unknown[:3])}"
                     f"{', ...' if len(unknown) > 3 else ''}): see the details.")
    return lines


# ---------------------------------------------------------------------------------------------
# 13. Rendering with rich: the tables, the details panel, changes, results, waits. Each is a
#     plain function of rows (or of a view) and the screen it draws on.
# ---------------------------------------------------------------------------------------------


def fit_widths(headers: list[tuple[str, int]], rows: list[list], width: int) -> list[int | None]:
    """Each column's width so that the table fits in width: headers are (title, priority), rows
    hold rich Texts. Priority 0 keeps its whole width; the others shrink with an ellipsis, highest
    number first, to MIN_CUT_WIDTH, and then drop out in the same order (None)."""
    natural = [max([len(title), *(row[i].cell_len for row in rows)]) for i, (title, _) in enumerate(headers)]
    shown = list(range(len(headers)))
    by_priority = sorted((i for i, (_, priority) in enumerate(headers) if priority), key=lambda i: -headers[i][1])
    while True:
        widths = {i: natural[i] for i in shown}
        excess = sum(widths.values()) + 3 * len(shown) + 1 - width  # a border and two spaces a column, one more border
        for i in (i for i in by_priority if i in shown):
            cut = max(0, min(excess, widths[i] - min(natural[i], max(len(headers[i][0]), MIN_CUT_WIDTH))))
            widths[i] -= cut
            excess -= cut
        cuttable = [i for i in by_priority if i in shown]
        if excess <= 0 or not cuttable:
            return [widths.get(i) for i in range(len(headers))]
        shown.remove(cuttable[0])


def changes_table(screen: Screen, changes, title: str, headings=("Before", "After")):
    """(field, before, after) rows; (field, value) rows with one heading."""
    table = screen.Table(title=title, title_justify="left")
    for heading in ("Field", *headings):
        table.add_column(heading, overflow="fold")
    for name, *values in changes:
        table.add_row(name, *(screen.text(v, "bold" if i else "", width=None) for i, v in enumerate(values)))
    return table


def payload_table(screen: Screen, payload: dict, schemas: dict, title: str):
    return changes_table(screen, [(key, f"{schema_name(schemas, value)}  {value}" if key == "schemaId" and value in
                                   schemas else str(value)) for key, value in payload.items()], title, ("Value",))


def fitted_table(screen: Screen, title: str, headers: list[tuple[str, int]], rows: list[list], notes: list[str],
                 whole: str):
    """A table that fits the console, one line per row. notes: the caption's sentences; a column
    left out to fit adds one that names it and where to see it whole."""
    widths = fit_widths(headers, rows, screen.out.width)
    table = screen.Table(title=title, title_justify="left", caption_justify="left")  # a caption may wrap
    shown = [i for i, w in enumerate(widths) if w is not None]
    for i in shown:
        table.add_column(headers[i][0], width=widths[i], no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    if left_out := [headers[i][0] for i, w in enumerate(widths) if w is None]:
        notes = [*notes, f"Left out to fit: {', '.join(left_out)} (see {whole})."]
    table.caption = " ".join(notes) or None
    return table


def sources_table(screen: Screen, rows: list[SourceRow], empty: str = "No data sources yet."):
    """The rows given, trouble on top; a table with no row is never drawn: empty is said instead."""
    if not rows:
        return screen.Text(empty)
    columns = [column for column in COLUMNS if column.title and column.wanted(rows)]
    cells = [[screen.text(column.text(row), column.style(row)) for column in columns] for row in rows]
    return fitted_table(screen, f"Data sources ({len(rows)})", [(c.title, c.priority) for c in columns], cells, [],
                        "--list piped or --json")


def history_table(screen: Screen, entries: list[dict], skipped: int, org_column: bool):
    """The records, newest first: time, operation, org, source, result, tracking id."""
    notes = [f"{skipped} file(s) in the records folder could not be read as records and were skipped."] * bool(skipped)
    if not entries:
        return screen.Text(" ".join(["No records yet.", *notes]))
    headers = [("Time", 0), ("Operation", 2), *([("Org", 0)] if org_column else []), ("Source", 1), ("Result", 0),
               ("Tracking id", 3)]
    rows = [[screen.text(local_time(parse_iso(entry["time"]))), screen.text(entry["operation"]),
             *([screen.text(entry["org"])] if org_column else []),
             screen.text(f"{entry['audience'] or '-'} {(entry['data_source_id'] or '')[:8]}".strip()),
             screen.text(history_result(entry), "" if entry["success"] else "red"),
             screen.text(entry["tracking_id"] or "-")]
            for entry in entries]
    return fitted_table(screen, f"History ({len(entries)} operations)", headers, rows, notes,
                        "--history piped or --json")


SCHEMA_FIELDS = (("Service type", 1, "serviceType"), ("Description", 4, "description"), ("Protocol", 3, "protocol"),
                 ("App type", 2, "appType"), ("ID", 0, "id"), ("URL", 5, "url"))  # (heading, priority, key)


def schemas_tsv(schemas: list[dict]) -> str:
    """--schemas when piped: tab-separated, the id first (what a script takes), whole values."""
    keys = ["id", *(key for _, _, key in SCHEMA_FIELDS if key != "id")]
    return tsv(keys, ([s.get(key) or "-" for key in keys] for s in schemas))


def schemas_table(screen: Screen, schemas: list[dict]):
    """The Service App's schemas; an id is never split or cut (it is what a person copies)."""
    headers = [(heading, priority) for heading, priority, _ in SCHEMA_FIELDS]
    rows = [[screen.text(s.get(key) or "-") for _, _, key in SCHEMA_FIELDS] for s in schemas]
    return fitted_table(screen, f"Schemas ({len(schemas)})", headers, rows, [], "--schemas piped or --json")


def details_panel(screen: Screen, view: SourceView, schemas: dict, now: datetime, verdict: Verdict | None,
                  warnings: tuple[str, ...], claims: bool = True):
    """Every field of one source, whole, what matters most on top; warnings: its row's (drift from
    the template among them). claims: the token's claims as JSON too (they repeat the fields, but
    for the issuer, which has a line of its own)."""
    grid = screen.Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    schema = schemas.get(view.schema_id) or {}
    rows = [
        ("ID", view.id),
        ("Status", view.status or "unknown"),
        *([("Error message", view.error_message)] if view.error_message else []),
        ("Expires", f"{local_time(view.expires_at)}  ({expiry_text(view, now)})"),
        ("URL", view.url or "unknown"),
        ("Audience", view.audience or "unknown"),
        ("Subject", view.subject or "unknown"),
        ("Schema", f"{schema_name(schemas, view.schema_id)}  {view.schema_id or ''}"),
        ("Schema description", schema.get("description") or "-"),
        ("Nonce", view.nonce or "unknown"),
        ("Token lifetime", f"{view.lifetime_minutes} minutes" if view.lifetime_minutes else "unknown"),
        ("Issued", local_time(view.issued_at)),
        ("Signature", verdict.text if verdict else "not checked"),
        ("Issuer", (view.claims or {}).get("iss") or "unknown"),
        ("Org", view.org_id or "unknown"),
        ("Created", f"{view.raw.get('createdAt', 'unknown')} by {view.raw.get('createdBy', 'unknown')}"),
    ]
    if isinstance(view.raw.get("jwsToken"), str):
        rows.append(("Token fingerprint", fingerprint(view.raw["jwsToken"])))
    for label, value in rows:
        grid.add_row(label, screen.text(value, width=None))
    if view.claims:
        grid.add_row("Claims", screen.Text(safe_json(view.claims) if claims else
                                           "left out to fit the terminal (a taller one shows them)"))
    for warning in warnings:
        grid.add_row(screen.Text("Warning", style="yellow"), screen.text(warning, "yellow", width=None))
    return screen.Panel(grid, title=screen.text(f"Data source {view.short_id}"), title_align="left")


def show_result(screen: Screen, result: WriteResult, now: datetime) -> None:
    if result.would_send is not None:  # a delete sends no body: what the source is, as its record would keep it
        title = (f"Dry run: would delete {result.source_id}" if result.operation == "delete" else
                 f"Dry run: the {result.operation} of {result.source_id or 'a new source'} would send")
        screen.print(payload_table(screen, result.would_send, {}, title) if result.operation == "delete" or not
                     result.before else changes_table(screen, changed_fields(result.before, result.would_send), title))
        screen.say("Nothing was sent and no record was written.")
        return
    if result.ok and result.reconciled:
        screen.say(f"Webex's answer was lost, or did not show what was sent: reading the source again shows the "
                   f"{result.operation} went through.")
    if result.ok and result.view:
        screen.say(f"{result.operation} of {result.view.short_id}; the token now expires "
                   f"{local_time(result.view.expires_at)} ({expiry_text(result.view, now)}).", lead="Done: ",
                   style="green")
    elif result.ok:
        screen.say(f"{result.operation} of {result.source_id}.", lead="Done: ", style="green")
    else:
        screen.error(result.error)
    if result.record:
        screen.say(f"Record: {result.record}")
    elif result.record_error:
        screen.error(result.record_error)


def show_notes(screen: Screen, notes: list[tuple[str, str]]) -> None:
    """Fleet notes on stderr: ("warning" or "error", text)."""
    for kind, text in notes:
        (screen.warning if kind == "warning" else screen.error)(text)


def countdown(screen: Screen, seconds: float, reason: str) -> None:
    """The menu's wait before a retry: visible, second by second."""
    if not screen.live.acquire(blocking=False):
        time.sleep(seconds)
        return
    end = time.monotonic() + seconds
    reason = safe_text(reason).rstrip(".")
    try:
        with screen.out.status(screen.Text(reason)) as status:
            while (left := end - time.monotonic()) > 0:
                status.update(screen.Text(f"{reason}: retrying in {math.ceil(left)} s"))
                time.sleep(min(1.0, left))
    finally:
        screen.live.release()


def announce_wait(screen: Screen, seconds: float, reason: str) -> None:
    """The scripted wait before a retry: one line on stderr, then wait."""
    screen.tell(f"{reason.rstrip('.')}: retrying in {seconds:g} s.")
    time.sleep(seconds)


# ---------------------------------------------------------------------------------------------
# 14. Prompts with questionary, asked through the screen (which imports it when a question comes).
# ---------------------------------------------------------------------------------------------


def can_prompt() -> bool:
    """The one place that decides whether the tool may ask: stdin and stdout are terminals."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def source_columns(rows: list[SourceRow]) -> tuple[int, int]:
    """The widths of the status and expiry columns of a list of sources, so that they line up."""
    return (max((len(row.status or "unknown") + 8 * bool(row.drift) for row in rows), default=6),
            max((len(row.expiry) for row in rows), default=7))


def menu_title(row: SourceRow, columns: tuple[int, int] = (8, 17), width: int = 80) -> str:
    """One source on one line: its short id, status and expiry whole, then its audience (cut to fit)."""
    status = (row.status or "unknown") + (" · drift" if row.drift else "")
    line = f"{safe_text(row.short_id):<8}  {clip(safe_text(status), 24):<{columns[0]}}  {row.expiry:<{columns[1]}}  "
    return line + clip(safe_text(row.audience or "unknown"), max(8, width - 4 - len(line)))


def wrapped(lines: list[str], width: int) -> str:
    """A question's text over several lines, each wrapped at spaces to the terminal's width
    (prompt_toolkit would break a long line inside a word); a path or command stays whole."""
    out = []
    for line in lines:
        out += textwrap.wrap(line, width - 3, break_long_words=False, break_on_hyphens=False) or [""]
    return "\n  ".join(out)


def listed_menu(screen: Screen, header: list[str], heading: str, items: list[tuple[str, object]], actions,
                default=None):
    """A menu that is itself the list: the header and question, then the items most in need (as
    many as fit the terminal with the actions below them), the actions, then the rest, which
    typing finds (or scrolling, or up from the first to the last). Ctrl-C goes up: exit 130."""
    questionary = screen.questionary
    width, height = screen.size
    room = height - len(wrapped(header, width).splitlines()) - len(actions) - 5  # heading, separators, the search line
    shown = items if len(items) <= max(room, 3) + 1 else items[:max(room, 3)]
    choices = [questionary.Choice(title, value) for title, value in shown]
    choices = [questionary.Separator(heading), *choices, questionary.Separator()] if items else []
    choices += [questionary.Choice(label, value) for label, value in actions]
    if rest := items[len(shown):]:
        choices.append(questionary.Separator(f"── {len(rest)} more: type to filter, or scroll ──"))
        choices += [questionary.Choice(title, value) for title, value in rest]
    start = next((c for c in choices if not isinstance(c, questionary.Separator) and c.value == default), None)
    wanted = {value for _, value in (*items, *actions)}
    while True:  # Enter on a filter that left only a heading (or nothing) answers with the heading: asked again
        question = questionary.select(wrapped(header, width), choices, default=start, instruction=MENU_HINT,
                                      use_search_filter=True, use_jk_keys=False)
        if (answer := screen.ask(question, cancel=False)) in wanted:
            return answer


MENU_ACTIONS = (
    ("Register a new data source", "register"),
    ("Rotate a token (new nonce, same settings)", "rotate"),
    ("Delete a data source", "delete"),
    ("Schemas", "schemas"),
    ("History of changes", "history"),
    ("Replace the access token", "token"),
    ("Refresh", "refresh"),
)
ONBOARD_CHOICE = ("Onboard a customer org", "onboard")
MENU_HINT = "(type to filter)"


def menu_actions(onboard: bool, offboard: bool, back: bool) -> list[tuple[str, str]]:
    """An org's actions: onboarding where the minting keys are set (in a fleet, the overview has it),
    offboarding for an org with a file of its own."""
    return [*MENU_ACTIONS, *[ONBOARD_CHOICE] * onboard, *[("Offboard this org", "offboard")] * offboard,
            *[("Back to all orgs", "back")] * back, ("Quit", "quit")]


def prompt_menu(screen: Screen, header: list[str], rows: list[SourceRow], actions: list[tuple[str, str]], default=None):
    """One org's menu: a line per source (its rows, trouble first), then the actions; default: the
    action the cursor starts on (else the most urgent source)."""
    columns, width = source_columns(rows), screen.size[0]
    items = [(menu_title(row, columns, width), ("view", row.id)) for row in rows]
    heading = f"{'ID':<8}  {'Status':<{columns[0]}}  {'Expires':<{columns[1]}}  Audience"
    return listed_menu(screen, header, heading, items,
                       [(label, (kind, None)) for label, kind in actions], (default, None) if default else None)


def overview_title(org: OrgRow, name_width: int = 30, width: int = 120) -> str:
    """One org on one line, its name whole (up to 30 characters), cut to the terminal's width."""
    name = f"{clip(safe_text(org.name), 30):<{name_width}}"
    if not org.readable:
        trouble = "reading from Webex…" if org.problem is None else "unreadable: " + org.problem
        return clip(f"{name}  {trouble}", width - 4)
    soonest = org.soonest.expiry if org.soonest else "-"
    read = f" · read {org.as_of}" if org.as_of else ""
    line = f"{name}  {org.sources:>7}  {org.expired:>7}  {org.soon:>9}  {soonest:<19}  {safe_text(org.token)}{read}"
    return clip(line, width - 4)


OVERVIEW_ACTIONS = (
    ("Rotate everything expiring within the hour in all orgs", "rotate"),
    ("History of changes in all orgs", "history"),
    ONBOARD_CHOICE,
    ("Refresh", "refresh"),
    ("Quit", "quit"),
)


def prompt_overview(screen: Screen, header: list[str], org_rows: list[OrgRow], orgs: list[Org]):
    name_width, width = min(30, max((len(row.name) for row in org_rows), default=3)), screen.size[0]
    heading = f"{'Org':<{name_width}}  {'Sources':>7}  {'Expired':>7}  {'Within 1h':>9}  {'Soonest expiry':<19}  Token"
    items = [(overview_title(row, name_width, width), ("org", org)) for row, org in zip(org_rows, orgs, strict=True)]
    return listed_menu(screen, header, heading, items, [(label, (kind, None)) for label, kind in OVERVIEW_ACTIONS])


def prompt_source(screen: Screen, rows: list[SourceRow], message, extra_choices=()):
    questionary = screen.questionary
    columns, width = source_columns(rows), screen.size[0]
    choices = list(extra_choices) + [questionary.Choice(menu_title(row, columns, width), row.id) for row in rows]
    if not choices:
        raise Cancelled
    return screen.ask(questionary.select(message, choices, use_search_filter=True, use_jk_keys=False))


def prompt_schema(screen: Screen, schemas: dict, current: str | None) -> str:
    questionary = screen.questionary
    choices = [
        questionary.Choice(clip(safe_text(f"{s.get('serviceType') or 'unnamed'}: "
                                          f"{s.get('description') or 'no description'}"), 2 * CELL_WIDTH), sid)
        for sid, s in schemas.items()
    ]
    if current and current not in schemas:
        choices.insert(0, questionary.Choice(f"current: {clip(safe_text(schema_name(schemas, current)))}", current))
    if not choices:
        return prompt_text(screen, "Schema id (no schemas could be listed)", current, validate_required)
    default = next((c for c in choices if c.value == current), None)
    return screen.ask(questionary.select("Schema:", choices, default=default))


def prompt_text(screen: Screen, label: str, default, validator) -> str:
    return screen.ask(screen.questionary.text(f"{label}:", default=str(default or ""), validate=validator))


def confirm(screen: Screen, message: str, default: bool) -> bool:
    return screen.ask(screen.questionary.confirm(message, default=default))


def source_wizard(screen: Screen, schemas: dict, start: dict, updating: bool) -> dict:
    """Register and update ask the same fields. Update keeps the schema (the API does not change
    it), may keep a URL that today's rules would refuse, and adds status and error message."""
    payload = {
        "audience": prompt_text(screen, "Audience", start.get("audience"), validate_required),
        "subject": prompt_text(screen, "Subject", start.get("subject"), validate_required),
        "url": prompt_url(screen, start.get("url"), keep_as_is=updating),
        "schemaId": show_kept_schema(screen, schemas, start.get("schemaId")) if updating else
        prompt_schema(screen, schemas, start.get("schemaId")),
        "tokenLifetimeMinutes": int(prompt_text(screen, "Token lifetime (minutes, 1-1440)",
                                                start.get("tokenLifetimeMinutes"), validate_lifetime)),
        "nonce": prompt_text(screen, "Nonce", start.get("nonce"), validate_nonce),
    }
    if updating:
        status = screen.ask(screen.questionary.select("Status:", ["active", "disabled"],
                                                      default=start.get("status") or "active"))
        payload["status"] = status
        if status == "disabled":
            payload["errorMessage"] = prompt_error_message(screen, start.get("errorMessage"))
        elif start.get("status") == "disabled":
            payload["errorMessage"] = ""  # re-enabling clears the message Control Hub showed
    return payload


def prompt_error_message(screen: Screen, default) -> str:
    screen.tell("Disabling needs an error message: Control Hub shows it to the customer's admin.")
    return prompt_text(screen, "Error message", default, validate_error_message)


def prompt_url(screen: Screen, current: str | None, keep_as_is: bool) -> str:
    """A new URL is judged by today's rules; an update may keep the current one unchanged."""
    verdict = validate_url(current or "")
    if keep_as_is and current and verdict is not True:
        screen.warning(f"The current URL would not be accepted for a new source: {verdict} Enter keeps it unchanged.")
        return prompt_text(screen, "URL", current, lambda text: text == current or validate_url(text))
    return prompt_text(screen, "URL", current, validate_url)


def show_kept_schema(screen: Screen, schemas: dict, schema_id: str | None) -> str | None:
    screen.print(screen.Text(f"Schema: {safe_text(schema_name(schemas, schema_id))} (kept: to move the source to "
                             "another schema, delete it and register it again; the delete record keeps its settings)"))
    return schema_id


def prompt_instead_of_duplicate(screen: Screen, duplicate: SourceRow) -> bool:
    """True: update the existing source instead of registering a copy."""
    questionary = screen.questionary
    screen.warning(f"A source with the same URL, schema, audience and subject exists: {menu_title(duplicate)}")
    choices = [questionary.Choice("Update that one instead", True),
               questionary.Choice("Register another anyway", False)]
    return screen.ask(questionary.select("What now?", choices, default=choices[0]))


def prompt_offboarding(screen: Screen) -> tuple[bool, str]:
    """Delete every source (True), or disable them with the message Control Hub shows the customer's admin."""
    questionary = screen.questionary
    choices = [questionary.Choice("Disable every source (Control Hub shows its admin a message)", False),
               questionary.Choice("Delete every source", True)]
    if screen.ask(questionary.select("Offboard how?", choices, default=choices[0])):
        return True, ""
    return False, prompt_error_message(screen, offboarding_message())


def typed_source(screen: Screen, view: SourceView) -> bool:
    """A source is deleted only once its audience or the start of its id is typed."""
    audience = clip(safe_text(view.audience))
    typed = prompt_text(screen, f"To delete, type its audience ({audience}) or the first 8 characters of its id",
                        "", lambda text: True)
    return bool(typed) and typed in (view.audience, view.short_id)


def typed_name(screen: Screen, name: str) -> bool:
    """An org is offboarded only once its name is typed: a slip of a key cannot do it."""
    typed = prompt_text(screen, f"To offboard it, type the org's name ({safe_text(name)})", "", lambda text: True)
    return typed == name


# ---------------------------------------------------------------------------------------------
# 15. Writes and their records: each holds the org's lock, leaves a marker, sends, reads the
#     source again when the answer does not show what was sent, and records what came of it.
#     They take values and return results; they never prompt.
# ---------------------------------------------------------------------------------------------


def answered_view(source_id, payload: dict, reply: Reply) -> SourceView | None:
    """The source as Webex's answer shows it, if the answer shows what was sent: its id (the one
    sent, for an update), its URL, and a token that carries the nonce sent. None otherwise."""
    body = reply.body if isinstance(reply.body, dict) else {}
    if not item_id(body):
        return None
    view = source_view(body)
    nonce = (view.claims or {}).get("jti", view.nonce)
    if (source_id and view.id != source_id) or view.url != payload.get("url") or nonce != payload.get("nonce"):
        return None
    return view


def write_operation(org: Org, operation: str, source_id, payload: dict, send: Callable[[], Reply]) -> WriteResult:
    """Every write: hold the org's lock, leave a durable marker of what is about to be sent (the
    proof that a record can be written), send, and record what came of it, then remove the marker.
    An answer that never came, or that does not show what was sent, is settled by reading the
    source. A run that dies on the way leaves the marker for the next one (Org.resolve_pending)."""
    if STOP:
        return WriteResult(operation, source_id, False, org.name, error=NotSent(f"The run was stopped before this "
                                                                               f"{operation} was sent."))
    if org.client.connections.dry_run:
        before = next((payload_from_view(v) for v in org.state.views if v.id == source_id), None) if org.state else None
        return WriteResult(operation, source_id, True, org.name, would_send=payload, before=before)
    with org.lock.held(f"the {operation}"):
        marker = org.mark_pending(operation, source_id, payload)
        try:
            reply, error = send(), None
        except (ApiError, NotSent) as exc:
            reply, error = None, exc
        view = answered_view(source_id, payload, reply) if reply and operation != "delete" else None
        if reply and operation != "delete" and view is None:
            error = ApiError("Webex's answer does not show the source as it was sent (another id, URL or nonce, or "
                             "none).", status=reply.status, tracking_id=reply.tracking_id, body=reply.body,
                             maybe_processed=True)
        result = WriteResult(operation, view.id if view else source_id, error is None, org.name, view, error=error)
        if error and error.maybe_processed:
            result.reconciled, found = settle(org.client, operation, source_id, payload)
            result.ok = result.reconciled in ("applied", "created")
            result.view, result.source_id = found if result.ok else None, found.id if found else source_id
            error.hint = {"created": f"Listing the sources shows it was created as {result.source_id}.",
                          "not_created": "Listing the sources shows it was not created: safe to register again.",
                          "applied": "Reading the source shows it went through.",
                          "not_applied": "Reading the source shows it did not go through."}.get(
                result.reconciled, "Whether it went through is unknown: Refresh and check before sending it again.")
        org.org_id = org.org_id or (result.view.org_id if result.view else None)
        content = org.operation_record(operation, result.source_id, payload, reply, error)
        if result.reconciled:
            content.update(reconciled=result.reconciled, success=result.ok, error=None if result.ok else str(error))
        result.error = None if result.ok else error
        result.record, result.record_error = org.keep_record(operation, result.source_id, result.ok, content, marker)
    return result


def register_source(org: Org, payload: dict) -> WriteResult:
    return write_operation(org, "registration", None, payload, lambda: org.client.create_source(payload))


def update_source(org: Org, source_id: str, payload: dict, operation: str = "update") -> WriteResult:
    return write_operation(org, operation, source_id, payload, lambda: org.client.update_source(source_id, payload))


def resend_source(org: Org, view: SourceView, operation: str, changes: dict | None = None,
                  lifetime: int | None = None) -> WriteResult:
    """The source as it is, with a new nonce and these changes: a rotation, or an update the tool
    decides (onboarding brings a source back to the template, offboarding disables it)."""
    try:
        payload = rotation_payload(view, lifetime, changes)
    except ValueError as exc:
        verb = "rotate" if operation == "rotation" else "update"
        return WriteResult(operation, view.id, False, org.name, error=NotSent(f"Cannot {verb} {view.short_id}: {exc}."))
    return update_source(org, view.id, payload, operation)


def rotate_source(org: Org, view: SourceView, lifetime: int | None = None) -> WriteResult:
    return resend_source(org, view, "rotation", lifetime=lifetime)


def delete_source(org: Org, view: SourceView) -> WriteResult:
    """The record keeps the last known configuration, so the source can be registered again."""
    payload = {k: v for k, v in payload_from_view(view).items() if k not in ("nonce", "status")}
    result = write_operation(org, "delete", view.id, payload, lambda: org.client.delete_source(view.id))
    if result.gone:
        result.error = ApiError(f"data source {view.short_id} is already gone.", status=404,
                                tracking_id=result.error.tracking_id)
    return result


def rotate_many(pairs, lifetime, pool: ThreadPoolExecutor, on_result) -> list[WriteResult]:
    """Rotate (org, view) pairs on the run's writes pool (--workers at once, across every org). If
    the run is told to stop (Ctrl-C, SIGTERM, SIGHUP), nothing more is sent, and the writes in
    flight finish, are recorded and come back with the others. A crash in one is that source's failure."""
    for org, _ in pairs:
        org.ensure_records()
    results, taken = [], set()
    futures = {pool.submit(rotate_source, org, view, lifetime): (org, view) for org, view in pairs}

    def take(future) -> None:
        org, view = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 (one source's crash is that source's failure)
            error = exc if isinstance(exc, ToolError) else \
                ToolError(f"unexpected {type(exc).__name__}: {exc}. Please report it.")
            result = WriteResult("rotation", view.id, False, org.name, error=error)
        taken.add(future)
        results.append(result)
        on_result(result)

    try:
        for future in as_completed(futures):
            take(future)
    except KeyboardInterrupt as exc:
        STOP.ask(getattr(exc, "signum", signal.SIGINT))
        for future in futures:
            future.cancel()  # those not yet started
        for future in futures:  # the writes in flight finish and are recorded
            if not future.cancelled() and future not in taken:
                with suppress(KeyboardInterrupt):
                    future.exception()
                take(future)
    return results


def rotation_targets(entries, selector, within_minutes, now) -> tuple[list, list]:
    """(to rotate, skipped because disabled) for --rotate IDS|all and --rotate-expiring, as
    (org, view) pairs across every org."""
    if within_minutes is not None:
        chosen = [(org, v) for org, v in entries if needs_rotation(v, now, within_minutes)]
    elif selector == ["all"]:
        chosen = list(entries)
    else:
        chosen = [resolve_id(entries, wanted) for wanted in selector]
    chosen = list({(org.name, v.id): (org, v) for org, v in chosen}.values())
    return [(org, v) for org, v in chosen if v.active], [(org, v) for org, v in chosen if not v.active]


def resolve_id(entries, wanted: str):
    """An id or a unique prefix (4+ characters) across the fleet: its (org, view)."""
    matches = [(o, v) for o, v in entries if v.id == wanted] or \
        [(o, v) for o, v in entries if v.id.startswith(wanted) and len(wanted) >= 4]
    if not matches and len(wanted) < 4:
        raise ConfigError(f"{wanted!r} is too short a prefix: give 4 or more characters of the id (--list shows them).")
    if len(matches) != 1:
        problem = "matches several data sources" if matches else "is not a data source in any org that could be read"
        raise ConfigError(f"{wanted!r} {problem}. Run --list to see the ids (a unique prefix of 4+ characters works).")
    return matches[0]


def run_bulk_rotation(screen: Screen, pairs, lifetime, pool, shown: str,
                      label=lambda org_name: None) -> list[WriteResult]:
    """shown: "bar" (a terminal), "lines" (one plain line per source: cron mail) or "quiet" (--json).
    label: how lines name a result's org (Fleet.label_of)."""
    if shown == "quiet":
        return rotate_many(pairs, lifetime, pool, lambda result: None)
    if shown == "lines":
        return rotate_many(pairs, lifetime, pool, lambda r: screen.data(rotation_line(r, label(r.org))))
    from rich.progress import Progress

    with screen.live, Progress(console=screen.out) as progress:  # the bar is the live display: retries wait silently
        task = progress.add_task("Rotating", total=len(pairs))

        def advance(result: WriteResult) -> None:
            progress.advance(task)
            if not result.ok or result.record_error:
                progress.console.print(screen.Text(rotation_line(result, label(result.org))))

        return rotate_many(pairs, lifetime, pool, advance)


def run_to_completion(screen: Screen, pool: ThreadPoolExecutor, action, *args) -> WriteResult:
    """A write from the menu, on the run's writes pool: Ctrl-C waits for Webex's answer, so that
    the result is recorded, then exits."""
    future = pool.submit(action, *args)
    try:
        return future.result()
    except KeyboardInterrupt:
        screen.tell("Interrupted: waiting for Webex's answer so the result is recorded...")
        show_result(screen, future.result(), datetime.now(UTC))
        raise


# ---------------------------------------------------------------------------------------------
# 16. Customers joining and leaving: onboarding mints an org's token, writes its file and
#     registers its source from the template (WEBEX_SOURCE_*); offboarding disables or deletes
#     its sources and sets its file aside. --onboard, --offboard and the menu share all of it.
# ---------------------------------------------------------------------------------------------


def orgs_folder() -> Path:
    return SCRIPT_DIR / (shared_value("WEBEX_ORGS_DIR") or "orgs")  # an absolute path stays as it is


def org_identity(path: Path) -> tuple[str, str]:
    """What an org's file says of itself, without loading it as a profile: its name and org id."""
    values = read_env_file(path)
    return values.get("WEBEX_ORG_NAME", "").strip() or org_name_for(path), values.get("WEBEX_TARGET_ORG_ID", "").strip()


def onboarded_as(org_id: str) -> tuple[Path, str] | None:
    """The file in the orgs folder that names this org, and its name, if it was onboarded before."""
    for path in sorted(orgs_folder().glob("*.env")):
        name, known_id = org_identity(path)
        if known_id == org_id:
            return path, name
    return None


def org_file_named(wanted: str, env_files: list[Path] | None) -> Path:
    """The org file that --offboard names by the org's name or id: one of --env-file's, else one
    in the orgs folder. Never the shared .env beside the script."""
    candidates = env_files or sorted(orgs_folder().glob("*.env"))
    matches = [path for path in candidates if not same_file(path, SHARED_ENV_FILE) and wanted in org_identity(path)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"Several org files name {wanted!r}: {', '.join(map(str, matches))}. Name the org by its "
                          "other name or id, or give its file with --env-file.")
    where = "the --env-file files" if env_files else str(orgs_folder())
    raise ConfigError(f"No org file in {where} names the org {wanted!r} (by WEBEX_ORG_NAME, file name or "
                      "WEBEX_TARGET_ORG_ID): check the name, or give its file with --env-file.")


def onboarding_profile(org_id: str, name: str | None, records_dir: str | None) -> tuple[Settings, bool]:
    """The profile of an org to onboard, and whether its file is there already: an org is onboarded
    once, and its file is reused whatever name is asked for later. What is missing is bad usage."""
    needed = ("WEBEX_SOURCE_URL", *(key for key in MINT_KEYS if key != "WEBEX_TARGET_ORG_ID"))
    if missing := [key for key in needed if not shared_value(key)]:
        raise ConfigError(f"Onboarding mints the org's token and registers its source from a template: set "
                          f"{', '.join(missing)} in {SHARED_ENV_FILE} or the environment (see the README, Customers "
                          "joining and leaving).")
    known = onboarded_as(org_id)
    if known and name and name != known[1]:
        raise ConfigError(f"Org {org_id} is onboarded already, as {known[1]} ({known[0]}): leave out --org-name, or "
                          f"give --org-name {known[1]}.")
    name = known[1] if known else name or f"org-{org_id[:8]}"
    path = known[0] if known else orgs_folder() / f"{name}.env"
    if not known and path.exists():
        raise ConfigError(f"{path} exists and names another org: give this one another name with --org-name.")
    own = read_env_file(path) if known else {"WEBEX_ORG_NAME": name, "WEBEX_TARGET_ORG_ID": org_id}
    return load_settings(path, own, records_dir, layered=True), known is not None


def write_org_file(path: Path, org_id: str, name: str, tokens: dict[str, str]) -> None:
    """A new customer org's file (0600), never written over an existing one: its name, its id, its tokens."""
    values = {"WEBEX_ORG_NAME": name, "WEBEX_TARGET_ORG_ID": org_id, **tokens}
    text = f"# {name}: customer org {org_id}, onboarded by data-sources.py on {datetime.now().date()}\n"
    text += "".join(f"{key}={value}\n" for key, value in values.items())
    try:
        make_private_folder(path.parent)
        write_new_file(path.parent, text, [path.name])
    except FileExistsError:
        raise ConfigError(f"{path} appeared while the org was being onboarded, and it was not overwritten: run "
                          "--onboard again, which reuses it if it names the same org.") from None
    except OSError as exc:
        raise ConfigError(f"Could not write {path} ({exc.strerror or exc}): make {path.parent} writable, or set "
                          "WEBEX_ORGS_DIR to a folder that is. The minted token was not kept; onboarding mints "
                          "again.") from None



def onboarding_payload(template: SourceTemplate, org_id: str, org_name: str, schemas: dict) -> dict:
    """What onboarding registers for an org: the template's fields, a new nonce, its lifetime."""
    fields = template_fields(template, org_id, org_name, schemas)
    if not fields["schemaId"]:
        listed = ", ".join(f"{schema.get('serviceType') or 'unnamed'} {sid}" for sid, schema in schemas.items())
        raise ConfigError("Set WEBEX_SOURCE_SCHEMA_ID to the schema new sources use: the Service App has "
                          f"{listed or 'schemas that could not be listed'}.")
    return {**fields, "nonce": new_nonce(), "tokenLifetimeMinutes": template.lifetime}


def offboarding_message() -> str:
    """What Control Hub shows a customer's admin on a source disabled at offboarding (--message: another)."""
    return f"Service ended on {datetime.now().date().isoformat()}"


def onboarding_update(org: Org, existing: SourceView, drift: list) -> WriteResult | None:
    """Bring the source there back to the template (its schema stays: the API's update does not
    move a source between schemas). None: nothing to send."""
    changes = {name: want for name, _, want in drift if name != "schemaId"}
    if changes.get("status") == "active":
        changes["errorMessage"] = ""  # re-enabling clears the message Control Hub showed
    return resend_source(org, existing, "update", changes) if changes else None


def preview_onboarding(screen: Screen, fleet: Fleet, org_id: str, name: str | None) -> str:
    """What onboarding an org registers, before anything is sent (its token not yet minted); its name."""
    settings, _ = onboarding_profile(org_id, name, fleet.records_dir)
    payload = onboarding_payload(settings.template, org_id, settings.org_name, fleet.schemas or {})
    payload["nonce"] = "(a new UUID)"
    title = f"What onboarding {settings.org_name} registers (unless it is registered already)"
    screen.print(payload_table(screen, payload, fleet.schemas or {}, title))
    return settings.org_name


def onboard_org(screen: Screen, fleet: Fleet, org_id: str, name: str | None,
                agree: Callable[[str], bool]) -> tuple[Org, int]:
    """Onboard a customer org, for --onboard and the menu alike: mint its token and write its file
    unless it has one, read it, register its source from the template or bring the one there back
    to the template, and verify the token's signature. agree(question) decides a change to a source
    that is there. Returns the org (not yet among the fleet's) and the exit code."""
    settings, known = onboarding_profile(org_id, name, fleet.records_dir)
    if fleet.connections.dry_run and not known:  # its token is not minted: what the template would register
        preview_onboarding(screen, fleet, org_id, name)
        screen.say(f"Dry run: a token would be minted for org {org_id} and written to {settings.env_file}, then "
                   "this registered. Nothing was sent.")
        return fleet.org_for(settings.org_name, settings), OK
    if not fleet.connections.dry_run:
        ensure_records_dir(settings.records_dir)  # before anything is sent
    if known:
        screen.say(f"Org {org_id} was onboarded before, as {settings.org_name}: {settings.env_file} is used as it is.")
    else:
        answer = fleet.connections.minter_for(settings, fleet.sleeper).mint(settings)  # NotAuthorized: it did not
        write_org_file(settings.env_file, org_id, settings.org_name, token_env_values(answer))
        screen.say(f"Minted a token for org {org_id} and wrote it to {settings.env_file}.")
    org = fleet.org_for(settings.org_name, load_settings(settings.env_file, read_env_file(settings.env_file),
                                                         fleet.records_dir, layered=True))
    warnings = fleet.read_schemas(org.client) if fleet.schemas is None else []
    org.fetch(schemas=fleet.schemas)
    if org.problem:
        raise org.problem
    org.state.warnings += warnings
    payload = onboarding_payload(org.settings.template, org.settings.target_org_id, org.name, org.state.schemas)
    existing, result = template_source(org.state.views, payload), None
    drift = template_drift(existing, payload) if existing else []
    if existing and not existing.active:  # offboarded once, and back: onboarding enables it again
        drift.append(("status", existing.status, "active"))
    if existing is None:
        result = register_source(org, payload)
    elif not drift:
        screen.say(f"Its data source is already registered as {existing.id}, as the template says.")
    else:
        screen.say(f"Its data source {existing.id} differs from the template:")
        screen.print(changes_table(screen, drift, "Template drift"))
        if any(name == "schemaId" for name, _, _ in drift):
            screen.warning("Its schema stays as it is: the API's update does not move a source between schemas. To "
                           "move it, delete the source (the menu's Delete) and onboard the org again.")
        if any(name != "schemaId" for name, _, _ in drift) and agree("Update it to the template?"):
            result = onboarding_update(org, existing, drift)
    now = datetime.now(UTC)
    if result:
        show_result(screen, result, now)
        if result.view:
            org.state.put(result.view)
    if result and result.would_send is not None:
        return org, OK
    view = result.view if result and result.view else existing
    verdict = fleet.verdict(org, view, now) if view else None
    if verdict:
        screen.say(f"Its token's signature: {verdict.text}.")
    failed = bool(result and (not result.ok or result.record_error)) or bool(verdict and verdict.state == "invalid")
    if view and not failed:
        screen.say(f"{org.name} is onboarded: data source {view.id} at {view.url}, its token expires "
                   f"{local_time(view.expires_at)}.")
    return org, FAILED if failed else OK


def retire_org_file(path: Path) -> Path:
    """{name}.env becomes {name}.env.offboarded: kept, and no longer matched by *.env. One there from
    an earlier offboarding is never written over: the new one takes a timestamp."""
    try:
        target = link_first_free(path, path.parent, [f"{path.name}.offboarded",
                                                     f"{path.name}.offboarded.{file_timestamp()}"])
        path.unlink()
        sync_folder(path.parent)
        return target
    except OSError as exc:
        raise ToolError(f"Could not set {path} aside ({exc.strerror or exc}): rename it by hand to "
                        f"{path.name}.offboarded, so that --env-file orgs/*.env no longer reads it.") from None


def offboard_source(org: Org, view: SourceView, delete: bool, message: str) -> WriteResult | None:
    """Delete the source, or disable it with the message its admin sees in Control Hub; None: it is
    disabled already, and nothing is sent."""
    if delete:
        return delete_source(org, view)
    if not view.active:
        return None
    return resend_source(org, view, "update", {"status": "disabled", "errorMessage": message})


def offboard_org(screen: Screen, org: Org, delete: bool, message: str, confirmed: Callable[[], bool]) -> int:
    """Offboard a customer org that left, for --offboard and the menu alike: disable each source with
    the message its admin sees in Control Hub (or delete them), a record each, then set its file
    aside as {name}.env.offboarded. confirmed() asks for the org's name typed (or is --yes); without
    it, Cancelled. An org that withdrew the Service App cannot be changed at Webex: its file alone is
    set aside. Returns the exit code."""
    withdrawn = isinstance(org.problem, NotAuthorized)
    if org.problem and not withdrawn:  # busy too: nothing was done, so it is no success here
        raise org.problem if not isinstance(org.problem, Busy) else ToolError(org.problem.message)
    if withdrawn:
        screen.warning(f"{org.name} no longer authorizes the Service App (minting its token answered 403), so "
                       "its sources cannot be changed from here: unrotated, their tokens lapse within a day and Webex "
                       "sends them nothing more.")
    views, path = [] if withdrawn else org.state.views, org.settings.env_file
    changing = views if delete else [view for view in views if view.active]
    what = "deleted" if delete else f"disabled, with the message {message!r} for Control Hub"
    left = f" ({len(views) - len(changing)} disabled already stay as they are)" if len(changing) < len(views) else ""
    screen.say(f"{org.name}: {len(changing)} data source(s) to be {what}{left}; then {path} is set aside as "
               f"{path.name}.offboarded.")
    dry_run = org.client.connections.dry_run
    if not (dry_run or confirmed()):
        raise Cancelled
    results = []
    for view in views:
        result = offboard_source(org, view, delete, message)
        results.append(result)
        screen.say(offboard_line(view, result))
    if dry_run:
        screen.say(f"Dry run: nothing was sent, and {path} stays where it is.")
        return OK
    if failed := [r for r in results if r and not r.ok and not r.gone]:
        screen.error(f"{len(failed)} data source(s) could not be changed, so {path} stays where it is: offboard it "
                     "again.")
        return FAILED
    target = retire_org_file(path)
    org.retired = True
    screen.say(f"{org.name} is offboarded: its file is now {target}, which --env-file orgs/*.env no longer reads. Its "
               f"records stay in {org.records}.")
    return FAILED if any(r and r.record_error for r in results) else OK


# ---------------------------------------------------------------------------------------------
# 17. The menu: wires prompts, writes and rendering. Errors are shown and the loop carries on.
# ---------------------------------------------------------------------------------------------


def show_history(screen: Screen, folders: list[tuple[str, Path]], fleet: Fleet) -> None:
    """The menu's History: the newest operations first, as many as fit the terminal with what is
    said under them; an Org column when the records of more than one org are shown."""
    fits = max(3, screen.size[1] - 10)  # title, header, borders, a caption, the line under it, the key to go back
    history = read_history(folders, limit=fits)
    screen.print(history_table(screen, history.entries, history.skipped, org_column=len(folders) > 1))
    if history.total > fits:
        screen.tell(f"The {fits} newest of {history.total}; all of them:\n{fleet.command('--history', '--limit', '0')}")


def rotate_in_menu(screen: Screen, fleet: Fleet, pairs, org_rows: list[OrgRow] = ()) -> None:
    """A bulk rotation from the menu: the bar, the summary, then the new expiries in the table."""
    results = run_bulk_rotation(screen, pairs, None, fleet.connections.writes, "bar", fleet.label_of)
    screen.say(rotation_summary(results, Counter(), datetime.now(UTC), org_rows))
    fleet.take(results)


def onboard_in_menu(screen: Screen, fleet: Fleet) -> Org:
    """Another customer org joins from the menu: its id, a name unless it was onboarded before,
    the payload shown and confirmed, then what --onboard does."""
    org_id = prompt_text(screen, "The customer's org id", "", validate_org_id)
    name = None if onboarded_as(org_id) else prompt_text(
        screen, "Org name (it names the org's file and records folder)", f"org-{org_id[:8]}", validate_org_name)
    org_name = preview_onboarding(screen, fleet, org_id, name)
    if not confirm(screen, f"Onboard {safe_text(org_name)} now?", True):
        raise Cancelled
    return onboard_org(screen, fleet, org_id, name, lambda question: confirm(screen, question, True))[0]


class Menu:
    """One org's menu: the sources are its choices, then the actions on them. In a fleet it ends
    with Back to all orgs. What an action shows stays on screen until a key is pressed."""

    def __init__(self, screen: Screen, fleet: Fleet, org: Org, back: bool = False):
        self.screen, self.fleet, self.org, self.back = screen, fleet, org, back
        if org.state is None:
            org.state = State([], {}, [])
        self.choices = menu_actions(onboard=fleet.alone is org and org.settings.can_onboard,
                                    offboard=org.settings.own_file, back=back)

    def run(self) -> str:
        """Until Quit ("quit") or, in a fleet, Back to all orgs ("back")."""
        screen = self.screen
        if isinstance(self.org.problem, TokenRefused):  # the one thing to do first: a new token, then the sources
            screen.error(self.org.problem)
            self.start_with_a_new_token()
        while True:
            rows = self.fleet.rows(datetime.now(UTC), self.org)
            refused = isinstance(self.org.problem, TokenRefused)
            kind, source_id = prompt_menu(screen, self.header(rows), rows, self.choices, "token" if refused else None)
            self.fleet.save_snapshots(in_background=True)  # once the screen is drawn: never in the way of drawing it
            if kind in ("quit", "back"):
                return kind
            try:
                self.with_token_recovery(getattr(self, "replace_token" if kind == "token" else kind), source_id)
            except Cancelled:
                screen.say("Cancelled: nothing was sent.")
            except ToolError as exc:
                screen.error(exc)
            if self.org.retired:  # offboarded: nothing is left to do in it
                return "back" if self.back else "quit"
            screen.pause()

    def header(self, rows: list[SourceRow]) -> list[str]:
        """The menu's question: the count and what is due, what to do about it, the org's warnings."""
        org, width = self.org, self.screen.size[0]
        counts = Counter("disabled" if not row.active else "expired" if row.urgency == 0 else
                         "expiring within the hour" if is_due(row) else "" for row in rows)
        title = (f"{org.name} · " if self.back else "") + f"Data sources ({len(rows)})"
        title += "".join(f" · {counts[kind]} {kind}" for kind in ("expired", "expiring within the hour", "disabled")
                         if counts[kind])
        lines = [title]
        if org.problem:
            fix = "Replace the access token" if isinstance(org.problem, TokenRefused) else "Refresh to try again"
            lines.append(clip(f"They could not be listed: {safe_text(shown(org.problem))}", 3 * width) +
                         f" Choose {fix}.")
        elif not rows:
            lines.append("No data sources yet: choose Register to add one.")
        lines += due_notice(rows, self.fleet.command())
        if drifted := sum(bool(row.drift) for row in rows):
            lines.append(f"{drifted} source(s) differ from the onboarding template (see its details):")
            lines.append(f"{COMMAND} --onboard {safe_text(org.org_id)}")  # it reads the orgs folder, not --env-file
        warnings = [*self.fleet.warnings(), *(org.settings.notes if org.settings else ()), *org.state.warnings]
        lines += [f"Warning: {safe_text(warning)}" for warning in warnings[:3]]  # whole: each says what fixes it
        if len(warnings) > 3:
            lines.append(f"... and {len(warnings) - 3} more warnings: {self.fleet.command('--list')} shows them all.")
        return [*lines, "Choose a data source or an action"]

    def start_with_a_new_token(self) -> None:
        """The token was refused at startup (said above): offer to paste one now; a token that works
        reloads the sources."""
        try:
            if self.recover_token():
                self.refresh()
        except Cancelled:
            self.screen.say("Cancelled: the menu opens without the sources; choose Replace the access token to try "
                            "again.")
        except ToolError as exc:
            self.screen.error(exc)

    def with_token_recovery(self, action, *args) -> None:
        """On a refused token, offer to paste a new one, then carry on with the same action."""
        try:
            action(*args)
        except TokenRefused as exc:
            self.screen.error(exc)
            if self.recover_token():
                action(*args)

    def recover_token(self) -> bool:
        if not confirm(self.screen, "Paste a new access token now?", True):
            return False
        self.replace_token()
        return True

    def write(self, action, *args) -> WriteResult:
        """Send one write; after a refused token and a new one, send the same thing again."""
        result = run_to_completion(self.screen, self.fleet.connections.writes, action, self.org, *args)
        show_result(self.screen, result, datetime.now(UTC))
        if isinstance(result.error, TokenRefused) and self.recover_token():
            return self.write(action, *args)
        if result.view:  # done, or a lost register answer found it created
            self.org.state.put(result.view)
        return result

    def write_until_done(self, wizard, send, start: dict) -> None:
        """If Webex refuses what was typed, offer it again prefilled: typed work is never lost."""
        while True:
            payload = wizard(start)
            result = self.write(send, payload)
            refused = result.error and (result.error.status is not None or result.reconciled == "not_created")
            if not refused or not confirm(self.screen, "Edit and try again?", True):
                return
            start = payload

    def view(self, source_id: str) -> None:
        view = self.org.state.find(source_id)
        now = datetime.now(UTC)
        self.screen.print(self.details(view, now, self.fleet.verdict(self.org, view, now)))
        if confirm(self.screen, "Update this data source?", False):
            self.update(view)

    def details(self, view: SourceView, now: datetime, verdict: Verdict | None):
        """The details panel, short enough to leave the question under it on screen: the claims
        (which repeat the fields above, but for the issuer) go first when it would not be."""
        warnings = next(row.warnings for row in self.fleet.rows(now, self.org) if row.id == view.id)
        panel = details_panel(self.screen, view, self.org.state.schemas, now, verdict, warnings)
        if self.screen.lines(panel) + 2 > self.screen.size[1]:
            panel = details_panel(self.screen, view, self.org.state.schemas, now, verdict, warnings, claims=False)
        return panel

    def update(self, view: SourceView) -> None:
        screen, schemas = self.screen, self.org.state.schemas

        def wizard(start):
            payload = source_wizard(screen, schemas, start, updating=True)
            screen.print(changes_table(screen, changed_fields(payload_from_view(view), payload), "What will change"))
            if not confirm(screen, f"Send this update to {safe_text(view.short_id)}?", True):  # all of it on screen
                raise Cancelled
            return payload

        start = {**payload_from_view(view), "nonce": new_nonce()}
        start["tokenLifetimeMinutes"] = start["tokenLifetimeMinutes"] or DEFAULT_LIFETIME
        self.write_until_done(wizard, lambda org, payload: update_source(org, view.id, payload), start)

    def register(self, _=None) -> None:
        screen, schemas = self.screen, self.org.state.schemas

        def wizard(start):
            payload = source_wizard(screen, schemas, start, updating=False)
            duplicate = find_duplicate(self.org.state.views, payload)
            row = duplicate and source_row(self.org, None, duplicate, None, datetime.now(UTC))
            if duplicate and prompt_instead_of_duplicate(screen, row):
                raise UpdateInstead(duplicate)
            screen.print(payload_table(screen, payload, schemas, "What will be registered"))
            if not confirm(screen, "Register this data source?", True):  # everything it sends is on screen above
                raise Cancelled
            return payload

        start = {
            "audience": DEFAULT_AUDIENCE,
            "subject": DEFAULT_SUBJECT,
            "nonce": new_nonce(),
            "tokenLifetimeMinutes": DEFAULT_LIFETIME,
            "schemaId": next(iter(schemas), None),
        }
        try:
            self.write_until_done(wizard, register_source, start)
        except UpdateInstead as instead:
            self.update(instead.view)

    def rotate(self, _=None) -> None:
        screen, now = self.screen, datetime.now(UTC)
        rows = [row for row in self.fleet.rows(now, self.org) if row.active]
        if not rows:
            screen.say("No active data source to rotate.")
            return
        due = [row for row in rows if is_due(row)]
        extra = [screen.questionary.Choice(f"All {len(due)} expired or expiring within the hour", "due")]
        chosen = prompt_source(screen, rows, "Rotate which source?", extra if len(due) > 1 else ())
        targets = [self.org.state.find(row.id) for row in due] if chosen == "due" else [self.org.state.find(chosen)]
        for view in targets:
            lifetime = view.lifetime_minutes or DEFAULT_LIFETIME
            screen.say(f"{view.short_id} {clip(view.audience or '')}: new nonce, lifetime {lifetime} minutes, "
                       "everything else as it is.")
        if not confirm(screen, f"Rotate {len(targets)} token(s) now?", True):
            raise Cancelled
        if len(targets) == 1:
            self.write(rotate_source, targets[0])
            return
        rotate_in_menu(screen, self.fleet, [(self.org, view) for view in targets])

    def delete(self, _=None) -> None:
        screen, now = self.screen, datetime.now(UTC)
        view = self.org.state.find(prompt_source(screen, self.fleet.rows(now, self.org), "Delete which source?"))
        screen.print(self.details(view, now, None))
        if not typed_source(screen, view):
            screen.say("That does not match: nothing was deleted.")
            return
        result = run_to_completion(screen, self.fleet.connections.writes, delete_source, self.org, view)
        show_result(screen, result, now)
        if result.ok or result.gone:
            self.org.state.drop(view.id)

    def schemas(self, _=None) -> None:
        screen, questionary = self.screen, self.screen.questionary
        schemas = self.org.client.list_schemas()
        self.org.state.schemas = {s["id"]: s for s in schemas}
        screen.print(schemas_table(screen, schemas))
        choices = [questionary.Choice(clip(safe_text(s.get("serviceType") or s["id"])), s["id"]) for s in schemas]
        question = questionary.select("Show which schema?", [*choices, questionary.Choice("Back", None)])
        schema_id = screen.ask(question, cancel=False)
        if schema_id:
            screen.print(screen.Panel(screen.Text(safe_json(self.org.client.get_schema(schema_id))),
                                      title=screen.text(f"Schema {schema_id}", width=None), title_align="left"))

    def replace_token(self, _=None) -> None:
        """Check a pasted token with one list call before it replaces the one in the org's file."""
        while True:
            token = self.screen.ask(self.screen.questionary.password("New Service App access token (input hidden):",
                                                                     validate=validate_token))
            try:
                self.org.client.request("GET", "/dataSources/", token=token)  # one list call: does Webex take it?
                break
            except ApiError as exc:
                self.screen.error(exc)
        remember_secret(token)
        self.org.client.tokens.access = token
        with self.org.lock.held("saving the new token"):
            where = save_tokens(self.org.settings, {"WEBEX_ACCESS_TOKEN": token})
        self.screen.say(f"The new access token works and was {where}.")

    def history(self, _=None) -> None:
        show_history(self.screen, [(self.org.name, self.org.records)], self.fleet)

    def onboard(self, _=None) -> None:
        """Another customer org joins: it gets a file of its own, and this menu stays on this org."""
        org = onboard_in_menu(self.screen, self.fleet)
        folder = shlex.quote(str(org.settings.env_file.parent))
        self.screen.say(f"To see it beside the others:\n{COMMAND} --env-file {folder}/*.env")

    def offboard(self, _=None) -> None:
        delete, message = prompt_offboarding(self.screen)
        offboard_org(self.screen, self.org, delete, message, lambda: typed_name(self.screen, self.org.name))

    def refresh(self, _=None) -> None:
        warnings = self.fleet.read_schemas(self.org.client) if self.fleet.schemas is None else []
        self.org.state, self.org.problem = read_sources(self.org.client, self.fleet.schemas or {}), None
        self.org.state.warnings += warnings


class FleetMenu:
    """The org overview: every org at a glance; open one, or rotate what expires within the hour
    in all of them at once."""

    def __init__(self, screen: Screen, fleet: Fleet):
        self.screen, self.fleet = screen, fleet

    def run(self) -> int:
        screen, fleet = self.screen, self.fleet
        while True:
            org_rows = fleet.org_rows(datetime.now(UTC))
            order = sorted(range(len(org_rows)), key=lambda i: org_rows[i].need)
            kind, org = prompt_overview(screen, self.header(org_rows), [org_rows[i] for i in order],
                                        [fleet.orgs[i] for i in order])
            fleet.save_snapshots(in_background=True)  # once the screen is drawn: never in the way of drawing it
            if kind == "quit":
                return 0
            try:
                if kind == "org" and self.open(org) == "quit":
                    return 0
                if kind == "rotate":
                    self.rotate_due(datetime.now(UTC))
                if kind == "history":
                    show_history(screen, fleet.history_folders(), fleet)
                if kind == "onboard":
                    self.onboard()
                if kind == "refresh" and all(org.fresh.is_set() for org in fleet.orgs):
                    fleet.fetch()  # while the first read is still coming in, Refresh shows what has come
            except Cancelled:
                screen.say("Cancelled: nothing was sent.")
            except ToolError as exc:
                screen.error(exc)
            fleet.orgs = [org for org in fleet.orgs if not org.retired]  # offboarded from its menu
            screen.pause()

    def header(self, org_rows: list[OrgRow]) -> list[str]:
        trouble = [(sum(bool(o.expired) for o in org_rows), "with an expired source"),
                   (sum(bool(o.soon) for o in org_rows), "with a source expiring within the hour"),
                   (sum(not o.readable and o.problem is not None for o in org_rows), "unreadable")]
        counts = "".join(f" · {count} {what}" for count, what in trouble if count)
        lines = [f"Customer orgs ({len(org_rows)}){counts}"]
        if waiting := sum(not o.readable and o.problem is None for o in org_rows):
            lines.append(f"{waiting} still being read from Webex: Refresh shows what has come.")
        if any(org.as_of for org in org_rows):
            lines.append("Some orgs show what the last run read ('read ... ago') until this run's answer comes.")
        return [*lines, "Choose an org or an action"]

    def open(self, org: Org) -> str:
        if org.client is None:  # its settings could not be read: nothing to open
            self.screen.error(org.problem)
            return "back"
        if not org.fresh.is_set():  # an org's own menu always shows a fresh read
            self.screen.tell(f"Reading {org.name} from Webex...")
            org.fresh.wait()
        self.screen.asked_at = self.screen.shown  # the overview's own note needs no key
        return Menu(self.screen, self.fleet, org, back=True).run()

    def onboard(self) -> None:
        """A customer org joins, and takes its place in the overview."""
        org = onboard_in_menu(self.screen, self.fleet)
        self.fleet.orgs = [other for other in self.fleet.orgs if other.name != org.name] + [org]

    def rotate_due(self, now: datetime) -> None:
        screen, fleet = self.screen, self.fleet
        if not all(org.fresh.is_set() for org in fleet.orgs):  # a rotation sends what Webex has now, never a snapshot
            screen.tell("Reading every org from Webex first...")
            for org in fleet.orgs:
                org.fresh.wait()
            now = datetime.now(UTC)
        due = {(row.org, row.id) for row in fleet.rows(now) if is_due(row)}
        pairs = [(org, v) for org, v in fleet.entries(now) if (org.name, v.id) in due]
        if not pairs:
            screen.say("Nothing active expires within the hour in any org.")
            return
        orgs = len({org.name for org, _ in pairs})
        if not confirm(screen, f"Rotate {len(pairs)} token(s) in {orgs} org(s) now?", True):
            raise Cancelled
        rotate_in_menu(screen, fleet, pairs, fleet.org_rows(now))


# ---------------------------------------------------------------------------------------------
# 18. Command line: one table of modes (the flag that chooses each, the flags it takes, its
#     runner); the mode is settled once from the flags; each runner takes the screen, the fleet
#     and the flags, and returns the exit code.
# ---------------------------------------------------------------------------------------------


def refresh_token_warning(settings: Settings, now: datetime) -> str | None:
    expires = settings.refresh_token_expires_at
    if expires is None or (expires - now).days >= REFRESH_TOKEN_WARNING_DAYS:
        return None
    left = duration_text((expires - now).total_seconds())
    when = f"expired {left} ago" if expires <= now else f"expires in {left}"
    return (f"The refresh token in {settings.env_file} {when} ({local_time(expires)}): create a new one for the "
            "Service App in the developer portal before then, or the access token can no longer renew itself.")


def show_refresh_token_warnings(screen: Screen, fleet: Fleet, in_output: bool) -> None:
    now = datetime.now(UTC)
    for org in fleet.orgs:
        if org.settings and (warning := refresh_token_warning(org.settings, now)):
            if in_output:  # the cron job's own output, which is what gets mailed
                screen.data(f"warning  {safe_text(fleet.label(org.name) + warning)}")
            else:
                screen.warning(fleet.label(org.name) + warning)


def save_lists(screen: Screen, fleet: Fleet) -> None:
    for org in fleet.orgs:
        if org.state:
            views = org.state.views
            path = write_record(org.records, "data_sources_list", {
                "retrieved_timestamp": now_iso(), "org_name": org.name, "org_id": org.org_id, "count": len(views),
                "data_sources": [v.raw for v in views]})
            screen.tell(f"{fleet.label(org.name)}Saved the list of {len(views)} sources to {path}")


def run_list(screen: Screen, fleet: Fleet, args) -> int:
    now = datetime.now(UTC)
    if args.cached:  # the snapshots: nothing is asked of Webex
        missing = [org.name for org in fleet.orgs if org.records and not org.load_snapshot()]
    rows = fleet.rows(now) if args.cached else fleet.verify(now).rows(now)
    if not (args.cached or fleet.read_any()):
        pass  # nothing that a script could take for an empty list: the reasons are on stderr
    elif args.json:
        read_at = {org.name: utc_iso(org.read_at) for org in fleet.orgs}
        screen.data(json_text([{**source_json(row), **({"read_at": read_at[row.org]} if args.cached else {})}
                               for row in rows]))
    elif screen.at_terminal:
        empty = "No snapshot yet: run --list once (without --cached)." if args.cached else "No data sources yet."
        screen.print(sources_table(screen, rows, empty=empty))
    else:
        screen.data(tsv_text(rows))
    if not args.cached:
        show_notes(screen, fleet.notes() + row_notes(rows))
        return fleet.exit_code()
    if ages := sorted((now - org.read_at).total_seconds() for org in fleet.orgs if org.read_at):
        span = duration_text(ages[0]) + (f" to {duration_text(ages[-1])}" if ages[-1] - ages[0] >= 60 else "")
        screen.tell(f"The last snapshot{'s' if len(ages) > 1 else ''}, read {span} ago; nothing was asked of Webex.")
    if missing:
        screen.warning(f"No snapshot yet for {', '.join(missing)}: {fleet.command('--list')} reads Webex and leaves "
                       "one.")
    return FAILED if missing else OK


def run_rotation(screen: Screen, fleet: Fleet, args) -> int:
    now = datetime.now(UTC)
    show_notes(screen, fleet.notes(summarized=fleet.read_any()))  # first: an id not found may be in an unread org
    targets, skipped = rotation_targets(fleet.entries(now), args.rotate, args.rotate_expiring, now)
    say = (lambda line: None) if args.json else screen.data
    for org, view in skipped:
        where = fleet.label_of(org.name)
        say(safe_text(f"skipped  {where + '  ' if where else ''}{view.id}  disabled"))
    everything = args.rotate_expiring is not None or args.rotate == ["all"]
    unnamed = NotSent("Webex listed it without an id, so it cannot be judged or rotated.")  # never a quiet 0
    unjudged = [WriteResult("rotation", "(no id)", False, org.name, error=unnamed) for org in fleet.orgs if org.state
                for _ in range(org.state.unnamed)] if everything else []
    busy = [WriteResult("rotation", None, False, org.name, error=org.problem) for org in fleet.orgs
            if isinstance(org.problem, Busy)]
    for result in unjudged + busy:
        say(rotation_line(result, fleet.label_of(result.org)))
    display = "quiet" if args.json else "bar" if screen.at_terminal else "lines"
    try:
        results = run_bulk_rotation(screen, targets, args.lifetime, fleet.connections.writes, display, fleet.label_of)
    finally:
        for org in fleet.orgs:
            org.release()
    results += unjudged + busy
    fleet.take(results)
    if not fleet.read_any():
        pass  # no summary that reads as "nothing to do": the reasons are on stderr
    elif args.json:
        skips = [result_json(WriteResult("rotation", view.id, False, org.name), fleet.label_of(org.name), skipped=True)
                 for org, view in skipped]
        summary = rotation_json(results, len(skipped), len(fleet.orgs), [org.name for org in fleet.unreadable()],
                                fleet.connections.pace)
        listed = [result_json(r, fleet.label_of(r.org)) for r in results] + skips
        screen.data(json_text({"results": listed, "summary": summary}))
    else:
        skips = Counter(org.name for org, _ in skipped)
        screen.data(rotation_summary(results, skips, datetime.now(UTC), fleet.org_rows(now) if fleet.several else []))
        if pace := fleet.connections.pace.summary():
            screen.data(pace)
    if STOP:  # the summary is out: now end as the signal asks
        raise Interrupted(STOP.signum)
    return fleet.exit_code(results)


def run_history(screen: Screen, fleet: Fleet, args) -> int:
    """--history [ID]: reads the records folders only; nothing is asked of Webex."""
    folders = fleet.history_folders()
    history = read_history(folders, args.history, 50 if args.limit is None else args.limit, args.since)
    entries, skipped = history.entries, history.skipped
    if args.json:
        screen.data(json_text(entries))
    elif screen.at_terminal and (entries or not args.history):
        screen.print(history_table(screen, entries, skipped, org_column=len(folders) > 1))
    elif entries or not args.history:
        screen.data(history_tsv(entries, org_column=len(folders) > 1))
    if history.total > len(entries):
        screen.tell(f"The newest {len(entries)} of {history.total}: --limit N shows more (0: all), --since 7d only "
                    "the last week.")
    if skipped and (args.json or not screen.at_terminal):  # the table says it in its caption
        screen.warning(f"{skipped} file(s) in the records folder could not be read as records and were skipped.")
    if args.history and not entries:
        screen.error(f"No record names a data source whose id starts with {clip(safe_text(args.history), 40)!r}: "
                     f"{fleet.command('--history')} shows every one.")
        return FAILED
    return OK


def run_check(screen: Screen, fleet: Fleet, args) -> int:
    now = datetime.now(UTC)
    idle = [fleet.label_of(org.name) for org in fleet.org_rows(now) if org.readable and not org.active]
    unread = [f"{org.name}: {org.trouble(short=True)}" for org in fleet.unreadable()]
    unnamed = sum(org.state.unnamed for org in fleet.orgs if org.state)
    clock = next((warning for warning in fleet.warnings() if "clock" in warning), None)
    state, line = check_line(fleet.verify(now).rows(now), unread, args.check, idle, unnamed, clock)
    screen.data(line)
    return state


def run_metrics(screen: Screen, fleet: Fleet, args) -> int:
    now = datetime.now(UTC)
    screen.data(metrics_text(fleet.verify(now).rows(now), fleet.org_rows(now), now))
    show_notes(screen, fleet.notes())
    return min(fleet.exit_code(), FAILED)  # an org that cannot be read, whatever the reason: byods_org_up says which


def run_onboard(screen: Screen, fleet: Fleet, args) -> int:
    """--onboard ORG_ID: a change to a source that is there is asked about at a terminal, else needs --yes."""
    def agree(question: str) -> bool:
        if args.yes or args.dry_run:  # a dry run shows the change, and sends nothing
            return True
        if can_prompt():
            return confirm(screen, question, True)
        raise ConfigError("Its data source differs from the template: without a terminal to ask on, run again with "
                          "--yes to update it. Nothing was sent.")

    return onboard_org(screen, fleet, args.onboard, args.org_name, agree)[1]


def run_offboard(screen: Screen, fleet: Fleet, args) -> int:
    """--offboard ORG: at a terminal the org's name is typed to confirm, unless --yes."""
    org = fleet.orgs[0]
    try:
        return offboard_org(screen, org, args.delete is not None, args.message or offboarding_message(),
                            lambda: args.yes or typed_name(screen, org.name))
    except Cancelled:
        raise ConfigError(f"That is not {org.name}: nothing was sent.") from None
    finally:
        org.release()


def run_schemas(screen: Screen, fleet: Fleet, args) -> int:
    """--schemas: the Service App's, read with the first org's token."""
    if fleet.schemas is None:
        show_notes(screen, fleet.notes())
        return fleet.exit_code() or FAILED
    schemas = list(fleet.schemas.values())
    if args.json:
        screen.data(json_text(schemas))
    elif screen.at_terminal:
        screen.print(schemas_table(screen, schemas))
    else:
        screen.data(schemas_tsv(schemas))
    return OK


def chosen_schema(schemas: dict, wanted: str | None) -> str:
    """--schema: an id or a unique prefix (4+ characters); by default the Service App's only one."""
    if wanted is None and len(schemas) != 1:
        raise ConfigError(f"The Service App has {len(schemas)} schemas: choose one with --schema ID (--schemas lists "
                          "them). Nothing was sent.")
    wanted = wanted or next(iter(schemas))
    found = [s for s in schemas if s == wanted] or [s for s in schemas if s.startswith(wanted) and len(wanted) >= 4]
    if len(found) != 1:
        raise ConfigError(f"{clip(safe_text(wanted), 40)!r} is not one of the Service App's schemas: --schemas lists "
                          "them. Nothing was sent.")
    return found[0]


def flag_write(org: Org, fleet: Fleet, mode: str, args, view: SourceView | None) -> tuple[str, WriteResult]:
    """One write a flag asks for, or what is there already: (already, ok, failed or dry-run; the result)."""
    if mode == "register":
        payload = {"schemaId": chosen_schema(fleet.schemas, args.schema), "url": args.register,
                   "audience": args.audience or DEFAULT_AUDIENCE, "subject": args.subject or DEFAULT_SUBJECT,
                   "nonce": new_nonce(), "tokenLifetimeMinutes": args.lifetime or DEFAULT_LIFETIME}
        if there := find_duplicate(org.state.views, payload):
            return "already", WriteResult("registration", there.id, True, org.name, there)
        result = register_source(org, payload)
    elif mode == "delete":
        result = delete_source(org, view)
        if result.gone:
            return "already", result
    else:
        changes = {"disable": {"status": "disabled", "errorMessage": args.message},
                   "enable": {"status": "active", "errorMessage": ""}}.get(mode) or {
            key: value for key, value in (("url", args.url), ("audience", args.audience), ("subject", args.subject),
                                          ("tokenLifetimeMinutes", args.lifetime)) if value is not None}
        if mode != "update" and all(payload_from_view(view).get(k, "") == v for k, v in changes.items()):
            return "already", WriteResult("update", view.id, True, org.name, view)
        result = resend_source(org, view, "update", changes)
    return result.word, result


def write_json(org: Org, fleet: Fleet, word: str, result: WriteResult, now: datetime) -> dict:
    """One write for --json; the keys are listed in the README."""
    view = result.view if result.ok and result.operation != "delete" else None
    return {
        "org": org.name, "operation": result.operation, "id": result.source_id, "result": word,
        "record": str(result.record) if result.record else None,
        "source": source_json(source_row(org, None, view, fleet.verdict(org, view, now), now)) if view else None,
        "error": shown(result.error or result.record_error) if word == "failed" or result.record_error else None,
        **({"would_send": result.would_send} if result.would_send is not None else {}),
    }


def run_write(screen: Screen, fleet: Fleet, args) -> int:
    """--register, --update, --disable, --enable, --delete: one org, validated and written as the menu
    does it (its lock, a pending marker, a record). Every id is found, and every delete confirmed,
    before anything is sent."""
    org, mode = fleet.orgs[0], args.mode
    try:
        if org.problem:  # busy too: nothing was done, so it is no success here
            raise org.problem if not isinstance(org.problem, Busy) else ToolError(org.problem.message)
        if fleet.schemas is None:  # a writing run's list leaves them out; a source is shown with its schema's name
            trouble = fleet.read_schemas(org.client)
            if mode == "register" and trouble:
                raise ToolError(f"{trouble[0]} Nothing was sent.")
            org.state.warnings += trouble
            org.state.schemas = fleet.schemas or {}
        show_notes(screen, fleet.notes())
        ids = args.delete if mode == "delete" else [] if mode == "register" else [getattr(args, mode)]
        found = {view.id: view for view in (resolve_id(fleet.entries(datetime.now(UTC)), wanted)[1] for wanted in ids)}
        views = list(found.values()) or [None]
        for view in views if mode == "delete" and not (args.yes or args.dry_run) else ():
            screen.say(f"{view.id}  {view.audience or '-'}  {view.url or '-'}  {view.status or '-'}")
            try:
                if not typed_source(screen, view):
                    raise ConfigError(f"That does not match {view.short_id}: nothing was deleted.")
            except Cancelled:
                raise Interrupted from None
        sending = fleet.connections.writes.submit(lambda: [flag_write(org, fleet, mode, args, view) for view in views])
        try:
            done = sending.result()
        except KeyboardInterrupt as exc:  # the write in flight finishes and is recorded; no other starts
            STOP.ask(getattr(exc, "signum", signal.SIGINT))
            done = sending.result()
    finally:
        org.release()
    now = datetime.now(UTC)
    for word, result in done:
        if args.json:
            screen.data(json.dumps(write_json(org, fleet, word, result, now), ensure_ascii=True, default=str))
        elif word == "already" and result.operation == "delete":
            screen.say(f"{result.source_id} was gone already (Webex answered 404).")
        elif word == "already":
            screen.say(f"The source is already registered as {result.source_id}: nothing was sent." if
                       result.operation == "registration" else
                       f"{result.source_id} is {result.view.status} already: nothing was sent.")
        else:
            show_result(screen, result, now)
    if STOP:
        raise Interrupted(STOP.signum)
    return FAILED if any(word == "failed" or result.record_error for word, result in done) else OK


def run_menu(screen: Screen, fleet: Fleet, args) -> int:
    if (org := fleet.alone) is None:
        return FleetMenu(screen, fleet).run()
    Menu(screen, fleet, org).run()
    return OK


@dataclass(frozen=True)
class Mode:
    """One thing a run does: the flag that chooses it ("": the menu), the flags it takes besides
    --env-file and --records-dir, and its runner, which returns the exit code. reads: "webex"
    (writes: holding each org's lock from its list to its last write), "records", or "fleet"
    (its own reads: onboarding). one_org: a write a flag asks for, which works on one org's file."""

    flag: str
    takes: frozenset[str]
    run: Callable[[Screen, Fleet, argparse.Namespace], int]
    reads: str = "webex"
    writes: bool = False
    one_org: bool = False


READING, CHANGING = {"workers", "rate"}, {"audience", "subject", "lifetime"}
WRITING = {*READING, "json", "dry_run"}
MODES = {  # offboard before delete: --offboard ORG --delete is an offboarding
    "menu": Mode("", frozenset({*READING, "save_list"}), run_menu),
    "list": Mode("--list", frozenset({*READING, "json", "cached", "save_list"}), run_list),
    "rotate": Mode("--rotate", frozenset({*WRITING, "lifetime", "save_list"}), run_rotation, writes=True),
    "rotate_expiring": Mode("--rotate-expiring", frozenset({*WRITING, "lifetime", "save_list"}), run_rotation,
                            writes=True),
    "check": Mode("--check", frozenset(READING), run_check),
    "metrics": Mode("--metrics", frozenset(READING), run_metrics),
    "history": Mode("--history", frozenset({"json", "limit", "since"}), run_history, reads="records"),
    "schemas": Mode("--schemas", frozenset({*READING, "json"}), run_schemas),
    "onboard": Mode("--onboard", frozenset({*READING, "org_name", "yes", "dry_run"}), run_onboard, reads="fleet"),
    "offboard": Mode("--offboard", frozenset({*READING, "delete", "message", "yes", "dry_run"}), run_offboard,
                     writes=True),
    "register": Mode("--register", frozenset({*WRITING, *CHANGING, "schema"}), run_write, writes=True, one_org=True),
    "update": Mode("--update", frozenset({*WRITING, *CHANGING, "url"}), run_write, writes=True, one_org=True),
    "disable": Mode("--disable", frozenset({*WRITING, "message"}), run_write, writes=True, one_org=True),
    "enable": Mode("--enable", frozenset(WRITING), run_write, writes=True, one_org=True),
    "delete": Mode("--delete", frozenset({*WRITING, "yes"}), run_write, writes=True, one_org=True),
}
EVERYWHERE = {"env_file", "records_dir"}  # every mode takes these, but --onboard, which reads the orgs folder


def flag_of(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def settle_mode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """What this run does, decided once from the flags, and every flag given judged against it."""
    given = {dest for dest, value in vars(args).items() if value is not None and value is not False}
    mode = next((name for name in MODES if name in given), None) or "menu"
    takes = MODES[mode].takes | (EVERYWHERE if mode != "onboard" else {"records_dir"})
    if mode not in ("delete", "offboard") and "delete" in given:
        parser.error(f"--delete goes with --offboard ORG (every source of the org), or alone with the ids to delete: "
                     f"not with {MODES[mode].flag or 'the menu'}")
    for dest in sorted(given - takes - {mode}):
        if dest in EVERYWHERE:
            parser.error(f"--onboard writes the org's file in the orgs folder (WEBEX_ORGS_DIR) and reads the shared "
                         f".env beside the script: {flag_of(dest)} does not go with it")
        takers = [MODES[name].flag or "the menu" for name in MODES if dest in MODES[name].takes]
        parser.error(f"{flag_of(dest)} goes with " + (", ".join(takers[:-1]) + " or " + takers[-1] if len(takers) > 1
                                                      else takers[0]))
    if mode == "offboard" and args.delete is not None and args.message:
        parser.error("--message is what a disabled source shows: a deleted one shows nothing (leave out --delete or "
                     "--message)")
    usage = {"offboard": args.delete and "--offboard ORG --delete deletes every source of the org: it takes no ids "
                                          "(--delete ID alone deletes those)",
             "delete": args.delete == [] and "--delete needs the ids of the sources to delete (or goes with --offboard "
                                             "ORG)",
             "disable": not args.message and "--disable needs --message TEXT: Control Hub shows it to the customer's "
                                             "admin"}
    if usage.get(mode):
        parser.error(usage[mode])
    if mode in ("offboard", "delete") and not (args.yes or args.dry_run or can_prompt()):
        what = ("--offboard disables or deletes every source of the org: at a terminal it asks for the org's name "
                "typed" if mode == "offboard" else "--delete deletes for good: at a terminal it asks for each source's "
                "audience or id typed")
        raise ConfigError(f"{what}; without one, add --yes. Nothing was sent.")
    if mode == "menu" and not can_prompt():
        if args.save_list:
            return "save_list"
        raise ConfigError("No terminal to show the menu on. Use --list to print the sources, --save-list to snapshot "
                          "them, or --rotate ID|all / --rotate-expiring MINUTES to rotate tokens.")
    return mode


def startup_done() -> None:
    """Startup's objects live as long as the run: frozen out of the collector's sight, then it starts
    (unfrozen, its collections walk them all: +10 % on a 200,000-record --history)."""
    gc.freeze()
    gc.enable()


class Parser(argparse.ArgumentParser):
    """argparse, saying bad usage in one sentence (a typo'd flag gets the nearest one); a
    monitoring probe (--check) answers it in its own convention: one UNKNOWN line and exit 3 (to
    Nagios, exit 2 would read as CRITICAL)."""

    def error(self, message: str):
        if clash := re.fullmatch(r"argument (\S+): not allowed with argument (\S+)", message):
            message = f"{clash[2]} and {clash[1]} do not go together: give one of them"
        if unknown := re.fullmatch(r"unrecognized arguments: (.*)", message):
            typo = next((arg for arg in unknown[1].split() if arg.startswith("-")), "")
            flags = re.findall(r"--[a-z][a-z-]*", self.format_usage())
            near = difflib.get_close_matches(typo.split("=")[0], flags, n=1, cutoff=0.75)  # a typo, not --frobnicate
            message = f"unknown flag {typo}" if typo else f"unexpected {unknown[1]}"
            message += f": did you mean {near[0]}?" if near else ""
        if any(arg == "--check" or arg.startswith("--check=") for arg in self.probe_argv):
            print(safe_text(f"UNKNOWN - bad usage: {message} (see --help)"))
            raise SystemExit(UNKNOWN)
        self.exit(USAGE, f"{self.prog}: error: {message} (--help lists every flag)\n")


def parse_args(argv) -> tuple[argparse.Namespace, str]:
    """The flags, and the mode they choose."""
    codes = "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
    parser = Parser(prog="data-sources.py", epilog=f"Exit codes: {codes}.",
                    description="List, register, update, rotate and delete Webex BYODS data sources.")
    minutes, flag = argparse_type(validate_minutes, int), {"action": "store_true"}
    action = parser.add_mutually_exclusive_group()
    for group, name, options, text in (
        (action, "--list", flag, "print the sources (a table; piped: tab-separated) and exit"),
        (action, "--rotate", {"nargs": "+", "metavar": "ID"},
         "rotate these sources (ids or unique prefixes), or 'all'"),
        (action, "--rotate-expiring", {"type": minutes, "metavar": "MINUTES"},
         "rotate every active source whose token expires within MINUTES (expired included)"),
        (action, "--check", {"type": minutes, "metavar": "MINUTES"},
         ("monitoring probe, one line: exit 0 OK, 1 WARNING (an active source expires within MINUTES), 2 CRITICAL "
         "(one has expired or its signature is invalid), 3 UNKNOWN (Webex could not be read)")),
        (action, "--metrics", flag, "print Prometheus metrics (for node_exporter's textfile collector)"),
        (action, "--schemas", flag, "print the Service App's schemas (a table; piped: tab-separated) and exit"),
        (action, "--register", {"type": argparse_type(validate_url), "metavar": "URL"},
         ("register a source at URL (--schema, --audience, --subject, --lifetime); one just like it registered "
          "already: nothing is sent")),
        (action, "--update", {"metavar": "ID"},
         "update a source: --url, --audience, --subject, --lifetime change those, the rest is kept; a new nonce"),
        (action, "--disable", {"metavar": "ID"}, "disable a source, with --message TEXT for Control Hub"),
        (action, "--enable", {"metavar": "ID"}, "enable a disabled source again (its message cleared)"),
        (action, "--history", {"nargs": "?", "const": "", "metavar": "ID"},
         "the records, newest first; with ID (or a prefix), that source's only"),
        (action, "--onboard", {"type": argparse_type(validate_org_id), "metavar": "ORG_ID"},
         ("a customer org that authorized the Service App: mint its token, write its file in the orgs folder, register "
         "its source from the template (WEBEX_SOURCE_*) and verify it; again, it repeats nothing")),
        (action, "--offboard", {"metavar": "ORG"}, ("a customer org that left (its name or id): disable every source "
         "(or --delete them), a record each, then set its file aside as NAME.env.offboarded")),
        (parser, "--org-name", {"type": argparse_type(validate_org_name), "metavar": "NAME"},
         ("with --onboard: the org's name, for its file and records folder (default: org- and the first 8 characters "
         "of its id)")),
        (parser, "--delete", {"nargs": "*", "metavar": "ID"},
         ("delete these sources (at a terminal, each confirmed by typing; else --yes); with --offboard and no ids: "
          "delete the org's sources instead of disabling them")),
        (parser, "--schema", {"metavar": "ID"}, "with --register: the schema (default: the Service App's only one)"),
        (parser, "--url", {"type": argparse_type(validate_url), "metavar": "URL"}, "with --update: the new URL"),
        (parser, "--audience", {"type": argparse_type(validate_required), "metavar": "TEXT"},
         f"with --register (default {DEFAULT_AUDIENCE}) or --update: the token's audience"),
        (parser, "--subject", {"type": argparse_type(validate_required), "metavar": "TEXT"},
         f"with --register (default {DEFAULT_SUBJECT}) or --update: the token's subject"),
        (parser, "--message", {"type": argparse_type(validate_error_message), "metavar": "TEXT"},
         ("with --disable or --offboard: what Control Hub shows the customer's admin on a disabled source "
          "(offboarding's default: Service ended on DATE)")),
        (parser, "--yes", flag, ("with --delete or --offboard: no typed confirmation (without a terminal it is "
         "needed); with --onboard: update a source that differs from the template without asking")),
        (parser, "--dry-run", flag, ("with a write, a rotation, --onboard or --offboard: print what would be sent, "
         "send nothing, write no record")),
        (parser, "--limit", {"type": argparse_type(validate_limit, int), "metavar": "N"},
         "with --history: the newest N operations (default 50; 0: all)"),
        (parser, "--since", {"type": argparse_type(validate_duration, parse_duration), "metavar": "DURATION"},
         "with --history: only operations since then, e.g. 90m, 12h, 7d"),
        (parser, "--cached", flag,
         "with --list: print what the last run read (each org's state.json), asking Webex nothing"),
        (parser, "--json", flag, "JSON only on stdout"),
        (parser, "--save-list", flag, "write data_sources_list_{TS}.json at startup"),
        (parser, "--lifetime", {"type": argparse_type(validate_lifetime, int), "metavar": "MINUTES"},
         (f"token lifetime (1-1440): a rotation's (default: each source's own), --register's (default "
          f"{DEFAULT_LIFETIME}) or --update's")),
        (parser, "--workers", {"type": argparse_type(validate_workers, int), "metavar": "N"},
         f"requests in flight at once, for the whole run (default {DEFAULT_WORKERS})"),
        (parser, "--rate", {"type": argparse_type(validate_rate, int), "metavar": "N"},
         "at most N requests a minute for the whole run (default: no cap until Webex answers 429)"),
        (parser, "--records-dir", {"metavar": "DIR"}, "where record files go (default: records/ beside the script)"),
        (parser, "--env-file", {"nargs": "+", "metavar": "PATH"},
         ("read settings from this file instead of .env beside the script; several files (or a pattern): one per "
          "customer org")),
    ):
        group.add_argument(name, help=text, **options)
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    parser.probe_argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.mode = settle_mode(args, parser)
    return args, args.mode


def run_mode(args, mode: str, screen_for: Callable[[], Screen]) -> int:
    """The run: the orgs loaded, the startup fetch sent off before rich and questionary are
    imported (the screen), so that their imports overlap Webex's answer; then the mode's runner."""
    runner = MODES[mode] if mode in MODES else Mode("--save-list", frozenset(), lambda _, fleet, __: fleet.exit_code())
    wait = countdown if mode == "menu" else announce_wait
    connections = Connections(args.workers or DEFAULT_WORKERS, lambda line: screen_for().tell(line), args.rate,
                              dry_run=args.dry_run)
    sleeper = lambda seconds, why: wait(screen_for(), seconds, why)  # the screen is made later
    env_files = env_file_paths(args.env_file)
    if mode == "offboard":
        env_files = [org_file_named(args.offboard, env_files)]
    fleet = Fleet([], connections, files=tuple(args.env_file or ()), records_dir=args.records_dir, sleeper=sleeper)
    if runner.reads != "fleet":  # onboarding: the org may have no file yet, and joins an empty fleet
        fleet.load(env_files)
        if runner.one_org and fleet.several:
            raise ConfigError(f"{runner.flag} works on one org, and {len(fleet.orgs)} org files were given: give one "
                              "--env-file. Nothing was sent.")
        if all(isinstance(org.problem, ConfigError) for org in fleet.orgs):  # nothing could start: bad usage
            screen = screen_for()
            show_notes(screen, fleet.notes(fleet.orgs[1:]))
            raise fleet.orgs[0].problem
    if runner.reads != "webex" or args.cached:  # the records, the snapshots, or its own reads
        screen = screen_for()
        startup_done()
        return runner.run(screen, fleet, args)
    overview_first = mode == "menu" and fleet.several and not args.save_list and fleet.load_snapshots()
    confirming = mode == "delete" and not args.yes and not args.dry_run  # no lock while a person types
    writing = runner.writes and not connections.dry_run and not confirming  # a dry run takes no lock
    if writing or args.save_list:  # before anything is sent
        for org in fleet.orgs:
            if org.records:
                org.ensure_records()
    reading = ThreadPoolExecutor(max_workers=1, thread_name_prefix="startup")
    pending = reading.submit(fleet.fetch, writing)
    reading.shutdown(wait=False)
    try:
        screen = screen_for()
        show_refresh_token_warnings(screen, fleet, in_output=args.rotate_expiring is not None and not args.json)
        if mode == "menu":
            screen.questionary  # noqa: B018 (imported while Webex answers)
        if not overview_first:  # the overview from snapshots does not wait for Webex
            pending.result()
        startup_done()
        if args.save_list:
            save_lists(screen, fleet)
        return runner.run(screen, fleet, args)
    finally:
        fleet.stop_reading()
        fleet.save_snapshots()  # after the output, so it comes no later for them


def reopen_closed_streams() -> None:
    """A run started with stdout or stderr closed (>&-): what would go there goes nowhere."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 (open for the run)


def main(argv=None) -> int:
    reopen_closed_streams()
    screens, making = [], threading.Lock()

    def screen_for() -> Screen:
        """The screen, made when the first thing is to be shown (rich is imported then)."""
        with making:
            if not screens:
                screens.append(Screen())
            return screens[0]

    mode = None
    try:
        args, mode = parse_args(argv)  # a flag's bad usage: argparse says so and exits 2
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # systemd, timeout and Kubernetes: SIGTERM
            signal.signal(signum, STOP.on_signal)
        return run_mode(args, mode, screen_for)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        screen_for().tell("Interrupted." if signum == signal.SIGINT else f"Stopped by {signal.Signals(signum).name}.")
        return 128 + signum
    except Exception as exc:  # noqa: BLE001 (the last guard: a sentence, never a traceback)
        if mode == "check":  # a monitoring probe answers in its own convention, whatever happened
            print(safe_text(f"UNKNOWN - {shown(exc)}"))
            return UNKNOWN
        if not isinstance(exc, ToolError):
            exc = ToolError(f"unexpected {type(exc).__name__}: {exc}. Please report it with the command you ran.")
        screen_for().error(exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
