"""Output for other tools: --json (keys checked against the README), --check in the Nagios
plugin convention, --metrics in the Prometheus exposition format, and --history."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ROOT, record_files, rotate_first, run_cli
from fake_webex import seed_demo


def readme_keys(marker: str) -> list[str]:
    """The keys of the README table that follows <!-- json:marker -->."""
    text = (ROOT / "README.md").read_text()
    table = text.split(f"<!-- json:{marker} -->", 1)[1].strip().split("\n\n", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE)


# -- --json -------------------------------------------------------------------------------------


def test_list_json_is_only_json_on_stdout_with_the_readmes_keys(fake, env_file):
    seed_demo(fake)
    fake.add_source(audience="Odd", source_id="../odd")
    result = run_cli("--list", "--json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    sources = json.loads(result.stdout)
    assert [s["audience"] for s in sources][:2] == ["Initech", "Globex Voice"]
    assert all(list(s) == [k for k in readme_keys("list") if k != "org"] for s in sources)
    initech = sources[0]
    assert initech["seconds_left"] < 0 and initech["expires_at"].endswith("+00:00") and initech["schema_name"] == "Voice Virtual Agent"
    assert initech["signature"] == "expired (signature valid)" and initech["lifetime_minutes"] == 1440
    odd = next(s for s in sources if s["id"] == "../odd")
    assert any("not a plain identifier" in w for w in odd["warnings"])
    assert "not a plain identifier" in result.stderr  # diagnostics stay on stderr


def test_list_json_keeps_hostile_text_out_of_the_terminal_but_exact_in_the_value(fake, env_file):
    fake.add_source(audience="a\x1b[2J\u202eb")
    result = run_cli("--list", "--json", env_file=env_file)
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert json.loads(result.stdout)[0]["audience"] == "a\x1b[2J\u202eb"


def test_rotation_json_has_one_object_per_result_and_a_summary_with_the_readmes_keys(fake, env_file):
    seed_demo(fake)
    result = run_cli("--rotate-expiring", "60", "--json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert sorted(answer) == ["results", "summary"]
    assert all(list(r) == [k for k in readme_keys("rotation") if k != "org"] for r in answer["results"])
    assert list(answer["summary"]) == readme_keys("summary")
    assert sorted(r["result"] for r in answer["results"]) == ["rotated", "rotated"]
    assert answer["summary"]["rotated"] == 2 and answer["summary"]["failed"] == 0
    everything = json.loads(run_cli("--rotate", "all", "--json", env_file=env_file).stdout)
    assert [r["error"] for r in everything["results"] if r["result"] == "skipped"] == ["disabled"]


def test_json_goes_only_with_the_flags_that_print_data(fake, env_file):
    for args in (["--json"], ["--json", "--metrics"]):
        result = run_cli(*args, env_file=env_file)
        assert result.returncode == 2 and "--json goes with" in result.stderr
    probe = run_cli("--json", "--check", "60", env_file=env_file)  # a monitoring probe answers in its own convention
    assert probe.returncode == 3 and probe.stdout.startswith("UNKNOWN - bad usage: --json goes with")
    assert fake.seen == []


@pytest.mark.parametrize("args", [["--check", "-5"], ["--check", "soon"], ["--check"]])
def test_bad_usage_of_the_check_is_unknown_exit_3(fake, env_file, args):
    result = run_cli(*args, env_file=env_file)
    assert result.returncode == 3 and result.stdout.startswith("UNKNOWN - bad usage: ") and len(result.stdout.splitlines()) == 1


def test_the_unknown_line_says_why_each_org_could_not_be_read(fake, env_file):
    fake.expire_access_token()
    result = run_cli("--check", "60", env_file=env_file)
    assert result.returncode == 3 and "1 org(s) unreadable (default: token refused)" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--list", "--lifetime", "60"], "--lifetime goes with --rotate, --rotate-expiring, --register or --update"),
    (["--history", "--workers", "4"], "--workers goes with the menu, --list, --rotate"),
    (["--history", "--save-list"], "--save-list goes with the menu, --list, --rotate"),
])
def test_a_flag_that_does_nothing_in_the_chosen_mode_is_bad_usage(fake, env_file, args, message):
    result = run_cli(*args, env_file=env_file)
    assert result.returncode == 2 and message in result.stderr and fake.seen == []


def test_history_of_an_id_with_no_record_says_so_and_exits_1(fake, env_file, records):
    source = fake.add_source(expires_in=600)
    assert run_cli("--rotate", source["id"], env_file=env_file).returncode == 0
    result = run_cli("--history", "zzzz", env_file=env_file)
    assert result.returncode == 1 and "No record names a data source whose id starts with 'zzzz'" in result.stderr
    assert "No records yet" not in result.stdout


def test_fleet_json_names_the_org_of_every_source(fake, tmp_path, records):
    from conftest import write_env

    globex = fake.add_org()
    globex.add_source(audience="G")
    fake.add_source(audience="A")
    files = [
        write_env(tmp_path / f"{name}.env", {"WEBEX_ACCESS_TOKEN": org.access_token, "WEBEX_RECORDS_DIR": records})
        for name, org in (("acme", fake), ("globex", globex))
    ]
    result = run_cli("--env-file", *files, "--list", "--json", **fake.shared_env())
    sources = json.loads(result.stdout)
    assert {(s["org"], s["audience"]) for s in sources} == {("acme", "A"), ("globex", "G")}
    assert all(list(s) == readme_keys("list") for s in sources)


# -- --check ------------------------------------------------------------------------------------


def test_check_is_ok_when_nothing_expires_within_the_window(fake, env_file):
    fake.add_source(audience="Fine", expires_in=5 * 3600)
    result = run_cli("--check", "60", env_file=env_file)
    assert result.returncode == 0
    assert re.fullmatch(
        r"OK - 1 active source\(s\), none expires within 60m \| "
        r"expired=0 expiring=0 invalid=0 sources=1 unreadable_orgs=0 unknown_expiry=0\n",
        result.stdout,
    )


def test_check_warns_when_an_active_source_expires_within_the_window(fake, env_file):
    fake.add_source(audience="Fine", expires_in=5 * 3600)
    fake.add_source(audience="Soon", expires_in=1800)
    fake.add_source(audience="Paused", expires_in=-60, status="disabled", error_message="paused")  # not judged
    result = run_cli("--check", "60", env_file=env_file)
    assert result.returncode == 1
    assert result.stdout == "WARNING - 1 within 60m (Soon) | expired=0 expiring=1 invalid=0 sources=3 unreadable_orgs=0 unknown_expiry=0\n"


def test_check_is_critical_for_an_expired_source_or_an_invalid_signature(fake, env_file):
    fake.add_source(audience="Initech", expires_in=-600)
    fake.add_source(audience="Soon", expires_in=1800)
    assert run_cli("--check", "60", env_file=env_file).stdout.startswith("CRITICAL - 1 expired (Initech), 1 within 60m (Soon) |")
    fake.sources.clear()
    forged = fake.add_source(audience="Forged")
    header, payload, _ = forged["jwsToken"].split(".")
    forged["jwsToken"] = f"{header}.{payload}.{'A' * 342}"
    result = run_cli("--check", "60", env_file=env_file)
    assert result.returncode == 2 and "1 invalid signature (Forged)" in result.stdout


def test_check_is_unknown_when_webex_cannot_be_read_or_the_settings_are_wrong(fake, env_file, tmp_path):
    fake.fail("GET", "/v1/dataSources/", 500, times=10)
    result = run_cli("--check", "60", env_file=env_file)
    assert result.returncode == 3 and result.stdout.startswith("UNKNOWN - 1 org(s) unreadable") and len(result.stdout.splitlines()) == 1
    missing = run_cli("--check", "60", env_file=tmp_path / "nope.env")
    assert missing.returncode == 3 and missing.stdout.startswith("UNKNOWN - The env file")


# -- --metrics ----------------------------------------------------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"({METRIC_NAME})(?:\{{{LABEL}(?:,{LABEL})*\}})? (\S+)")


def check_exposition(text: str) -> dict[str, list[str]]:
    """The text format's rules, line by line: HELP and TYPE once per family, before its
    samples; samples named after a declared family; values that parse as floats; one final newline."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    families, current = {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert re.fullmatch(METRIC_NAME, name) and name not in families
            families[name], current = [], name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name == current and kind in ("gauge", "counter", "untyped")
        else:
            match = SAMPLE.fullmatch(line)
            assert match, f"not a sample line: {line!r}"
            assert match.group(1) == current
            assert math.isfinite(float(match.group(2)))
            families[current].append(line)
    return families


