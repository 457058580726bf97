"""Unattended and shared, second round: lost answers settled by reading the source, nothing that
crosses orgs, odd files where files are read, clocks, time zones and pipes, and monitoring that
never says OK about what it cannot see. Each test first makes the failure happen against the
fake (a FIFO, a dropped answer, a cookie, TZ, a closed pipe, a server clock ahead), then checks
the outcome: the other orgs carry on, the record says what happened, the run ends in time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from conftest import OUTPUTS, ROOT, SCRIPT, child_env, load_record, run_cli, write_env
from test_customers import command, onboarding_app

FIFO_BOUND = 30  # seconds: a run that meets a FIFO ends well within this (it would hang for ever)


def rotated(org, source) -> bool:
    return org.sources[source["id"]]["nonce"] != source["nonce"]


# -- a lost answer is settled by reading the source ------------------------------------------------


def test_onboarding_answered_without_an_id_is_not_done(app, fake):
    onboarding_app(app, fake)
    customer = fake.add_org()
    customer.fail("POST", "/v1/dataSources", status=201, body={"status": "active"})
    result = command(app, "--onboard", customer.org_id)
    assert result.returncode == 1 and "registration of None" not in result.stdout + result.stderr
    assert not list((app.records / f"org-{customer.org_id[:8]}").glob("data_source_registration_None*"))


def test_onboarding_answered_with_another_url_is_not_done(app, fake):
    onboarding_app(app, fake)
    customer = fake.add_org()
    elsewhere = customer.add_source(audience="Other", url="https://elsewhere.example.com/byods")
    customer.fail("POST", "/v1/dataSources", status=201, body=customer.public_view(elsewhere))
    result = command(app, "--onboard", customer.org_id)
    assert result.returncode == 1 and "is onboarded" not in result.stdout, result.stdout
    assert "elsewhere.example.com" not in result.stdout.split("Webex's answer")[0]


def test_a_rotation_whose_answer_was_lost_is_recorded_as_done_when_the_source_shows_it(fake, env_file, records):
    source = fake.add_source(expires_in=600)
    fake.fail("PUT", f"/v1/dataSources/{source['id']}", status=None, drop=True)  # made, then its answer lost
    result = run_cli("--rotate", source["id"], env_file=env_file, WEBEX_RETRY_BACKOFF=0.01)
    assert result.returncode == 0 and rotated(fake, source), result.stderr
    [path] = list(records.glob("data_source_rotation_*.json"))
    record = load_record(path)
    assert record["success"] is True and record["reconciled"] == "applied" and source["id"] in path.name
    assert record["configuration"]["nonce"] == fake.sources[source["id"]]["nonce"]


def test_a_put_answered_with_another_sources_body_is_not_a_success_for_that_source(fake, env_file, records):
    mine, other = fake.add_source(audience="A", expires_in=600), fake.add_source(audience="B", expires_in=600)
    fake.fail("PUT", f"/v1/dataSources/{mine['id']}", status=200, body=fake.public_view(other))
    result = run_cli("--rotate", mine["id"], env_file=env_file)
    assert result.returncode == 1 and "did not go through" in result.stdout + result.stderr
    assert not list(records.glob(f"data_source_rotation_{other['id']}*"))
    [failed] = list(records.glob("data_source_rotation_failed_*.json"))
    assert load_record(failed)["data_source_id"] == mine["id"] and load_record(failed)["success"] is False
    stale = fake.public_view(mine)  # its own id and URL, but the token it had before: not the nonce sent
    fake.fail("PUT", f"/v1/dataSources/{mine['id']}", status=200, body=stale)
    again = run_cli("--rotate", mine["id"], env_file=env_file)
    assert again.returncode == 1 and len(list(records.glob("data_source_rotation_failed_*.json"))) == 2


# -- nothing crosses orgs -----------------------------------------------------------------------


def test_a_cookie_one_org_is_answered_with_never_reaches_another(app, fake):
    globex = app.two_orgs("A", "G")
    fake.cookie = "session=acme-only; Path=/"
    result = app.run("--rotate", "all")
    assert result.returncode == 0, result.stderr
    assert globex.requests("PUT") and all("Cookie" not in seen.headers for seen in globex.requests())
    assert all("Cookie" not in seen.headers for seen in fake.requests())  # not even acme's own next call


def test_a_pasted_ellipsis_in_one_orgs_token_stops_that_org_only(app, fake):
    globex = app.two_orgs("A", "G")
    app.org("globex", globex, WEBEX_ACCESS_TOKEN=globex.access_token + "…")
    listed = app.run("--list", "--json")
    assert [row["org"] for row in json.loads(listed.stdout)] == ["acme"] and listed.returncode == 1
    assert "globex" in listed.stderr and "U+2026" in listed.stderr
    metrics = app.run("--metrics")
    assert 'byods_org_up{org="acme"} 1' in metrics.stdout and 'byods_org_up{org="globex"} 0' in metrics.stdout
    check = app.run("--check", "60")
    assert check.stdout.startswith("UNKNOWN") and "globex" in check.stdout


def test_a_token_answer_holding_a_quote_is_refused_and_the_file_kept(fake, tmp_path, records):
    source = fake.add_source(expires_in=600)
    env = write_env(tmp_path / "renew.env", {**fake.env(), "WEBEX_CLIENT_ID": fake.client_id,
                                             "WEBEX_CLIENT_SECRET": fake.client_secret,
                                             "WEBEX_REFRESH_TOKEN": fake.refresh_token, "WEBEX_RECORDS_DIR": records})
    before = env.read_text()
    fake.expire_access_token()
    for token in ('half"quoted', '"quoted"'):
        fake.fail("POST", "/v1/access_token", status=200,
                  body={"access_token": token, "expires_in": 1209599, "refresh_token": "r" + token})
        result = run_cli("--rotate", source["id"], env_file=env)
        assert result.returncode in (1, 2) and "quote" in result.stderr, result.stderr
        assert env.read_text() == before and not rotated(fake, source)


def test_two_files_for_one_org_are_refused_naming_both(app, fake):
    globex = app.two_orgs("A", "G")
    app.org("acme-again", fake)  # the same token
    result = app.run("--rotate", "all")
    assert result.returncode == 2 and "acme.env" in result.stderr and "acme-again.env" in result.stderr
    (app.root / "orgs" / "acme-again.env").unlink()
    app.org("acme", fake, WEBEX_TARGET_ORG_ID=fake.org_id)
    app.org("globex", globex, WEBEX_TARGET_ORG_ID=fake.org_id)  # the same org id, by a slip
    same_id = app.run("--rotate", "all")
    assert same_id.returncode == 2 and "WEBEX_TARGET_ORG_ID" in same_id.stderr and "globex.env" in same_id.stderr
    assert not fake.requests("PUT") and not globex.requests("PUT")


def test_a_reused_org_name_never_shows_the_former_orgs_records(app, fake):
    former = fake.add_org()
    former.add_source(expires_in=600)
    app.org("acme", former, WEBEX_TARGET_ORG_ID=former.org_id)
    assert app.run("--rotate", "all").returncode == 0
    app.org("acme", fake, WEBEX_TARGET_ORG_ID=fake.org_id)  # another customer, given the name later
    fake.add_source(expires_in=600)
    result = app.run("--rotate", "all")
    assert result.returncode != 0 and "belongs to another org" in result.stderr and former.org_id in result.stderr
    assert not fake.requests("PUT")


def test_a_marker_left_under_an_org_files_former_name_is_recorded_after_a_rename(app, fake):
    source = fake.add_source(expires_in=600)
    app.org("acme", fake, WEBEX_TARGET_ORG_ID=fake.org_id)
    assert app.run("--list").returncode == 0
    marker = app.records / "acme" / ".pending" / "rotation.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    nonce = fake.sources[source["id"]]["nonce"]  # what the lost run sent is what the source carries
    marker.write_text(json.dumps({"operation_type": "rotation", "data_source_id": source["id"], "org_id": fake.org_id,
                                  "configuration": {"nonce": nonce, "url": source["url"]}}))
    (app.root / "orgs" / "acme.env").rename(app.root / "orgs" / "acme-corp.env")
    result = app.run("--list")
    assert result.returncode == 0, result.stderr
    [record] = app.records_of("acme-corp")
    assert load_record(record)["data_source_id"] == source["id"] and not marker.exists()


# -- only regular files, and only so much of them --------------------------------------------------


def test_a_fifo_among_the_pending_markers_is_set_aside_and_the_rotation_goes_on(fake, env_file, records):
    source = fake.add_source(expires_in=600)
    (records / ".pending").mkdir(parents=True)
    os.mkfifo(records / ".pending" / "x.json")
    assert run_cli("--list", env_file=env_file, timeout=FIFO_BOUND).returncode == 0
    result = run_cli("--rotate-expiring", "60", env_file=env_file, timeout=FIFO_BOUND)
    assert result.returncode == 0 and rotated(fake, source), result.stderr


def test_a_huge_file_named_like_the_newest_record_is_not_read(fake, env_file, records):
    source = fake.add_source(expires_in=600)
    assert run_cli("--rotate", source["id"], env_file=env_file).returncode == 0
    with open(records / "data_source_rotation_x_29991231_235959_000000.json", "wb") as huge:
        huge.truncate(1024**3)  # sparse: 1 GiB that takes no disk
    result = run_cli("--history", "--json", env_file=env_file)
    assert result.returncode == 0 and [e["data_source_id"] for e in json.loads(result.stdout)] == [source["id"]]


def test_a_fifo_named_like_the_newest_record_is_skipped_by_history(fake, env_file, records):
    source = fake.add_source(expires_in=600)
    assert run_cli("--rotate", source["id"], env_file=env_file).returncode == 0
    os.mkfifo(records / "data_source_rotation_x_29991231_235959_000000.json")
    result = run_cli("--history", "--json", env_file=env_file, timeout=FIFO_BOUND)
    assert result.returncode == 0 and [e["data_source_id"] for e in json.loads(result.stdout)] == [source["id"]]
    assert "could not be read as records and were skipped" in result.stderr


def test_a_fifo_or_a_dangling_link_among_the_org_files_is_that_orgs_failure_only(app, fake):
    globex = app.two_orgs("A", "G")
    os.mkfifo(app.root / "orgs" / "bad.env")
    (app.root / "orgs" / "gone.env").symlink_to(app.root / "nowhere.env")
    (app.root / "orgs" / "folder.env").mkdir()
    (app.root / "orgs" / "zero.env").symlink_to("/dev/zero")
    result = app.run("--rotate", "all", timeout=FIFO_BOUND)
    assert result.returncode == 1 and all(name in result.stdout for name in ("bad", "gone", "folder", "zero")), \
        result.stdout
    assert len(fake.requests("PUT")) == 1 and len(globex.requests("PUT")) == 1


def test_markers_and_snapshots_of_the_wrong_shape_are_that_orgs_problem(app, fake):
    globex = app.two_orgs("A", "G")
    assert app.run("--list").returncode == 0
    pending = app.records / "acme" / ".pending"
    pending.mkdir()
    for n, configuration in enumerate(([1, 2], "text", None)):
        (pending / f"{n}.json").write_text(json.dumps({"operation_type": "rotation", "data_source_id": "x",
                                                      "configuration": configuration}))
    result = app.run("--rotate", "all")
    assert result.returncode == 0, result.stderr
    assert len(fake.requests("PUT")) == 1 and len(globex.requests("PUT")) == 1
    assert sorted(p.name for p in pending.iterdir()) == ["0.unreadable", "1.unreadable", "2.unreadable"]
    assert result.stderr.count("set aside") == 3
    state = app.records / "globex" / "state.json"
    snapshot = json.loads(state.read_text())
    snapshot["schemas"] = ["a", "list"]
    snapshot["sources"] = [{**item, "id": 12345} for item in snapshot.get("sources", [])] or [{"id": 12345}]
    state.write_text(json.dumps(snapshot))
    cached = app.run("--list", "--cached", "--json")
    assert [row["org"] for row in json.loads(cached.stdout)] == ["acme"] and "globex" in cached.stderr


def test_a_dangling_lock_link_is_not_followed(fake, env_file, records, tmp_path):
    source = fake.add_source(expires_in=600)
    records.mkdir()
    target = tmp_path / "made-by-the-lock"
    (records / ".lock").symlink_to(target)
    result = run_cli("--rotate", source["id"], env_file=env_file)
    assert not target.exists() and not rotated(fake, source)
    assert result.returncode == 1 and "Too many levels of symbolic links" in result.stderr


def test_renewal_answered_503_with_retry_after_is_retried(fake, tmp_path, records):
    source = fake.add_source(expires_in=600)
    env = write_env(tmp_path / "renew.env", {**fake.env(), "WEBEX_CLIENT_ID": fake.client_id,
                                             "WEBEX_CLIENT_SECRET": fake.client_secret,
                                             "WEBEX_REFRESH_TOKEN": fake.refresh_token, "WEBEX_RECORDS_DIR": records})
    fake.expire_access_token()
    fake.fail("POST", "/v1/access_token", status=503, headers={"Retry-After": "0"})
    result = run_cli("--rotate", source["id"], env_file=env, WEBEX_RETRY_BACKOFF=0.01)
    assert result.returncode == 0, result.stderr
    assert len(fake.requests("POST", "/v1/access_token")) == 2 and rotated(fake, source)


def test_a_snapshot_read_in_the_future_is_not_shown_as_read_long_ago(app, fake):
    app.two_orgs("A", "G")
    assert app.run("--list").returncode == 0
    state = app.records / "acme" / "state.json"
    snapshot = json.loads(state.read_text())
    snapshot["read_at"] = (datetime.now(UTC) + timedelta(days=999)).isoformat()
    state.write_text(json.dumps(snapshot))
    result = app.run("--list", "--cached")
    assert not re.search(r"read \d{3,}d", result.stdout + result.stderr)


def test_a_record_keeps_at_most_64_kib_of_an_answer_body(fake, env_file, records):
    source = fake.add_source(expires_in=600)
    fake.fail("PUT", f"/v1/dataSources/{source['id']}", status=400, body={"message": "x" * (5 * 1024 * 1024)})
    assert run_cli("--rotate", source["id"], env_file=env_file).returncode == 1
    [failed] = list(records.glob("data_source_rotation_failed_*.json"))
    record = load_record(failed)
    assert failed.stat().st_size < 3 * 64 * 1024 and record["api_response"]["body_truncated"] is True


def test_a_ten_thousand_character_id_is_cut_in_the_rotation_line(fake, env_file):
    fake.add_source(expires_in=600, source_id="i" * 10_000)
    result = run_cli("--rotate", "all", env_file=env_file)  # refused: no Webex id is that long
    assert result.returncode == 1 and "i" * 101 not in result.stdout + result.stderr
    assert max(len(line) for line in (result.stdout + result.stderr).splitlines()) < 400


# -- clocks, time zones, pipes ------------------------------------------------------------------


def test_a_local_clock_two_days_slow_is_named(fake, env_file):
    fake.clock_offset = 2 * 24 * 3600  # Webex's clock, as its answers' Date shows it, two days ahead of ours
    fake.add_source(expires_in=600)
    result = run_cli("--rotate-expiring", "180", env_file=env_file)
    assert re.search(r"local clock looks about (1d 23h|2d) behind", result.stderr), result.stderr
    check = run_cli("--check", "60", env_file=env_file)
    assert check.returncode != 0 and "clock" in check.stdout


def test_a_local_clock_ten_minutes_slow_still_finds_fresh_tokens_valid(fake, env_file):
    fake.clock_offset = 600
    source = fake.add_source(audience="fresh")
    listed = run_cli("--list", "--json", env_file=env_file)
    [row] = json.loads(listed.stdout)
    assert row["id"] == source["id"] and row["signature"] == "valid", row
    assert re.search(r"local clock looks about (9|10)m behind", listed.stderr), listed.stderr


def test_history_since_finds_a_rotation_made_under_another_time_zone(fake, env_file):
    source = fake.add_source(expires_in=600)
    assert run_cli("--rotate", source["id"], env_file=env_file, TZ="America/Los_Angeles").returncode == 0
    for zone in ("UTC", "Asia/Tokyo"):
        result = run_cli("--history", "--since", "2h", "--json", env_file=env_file, TZ=zone)
        assert [e["data_source_id"] for e in json.loads(result.stdout)] == [source["id"]], zone


def test_history_is_newest_first_across_time_zones(fake, env_file):
    first, then = fake.add_source(audience="First", expires_in=600), fake.add_source(audience="Then", expires_in=600)
    assert run_cli("--rotate", first["id"], env_file=env_file, TZ="Asia/Tokyo").returncode == 0  # its file name: +9 h
    assert run_cli("--rotate", then["id"], env_file=env_file, TZ="America/Los_Angeles").returncode == 0  # -8 h
    result = run_cli("--history", "--json", env_file=env_file, TZ="UTC")
    assert [e["data_source_id"] for e in json.loads(result.stdout)] == [then["id"], first["id"]]


def test_since_beyond_the_calendar_is_everything_not_a_traceback(fake, env_file):
    source = fake.add_source(expires_in=600)
    assert run_cli("--rotate", source["id"], env_file=env_file).returncode == 0
    for since in ("99999d", "500000d", "999999d"):
        result = run_cli("--history", "--since", since, "--json", env_file=env_file)
        assert result.returncode == 0 and len(json.loads(result.stdout)) == 1 and "Traceback" not in result.stderr, since


def test_a_reader_that_leaves_early_does_not_stop_the_rotation(fake, env_file):
    sources = [fake.add_source(audience=f"S{n}", expires_in=600) for n in range(20)]
    argv = [sys.executable, str(SCRIPT), "--env-file", str(env_file), "--rotate", "all"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=child_env())
    process.stdout.readline()  # `| head -1`
    process.stdout.close()
    stderr = process.stderr.read().decode()
    OUTPUTS.append(stderr)
    assert process.wait(60) == 0 and "BrokenPipe" not in stderr and "unexpected" not in stderr
    assert all(rotated(fake, source) for source in sources)


def test_a_closed_stdout_does_not_stop_the_rotation(fake, env_file):
    source = fake.add_source(expires_in=600)
    argv = [sys.executable, str(SCRIPT), "--env-file", str(env_file), "--rotate", "all"]
    process = subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env(),
                             pass_fds=(), preexec_fn=lambda: os.close(1), timeout=60, check=False)  # `>&-`
    assert process.returncode == 0 and rotated(fake, source), process.stderr


def test_list_into_a_reader_that_leaves_early_says_nothing(fake, env_file):
    for n in range(50):
        fake.add_source(audience=f"S{n}")
    result = subprocess.run(f"{sys.executable} {SCRIPT} --env-file {env_file} --list | head -1",
                            shell=True, capture_output=True, text=True, env=child_env(), timeout=60, check=False)
    assert len(result.stdout.splitlines()) == 1 and result.stderr == ""


# -- secrets files and monitoring -----------------------------------------------------------------


def test_a_settings_file_others_can_read_is_named_with_the_chmod_that_fixes_it(fake, env_file):
    fake.add_source()
    env_file.chmod(0o644)
    result = run_cli("--list", env_file=env_file)
    assert result.returncode == 0 and str(env_file) in result.stderr and "chmod 600" in result.stderr


def test_check_is_never_ok_about_what_it_cannot_see(fake, env_file):
    fake.fail("GET", "/v1/dataSources", status=200, body={"items": [{"id": "no-token", "status": "active"}]})
    unknown = run_cli("--check", "60", env_file=env_file)
    assert unknown.returncode == 1 and unknown.stdout.startswith("WARNING") and "unknown" in unknown.stdout
    fake.fail("GET", "/v1/dataSources", status=200, body={"items": [{"status": "active", "url": "https://x.example"}]})
    unnamed = run_cli("--check", "60", env_file=env_file)
    assert unnamed.returncode == 1 and unnamed.stdout.startswith("WARNING"), unnamed.stdout


def readme_metrics_recipe() -> str:
    """The README's cron line for node_exporter, as written."""
    readme = (ROOT / "README.md").read_text()
    [line] = [line for line in readme.splitlines() if "--metrics >" in line and "byods.prom" in line]
    return line.split(" ", 5)[5] if line.startswith("*") else line  # the command after cron's five fields


def test_the_readmes_metrics_recipe_delivers_org_down_to_the_collector(fake, env_file, tmp_path):
    fake.access_token = "refused"  # the token in env_file is no longer accepted
    collector = tmp_path / "textfile"
    collector.mkdir()
    recipe = readme_metrics_recipe()
    recipe = recipe.replace("/var/lib/node_exporter/textfile", str(collector))
    recipe = re.sub(r"(cd \S+ && )?(\S*python\S* )?\S*data-sources\.py( --env-file \S+)?",
                    f"{sys.executable} {SCRIPT} --env-file {env_file}", recipe, count=1)
    subprocess.run(recipe, shell=True, env=child_env(), timeout=60, check=False, cwd=tmp_path)
    exposition = (collector / "byods.prom").read_text()
    assert "byods_org_up 0" in exposition or 'byods_org_up{org="default"} 0' in exposition
    assert re.search(r"^byods_run_timestamp_seconds \d", exposition, re.MULTILINE)


def test_the_readme_alerts_on_an_org_down_and_on_stale_metrics():
    readme = (ROOT / "README.md").read_text()
    assert "byods_org_up == 0" in readme and "time() - byods_run_timestamp_seconds" in readme
