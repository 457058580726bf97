"""Benchmark: python tests/bench.py   (not part of the test run; takes a few minutes)

Starts the fake API on 127.0.0.1 with a simulated round trip and measures, medians over runs:
time to the menu, the instructions run to reach it (callgrind, where valgrind is installed: the
one count here that a slow or busy machine does not change), requests and connections of a menu
session, --list with 1000 sources, bulk rotation of 200 sources sequential versus the default
pool, a fleet rotation (40 orgs, one host) and the time to draw the overview of 100 orgs. Prints one table.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import pexpect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import ROOT, SCRIPT, Terminal, child_env, write_env
from fake_webex import FakeWebex, seed_demo, self_signed_context

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
BASE = os.environ.get("BENCH_BASE")  # a git revision whose script the time-to-menu lines also time, in turn with this one
MENU_IMPORTS = "import requests, dotenv, rich.console, rich.table, rich.panel, rich.text, questionary"
FLOOR_IMPORTS = MENU_IMPORTS + ", jwt.algorithms"  # pyjwt's crypto: loaded while the startup fetch is awaited
REQUESTS_IMPORT = "import requests"


def fake_with(sources: int, latency: float) -> FakeWebex:
    fake = FakeWebex().start()
    seed_demo(fake, sources)
    fake.latency = latency
    return fake


def env_for(fake: FakeWebex, folder: Path) -> Path:
    return write_env(folder / ".env", {**fake.env(), "WEBEX_RECORDS_DIR": folder / "records"})


def menu_shown_after(args, env, script: Path = SCRIPT) -> float:
    """Seconds from starting the tool until the menu's question reaches the terminal. Read off the
    raw stream: emulating the screen in Python (pyte) would add the harness's own 10-17 ms."""
    started = time.perf_counter()
    child = pexpect.spawn(
        sys.executable, [str(script), *map(str, args)], env=env, dimensions=(60, 200), encoding="utf-8", codec_errors="replace"
    )
    child.expect("type to filter", timeout=60)
    seconds = time.perf_counter() - started
    child.terminate(force=True)
    return seconds


def timed_import(code: str) -> float:
    """A fresh interpreter that only imports: what no startup can beat."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def base_script(folder: Path) -> Path | None:
    """BENCH_BASE's data-sources.py, timed in turn with this one: a regression is then a
    difference seen on one machine at one speed, however fast or slow the machine is that day."""
    if not BASE:
        return None
    shown = subprocess.run(["git", "show", f"{BASE}:data-sources.py"], check=False, cwd=ROOT, capture_output=True)
    if shown.returncode:
        raise SystemExit(f"BENCH_BASE={BASE}: git has no data-sources.py there ({shown.stderr.decode().strip()}).")
    (folder / "base").mkdir(exist_ok=True)
    script = folder / "base" / "data-sources.py"
    script.write_bytes(shown.stdout)
    return script


def time_to_menu(sources: int, latency: float, folder: Path, base: Path | None = None) -> dict:
    """Medians of the tool's time to menu and of both import floors (and of the base's script),
    measured in turn, so that all see the same machine (its speed drifts by several ms between minutes)."""
    fake = fake_with(sources, latency)
    env = env_for(fake, folder)
    times = {"tool": [], "floor": [], "requests_floor": [], **({"base": []} if base else {})}
    for _ in range(RUNS):
        times["tool"].append(menu_shown_after(["--env-file", env], child_env()))
        if base:
            times["base"].append(menu_shown_after(["--env-file", env], child_env(), base))
        times["floor"].append(timed_import(FLOOR_IMPORTS))
        times["requests_floor"].append(timed_import(REQUESTS_IMPORT))
    fake.stop()
    return {name: statistics.median(values) for name, values in times.items()}


def menu_judgement(measured: dict) -> str:
    """Time to menu as a ratio to the five-package floor measured beside it (what the README shows),
    and, with BENCH_BASE, against the base's script measured in turn: at most 10 % slower."""
    text = f"{measured['tool'] / measured['floor']:.2f} x the five-package floor ({measured['floor'] * 1000:.0f} ms)"
    if "base" in measured:
        change = measured["tool"] / measured["base"] - 1
        text += (f"; {BASE}'s script, in turn: {measured['base'] * 1000:.0f} ms ({change:+.0%}: "
                 f"{'within' if change <= 0.10 else 'NOT within'} 10 %)")
    return text