def test_metrics_follow_the_exposition_format_and_say_what_monitoring_needs(fake, env_file):
    from prometheus_client.parser import text_string_to_metric_families

    seed_demo(fake)
    fake.add_source(audience='quote " back\\slash new\nline \x1b[2J')
    result = run_cli("--metrics", env_file=env_file)
    assert result.returncode == 0, result.stderr
    families = check_exposition(result.stdout)
    assert len(families["byods_source_expiry_timestamp_seconds"]) == 6 and len(families["byods_org_up"]) == 1
    assert "\x1b" not in result.stdout
    parsed = {family.name: family for family in text_string_to_metric_families(result.stdout)}
    expiry = {s.labels["audience"]: s.value for s in parsed["byods_source_expiry_timestamp_seconds"].samples}
    initech = next(s for s in fake.sources.values() if s["audience"] == "Initech")
    assert expiry["Initech"] == pytest.approx(initech["exp"], abs=1)
    assert 'quote " back\\slash new\\nline \\x1b[2J' in expiry  # made safe, then escaped and parsed back
    active = {s.labels["audience"]: s.value for s in parsed["byods_source_active"].samples}
    assert active["Umbrella"] == 0 and active["Initech"] == 1
    assert {s.value for s in parsed["byods_source_signature_valid"].samples} == {1.0}
    assert [s.value for s in parsed["byods_org_sources"].samples] == [6]


