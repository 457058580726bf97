"""The command line without a terminal, as cron and pipes run it."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import ROOT, SCRIPT, break_folder, child_env, load_record, record_files, run_cli, write_env
from fake_webex import FakeWebex, seed_demo

# -- startup and configuration ----------------------------------------------------------------


def test_list_piped_prints_one_tab_separated_row_per_source_trouble_first(fake, env_file):
    seed_demo(fake)
    result = run_cli("--list", env_file=env_file)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split("\t")[:3] == ["id", "audience", "subject"]
    assert [r.split("\t")[1] for r in rows][:2] == ["Initech", "Globex Voice"]
    initech = rows[0].split("\t")
    assert initech[3] == "Voice Virtual Agent" and initech[7].startswith("expired") and initech[0] in fake.sources
    assert len(fake.requests("GET")) == 2  # sources and schemas, nothing else


def test_missing_token_exits_2_and_says_where_to_put_it(tmp_path):
    env = write_env(tmp_path / ".env", {"WEBEX_API_BASE_URL": "https://webexapis.com/v1"})
    result = run_cli("--list", env_file=env)
    assert result.returncode == 2
    assert "WEBEX_ACCESS_TOKEN" in result.stderr and str(env) in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr


def test_placeholder_token_from_the_sample_exits_2(tmp_path):
    env = tmp_path / ".env"
    env.write_text((__import__("conftest").ROOT / ".env.sample").read_text())
    result = run_cli("--list", env_file=env)
    assert result.returncode == 2 and f"WEBEX_ACCESS_TOKEN in {env} is still the placeholder from .env.sample" in result.stderr


@pytest.mark.parametrize(("value", "said"), [("", "is empty: put the Service App access token after the = sign"),
                                             ("two halves", "holds a space, which no token does")])
def test_an_empty_or_broken_token_gets_its_own_message(tmp_path, value, said):
    env = write_env(tmp_path / ".env", {"WEBEX_ACCESS_TOKEN": value})
    result = run_cli("--list", env_file=env)
    assert result.returncode == 2 and f"WEBEX_ACCESS_TOKEN in {env} {said}" in result.stderr


def test_a_token_pasted_with_bearer_works_and_the_tool_says_it_left_the_word_out(fake, tmp_path, records):
    fake.add_source(audience="Pasted")
    env = write_env(tmp_path / ".env", {**fake.env(), "WEBEX_ACCESS_TOKEN": f"Bearer {fake.access_token}", "WEBEX_RECORDS_DIR": records})
    result = run_cli("--list", env_file=env)
    assert result.returncode == 0 and "Pasted" in result.stdout
    assert "starts with 'Bearer ': the tool sends that word itself" in result.stderr


def test_a_refused_token_from_the_environment_says_the_environment_overrides_the_file(fake, env_file):
    result = run_cli("--list", env_file=env_file, WEBEX_ACCESS_TOKEN="a-stale-exported-token-0000")
    stderr = " ".join(result.stderr.split())
    assert result.returncode == 2 and "comes from the WEBEX_ACCESS_TOKEN environment variable, which overrides" in stderr


def test_a_missing_env_file_exits_2(tmp_path):
    result = run_cli("--list", env_file=tmp_path / "nope.env")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_a_malformed_env_file_exits_2_naming_the_line(tmp_path, fake):
    env = tmp_path / ".env"
    env.write_text(f"WEBEX_ACCESS_TOKEN={fake.access_token}\nnot a setting at all\n")
    result = run_cli("--list", env_file=env)
    assert result.returncode == 2 and "Line 2" in result.stderr


def test_without_a_terminal_the_menu_is_refused_with_the_flags_to_use(fake, env_file):
    result = run_cli(env_file=env_file)
    assert result.returncode == 2
    assert "--list" in result.stderr and "--rotate" in result.stderr
    assert fake.seen == []  # refused before any request


def test_bad_flag_values_exit_2_before_any_request(fake, env_file):
    for args, said in (
        (["--rotate-expiring", "soon"], "Give a whole number of minutes, e.g. 180."),
        (["--rotate", "all", "--lifetime", "0"], "must be 1 to 1440 minutes"),
        (["--rotate", "all", "--lifetime", "1441"], "must be 1 to 1440 minutes"),
        (["--rotate", "all", "--lifetime", "abc"], "Give a whole number of minutes from 1 to 1440."),
        (["--rotate", "all", "--workers", "0"], "Give a whole number of workers from 1 to 32."),
    ):
        result = run_cli(*args, env_file=env_file)
        assert result.returncode == 2 and said in result.stderr, (args, result.stderr)
    assert fake.seen == []


def test_an_api_failure_exits_1_with_status_and_tracking_id(fake, env_file):
    fake.fail("GET", "/v1/dataSources/", 400)
    result = run_cli("--list", env_file=env_file)
    assert result.returncode == 1
    assert "400" in result.stderr and "ROUTER_" in result.stderr and "Traceback" not in result.stderr


def test_a_refused_connection_exits_1_with_one_sentence(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = write_env(tmp_path / ".env", {"WEBEX_ACCESS_TOKEN": "x" * 20, "WEBEX_API_BASE_URL": f"http://127.0.0.1:{port}/v1"})
    result = run_cli("--list", env_file=env)
    assert result.returncode == 1 and "refused the connection" in result.stderr and "Traceback" not in result.stderr


def test_malformed_sources_show_as_unknown_and_the_rest_of_the_table_still_shows(fake, env_file):
    good = fake.add_source(audience="Good")
    no_token = fake.add_source(audience="NoToken")
    del no_token["jwsToken"]
    garbage = fake.add_source(audience="Garbage")
    garbage["jwsToken"] = "this.is-not.a-token"
    odd_schema = fake.add_source(audience="OddSchema")
    odd_schema["schemaId"] = "00000000-dead-beef-0000-000000000000"
    result = run_cli("--list", env_file=env_file)
    assert result.returncode == 0, result.stderr
    rows = {row.split("\t")[0]: row.split("\t") for row in result.stdout.splitlines()[1:]}
    assert rows[good["id"]][1] == "Good"
    assert rows[no_token["id"]][1] == "unknown" and rows[no_token["id"]][8] == "no token"
    assert rows[garbage["id"]][1] == "unknown" and rows[garbage["id"]][7].startswith("in ")  # tokenExpiryTime still tells
    assert rows[garbage["id"]][8].startswith("invalid")
    assert rows[odd_schema["id"]][3] == "unknown (00000000)"


def test_schemas_failing_still_lists_the_sources_with_a_warning(fake, env_file):
    fake.add_source(audience="Acme")
    fake.fail("GET", "/v1/dataSources/schemas", 403)
    result = run_cli("--list", env_file=env_file)
    assert result.returncode == 0
    assert "Acme" in result.stdout and "Schemas could not be listed" in result.stderr


# -- --save-list ------------------------------------------------------------------------------


def test_save_list_writes_a_snapshot_without_raw_tokens(fake, env_file, records):
    seed_demo(fake)
    result = run_cli("--save-list", env_file=env_file)
    assert result.returncode == 0, result.stderr
    [path] = record_files(records, "data_sources_list_*.json")
    assert re.fullmatch(r"data_sources_list_\d{8}_\d{6}_\d{6}\.json", path.name)
    snapshot = load_record(path)
    assert snapshot["count"] == 5 and len(snapshot["data_sources"]) == 5
    assert re.search(r"[+-]\d\d:\d\d$", snapshot["retrieved_timestamp"])
    assert all("jwsToken" not in s and s["jwsTokenFingerprint"].startswith("sha256:") for s in snapshot["data_sources"])
    assert {s["jwsTokenClaims"]["aud"] for s in snapshot["data_sources"]} >= {"Initech", "Umbrella"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_records_dir_flag_overrides_the_env_file(fake, env_file, tmp_path):
    result = run_cli("--save-list", "--records-dir", tmp_path / "elsewhere", env_file=env_file)
    assert result.returncode == 0
    assert len(record_files(tmp_path / "elsewhere")) == 1


def test_an_unwritable_records_dir_stops_before_anything_is_sent(fake, env_file, tmp_path):
    seed_demo(fake)
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = run_cli("--rotate", "all", "--records-dir", tmp_path / "blocker" / "records", env_file=env_file)
    assert result.returncode == 1 and "Nothing was sent" in result.stderr
    assert fake.requests("PUT") == []


# -- rotation ---------------------------------------------------------------------------------


def rotated_ids(fake) -> set[str]:
    return {s.path.rsplit("/", 1)[1] for s in fake.requests("PUT")}


def test_rotate_one_id_sends_a_new_nonce_and_everything_else_unchanged(fake, env_file, records):
    source = fake.add_source(audience="Acme", subject="calls", lifetime=90, expires_in=600)
    result = run_cli("--rotate", source["id"], env_file=env_file)
    assert result.returncode == 0, result.stderr
    [put] = fake.requests("PUT")
    body = json.loads(put.body)
    assert body == {
        "schemaId": source["schemaId"],
        "url": source["url"],
        "audience": "Acme",
        "subject": "calls",
        "nonce": body["nonce"],
        "tokenLifetimeMinutes": 90,
        "status": "active",
    }
    assert body["nonce"] != source["nonce"] and re.fullmatch(r"[0-9a-f-]{36}", body["nonce"])
    [record] = record_files(records, f"data_source_rotation_{source['id']}_*.json")
    content = load_record(record)
    assert content["operation_type"] == "rotation" and content["success"] is True and content["configuration"] == body
    assert content["api_response"]["status_code"] == 200 and content["api_response"]["tracking_id"].startswith("ROUTER_")
    assert "Rotated 1, skipped 0, failed 0. Earliest new expiry" in result.stdout


def test_rotate_accepts_a_unique_prefix_and_refuses_unknown_ids_before_rotating(fake, env_file):
    one = fake.add_source()
    fake.add_source()
    result = run_cli("--rotate", one["id"][:8], "no-such-id", env_file=env_file)
    assert result.returncode == 2 and "'no-such-id' is not a data source" in result.stderr
    assert fake.requests("PUT") == []
    result = run_cli("--rotate", one["id"][:8], env_file=env_file)
    assert result.returncode == 0 and rotated_ids(fake) == {one["id"]}


def test_rotate_all_skips_disabled_sources_and_reports_them(fake, env_file):
    active = [fake.add_source(), fake.add_source()]
    disabled = fake.add_source(status="disabled", error_message="paused")
    result = run_cli("--rotate", "all", env_file=env_file)
    assert result.returncode == 0, result.stderr
    assert rotated_ids(fake) == {s["id"] for s in active}
    assert f"skipped  {disabled['id']}  disabled" in result.stdout
    assert "Rotated 2, skipped 1, failed 0." in result.stdout


def test_rotate_expiring_picks_expired_and_soon_expiring_active_sources_only(fake, env_file):
    expired = fake.add_source(expires_in=-60)
    soon = fake.add_source(expires_in=30 * 60)
    later = fake.add_source(expires_in=5 * 3600)
    disabled_soon = fake.add_source(expires_in=60, status="disabled", error_message="off")
    result = run_cli("--rotate-expiring", "60", env_file=env_file)
    assert result.returncode == 0, result.stderr
    assert rotated_ids(fake) == {expired["id"], soon["id"]}
    assert later["id"] not in result.stdout and f"skipped  {disabled_soon['id']}" in result.stdout


def test_lifetime_flag_sets_the_new_lifetime_for_every_rotation(fake, env_file):
    fake.add_source(lifetime=1440)
    fake.add_source(lifetime=30)
    assert run_cli("--rotate", "all", "--lifetime", "120", env_file=env_file).returncode == 0
    assert {json.loads(p.body)["tokenLifetimeMinutes"] for p in fake.requests("PUT")} == {120}


def test_rotation_costs_one_list_and_one_update_per_source(fake, env_file):
    for _ in range(12):
        fake.add_source()
    assert run_cli("--rotate", "all", env_file=env_file).returncode == 0
    assert [(s.method, s.path) for s in fake.requests("GET")] == [("GET", "/v1/dataSources/")]
    assert len(fake.requests("PUT")) == 12


def test_concurrency_is_bounded_by_workers(fake, env_file):
    fake.latency = 0.05
    for _ in range(12):
        fake.add_source()
    assert run_cli("--rotate", "all", "--workers", "3", env_file=env_file).returncode == 0
    assert fake.max_in_flight == 3
    assert fake.connections["api"] <= 3


def test_a_failed_rotation_is_recorded_and_exits_1(fake, env_file, records):
    good, bad = fake.add_source(), fake.add_source()
    fake.fail("PUT", f"/v1/dataSources/{bad['id']}", 400)
    result = run_cli("--rotate", "all", env_file=env_file)
    assert result.returncode == 1
    assert f"failed   {bad['id']}" in result.stdout and "Rotated 1, skipped 0, failed 1." in result.stdout
    [failed] = record_files(records, "data_source_rotation_failed_*.json")
    content = load_record(failed)
    assert content["success"] is False and content["data_source_id"] == bad["id"] and "400" in content["error"]
    assert content["api_response"]["status_code"] == 400
    assert len(record_files(records, f"data_source_rotation_{good['id']}_*.json")) == 1


def test_a_rotation_whose_record_cannot_be_written_is_reported_as_done_but_unrecorded(fake, env_file, records):
    source = fake.add_source()
    fake.fail("PUT", ".*", None, on_arrival=break_folder(records))
    result = run_cli("--rotate", "all", env_file=env_file)
    assert result.returncode == 1
    assert fake.sources[source["id"]]["nonce"] == json.loads(fake.requests("PUT")[0].body)["nonce"]
    assert f"rotated  {source['id']}" in result.stdout and "went through, but no record of it was kept" in result.stdout
    assert "Rotated 1, skipped 0, failed 0. 1 left no record." in result.stdout
    assert "Traceback" not in result.stderr


def test_a_batch_stops_sending_when_the_records_folder_goes_away(fake, env_file, records):
    first, second = fake.add_source(expires_in=60), fake.add_source(expires_in=120)
    fake.fail("PUT", ".*", None, on_arrival=break_folder(records))
    result = run_cli("--rotate", "all", "--workers", "1", env_file=env_file)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"failed   {second['id']}  Cannot write records" in result.stdout and "Nothing was sent" in result.stdout
    assert len(fake.requests("PUT")) == 1 and "no record of it was kept" in result.stdout
    assert {first["id"], second["id"]} >= rotated_ids(fake)


def test_a_429_storm_slows_every_worker_and_still_finishes(fake, env_file):
    for _ in range(8):
        fake.add_source()
    fake.fail("PUT", ".*", 429, times=3, headers={"Retry-After": "1"})
    result = run_cli("--rotate", "all", "--workers", "4", env_file=env_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fake.sources) == 8 and "Rotated 8" in result.stdout
    puts = fake.requests("PUT")
    first_429 = puts[0].at
    # After the first 429, nothing new was sent until its Retry-After had passed, except the
    # requests already in flight then (at most workers - 1 of them).
    early = [p for p in puts[1:] if p.at - first_429 < 0.95]
    assert len(early) <= 3
    assert "Webex answered 429: retrying in 1 s." in result.stderr


def test_cron_output_is_plain_one_line_per_source(fake, env_file):
    for _ in range(3):
        fake.add_source()
    result = run_cli("--rotate", "all", env_file=env_file)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("rotated  ") for line in lines[:3])
    assert "\x1b[" not in result.stdout


# -- the access token -------------------------------------------------------------------------


def test_an_expired_token_without_refresh_credentials_exits_2_with_instructions(fake, env_file):
    fake.add_source()
    fake.expire_access_token()
    result = run_cli("--rotate", "all", env_file=env_file)
    assert result.returncode == 2
    assert "WEBEX_ACCESS_TOKEN" in result.stderr and "WEBEX_REFRESH_TOKEN" in result.stderr


def test_an_expired_token_is_renewed_and_saved_keeping_every_other_line(fake, tmp_path, records):
    source = fake.add_source()
    env = tmp_path / ".env"
    original = (
        "# production org\n"
        f"WEBEX_ACCESS_TOKEN={fake.access_token}\n"
        f"WEBEX_API_BASE_URL={fake.base_url}   # fake\n\n"
        f"WEBEX_CLIENT_ID={fake.client_id}\nWEBEX_CLIENT_SECRET={fake.client_secret}\n"
        f"WEBEX_REFRESH_TOKEN='{fake.refresh_token}'\nWEBEX_RECORDS_DIR={records}\n# end\n"
    )
    env.write_text(original)
    env.chmod(0o644)
    fake.expire_access_token()
    result = run_cli("--rotate", source["id"], env_file=env)
    assert result.returncode == 0, result.stderr
    assert "renewed with the refresh token" in result.stderr
    expected = re.sub(r"WEBEX_ACCESS_TOKEN=.*\n", f"WEBEX_ACCESS_TOKEN={fake.access_token}\n", original)
    expected = re.sub(r"WEBEX_REFRESH_TOKEN=.*\n", f"WEBEX_REFRESH_TOKEN={fake.refresh_token}\n", expected)
    saved = env.read_text()
    assert saved.startswith(expected)  # every other line byte for byte; the refresh token's expiry is added
    assert re.fullmatch(r"WEBEX_REFRESH_TOKEN_EXPIRES_AT=\d{4}-\d\d-\d\dT[0-9:]{8}\+00:00\n", saved[len(expected) :])
    assert stat.S_IMODE(env.stat().st_mode) == 0o644  # an existing file keeps its mode (and owner)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".env.")] == []
    assert fake.access_token not in result.stdout + result.stderr


def test_list_and_rotation_do_not_import_the_prompt_libraries(fake, env_file):
    import subprocess
    import sys

    from conftest import SCRIPT, child_env

    fake.add_source()
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['data-sources.py', '--env-file', sys.argv[1], sys.argv[2], *sys.argv[3:]]\n"
        f"try:\n    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "print('LOADED', sorted(m for m in ('questionary', 'prompt_toolkit') if m in sys.modules), code)\n"
    )
    for args in (["--list"], ["--rotate", "all"], ["--rotate-expiring", "60"]):
        result = subprocess.run(
            [sys.executable, "-c", probe, str(env_file), *args],
            check=False,
            capture_output=True,
            text=True,
            env=child_env(),
            stdin=subprocess.DEVNULL,
        )
        assert "LOADED [] 0" in result.stdout, (args, result.stdout, result.stderr)


def test_every_flag_in_help_is_documented_in_the_readme():
    result = run_cli("--help")
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", result.stdout)) - {"--help"}
    readme = (ROOT / "README.md").read_text()
    assert len(flags) >= 12 and sorted(flag for flag in flags if f"`{flag}" not in readme) == []


def test_every_setting_the_script_reads_is_in_the_sample():
    read = set(re.findall(r'value\("(WEBEX_[A-Z_]+)"\)', SCRIPT.read_text()))
    sample = (ROOT / ".env.sample").read_text()
    assert len(read) >= 20 and sorted(key for key in read if f"{key}=" not in sample) == []


# -- the tests themselves read nothing of the user's ----------------------------------------------


def test_a_hostile_env_beside_the_repositorys_script_is_never_read_by_the_tests(tmp_path):
    """The suite's script-running fixtures, run in a copy of the repository whose .env points every
    token at another server: they pass as they do here, and that server hears nothing."""
    hostile = FakeWebex().start()
    try:
        copy = tmp_path / "repository"
        shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("data-sources.py", "README.md"):
            shutil.copy(ROOT / name, copy / name)
        write_env(copy / ".env", {"WEBEX_API_BASE_URL": hostile.base_url, "WEBEX_TRUSTED_ISSUERS": hostile.issuer,
                                  "WEBEX_ACCESS_TOKEN": hostile.access_token, "WEBEX_RECORDS_DIR": tmp_path / "stolen"})
        inner = ["tests/test_flags.py::test_update_changes_what_is_given_keeps_the_rest_and_sends_a_fresh_nonce",
                 "tests/test_flags.py::test_delete_at_a_terminal_is_confirmed_by_typing_the_audience",
                 "tests/test_shared.py::test_a_local_clock_ten_minutes_slow_still_finds_fresh_tokens_valid",
                 "tests/test_flags.py::test_the_onboarded_orgs_file_takes_a_write",
                 "tests/test_outputs.py::test_fleet_json_names_the_org_of_every_source",  # the shared .env beside
                 "tests/test_rows.py::test_two_orgs_that_list_the_same_id_keep_their_own_signature_verdicts"]  # the script
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *inner],
                                cwd=copy, capture_output=True, text=True, env=child_env(), timeout=300, check=False)
        assert result.returncode == 0 and f"{len(inner)} passed" in result.stdout, result.stdout[-3000:]
        assert hostile.seen == [] and not (tmp_path / "stolen").exists()
    finally:
        hostile.stop()
