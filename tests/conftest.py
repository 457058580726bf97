"""Fixtures: the fake Webex API, an env file pointing at it, a records folder, and two ways to
run the tool as people do: a plain subprocess (cron, pipes) and a pseudo-terminal (the menu)."""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import ClassVar

import pexpect
import pyte
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_webex import FakeWebex

ROOT = Path(__file__).resolve().parent.parent
# The tests run a copy of the script in a folder of their own, with a home folder of their own:
# nothing of the user's (the .env beside the repository's script, ~/.netrc) is ever read.
HERMETIC = Path(tempfile.mkdtemp(prefix="byods-tests-"))
SCRIPT = HERMETIC / "data-sources.py"
HOME = HERMETIC / "home"
shutil.copy(ROOT / "data-sources.py", SCRIPT)
HOME.mkdir()
atexit.register(shutil.rmtree, HERMETIC, True)


def load_script():
    spec = importlib.util.spec_from_file_location("data_sources", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["data_sources"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ds():
    """The script as a module, for its pure helpers and its client."""
    return load_script()


@pytest.fixture(autouse=True)
def no_user_settings(monkeypatch):
    """In-process tests too: the test home folder, and none of the developer's WEBEX_ settings."""
    monkeypatch.setenv("HOME", str(HOME))
    for key in [key for key in os.environ if key.startswith("WEBEX_")]:
        monkeypatch.delenv(key)


OUTPUTS: list[str] = []  # everything the tool printed during the current test


@pytest.fixture
def fake(tmp_path):
    """The fake API; afterwards, no secret or raw token of it may appear in anything the tool
    printed or in any JSON file it wrote, whatever the test was about."""
    OUTPUTS.clear()
    server = FakeWebex().start()
    yield server
    server.stop()
    written = [path.read_text(errors="replace") for path in tmp_path.rglob("*.json")  # the tool's files, not a test's FIFO
               if path.is_file() and not path.is_symlink() and path.stat().st_size < 16 * 1024 * 1024]
    for text in OUTPUTS + written:
        assert server.leaked_secrets(text) == [], "a secret or raw jwsToken leaked"


@pytest.fixture
def waits():
    return []


@pytest.fixture
def make_client(ds, fake, waits):
    """A client for the fake; the sleeper records each wait (5xx backoff) instead of sleeping."""

    def make(read_timeout=5.0, base_url=None, total_timeout=30.0, refresh_token="", **settings):
        conf = ds.Settings(env_file=None, tokens=ds.Tokens(fake.access_token, refresh_token), base_url=base_url or fake.base_url,
                           timeouts=ds.Timeouts(2.0, read_timeout, total_timeout), **settings)
        return ds.WebexClient(conf, sleeper=lambda seconds, reason: waits.append((seconds, reason)))

    return make


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def org(ds, fake, waits, records):
    """An org on the fake, its records in the test's folder; waits recorded instead of slept."""
    settings = ds.Settings(env_file=None, tokens=ds.Tokens(fake.access_token), base_url=fake.base_url, records_dir=records,
                           timeouts=ds.Timeouts(2.0, 5.0, 30.0))
    return ds.Org("default", settings, ds.Connections(), sleeper=lambda seconds, reason: waits.append((seconds, reason)))


@pytest.fixture
def records(tmp_path) -> Path:
    return tmp_path / "records"


def break_folder(folder):
    """Replace a folder by a file: even root cannot write records there."""

    def replace():
        shutil.rmtree(folder)
        folder.write_text("no longer a folder")

    return replace


def write_env(path: Path, values: dict) -> Path:
    """A settings file as the README says to keep one: readable by its owner only."""
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)
    return path


@pytest.fixture
def env_file(tmp_path, fake, records) -> Path:
    return write_env(tmp_path / ".env", {**fake.env(), "WEBEX_RECORDS_DIR": records, "WEBEX_READ_TIMEOUT": 5})


def child_env(**extra) -> dict:
    """The environment of a run: none of the developer's WEBEX_ settings leak in, nor a size of
    the terminal pytest runs in (pytest-xdist's workers have LINES=24)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBEX_") and k not in ("LINES", "COLUMNS")}
    env.update(PYTHONIOENCODING="utf-8", LANG="C.UTF-8", COLUMNS="200", PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", HOME=str(HOME))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(*args, env_file=None, timeout=60, script=SCRIPT, **extra_env) -> subprocess.CompletedProcess:
    """The tool without a terminal, as cron or a pipe runs it."""
    argv = [sys.executable, str(script), *(["--env-file", str(env_file)] if env_file else []), *map(str, args)]
    result = subprocess.run(
        argv, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=child_env(**extra_env), timeout=timeout
    )
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def record_files(records: Path, pattern: str = "data_source*.json") -> list[Path]:  # records, not state.json
    return sorted(records.glob(pattern)) if records.exists() else []


def load_record(path: Path) -> dict:
    return json.loads(path.read_text())


PAUSE = "Press any key to return to the menu"


class Terminal:
    """The tool in a pseudo-terminal: keys in, a rendered screen out (pyte), no sleeps."""

    KEYS: ClassVar[dict[str, str]] = {
        "enter": "\r",
        "down": "\x1b[B",
        "up": "\x1b[A",
        "ctrl-c": "\x03",
        "ctrl-u": "\x15",
        "backspace": "\x7f",
    }

    def __init__(self, args, env, rows=60, cols=200, script=SCRIPT):
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)
        self.transcript = ""
        self.last_key_at = 0  # where the transcript stood when the last key was sent
        self.child = pexpect.spawn(
            sys.executable, [str(script), *map(str, args)], env=env, dimensions=(rows, cols), encoding="utf-8", codec_errors="replace"
        )

    def _pump(self, timeout: float) -> None:
        try:
            data = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        self.stream.feed(data)
        self.transcript += data

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def plain_transcript(self, start: int = 0) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r", "", self.transcript[start:])

    def wait_for(self, pattern: str, timeout: float = 20, after_last_key: bool = False) -> str:
        """Read output until the screen shows pattern (a regular expression); return the screen.
        after_last_key: it must be in what was drawn since the last key, not left from before."""
        import time

        def shown() -> bool:
            if after_last_key and not re.search(pattern, self.plain_transcript(self.last_key_at)):
                return False
            return bool(re.search(pattern, self.text()))

        deadline = time.monotonic() + timeout
        while not shown():
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {pattern!r}; it shows:\n{self.text()}")
            try:
                self._pump(0.2)
            except pexpect.EOF:
                if not shown():
                    raise AssertionError(f"program ended before showing {pattern!r}; screen:\n{self.text()}") from None
        return self.text()

    def press(self, *keys: str) -> None:
        for key in keys:
            self.type(self.KEYS.get(key, key))

    def type(self, text: str) -> None:
        self.last_key_at = len(self.transcript)
        self.child.send(text)

    def menu(self) -> str:
        """The menu, drawn since the last key; when the tool waits for a key to return to it (what an
        action showed stays on screen until then), that key first."""
        self.wait_for(f"type to filter|{PAUSE}", after_last_key=True)
        since = self.plain_transcript(self.last_key_at)
        if since.rfind(PAUSE) > since.rfind("type to filter"):
            self.press("enter")
        return self.wait_for(r"type to filter", after_last_key=True)

    def choose(self, label: str) -> None:
        """Pick a menu entry by typing part of its label into the select's filter."""
        self.menu()
        self.type(label)
        self.wait_for(re.escape(label))
        self.press("enter")

    def exit_code(self, timeout: float = 20) -> int:
        while True:
            try:
                self._pump(timeout)
            except pexpect.EOF:
                break
        self.child.wait()
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else 128 + self.child.signalstatus


def menu_ready(term):
    """The whole menu (or the org overview), drawn since the last key: a terminal may deliver a
    redraw in pieces."""
    term.menu()
    return term.wait_for(r"type to filter[\s\S]*Quit", after_last_key=True)


def keep_defaults(term, *labels):
    """Enter at each of these prompts, in turn: the prefilled default is kept."""
    for label in labels:
        term.wait_for(rf"\? {label}", after_last_key=True)
        term.press("enter")


def rotate_first(term):
    """Rotate, Enter on the most urgent source, Enter to confirm."""
    term.choose("Rotate")
    term.wait_for("Rotate which source")
    term.press("enter")
    term.wait_for(r"now\?")
    term.press("enter")


def register_in_menu(term, url=None, prefilled="", choose=True) -> None:
    """Register with every default; type the URL (None: keep the prefilled one, which must
    start with prefilled), then confirm. choose=False: the wizard is already open."""
    if choose:
        term.choose("Register")
    for label in ("Audience", "Subject"):
        term.wait_for(rf"\? {label}:", after_last_key=True)
        term.press("enter")
    term.wait_for(r"\? URL:" + (f" {re.escape(prefilled)}" if prefilled else ""), after_last_key=True)
    if url is not None:
        term.press("ctrl-u")
        term.type(url)
    term.press("enter")
    for label in ("Schema", "Token lifetime", "Nonce"):
        term.wait_for(rf"\? {label}", after_last_key=True)
        term.press("enter")
    term.wait_for(r"Register this data source\?")
    term.press("y")


@pytest.fixture
def terminal(env_file):
    """Start the menu: terminal() or terminal('--save-list')."""
    started = []

    def start(*args, env=None, **extra_env):
        term = Terminal(["--env-file", env or env_file, *args], child_env(**extra_env))
        started.append(term)
        return term

    yield start
    for term in started:
        OUTPUTS.append(term.transcript)
        if term.child.isalive():
            term.child.terminate(force=True)


class App:
    """The script in a folder of its own: a shared .env beside it, orgs/*.env, records/."""

    def __init__(self, root, fake):
        self.root = root
        self.fake = fake
        self.script = root / "data-sources.py"
        shutil.copy(SCRIPT, self.script)
        (root / "orgs").mkdir()
        self.records = root / "records"
        self.shared = write_env(
            root / ".env",
            {
                "WEBEX_API_BASE_URL": fake.base_url,
                "WEBEX_TRUSTED_ISSUERS": fake.issuer,
                "WEBEX_READ_TIMEOUT": 5,
                "WEBEX_RECORDS_DIR": "records",
            },
        )
        self.terminals: list[Terminal] = []

    def org(self, name: str, org, **values):
        """orgs/{name}.env for a fake org: its own access token unless values say otherwise."""
        return write_env(self.root / "orgs" / f"{name}.env", {"WEBEX_ACCESS_TOKEN": org.access_token, **values})

    def two_orgs(self, acme: str, globex_audience: str):
        """acme (the fake) and globex, one source each, their files in orgs/; returns globex."""
        globex = self.fake.add_org()
        self.fake.add_source(audience=acme)
        globex.add_source(audience=globex_audience)
        self.org("acme", self.fake)
        self.org("globex", globex)
        return globex

    def share(self, **values):
        with self.shared.open("a") as handle:
            handle.writelines(f"{key}={value}\n" for key, value in values.items())

    def env_files(self):
        return sorted(str(p) for p in (self.root / "orgs").glob("*.env"))

    def run(self, *args, env_files=None, **environment):
        return run_cli("--env-file", *(env_files or self.env_files()), *args, script=self.script, **environment)

    def terminal(self, *args, env_files=None):
        term = Terminal(["--env-file", *(env_files or self.env_files()), *args], child_env(), script=self.script)
        self.terminals.append(term)
        return term

    def records_of(self, name: str) -> list:
        return sorted((self.records / name).glob("data_source*.json"))  # records, not the state.json snapshot


@pytest.fixture
def app(tmp_path, fake):
    (tmp_path / "app").mkdir()
    application = App(tmp_path / "app", fake)
    yield application
    for term in application.terminals:
        OUTPUTS.append(term.transcript)
        if term.child.isalive():
            term.child.terminate(force=True)