def test_metrics_mark_an_org_that_could_not_be_read_as_down_and_exit_1(fake, env_file):
    fake.fail("GET", "/v1/dataSources/", 500, times=10)
    result = run_cli("--metrics", env_file=env_file)
    assert result.returncode == 1
    families = check_exposition(result.stdout)
    assert families["byods_org_up"] == [f'byods_org_up{{org="{env_file.name.removesuffix(".env") or "default"}"}} 0']


# -- --history ----------------------------------------------------------------------------------


def test_history_lists_the_records_newest_first_and_filters_by_id(fake, env_file, records):
    first, second = fake.add_source(audience="First", expires_in=60), fake.add_source(audience="Second", expires_in=60)
    assert run_cli("--rotate", first["id"], env_file=env_file).returncode == 0
    assert run_cli("--rotate", second["id"], env_file=env_file).returncode == 0
    fake.fail("PUT", r"/v1/dataSources/.*", 400)
    assert run_cli("--rotate", first["id"], env_file=env_file).returncode == 1
    requests_before = len(fake.seen)
    entries = json.loads(run_cli("--history", "--json", env_file=env_file).stdout)
    assert len(fake.seen) == requests_before  # history asks nothing of Webex
    assert [(e["audience"], e["success"]) for e in entries] == [("First", False), ("Second", True), ("First", True)]
    assert all(list(e) == readme_keys("history") for e in entries)
    assert entries[0]["status_code"] == 400 and entries[0]["tracking_id"].startswith("ROUTER_")
    only_first = json.loads(run_cli("--history", first["id"][:6], "--json", env_file=env_file).stdout)
    assert [e["data_source_id"] for e in only_first] == [first["id"], first["id"]]
    table = run_cli("--history", env_file=env_file, COLUMNS="220")
    assert table.returncode == 0
    lines = [line for line in table.stdout.splitlines() if "rotation" in line]
    assert len(lines) == 3 and "First" in lines[0] and "failed (400)" in lines[0] and "ROUTER_" in lines[1]