def callgrind_dump(argv: list, out: Path, env=None, at_menu: bool = False) -> str:
    """What valgrind's callgrind counted in the main thread of a run: the same count on a slow
    machine as on a fast one, where milliseconds are not. at_menu: the count when the menu's
    question is on the screen, taken from the running tool (it then waits for a key)."""
    command = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}", *argv]
    if not at_menu:
        subprocess.run(command, check=True, capture_output=True, env=env)
        return out.with_name(out.name + "-01").read_text()
    child = pexpect.spawn(command[0], command[1:], env=env, dimensions=(60, 200), encoding="utf-8", codec_errors="replace")
    child.expect("type to filter", timeout=600)
    subprocess.run(["callgrind_control", "--dump=menu", str(child.pid)], check=True, capture_output=True)
    dump, deadline = out.with_name(out.name + ".1-01"), time.monotonic() + 120
    while not (dump.exists() and "\ntotals: " in dump.read_text()):  # written when the tool next runs
        if time.monotonic() > deadline:
            raise RuntimeError("callgrind wrote no count at the menu")
        time.sleep(0.2)
    child.terminate(force=True)
    return dump.read_text()


def instructions(dump: str) -> int:
    return int(re.search(r"^totals: (\d+)", dump, re.MULTILINE).group(1))


