"""The desk: the first screen and every result right on the terminals people have, 80x24 up,
read off the rendered screen (pyte) at the moment the question is asked; messages that wrap at
spaces; and what a newcomer meets in the first hour (pasted tokens, no virtual environment, the
demo, typos)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import (
    OUTPUTS,
    PAUSE,
    ROOT,
    SCRIPT,
    Terminal,
    child_env,
    menu_ready,
    record_files,
    rotate_first,
    run_cli,
    write_env,
)
from fake_webex import seed_demo

SIZES = [(80, 24), (100, 30), (120, 40)]
WHOLE_EXPIRY = r"(?:in|expired) \d+[dhms](?: \d+[hms])?(?: ago)?"
DEMO = ROOT / "tests" / "fake_webex.py"


def sized(args, cols, rows, script=SCRIPT, **extra):
    return Terminal(args, child_env(COLUMNS=cols, LINES=rows, **extra), rows=rows, cols=cols, script=script)


@pytest.fixture
def sized_terminal(env_file):
    """The menu on a terminal of a given size; closed afterwards."""
    started = []

    def start(cols, rows, *args):
        term = sized(["--env-file", env_file, *args], cols, rows)
        started.append(term)
        return term

    yield start
    for term in started:
        OUTPUTS.append(term.transcript)
        if term.child.isalive():
            term.child.terminate(force=True)


def seed(fake, count: int) -> list[dict]:
    """count sources, most urgent first: one expired, then one every half hour; the sixth disabled."""
    sources = [fake.add_source(audience=f"Customer {n:03d}", expires_in=n * 1800 - 900 + 30,
                               status="disabled" if n == 5 else "active", error_message="paused" if n == 5 else None)
               for n in range(count)]
    return sorted(sources, key=lambda s: s["exp"])


def newest(screen: str, marker: str) -> str:
    """What the screen shows from the last time marker was drawn on."""
    return marker + screen.split(marker)[-1]


def source_lines(screen: str) -> list[str]:
    return [line for line in screen.splitlines() if re.match(r"^ (»|\s) [0-9a-f]{8}  ", line)]


# -- the first screen -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 5, 6, 7, 18, 200])
@pytest.mark.parametrize(("cols", "rows"), SIZES)
def test_the_first_screen_shows_the_count_and_the_most_urgent_whole_with_the_question(fake, sized_terminal, cols, rows, count):
    expected = seed(fake, count)
    term = sized_terminal(cols, rows)
    term.menu()
    screen = term.wait_for(r"type to filter[\s\S]*(Quit|more: type to filter)")  # drawn down to the actions, or past them
    assert f"Data sources ({count})" in screen and "Choose a data source or an action" in screen
    assert "┃ ID" not in screen and "┏" not in screen  # no table, so never a header without rows
    assert ("No data sources yet" in screen) == (count == 0)
    lines = source_lines(screen)
    assert len(lines) >= min(count, 3) and len(lines) <= count
    for source, line in zip(expected, lines, strict=False):  # trouble first, each whole on its line
        assert re.search(rf"{source['id'][:8]}  +{source['status']} +{WHOLE_EXPIRY}  +Customer", line), line
    if count:
        assert "type to filter" in screen and ("Quit" in screen or count > rows)
    term.press("ctrl-c")
    assert term.exit_code() == 130


def test_the_menu_finds_any_of_200_sources_by_typing_and_keeps_the_actions_on_the_first_screen(fake, sized_terminal):
    seed(fake, 200)
    term = sized_terminal(80, 24)
    screen = term.wait_for(r"Register a new data source[\s\S]*Quit[\s\S]*more: type to filter", after_last_key=True)
    assert "Register a new data source" in screen and "Quit" in screen and "more: type to filter" in screen
    term.choose("Customer 199")
    assert "Customer 199" in term.wait_for(r"Update this data source\?")
    term.press("n")
    term.choose("Quit")
    assert term.exit_code() == 0


def test_enter_on_a_filter_that_matches_no_source_or_only_the_heading_asks_again(fake, sized_terminal):
    seed(fake, 60)
    term = sized_terminal(80, 24)
    for typed in ("zzz", "Stat", "more"):  # nothing; the column heading; the "more" line
        term.menu()
        term.type(typed)
        term.press("enter")
        assert "unexpected" not in term.wait_for(r"type to filter", after_last_key=True)
    term.choose("Quit")
    assert term.exit_code() == 0


def test_the_overview_shows_each_org_on_one_line_with_the_question(app, fake):
    for number in range(12):
        org = fake if number == 0 else fake.add_org()
        org.add_source(audience=f"Org {number} source", expires_in=number * 3600 - 600)
        app.org(f"customer-{number:02d}", org)
    term = Terminal(["--env-file", *app.env_files()], child_env(COLUMNS=80, LINES=24), rows=24, cols=80, script=app.script)
    app.terminals.append(term)
    screen = menu_ready(term)
    assert "Customer orgs (12)" in screen and "Choose an org or an action" in screen and "Quit" in screen
    assert re.search(r"customer-00 +1 +1 +0 +expired 10m ago +ok", screen)  # the most in need on top
    assert re.search(r"customer-01 +1 +0 +1 +in (49|50)m +ok", screen)
    term.choose("Quit")
    assert term.exit_code() == 0


# -- results stay on screen ---------------------------------------------------------------------


def test_history_stays_on_screen_until_a_key_at_80x24(fake, sized_terminal):
    for n in range(30):
        fake.add_source(audience=f"Org {n:02d}", expires_in=600 + n if n < 2 else 20 * 3600)
    term = sized_terminal(80, 24)
    rotate_first(term)  # all 2 expiring within the hour
    term.wait_for(PAUSE, after_last_key=True)
    term.choose("History of changes")
    screen = term.wait_for(PAUSE, after_last_key=True)
    assert "History (2 operations)" in screen and len(re.findall(r"│ rotation +│ Org \d\d [0-9a-f]{8} +│ ok ", screen)) == 2
    assert "Choose a data source" not in screen.split("History")[-1]
    term.choose("Quit")
    assert term.exit_code() == 0


def test_done_and_the_records_path_stay_on_screen_with_60_sources(fake, sized_terminal, records):
    for n in range(60):
        fake.add_source(audience=f"Org {n:02d}", expires_in=600 if n == 0 else 20 * 3600 + n)
    term = sized_terminal(80, 24)
    rotate_first(term)
    screen = term.wait_for(PAUSE, after_last_key=True)
    [record] = record_files(records)
    assert "Done: rotation of" in " ".join(screen.split()) and f"Record:{record}" in "".join(screen.split())  # a long path folds
    term.choose("Quit")
    assert term.exit_code() == 0


def test_a_schemas_details_stay_on_screen_and_cancelled_too(fake, sized_terminal):
    term = sized_terminal(80, 24)
    term.choose("Schemas")
    term.wait_for("Show which schema")
    term.press("enter")
    screen = term.wait_for(PAUSE, after_last_key=True)
    assert re.search(r'Schema [0-9a-f-]{36}[\s\S]*"serviceType": "Voice Virtual Agent"', screen)
    term.choose("Register")
    term.wait_for(r"\? Audience", after_last_key=True)
    term.press("ctrl-c")
    assert "Cancelled: nothing was sent." in term.wait_for(PAUSE, after_last_key=True)
    term.choose("Quit")
    assert term.exit_code() == 0


def test_a_sources_details_at_80x24_show_its_id_status_url_and_expiry_with_the_question(fake, sized_terminal):
    source = fake.add_source(audience="Acme", subject="calls", url="https://dap.example.com/" + "deep/" * 8, expires_in=5000)
    term = sized_terminal(80, 24)
    term.choose("Acme")
    screen = term.wait_for(r"Update this data source\? \(y/N\)")
    flat = "".join(line.strip("│ ") for line in screen.splitlines())
    assert source["id"] in flat and source["url"] in flat and re.search(r"Status +active", screen)
    assert re.search(rf"Expires +\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d \w+ +\({WHOLE_EXPIRY}\)", screen)
    term.press("n")
    term.choose("Quit")
    assert term.exit_code() == 0


# -- messages -----------------------------------------------------------------------------------


def test_at_a_terminal_messages_wrap_at_spaces_and_piped_they_are_not_wrapped(tmp_path):
    env = write_env(tmp_path / ".env", {"WEBEX_ACCESS_TOKEN": "", "WEBEX_CLIENT_ID": "x"})
    piped = run_cli("--list", env_file=env)
    [message] = piped.stderr.splitlines()  # one line, however long
    for cols in (80, 120):
        term = sized(["--env-file", env, "--list"], cols, 24)
        assert term.exit_code() == 2
        lines = [line.rstrip() for line in term.text().splitlines() if line.strip()]
        assert " ".join(lines) == message  # broken only where there was a space
        assert len(lines) > 1


def test_the_command_to_copy_stands_whole_on_its_own_line(app, fake):
    fake.add_source(audience="Acme", expires_in=600)
    write_env(app.root / ".env", {**fake.env(), "WEBEX_RECORDS_DIR": "records"})
    term = Terminal([], child_env(COLUMNS=80, LINES=24), rows=24, cols=80, script=app.script)
    app.terminals.append(term)
    screen = term.menu()
    assert "  python data-sources.py --rotate-expiring 60" in screen.splitlines()
    term.choose("Quit")
    assert term.exit_code() == 0


def test_history_piped_is_tab_separated_with_whole_values(fake, env_file):
    source = fake.add_source(audience="A Customer With A Long Name", expires_in=60)
    assert run_cli("--rotate", source["id"], env_file=env_file).returncode == 0
    result = run_cli("--history", env_file=env_file, COLUMNS="80")
    header, row = result.stdout.splitlines()
    assert header.split("\t") == ["time", "operation", "id", "audience", "result", "tracking_id"]
    time, operation, source_id, audience, outcome, tracking = row.split("\t")
    assert (operation, source_id, audience, outcome) == ("rotation", source["id"], "A Customer With A Long Name", "ok")
    assert re.fullmatch(r"ROUTER_[0-9A-F]{24}", tracking) and time.startswith("20")


# -- what is due --------------------------------------------------------------------------------


def test_a_short_lived_source_just_rotated_is_not_due_and_an_unknown_expiry_is_named(fake, terminal):
    fake.add_source(audience="Hourly", lifetime=60, expires_in=20 * 60)
    term = terminal()
    screen = term.menu()
    assert "1 expiring within the hour" in screen and "choose Rotate" in screen
    rotate_first(term)
    screen = newest(term.menu(), "? Data sources")
    assert "Data sources (1)\n" in screen and "choose Rotate" not in screen and "expiring within the hour" not in screen
    fake.add_source(audience="Unknown")
    fake.list_fields = ("id", "status", "url", "schemaId")  # no token, no expiry: nothing is known of it
    term.choose("Refresh")
    screen = newest(term.menu(), "? Data sources")
    assert re.search(r"2 active source\(s\) with an unknown expiry \([0-9a-f]{8}, [0-9a-f]{8}\): see the details", screen)
    assert "choose Rotate" not in screen
    term.choose("Quit")
    assert term.exit_code() == 0


# -- pasted tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize(("token", "named"), [("“abc123”", "“ (U+201C LEFT DOUBLE QUOTATION MARK)"),
                                              ("abc123…", "… (U+2026 HORIZONTAL ELLIPSIS)")])
def test_a_pasted_character_in_the_token_is_named_with_the_token_and_the_file(fake, tmp_path, token, named):
    env = write_env(tmp_path / ".env", {**fake.env(), "WEBEX_ACCESS_TOKEN": token})
    result = run_cli("--list", env_file=env)
    assert result.returncode == 2 and result.stdout == ""
    assert f"WEBEX_ACCESS_TOKEN in {env} holds {named}, which no token does" in result.stderr
    assert "unexpected" not in result.stderr and fake.requests() == []
    check = run_cli("--check", "60", env_file=env)
    assert check.returncode == 3 and f"UNKNOWN - WEBEX_ACCESS_TOKEN in {env} holds {named}" in check.stdout


def test_a_pasted_client_secret_with_a_quote_is_named_too(fake, tmp_path):
    env = write_env(tmp_path / ".env", {**fake.env(), "WEBEX_CLIENT_SECRET": "‘s3cr3t’"})
    result = run_cli("--list", env_file=env)
    assert result.returncode == 2 and f"WEBEX_CLIENT_SECRET in {env} holds ‘ (U+2018 LEFT SINGLE QUOTATION MARK)" in result.stderr


def test_the_replace_prompt_judges_a_token_as_a_token(fake, terminal, env_file):
    term = terminal()
    term.choose("Replace the access token")
    term.wait_for("input hidden")
    term.type("abc def")
    term.press("enter")
    assert "It holds a space, which no token does" in term.wait_for("which no token does", after_last_key=True)
    assert "nonce" not in term.text().lower()
    term.press("ctrl-c")
    term.choose("Quit")
    assert term.exit_code() == 0


# -- setting up, the demo, typos ----------------------------------------------------------------


def test_without_the_packages_the_script_says_how_to_set_up_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-S", str(SCRIPT), "--list"], capture_output=True, text=True, env=child_env(),
                            cwd=tmp_path, check=False)  # -S: no site-packages, as a Python outside the virtual environment
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "needs requests, python-dotenv, rich, questionary, pyjwt" in line and "python3 -m venv .venv" in line


def demo(tmp_path, *args):
    result = subprocess.run([sys.executable, str(DEMO), "--demo", *args], capture_output=True, text=True, check=False,
                            env=child_env(TMPDIR=tmp_path), stdin=subprocess.DEVNULL, timeout=60)
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def test_the_demos_stdout_is_the_tools_its_ids_are_fixed_and_it_leaves_nothing_behind(tmp_path):
    first, second = demo(tmp_path, "--list", "--json"), demo(tmp_path, "--list", "--json")
    assert first.returncode == 0 and len(json.loads(first.stdout)) == 5
    assert [s["id"] for s in json.loads(first.stdout)] == [s["id"] for s in json.loads(second.stdout)]
    assert [s["expires_at"] is not None for s in json.loads(first.stdout)] == [True] * 5
    assert "The fake Webex API has stopped" in first.stderr and list(tmp_path.iterdir()) == []


def test_the_demo_can_onboard_and_offboard(tmp_path):
    newcomer = re.search(r"a customer org to onboard is ([0-9a-f-]{36})", demo(tmp_path, "--list").stderr)[1]
    onboarded = demo(tmp_path, "--onboard", newcomer, "--org-name", "initech")
    assert onboarded.returncode == 0 and "initech is onboarded" in onboarded.stdout
    offboarded = demo(tmp_path, "--offboard", "hooli", "--yes")
    assert offboarded.returncode == 0 and "hooli is offboarded" in offboarded.stdout
    fleet = demo(tmp_path, "--env-file", "orgs/*.env", "--list")
    assert fleet.returncode == 0 and {line.split("\t")[0] for line in fleet.stdout.splitlines()[1:]} == {"acme", "hooli"}


def test_a_typo_in_a_flag_suggests_the_nearest_in_one_line(tmp_path):
    result = run_cli("--lsit")
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "data-sources.py: error: unknown flag --lsit: did you mean --list? (--help lists every flag)"]
    unrelated = run_cli("--frobnicate")
    assert unrelated.returncode == 2 and unrelated.stderr.splitlines() == [
        "data-sources.py: error: unknown flag --frobnicate (--help lists every flag)"]


def test_a_pattern_no_shell_expanded_is_expanded_and_one_that_matches_nothing_says_so(fake, tmp_path):
    (tmp_path / "orgs").mkdir()
    write_env(tmp_path / "orgs" / "acme.env", {"WEBEX_ACCESS_TOKEN": fake.access_token, "WEBEX_RECORDS_DIR": tmp_path / "r"})
    listed = run_cli("--env-file", str(tmp_path / "orgs" / "*.env"), "--list", **fake.shared_env())
    assert listed.returncode == 0 and listed.stdout.startswith("id\t")
    result = run_cli("--env-file", str(tmp_path / "nomatch" / "*.env"), "--list")
    assert result.returncode == 2 and f"No file matches {tmp_path / 'nomatch' / '*.env'}" in result.stderr
    assert "Copy .env.sample" not in result.stderr


def test_a_three_character_prefix_is_too_short(fake, env_file):
    fake.add_source(audience="Acme")
    result = run_cli("--rotate", "abc", env_file=env_file)
    assert result.returncode == 2 and "'abc' is too short a prefix: give 4 or more characters" in result.stderr
    assert fake.requests("PUT") == []


def test_a_refused_token_prints_nothing_on_stdout_that_reads_as_an_empty_success(fake, env_file):
    fake.add_source(audience="Acme", expires_in=600)
    fake.expire_access_token()
    for args in (["--rotate-expiring", "60"], ["--rotate-expiring", "60", "--json"], ["--list", "--json"], ["--list"]):
        result = run_cli(*args, env_file=env_file)
        assert result.returncode == 2 and result.stdout == "" and "Webex answered 401" in result.stderr, args
    metrics = run_cli("--metrics", env_file=env_file)
    assert metrics.returncode == 1 and 'byods_org_up{org="default"} 0' in metrics.stdout


def test_a_records_folder_the_user_cannot_read_is_that_orgs_failure_in_a_sentence(ds, fake, tmp_path, monkeypatch):
    def denied(org):  # what a folder of another user's gives (root, which runs the tests, reads every folder)
        raise PermissionError(13, "Permission denied", str(org.pending_dir))

    settings = ds.Settings(env_file=tmp_path / ".env", tokens=ds.Tokens(fake.access_token), base_url=fake.base_url,
                           records_dir=tmp_path / "records")
    org = ds.Fleet([], ds.Connections()).org_for("default", settings)
    (org.pending_dir / "x.json").parent.mkdir(parents=True)
    monkeypatch.setattr(ds.Org, "pending", denied)
    org.fetch()
    assert isinstance(org.problem, ds.RecordError) and "unexpected" not in org.problem.message
    assert f"Cannot use {org.pending_dir} (Permission denied): whoever runs the tool must be able to read" in org.problem.message


def test_the_url_column_at_80_columns_is_left_out_rather_than_cut_to_nothing(fake, env_file):
    seed_demo(fake)
    term = sized(["--env-file", env_file, "--list"], 80, 40)
    assert term.exit_code() == 0
    screen = term.text()
    assert "https:/…" not in screen and "https://…" not in screen
    assert re.search(r"│ https://dap\.example\.com/\S* *│|Left out to fit: .*URL", " ".join(screen.split()))


def test_update_confirms_with_enter_and_the_error_message_says_what_it_is_for_before_it_is_asked(fake, terminal):
    source = fake.add_source(audience="Acme")
    term = terminal()
    term.choose("Acme")
    term.wait_for(r"Update this data source\?")
    term.press("y")
    for label in ("Audience", "Subject", "URL", "Token lifetime", "Nonce"):
        term.wait_for(rf"\? {label}", after_last_key=True)
        term.press("enter")
    term.wait_for(r"\? Status:", after_last_key=True)
    term.press("down", "enter")
    screen = term.wait_for(r"\? Error message:", after_last_key=True)
    assert "Control Hub shows it to the customer's admin" in screen
    term.type("Paused")
    term.press("enter")
    term.wait_for(r"Send this update to [0-9a-f]{8}\? \(Y/n\)")
    term.press("enter")
    term.wait_for("Done: update")
    assert fake.sources[source["id"]]["status"] == "disabled"
    term.choose("Quit")
    assert term.exit_code() == 0


def test_the_schemas_table_that_leaves_a_column_out_points_at_the_schemas_flag(ds):
    import io

    buffer = io.StringIO()
    screen = ds.Screen(file=buffer, width=60)
    schemas = [{"id": "5f0c1c9e-1111-4a4a-9b9b-000000000001", "serviceType": "Voice Virtual Agent", "description": "x" * 40,
                "protocol": "gRPC", "appType": "BYODS", "url": "https://schemas.example/" + "y" * 40}]
    screen.print(ds.schemas_table(screen, schemas))
    assert "--schemas piped or --json" in " ".join(buffer.getvalue().split())