def test_history_skips_and_counts_corrupt_and_foreign_files(fake, env_file, records):
    source = fake.add_source(audience="Kept", expires_in=60)
    assert run_cli("--rotate", source["id"], env_file=env_file).returncode == 0
    (records / "data_source_update_x_1.json").write_text("{not json")
    (records / "data_source_rotation_y_2.json").write_text('{"hello": "not ours"}')
    (records / "data_source_delete_z_3.json").write_bytes(b"\xff\xfe")
    (records / "data_sources_list_20260101.json").write_text('{"count": 0}')  # a snapshot, not an operation
    result = run_cli("--history", env_file=env_file, COLUMNS="200")
    assert result.returncode == 0
    assert "\tKept\t" in result.stdout and "3 file(s) in the records folder could not be read" in result.stderr
    as_json = run_cli("--history", "--json", env_file=env_file)
    assert len(json.loads(as_json.stdout)) == 1 and "3 file(s)" in as_json.stderr
    assert len(record_files(records)) == 5


def test_history_in_the_menu_shows_this_orgs_operations(fake, terminal):
    source = fake.add_source(audience="Acme", expires_in=60)
    term = terminal()
    rotate_first(term)
    term.wait_for("Record:")
    term.choose("History of changes")
    screen = term.wait_for(r"History \(1 operations\)")
    assert re.search(rf"rotation\s+│\s+Acme {source['id'][:8]}\s+│\s+ok\s+│\s+ROUTER_", screen)
    term.choose("Quit")
    assert term.exit_code() == 0


# -- a zero-setup run ---------------------------------------------------------------------------