def instructions_to_menu(sources: int, folder: Path, script: Path = SCRIPT) -> dict | None:
    """The main thread's instructions from start to the menu, with 0 ms round trip; apart, those
    of compiling the script (Python compiles a script it runs on every start: it keeps no
    bytecode of it) and of the imports the run made (pyjwt's crypto only if it was loaded while
    Webex's answer was awaited). None where valgrind is not installed."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        return None
    fake = fake_with(sources, 0.0)
    env = env_for(fake, folder)
    try:
        tool = callgrind_dump([sys.executable, str(script), "--env-file", str(env)], folder / "cg-tool",
                              child_env(WEBEX_TIMEOUT=600), at_menu=True)
    finally:
        fake.stop()
    crypto = "_rust.abi3.so" in tool  # cryptography's extension, which jwt.algorithms loads
    read = f"source = open({str(script)!r}).read()"
    compiled = instructions(callgrind_dump([sys.executable, "-c", f"{read}; compile(source, 'data-sources.py', 'exec')"],
                                           folder / "cg-compile"))
    only_read = instructions(callgrind_dump([sys.executable, "-c", read], folder / "cg-read"))
    imports = instructions(callgrind_dump([sys.executable, "-c", FLOOR_IMPORTS if crypto else MENU_IMPORTS], folder / "cg-imports"))
    return {"tool": instructions(tool), "compile": compiled - only_read, "imports": imports, "crypto": crypto}


def menu_session(folder: Path) -> dict:
    """Start, view a source, update it keeping defaults, refresh, quit (100 ms round trip, so
    requests that overlap are seen to overlap)."""
    fake = fake_with(5, 0.1)
    term = Terminal(["--env-file", env_for(fake, folder)], child_env())
    term.choose("Acme")
    term.wait_for(r"Update this data source\?")
    term.press("y")
    for label in ("Audience", "Subject", "URL", "Token lifetime", "Nonce", "Status"):
        term.wait_for(rf"\? {label}")
        term.press("enter")
    term.wait_for("Send this update")
    term.press("y")
    term.wait_for("Record:")
    term.choose("Refresh")
    term.choose("Quit")
    term.exit_code()
    fake.stop()
    return {
        "api_requests": len(fake.requests()),
        "api_connections": fake.connections["api"],
        "max_in_flight": fake.max_in_flight,
        "key_requests": len(fake.requests(server="idb")),
    }


def run_measured(args, env) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one run of the tool."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{args} failed with {process.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def list_thousand(folder: Path) -> tuple[float, float]:
    fake = fake_with(1000, 0.0)
    env = env_for(fake, folder)
    runs = [run_measured(["--env-file", env, "--list"], child_env()) for _ in range(RUNS)]
    fake.stop()
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def rotation(workers: int, folder: Path) -> tuple[float, int]:
    fake = FakeWebex(latency=0.1).start()
    for n in range(200):
        fake.add_source(audience=f"Org {n}")
    seconds, _ = run_measured(["--env-file", env_for(fake, folder), "--rotate", "all", "--workers", workers], child_env())
    fake.stop()
    return seconds, len(fake.requests())


class WanProxy:
    """A TCP proxy on 127.0.0.1 that makes loopback cost what a WAN costs: a new connection waits
    one round trip (the TCP handshake) before it is through, and every chunk arrives half a
    round trip after it was sent, each way, so a TLS handshake costs its real round trips."""

    def __init__(self, target_port: int, rtt: float):
        self.target_port, self.rtt, self.connections = target_port, rtt, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        time.sleep(self.rtt)
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        for source, sink in ((client, upstream), (upstream, client)):
            chunks: queue.Queue = queue.Queue()
            threading.Thread(target=self._read, args=(source, chunks), daemon=True).start()
            threading.Thread(target=self._write, args=(sink, chunks), daemon=True).start()

    def _read(self, source: socket.socket, chunks: queue.Queue) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            chunks.put((time.monotonic() + self.rtt / 2, data))
            if not data:
                return

    def _write(self, sink: socket.socket, chunks: queue.Queue) -> None:
        while True:
            due, data = chunks.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                sink.sendall(data) if data else sink.shutdown(socket.SHUT_WR)
            except OSError:
                return
            if not data:
                return

    def close(self) -> None:
        self.listener.close()


def over_a_wan(rtt: float, folder: Path) -> dict:
    """Time to menu with the fake behind TLS and a WAN-like proxy: requests, connections, time."""
    fake = FakeWebex(tls_context=self_signed_context(folder)).start()
    seed_demo(fake, 5)
    proxy = WanProxy(fake.api.server_address[1], rtt)
    env = write_env(
        folder / "wan.env",
        {**fake.env(), "WEBEX_API_BASE_URL": f"https://127.0.0.1:{proxy.port}/v1", "WEBEX_RECORDS_DIR": folder / "records"},
    )
    times = [menu_shown_after(["--env-file", env], child_env(REQUESTS_CA_BUNDLE=folder / "cert.pem")) for _ in range(RUNS)]
    result = {"seconds": statistics.median(times), "requests": len(fake.requests()) // RUNS, "connections": proxy.connections // RUNS}
    proxy.close()
    fake.stop()
    return result


def fleet_files(fake: FakeWebex, orgs: int, sources: int, expires_in: float, folder: Path) -> list[str]:
    """orgs env files for orgs on one fake host, each org with its own sources."""
    (folder / "orgs").mkdir(exist_ok=True)
    files = []
    for number in range(orgs):
        org = fake if number == 0 else fake.add_org()
        for n in range(sources):
            org.add_source(audience=f"Org {number} source {n}", expires_in=expires_in)
        own = {"WEBEX_ACCESS_TOKEN": org.access_token, "WEBEX_RECORDS_DIR": folder / "records"}  # shared keys: the environment
        files.append(str(write_env(folder / "orgs" / f"org{number:03d}.env", own)))
    return files


def fleet_rotation(folder: Path) -> dict:
    """40 orgs x 3 sources, all expiring, 100 ms a request, --workers 8."""
    fake = FakeWebex(latency=0.1).start()
    files = fleet_files(fake, 40, 3, 600, folder)
    seconds, _ = run_measured(["--env-file", *files, "--rotate-expiring", "60", "--workers", "8"], child_env(**fake.shared_env()))
    orgs = fake.everyone()
    counts = {
        "lists": sum(len(o.requests("GET", "/v1/dataSources/")) for o in orgs),
        "puts": sum(len(o.requests("PUT")) for o in orgs),
        "connections": fake.connections["api"],
        "in_flight": fake.max_in_flight,
        "seconds": seconds,
    }
    fake.stop()
    return counts


def fleet_overview(folder: Path) -> tuple[float, int, int]:
    """Time until the overview of 100 orgs (3 sources each, 100 ms a request) is drawn."""
    fake = FakeWebex(latency=0.1).start()
    files = fleet_files(fake, 100, 3, 20 * 3600, folder)
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        term = Terminal(["--env-file", *files], child_env(**fake.shared_env()))
        term.wait_for("Choose an org", timeout=120)
        times.append(time.perf_counter() - started)
        term.child.terminate(force=True)
    requests = sum(len(o.requests()) for o in fake.everyone()) // RUNS
    fake.stop()
    return statistics.median(times), requests, fake.max_in_flight


def big_fleet_rotation(folder: Path, rate: int | None, window: float | None = None) -> dict:
    """1000 orgs x 3 sources, all expiring, 50 ms a request, one fake serving every org with the
    Service App's limit: 6000 a minute (a bucket refilled 100 a second, holding 100 at most; with
    window, at most 100 x window requests in any window seconds, the other shape Webex may use)."""
    fake = FakeWebex(latency=0.05).start()
    files = fleet_files(fake, 1000, 3, 600, folder)
    fake.limit_per_second, fake.limit_window = 100, window
    before = {(id(org), sid): source["nonce"] for org in fake.everyone() for sid, source in org.sources.items()}
    args = ["--env-file", *files, "--rotate-expiring", "60", "--workers", "16", *(["--rate", str(rate)] if rate else [])]
    seconds, memory = run_measured(args, child_env(**fake.shared_env()))
    after = {(id(org), sid): source["nonce"] for org in fake.everyone() for sid, source in org.sources.items()}
    puts = sum(len(org.requests("PUT")) for org in fake.everyone())
    result = {"seconds": seconds, "memory": memory, "requests": sum(len(org.requests()) for org in fake.everyone()),
              "limited": fake.limited, "rotated": sum(before[k] != after[k] for k in before), "sources": len(before), "puts": puts}
    fake.stop()
    return result


def big_overview(folder: Path) -> tuple[float, float]:
    """Time until the overview of 1000 orgs is on screen, with last run's snapshots present and
    500 ms a request; and the five-package import floor, measured in turn."""
    fake = FakeWebex().start()
    files = fleet_files(fake, 1000, 3, 20 * 3600, folder)
    run_measured(["--env-file", *files, "--list"], child_env(**fake.shared_env()))  # leaves the snapshots
    fake.latency = 0.5
    times, floors = [], []
    for _ in range(RUNS):
        times.append(menu_shown_after(["--env-file", *files], child_env(**fake.shared_env())))
        floors.append(timed_import(FLOOR_IMPORTS))
    fake.stop()
    return statistics.median(times), statistics.median(floors)


def year_of_records(folder: Path) -> dict:
    """200,000 record files (100 orgs x 3 sources rotated twice a day for a year, give or take), in
    one org's folder: --history, --history ID and the menu's History, against the import floor."""
    fake = FakeWebex().start()
    source = fake.add_source(audience="Busy source", expires_in=20 * 3600)
    records = folder / "year"
    records.mkdir()
    start = time.time() - 365 * 86400
    for n in range(200_000):
        source_id = source["id"] if n % 100 == 0 else f"src-{n % 300:03d}"
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(start + n * 157)) + f"_{n % 1000000:06d}"
        moment = datetime.fromtimestamp(start + n * 157).astimezone().isoformat()
        (records / f"data_source_rotation_{source_id}_{stamp}.json").write_text(json.dumps(
            {"operation_timestamp": moment, "operation_type": "rotation", "data_source_id": source_id, "success": True}))
    env = write_env(folder / "year.env", {**fake.env(), "WEBEX_RECORDS_DIR": records})
    timings = {"history": [], "one": [], "menu": [], "floor": []}
    for _ in range(RUNS):
        timings["history"].append(run_measured(["--env-file", env, "--history"], child_env())[0])
        timings["one"].append(run_measured(["--env-file", env, "--history", source["id"][:8]], child_env())[0])
        term = Terminal(["--env-file", env], child_env())
        term.wait_for("type to filter")
        started = time.perf_counter()
        term.choose("History of changes")
        term.wait_for(r"History \(\d+ operations\)")
        timings["menu"].append(time.perf_counter() - started)
        term.child.terminate(force=True)
        timings["floor"].append(timed_import(FLOOR_IMPORTS))
    fake.stop()
    return {name: statistics.median(values) for name, values in timings.items()}


def big_fleet_rows(tmp: str) -> list:
    rows = []
    for shape, window in (("a bucket", None), ("a rolling 5 s window", 5.0)):
        limited = big_fleet_rotation(Path(tempfile.mkdtemp(dir=tmp)), None, window)
        budget = 1.2 * (limited["requests"] - limited["limited"]) / 100 + 5
        share = limited["limited"] / limited["requests"]
        everything = limited["rotated"] == limited["sources"]
        rows.append((f"big fleet: 1000 orgs x 3 expiring, 50 ms, limit 6000/min as {shape}, --workers 16",
                     f"{limited['seconds']:.1f} s",
                     (f"{limited['rotated']}/{limited['sources']} rotated; 429s {limited['limited']} of "
                      f"{limited['requests']} requests ({share:.1%} <= 5 %); 1.2 x (requests / limit) + 5 s = "
                      f"{budget:.1f} s: {'met' if everything and share <= 0.05 and limited['seconds'] <= budget else 'NOT met'}")))
    rows.append(("big fleet: peak memory of that rotation", f"{limited['memory']:.0f} MB",
                 f"< 150 MB: {'met' if limited['memory'] < 150 else 'NOT met'}"))
    capped = big_fleet_rotation(Path(tempfile.mkdtemp(dir=tmp)), 5900)
    rows.append(("big fleet: the same with --rate 5900 (just under the limit)", f"{capped['seconds']:.1f} s",
                 (f"{capped['rotated']}/{capped['sources']} rotated; 429s: {capped['limited']}: "
                 f"{'met' if capped['limited'] == 0 and capped['rotated'] == capped['sources'] else 'NOT met'}")))
    seconds, floor = big_overview(Path(tempfile.mkdtemp(dir=tmp)))
    rows.append(("big fleet: overview of 1000 orgs from snapshots, 500 ms a request", f"{seconds * 1000:.0f} ms",
                 (f"five-package floor {floor * 1000:.0f} ms + 300 ms = {(floor + 0.3) * 1000:.0f} ms: "
                 f"{'met' if seconds <= floor + 0.3 else 'NOT met'}")))
    year = year_of_records(Path(tempfile.mkdtemp(dir=tmp)))
    for name, label in (("history", "--history"), ("one", "--history ID"), ("menu", "the menu's History (from the keypress)")):
        rows.append((f"200,000 records: {label}", f"{year[name] * 1000:.0f} ms",
                     f"floor {year['floor'] * 1000:.0f} ms + 500 ms: {'met' if year[name] <= year['floor'] + 0.5 else 'NOT met'}"))
    return rows


def counted_text(counted: dict) -> str:
    rest = counted["tool"] - counted["compile"] - counted["imports"]
    return (f"its imports {counted['imports'] / 1e6:,.0f} M ({'with' if counted['crypto'] else 'without'} pyjwt's crypto) "
            f"+ compiling the script {counted['compile'] / 1e6:,.0f} M + the rest {rest / 1e6:,.0f} M")


def menu_rows(folder: Path) -> tuple[list[tuple[str, str, str]], float]:
    """The time-to-menu lines with their import floors, and the instructions to the menu; with
    BENCH_BASE, the base's script measured the same way beside each. And the five-package floor."""
    rows, measurements, base = [], [], base_script(folder)
    for sources, latency in ((5, 0.0), (500, 0.0), (5, 0.2), (500, 0.2)):
        measured = time_to_menu(sources, latency, folder, base)
        measurements.append(measured)
        rows.append((f"time to menu, {sources} sources, {latency * 1000:.0f} ms round trip",
                     f"{measured['tool'] * 1000:.0f} ms", menu_judgement(measured)))
    floor = statistics.median(m["floor"] for m in measurements)
    rows[:0] = [
        ("import floor, all five packages (python -c)", f"{floor * 1000:.0f} ms", "median over the four lines below"),
        ("import floor, requests alone (python -c)", f"{statistics.median(m['requests_floor'] for m in measurements) * 1000:.0f} ms", ""),
    ]
    if counted := instructions_to_menu(500, Path(tempfile.mkdtemp(dir=folder))):
        rows.append(("instructions to the menu, 500 sources, 0 ms (callgrind, main thread)", f"{counted['tool'] / 1e6:,.0f} M",
                     counted_text(counted)))
        if base:
            counted = instructions_to_menu(500, Path(tempfile.mkdtemp(dir=folder)), base)
            rows.append((f"the same for {BASE}'s script", f"{counted['tool'] / 1e6:,.0f} M", counted_text(counted)))
    return rows, floor