def inline_metadata(path=ROOT / "data-sources.py") -> dict:
    """A script's PEP 723 block, read the way the PEP's reference implementation does."""
    import tomllib

    text = path.read_text()
    [block] = [
        m for m in re.finditer(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$", text) if m["type"] == "script"
    ]
    content = "".join(line[2:] if line.startswith("# ") else line[1:] for line in block["content"].splitlines(keepends=True))
    return tomllib.loads(content)


def test_the_inline_script_metadata_matches_requirements_txt(ds):
    metadata = inline_metadata()
    requirements = [
        line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert sorted(metadata["dependencies"]) == sorted(requirements)
    assert metadata["requires-python"] == ">=3.11"
    assert (ROOT / "data-sources.py").read_text().startswith("#!/usr/bin/env python3\n# /// script\n")
    assert inline_metadata(ROOT / "tests" / "fake_webex.py") == metadata  # uv run tests/fake_webex.py --demo runs the tool too


def test_on_python_older_than_3_11_the_script_stops_with_one_sentence():
    probe = (f"import sys; sys.version_info = (3, 10, 12); sys.version = '3.10.12 (main)'; sys.argv = [{str(ROOT / 'data-sources.py')!r}]; "
             f"exec(compile(open({str(ROOT / 'data-sources.py')!r}).read(), 'data-sources.py', 'exec'), {{'__name__': '__main__'}})")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and result.stderr.startswith("data-sources.py needs Python 3.11 or newer; this is Python 3.10.12.")
    assert "Traceback" not in result.stderr


def test_the_demo_opens_the_tool_on_the_fake_and_stops_the_fake_when_the_tool_exits(tmp_path):
    from conftest import OUTPUTS, Terminal, child_env

    term = Terminal(["--demo"], child_env(TMPDIR=tmp_path), script=ROOT / "tests" / "fake_webex.py")  # its folder: in tmp_path
    try:
        screen = term.wait_for(r"type to filter[\s\S]*Quit")
        assert "Initech" in screen and "Globex Voice" in screen and "Umbrella" in screen
        term.choose("Quit")
        term.wait_for(r"The fake Webex API has stopped, and the demo's files are gone\.")
        assert term.exit_code() == 0  # the demo process, and with it the fake's servers, ended with the tool
        assert list(tmp_path.iterdir()) == []  # nothing left in the system's temp folder
    finally:
        OUTPUTS.append(term.transcript)
        if term.child.isalive():
            term.child.terminate(force=True)


# -- a start ahead ------------------------------------------------------------------------------


def test_the_startup_fetch_is_on_its_way_before_rich_is_imported(fake, env_file, tmp_path):
    """When rich's import begins, the script waits (up to 10 s) for the fake to have the list
    request: it comes only if the fetch was sent before, and the run goes on either way."""
    from conftest import SCRIPT

    arrived = tmp_path / "arrived"
    fake.fail("GET", "/v1/dataSources/", None, on_arrival=arrived.touch)
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import pathlib, runpy, sys, time\n"
        "seen = []\n"
        "def hook(event, args):\n"
        "    if event == 'import' and args[0] == 'rich' and not seen:\n"
        "        seen.append(1)\n"
        f"        deadline, marker = time.monotonic() + 10, pathlib.Path({str(arrived)!r})\n"
        "        while not marker.exists() and time.monotonic() < deadline:\n"
        "            time.sleep(0.01)\n"
        "        print('list request in when rich began:', marker.exists(), file=sys.stderr, flush=True)\n"
        "sys.addaudithook(hook)\n"
        f"sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    result = run_cli("--list", env_file=env_file, script=driver)
    assert "list request in when rich began: True" in result.stderr and result.returncode == 0


def write_records(records, count: int, start: datetime, step: timedelta, source_id: str = "src-1") -> list:
    """count rotation records of source_id, one step apart from start (named as the tool names them)."""
    records.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        moment = (start + n * step).astimezone()
        path = records / f"data_source_rotation_{source_id}_{moment.strftime('%Y%m%d_%H%M%S_%f')}.json"
        path.write_text(json.dumps({"operation_timestamp": moment.isoformat(), "operation_type": "rotation", "data_source_id": source_id,
                                    "configuration": {"audience": f"A{n}"}, "api_response": {"status_code": 200}, "success": True}))
        os.utime(path, (moment.timestamp(), moment.timestamp()))  # written when its name says, as the tool's are
        paths.append(path)
    return paths


def test_history_shows_the_newest_50_and_never_opens_the_files_it_does_not_show(fake, env_file, records):
    paths = write_records(records, 60, datetime.now(UTC) - timedelta(days=3), timedelta(minutes=1))
    oldest = paths[0].stat().st_mtime
    paths[0].write_text("{ not json: this file is never opened")  # the oldest, beyond the newest 50
    os.utime(paths[0], (oldest, oldest))
    result = run_cli("--history", "--json", env_file=env_file)
    entries = json.loads(result.stdout)
    assert result.returncode == 0 and len(entries) == 50 and entries[0]["audience"] == "A59" and entries[-1]["audience"] == "A10"
    assert "could not be read" not in result.stderr and "The newest 50 of 60" in result.stderr
    everything = json.loads(run_cli("--history", "--json", "--limit", "0", env_file=env_file).stdout)
    assert len(everything) == 59  # the broken one is read now, and skipped


def test_history_of_records_written_within_one_clock_tick_keeps_the_newest_by_name(fake, env_file, records):
    """A bulk rotation writes many records before the file system's clock moves on: their names decide."""
    paths = write_records(records, 8, datetime.now(UTC) - timedelta(hours=1), timedelta(milliseconds=1))
    tick = paths[0].stat().st_mtime
    for path in paths:
        os.utime(path, (tick, tick))
    result = run_cli("--history", "--json", "--limit", "3", env_file=env_file)
    assert result.returncode == 0 and [e["audience"] for e in json.loads(result.stdout)] == ["A7", "A6", "A5"]


def test_history_since_a_duration_and_of_one_source_reads_only_what_it_shows(fake, env_file, records):
    now = datetime.now(UTC)
    write_records(records, 5, now - timedelta(days=10), timedelta(hours=1), "old-src")
    write_records(records, 3, now - timedelta(hours=2), timedelta(minutes=10), "new-src")
    recent = json.loads(run_cli("--history", "--json", "--since", "12h", env_file=env_file).stdout)
    assert [e["data_source_id"] for e in recent] == ["new-src"] * 3
    (records / "data_source_rotation_other-src_20260101_000000_000000.json").write_text("{ never opened for new-src")
    one = run_cli("--history", "new", "--json", env_file=env_file)
    assert len(json.loads(one.stdout)) == 3 and "could not be read" not in one.stderr


def test_limit_and_since_go_with_history_only(fake, env_file):
    result = run_cli("--list", "--since", "7d", env_file=env_file)
    assert result.returncode == 2 and "--since goes with --history" in result.stderr