def print_rows(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>22}  {note}")


def main() -> None:
    only = os.environ.get("BENCH_ONLY")  # "big" or "menu": those lines alone (the big fleet takes a few minutes)
    if only in ("big", "menu"):
        with tempfile.TemporaryDirectory() as tmp:
            print_rows(big_fleet_rows(tmp) if only == "big" else menu_rows(Path(tmp))[0])
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows, floor = menu_rows(folder)
        wan = over_a_wan(0.1, Path(tempfile.mkdtemp(dir=tmp)))
        rows.append(
            (
                "time to menu over TLS, 100 ms WAN (proxy: +1 RTT a connection)",
                f"{wan['seconds'] * 1000:.0f} ms",
                f"{wan['requests']} requests on {wan['connections']} connections",
            )
        )
        session = menu_session(folder)
        rows.append(
            (
                "menu session: API requests / connections / most in flight",
                f"{session['api_requests']} / {session['api_connections']} / {session['max_in_flight']}",
                (f"key set fetches: {session['key_requests']}; connections <= in flight: "
                f"{'met' if session['api_connections'] <= session['max_in_flight'] else 'NOT met'}"),
            )
        )
        wall, memory = list_thousand(folder)
        rows.append(
            (
                "--list, 1000 sources, 0 ms",
                f"{wall * 1000:.0f} ms, {memory:.0f} MB peak",
                f"< 1500 ms and < 100 MB: {'met' if wall < 1.5 and memory < 100 else 'NOT met'}",
            )
        )
        sequential, seq_requests = rotation(1, folder)
        pooled, pool_requests = rotation(4, folder)
        rows.append(("rotate 200 sources, 100 ms, sequential (--workers 1)", f"{sequential:.1f} s", f"{seq_requests} requests"))
        rows.append(
            (
                "rotate 200 sources, 100 ms, default pool (4)",
                f"{pooled:.1f} s",
                (f"{pool_requests} requests; speed-up {sequential / pooled:.1f}x: "
                f"{'met' if sequential / pooled >= 3 else 'NOT met'}"),
            )
        )
        fleet = fleet_rotation(Path(tempfile.mkdtemp(dir=tmp)))
        budget = 1.5 * (160 * 0.1 / 8) + 1
        exact = fleet["lists"] == 40 and fleet["puts"] == 120
        rows.append(
            (
                "fleet: 40 orgs x 3 expiring, 100 ms, --workers 8",
                f"{fleet['seconds']:.1f} s",
                (
                    f"{fleet['lists']} lists + {fleet['puts']} PUTs ({'exact' if exact else 'NOT exact'}), "
                    f"{fleet['connections']} connections, "
                    f"{fleet['in_flight']} most in flight; 1.5 x (160 x 0.1 s / 8) + 1 s = {budget:.1f} s: "
                    f"{'met' if fleet['seconds'] <= budget and exact else 'NOT met'}"
                ),
            )
        )
        seconds, requests, in_flight = fleet_overview(Path(tempfile.mkdtemp(dir=tmp)))
        budget = floor + 1.5 * (requests / 4) * 0.1
        rows.append(
            (
                "fleet: overview of 100 orgs, 100 ms, --workers 4",
                f"{seconds:.1f} s",
                (f"{requests} requests, {in_flight} most in flight; floor + 1.5 x ({requests} / 4) x 0.1 s = {budget:.1f} s: "
                f"{'met' if seconds <= budget else 'NOT met'}"),
            )
        )
        rows += big_fleet_rows(tmp)
    print(f"data-sources.py benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {RUNS} runs\n")
    print_rows(rows)
    print(json.dumps({"rows": rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
