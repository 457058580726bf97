"""Several customer orgs in one run: org profiles and their precedence, tokens minted with the
integration token, isolation, every flag across the fleet, per-org records, and the overview menu.

Each test runs a copy of the script in its own folder, so the shared .env beside it is real."""

from __future__ import annotations

import json
import re
import stat
import threading
from collections import Counter

import pytest
from conftest import (
    load_record,
    menu_ready,
    register_in_menu,
    run_cli,
    write_env,
)


def rows_by_org(stdout: str) -> list[list[str]]:
    header, *rows = stdout.strip().splitlines()
    assert header.split("\t")[:2] == ["org", "id"]
    return [row.split("\t") for row in rows]


# -- every flag across the fleet ----------------------------------------------------------------


def test_list_across_orgs_has_an_org_column_and_puts_trouble_first_across_all(app, fake):
    globex = fake.add_org()
    fake.add_source(audience="Acme Fine", expires_in=20 * 3600)
    globex.add_source(audience="Globex Expired", expires_in=-600)
    globex.add_source(audience="Globex Fine", expires_in=10 * 3600)
    app.org("acme", fake)
    app.org("globex", globex)
    result = app.run("--list")
    assert result.returncode == 0, result.stderr
    rows = rows_by_org(result.stdout)
    assert [(r[0], r[2]) for r in rows] == [("globex", "Globex Expired"), ("globex", "Globex Fine"), ("acme", "Acme Fine")]
    assert len(fake.requests("GET", "/v1/dataSources/")) == 1 and len(globex.requests("GET", "/v1/dataSources/")) == 1


def test_list_on_a_terminal_has_an_org_column(app, fake):
    globex = fake.add_org()
    globex.add_source(audience="Globex Voice")
    app.org("acme", fake)
    app.org("globex", globex)
    term = app.terminal("--list")
    assert term.exit_code() == 0
    assert re.search(r"Org\s+┃\s+ID", term.text()) and re.search(r"globex\s+│", term.text())


def test_rotate_expiring_covers_every_org_and_the_summary_names_each(app, fake):
    globex, initech = fake.add_org(), fake.add_org()
    fake.add_source(audience="A1", expires_in=600)
    fake.add_source(audience="A2", expires_in=20 * 3600)
    globex.add_source(audience="G1", expires_in=-60)
    globex.add_source(audience="G2", expires_in=300, status="disabled", error_message="paused")
    initech.add_source(audience="I1", expires_in=20 * 3600)
    app.org("acme", fake)
    app.org("globex", globex)
    app.org("initech", initech)
    result = app.run("--rotate-expiring", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^rotated  acme  \S+  expires", result.stdout, re.MULTILINE)
    assert re.search(r"^rotated  globex  \S+  expires", result.stdout, re.MULTILINE)
    assert re.search(r"^skipped  globex  \S+  disabled", result.stdout, re.MULTILINE)
    assert "acme: Rotated 1, skipped 0, failed 0." in result.stdout
    assert "globex: Rotated 1, skipped 1, failed 0." in result.stdout
    assert "initech:" not in result.stdout  # no work, no trouble: no line
    assert "Rotated 2, skipped 1, failed 0." in result.stdout.splitlines()[-1]
    assert len(fake.requests("PUT")) == 1 and len(globex.requests("PUT")) == 1 and initech.requests("PUT") == []


def test_rotate_by_id_prefix_finds_the_source_in_whichever_org_holds_it(app, fake):
    globex = fake.add_org()
    fake.add_source(audience="A", source_id="aaaa1111-acme")
    target = globex.add_source(audience="G", source_id="bbbb2222-globex")
    globex.add_source(audience="G2", source_id="aaaa9999-globex")
    app.org("acme", fake)
    app.org("globex", globex)
    result = app.run("--rotate", "bbbb")
    assert result.returncode == 0, result.stderr
    assert [s.path for s in globex.requests("PUT")] == [f"/v1/dataSources/{target['id']}"] and fake.requests("PUT") == []
    ambiguous = app.run("--rotate", "aaaa")
    assert ambiguous.returncode == 2 and "matches several data sources" in ambiguous.stderr
    assert fake.requests("PUT") == [] and len(globex.requests("PUT")) == 1


def test_workers_bound_the_requests_in_flight_across_the_whole_fleet(app, fake):
    fake.latency = 0.05
    orgs = [fake, fake.add_org(), fake.add_org()]
    for number, org in enumerate(orgs):
        for n in range(4):
            org.add_source(audience=f"O{number}S{n}", expires_in=600)
        app.org(f"org{number}", org)
    result = app.run("--rotate", "all", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert sum(len(org.requests("PUT")) for org in orgs) == 12
    assert fake.max_in_flight <= 2
    assert fake.connections["api"] <= 2  # orgs on one host share one pool


def test_a_429_pauses_every_worker_of_every_org_for_its_retry_after(app, fake):
    """Webex limits the Service App as a whole: one org's 429 is every org's."""
    globex = fake.add_org()
    limited_source = fake.add_source(audience="A", expires_in=600)
    for n in range(3):
        globex.add_source(audience=f"G{n}", expires_in=600)
    fake.fail("PUT", f"/v1/dataSources/{limited_source['id']}", 429, headers={"Retry-After": "2"})
    app.org("acme", fake)
    app.org("globex", globex)
    result = app.run("--rotate", "all", "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    limited, retried = (s.at for s in fake.requests("PUT"))
    assert retried >= limited + 1.9  # acme waited as Webex asked
    during = [s.at for s in globex.requests("PUT") if limited + 0.2 < s.at < limited + 1.9]
    assert len(globex.requests("PUT")) == 3 and during == []  # and so did globex: nothing went out in the pause
    assert "Webex limited the rate 1 time(s)" in result.stdout


def test_two_orgs_hitting_the_limit_together_both_pause_and_the_json_summary_counts_it(app, fake):
    globex = fake.add_org()
    together = threading.Barrier(2, timeout=20)  # neither 429 is answered until both requests are in
    for org in (fake, globex):
        org.add_source(expires_in=600)
        org.fail("PUT", ".*", 429, headers={"Retry-After": "1"}, on_arrival=together.wait)
    app.org("acme", fake)
    app.org("globex", globex)
    result = app.run("--rotate", "all", "--workers", "2", "--json")
    summary = json.loads(result.stdout)["summary"]
    assert result.returncode == 0 and summary["rotated"] == 2 and summary["throttled"] == 2
    puts = sorted(fake.requests("PUT") + globex.requests("PUT"), key=lambda s: s.at)
    assert len(puts) == 4 and puts[2].at >= puts[1].at + 0.9  # the retries came after the (shared) pause


def test_rate_caps_the_requests_a_minute_of_the_whole_run(app, fake):
    globex = fake.add_org()
    for org in (fake, globex):
        for _ in range(3):
            org.add_source(expires_in=600)
    app.org("acme", fake)
    app.org("globex", globex)
    result = app.run("--rotate-expiring", "60", "--rate", "600", "--workers", "8")  # one request every 0.1 s
    assert result.returncode == 0 and "Paced at 600 requests a minute" in result.stdout
    times = sorted(s.at for org in (fake, globex) for s in org.requests())
    assert len(times) == 8 and times[-1] - times[0] >= 7 * 0.1 * 0.9


@pytest.mark.parametrize("window", [None, 5.0], ids=["a bucket", "a rolling 5 s window"])
def test_the_pace_keeps_429s_rare_whether_webex_counts_a_bucket_or_a_window(app, fake, window):
    """Webex does not say how it counts its limit: 150 orgs rotating 450 sources against 6000 a
    minute, counted either way, meet 429s for under 5 % of their requests, and every one is rotated."""
    orgs = [fake, *(fake.add_org() for _ in range(149))]
    for number, org in enumerate(orgs):
        for _ in range(3):
            org.add_source(expires_in=600)
        app.org(f"org{number:03d}", org)
    fake.limit_per_second, fake.limit_window = 100, window
    result = app.run("--rotate-expiring", "60")
    requests = sum(len(org.requests()) for org in orgs)
    assert result.returncode == 0 and "Rotated 450, skipped 0, failed 0." in result.stdout, result.stdout[-2000:]
    assert 0 < fake.limited < 0.05 * requests, (fake.limited, requests)  # met the limit, and rarely


def test_save_list_writes_one_snapshot_per_org_in_its_own_folder(app, fake):
    globex = fake.add_org()
    fake.add_source(audience="A")
    globex.add_source(audience="G1")
    globex.add_source(audience="G2")
    app.org("acme", fake)
    app.org("globex", globex, WEBEX_ORG_NAME="Globex-Corp")
    result = app.run("--save-list")
    assert result.returncode == 0, result.stderr
    [acme_list], [globex_list] = app.records_of("acme"), app.records_of("Globex-Corp")
    acme_saved, globex_saved = load_record(acme_list), load_record(globex_list)
    assert (acme_saved["count"], acme_saved["org_name"], acme_saved["org_id"]) == (1, "acme", fake.org_id)
    assert (globex_saved["count"], globex_saved["org_name"], globex_saved["org_id"]) == (2, "Globex-Corp", globex.org_id)


def test_every_record_names_its_org_and_goes_to_that_orgs_folder(app, fake):
    globex = fake.add_org()
    fake.add_source(audience="A", expires_in=60)
    globex.add_source(audience="G", expires_in=60)
    app.org("acme", fake)
    app.org("globex", globex)
    assert app.run("--rotate", "all").returncode == 0
    for name, org in (("acme", fake), ("globex", globex)):
        [record] = app.records_of(name)
        content = load_record(record)
        assert record.name.startswith("data_source_rotation_") and (content["org_name"], content["org_id"]) == (name, org.org_id)
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert not list(app.records.glob("*.json"))


# -- isolation ----------------------------------------------------------------------------------


def test_one_orgs_failure_never_stops_the_others_and_the_run_exits_1(app, fake):
    refused, broken, unreachable = fake.add_org(), fake.add_org(), fake.add_org()
    fake.add_source(audience="Acme Expiring", expires_in=600)
    broken.fail("GET", "/v1/dataSources/", 500, times=10)
    forbidden = fake.add_org()
    forbidden.scopes = set()
    app.org("acme", fake)
    app.org("refused", refused, WEBEX_ACCESS_TOKEN="not-the-token-of-anyone")
    app.org("broken", broken)
    app.org("forbidden", forbidden)
    unreachable.fail("GET", "/v1/dataSources/", 500, times=10, drop=True)  # the connection drops: no answer at all
    app.org("unreachable", unreachable)
    write_env(app.root / "orgs" / "badsettings.env", {"WEBEX_ACCESS_TOKEN": "x" * 20, "WEBEX_READ_TIMEOUT": "soon"})
    result = app.run("--rotate-expiring", "60", WEBEX_RETRY_BACKOFF=0.01)  # the retries' waits, shortened
    assert result.returncode == 1
    assert "acme: Rotated 1, skipped 0, failed 0." in result.stdout
    summary = " ".join(result.stdout.split())
    assert "refused: could not be read: Webex answered 401" in summary
    assert "broken: could not be read: Webex answered 500" in summary
    assert "forbidden: could not be read: Webex answered 403" in summary
    assert "unreachable: could not be read: The connection to 127.0.0.1" in summary
    assert "badsettings: could not be read: WEBEX_READ_TIMEOUT must be a number" in summary
    assert "Error:" not in result.stderr  # each org's failure is said once, in the summary cron mails
    assert "5 of 6 orgs could not be read" in result.stdout
    assert len(fake.requests("PUT")) == 1
    listing = app.run("--list", WEBEX_RETRY_BACKOFF=0.01)
    assert listing.returncode == 1 and [r[0] for r in rows_by_org(listing.stdout)] == ["acme"]


def test_when_every_org_is_refused_the_run_exits_2(app, fake):
    other = fake.add_org()
    app.org("a", fake, WEBEX_ACCESS_TOKEN="wrong-token-aaaaaaaa")
    app.org("b", other, WEBEX_ACCESS_TOKEN="wrong-token-bbbbbbbb")
    assert app.run("--list").returncode == 2


def test_a_missing_env_file_or_two_files_with_one_org_name_stop_everything(app, fake):
    app.org("acme", fake)
    missing = app.run("--list", env_files=[*app.env_files(), str(app.root / "orgs" / "nope.env")])
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    app.org("acme-copy", fake, WEBEX_ORG_NAME="acme")
    twice = app.run("--list")
    assert twice.returncode == 2 and "Two env files name the org 'acme'" in twice.stderr
    assert fake.requests() == []


# -- precedence ---------------------------------------------------------------------------------


def test_an_exported_access_token_is_never_applied_to_every_org(app, fake):
    globex = app.two_orgs("A", "G")
    result = app.run("--list", WEBEX_ACCESS_TOKEN=fake.access_token, WEBEX_ORG_NAME="everyone", WEBEX_TARGET_ORG_ID="x")
    assert result.returncode == 0, result.stderr
    assert sorted(r[0] for r in rows_by_org(result.stdout)) == ["acme", "globex"]
    assert globex.requests("GET", "/v1/dataSources/")[0].headers["Authorization"] == f"Bearer {globex.access_token}"


def test_an_org_file_without_a_token_does_not_borrow_the_shared_or_exported_one(app, fake):
    globex = fake.add_org()
    app.org("acme", fake)
    write_env(app.root / "orgs" / "globex.env", {"WEBEX_TARGET_ORG_ID": globex.org_id})
    app.share(WEBEX_ACCESS_TOKEN=fake.access_token)
    result = app.run("--list", WEBEX_ACCESS_TOKEN=fake.access_token)
    assert result.returncode == 1
    assert "globex: No Service App access token" in " ".join(result.stderr.split())
    assert len(fake.requests("GET", "/v1/dataSources/")) == 1


def test_the_orgs_file_wins_then_the_shared_env_then_the_environment(app, fake):
    globex = fake.add_org()
    app.org("acme", fake)
    app.org("globex", globex, WEBEX_RECORDS_DIR="globex-records")
    result = app.run("--save-list", WEBEX_API_BASE_URL="http://127.0.0.1:9/v1")
    assert result.returncode == 0, result.stderr  # the shared base URL beats the exported one
    assert len(list((app.root / "globex-records" / "globex").glob("data_source*.json"))) == 1  # the org's own setting
    assert len(app.records_of("acme")) == 1  # the shared one


def test_a_key_neither_file_has_comes_from_the_environment(app, fake):
    fake.add_source(audience="A")
    app.org("acme", fake)
    app.org("globex", fake.add_org())
    app.shared.write_text(app.shared.read_text().replace(f"WEBEX_TRUSTED_ISSUERS={fake.issuer}\n", ""))
    untrusted = app.run("--list")
    assert rows_by_org(untrusted.stdout)[0][9] == "untrusted issuer"
    trusted = app.run("--list", WEBEX_TRUSTED_ISSUERS=fake.issuer)
    assert rows_by_org(trusted.stdout)[0][9] == "valid"


def test_a_single_env_file_keeps_todays_rule_the_environment_wins(fake, tmp_path, records):
    env = write_env(
        tmp_path / "one.env",
        {"WEBEX_ACCESS_TOKEN": "stale-token-123456", "WEBEX_API_BASE_URL": fake.base_url, "WEBEX_RECORDS_DIR": records},
    )
    result = run_cli("--list", env_file=env, WEBEX_ACCESS_TOKEN=fake.access_token)
    assert result.returncode == 0 and result.stdout.startswith("id\t")


# -- minting ------------------------------------------------------------------------------------


def minting_app(app, fake, *orgs):
    app.share(**{k: v for k, v in fake.mint_env(fake).items() if k != "WEBEX_TARGET_ORG_ID"})
    for name, org in orgs:
        write_env(app.root / "orgs" / f"{name}.env", {"# customer": f"{name}", "WEBEX_TARGET_ORG_ID": org.org_id})


def test_an_org_without_a_token_gets_one_minted_once_saved_in_its_file_and_reused(app, fake):
    globex = fake.add_org()
    globex.add_source(audience="G")
    globex.access_token = "nobody-has-this-yet-" + "0" * 10
    minting_app(app, fake, ("globex", globex))
    app.org("acme", fake)
    original = (app.root / "orgs" / "globex.env").read_text()
    first = app.run("--list")
    assert first.returncode == 0, first.stderr
    assert globex.mints == 1 and "globex: The access token was minted" in first.stderr
    saved = (app.root / "orgs" / "globex.env").read_text()
    assert saved.startswith(original) and f"WEBEX_ACCESS_TOKEN={globex.access_token}\n" in saved
    assert f"WEBEX_REFRESH_TOKEN={globex.refresh_token}\n" in saved
    assert stat.S_IMODE((app.root / "orgs" / "globex.env").stat().st_mode) == 0o600  # the file keeps its mode
    second = app.run("--list")
    assert second.returncode == 0 and globex.mints == 1 and "minted" not in second.stderr
    assert fake.requests("POST", r"/v1/applications/.*") and all(
        s.headers["Authorization"] == f"Bearer {fake.integration_token}" for s in fake.requests("POST", r"/v1/applications/.*")
    )


def test_a_refused_token_that_cannot_be_renewed_is_minted_once_even_when_requests_race(app, fake):
    globex = fake.add_org()
    globex.add_source(audience="G", expires_in=60)
    minting_app(app, fake, ("globex", globex))
    with (app.root / "orgs" / "globex.env").open("a") as handle:
        handle.write("WEBEX_ACCESS_TOKEN=expired-token-000000\nWEBEX_REFRESH_TOKEN=refused-refresh-0000\n")
    app.org("acme", fake)
    result = app.run("--rotate-expiring", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert globex.mints == 1 and len(fake.requests("POST", "/v1/access_token")) == 1
    assert len(globex.requests("PUT")) == 1


def test_a_refused_integration_token_is_one_sentence_naming_the_token_the_scope_and_where(app, fake):
    globex = fake.add_org()
    globex.access_token = "nobody-has-this-yet-" + "1" * 10
    minting_app(app, fake, ("globex", globex))
    app.org("acme", fake)
    fake.integration_token = "the-integration-token-was-replaced"
    result = app.run("--list")
    assert result.returncode == 1
    stderr = " ".join(result.stderr.split())
    assert f"globex: Webex answered 401: The integration token (WEBEX_INTEGRATION_TOKEN in {app.shared}) was refused" in stderr
    assert "spark:applications_token" in stderr and "developer portal" in stderr
    assert globex.mints == 0 and len(fake.requests("GET", "/v1/dataSources/")) == 1


def test_an_org_that_has_not_authorized_the_service_app_says_so(app, fake):
    globex = fake.add_org()
    globex.authorized = False
    globex.access_token = "nobody-has-this-yet-" + "2" * 10
    minting_app(app, fake, ("globex", globex))
    app.org("acme", fake)
    result = app.run("--list")
    assert result.returncode == 1 and "globex: Webex answered 403" in result.stderr
    assert "has not authorized the Service App" in " ".join(result.stderr.split())


def test_the_integration_token_renews_itself_once_and_is_saved_where_it_came_from(app, fake):
    orgs = [fake.add_org() for _ in range(3)]
    for org in orgs:
        org.add_source(audience="S")
        org.access_token = "nobody-has-this-yet-" + org.org_id[:8]
    minting_app(app, fake, *((f"org{n}", org) for n, org in enumerate(orgs)))
    app.share(
        WEBEX_INTEGRATION_REFRESH_TOKEN=fake.integration_refresh_token,
        WEBEX_INTEGRATION_CLIENT_ID=fake.integration_client_id,
        WEBEX_INTEGRATION_CLIENT_SECRET=fake.integration_client_secret,
    )
    fake.integration_token = "fake-integration-now-expected-" + "3" * 10  # the one in the shared .env is refused
    result = app.run("--list")
    assert result.returncode == 0, result.stderr
    assert len(fake.requests("POST", "/v1/access_token")) == 1
    assert [org.mints for org in orgs] == [1, 1, 1]
    shared = app.shared.read_text()
    assert f"WEBEX_INTEGRATION_TOKEN={fake.integration_token}\n" in shared
    assert f"WEBEX_INTEGRATION_REFRESH_TOKEN={fake.integration_refresh_token}\n" in shared
    assert "The integration token was renewed and saved to" in result.stderr


def test_a_single_org_file_with_minting_settings_and_no_access_token_works(fake, tmp_path, records):
    """An org's file holds its own keys; the Service App's (shared) come from the environment."""
    fake.add_source(audience="Solo")
    fake.access_token = "nobody-has-this-yet-" + "4" * 10
    shared = {key: value for key, value in fake.mint_env(fake).items() if key != "WEBEX_TARGET_ORG_ID"}
    env = write_env(tmp_path / "solo.env", {"WEBEX_TARGET_ORG_ID": fake.org_id, "WEBEX_RECORDS_DIR": records})
    result = run_cli("--list", env_file=env, WEBEX_API_BASE_URL=fake.base_url, **shared)
    assert result.returncode == 0, result.stderr
    assert fake.mints == 1 and "Solo" in result.stdout and result.stdout.startswith("id\t")
    assert f"WEBEX_ACCESS_TOKEN={fake.access_token}" in env.read_text()


# -- the overview menu --------------------------------------------------------------------------




def test_the_menu_opens_on_an_org_overview_and_an_org_opens_todays_menu(app, fake):
    globex, broken = fake.add_org(), fake.add_org()
    fake.add_source(audience="Acme Fine", expires_in=20 * 3600)
    globex.add_source(audience="Globex Expired", expires_in=-600)
    globex.add_source(audience="Globex Soon", expires_in=600)
    broken.fail("GET", "/v1/dataSources/", 500, times=10)
    app.org("acme", fake)
    app.org("broken", broken)
    app.org("globex", globex)
    term = app.terminal()
    screen = menu_ready(term)
    rows = {line.split()[1 if line.startswith(" »") else 0]: line for line in screen.splitlines() if line.startswith(("   ", " »"))}
    assert re.search(r"globex\s+2\s+1\s+1\s+expired 10m ago\s+ok", rows["globex"])
    assert re.search(r"acme\s+1\s+0\s+0\s+in 19h 59m\s+ok", rows["acme"])
    assert "unreadable: Webex answered 500" in rows["broken"]
    assert screen.index("broken") < screen.index("globex") < screen.index("acme")  # most in need first
    assert "Rotate everything expiring within the hour in all orgs" in screen
    term.choose("globex")
    screen = term.wait_for(r"type to filter[\s\S]*Back to all orgs[\s\S]*Quit", after_last_key=True)
    assert "globex · Data sources (2)" in screen and "Globex Expired" in screen and "Acme Fine" not in screen
    term.choose("Back to all orgs")
    menu_ready(term)
    term.choose("Rotate everything expiring")
    term.wait_for(r"Rotate 2 token\(s\) in 1 org\(s\) now\?")
    term.press("enter")
    term.wait_for(r"Rotated 2, skipped 0, failed 0")
    assert len(globex.requests("PUT")) == 2 and fake.requests("PUT") == []
    screen = menu_ready(term)
    assert re.search(r"globex\s+2\s+0\s+0\s", screen)
    term.choose("Quit")
    assert term.exit_code() == 0
    assert Counter(load_record(p)["org_name"] for p in app.records_of("globex")) == {"globex": 2}


def test_an_org_opened_from_the_overview_can_register_and_its_record_goes_to_its_folder(app, fake):
    globex = fake.add_org()
    app.org("acme", fake)
    app.org("globex", globex)
    term = app.terminal()
    menu_ready(term)
    term.choose("globex")
    register_in_menu(term, "https://dap.example.com/globex")
    term.wait_for("Done: registration")
    assert len(globex.sources) == 1
    [record] = app.records_of("globex")
    assert load_record(record)["org_id"] == globex.org_id and json.loads(globex.requests("POST")[0].body)["url"].endswith("/globex")
    assert fake.sources == {}
    term.choose("Quit")
    assert term.exit_code() == 0


def test_rate_limits_in_several_orgs_at_once_still_reach_the_overview_and_a_rotation(app, fake):
    orgs = [fake, fake.add_org(), fake.add_org()]
    for number, org in enumerate(orgs):
        org.add_source(audience=f"Soon {number}", expires_in=600)
        org.fail("GET", "/v1/dataSources/", 429, headers={"Retry-After": "1"})
        org.fail("PUT", r"/v1/dataSources/.*", 429, headers={"Retry-After": "1"})
        app.org(f"org{number}", org)
    term = app.terminal()
    screen = menu_ready(term)
    assert len(re.findall(r"in 9m +ok$", screen, re.MULTILINE)) == 3
    term.choose("Rotate everything expiring")
    term.wait_for(r"Rotate 3 token\(s\) in 3 org\(s\) now\?")
    term.press("enter")
    term.wait_for(r"Rotated 3, skipped 0, failed 0")
    assert [len(org.requests("PUT")) for org in orgs] == [2, 2, 2]
    term.choose("Quit")
    assert term.exit_code() == 0


def test_the_schemas_are_read_once_per_run_for_every_org_and_not_for_a_rotation(app, fake):
    orgs = [fake, fake.add_org(), fake.add_org()]
    for number, org in enumerate(orgs):
        org.add_source(audience=f"Org {number}", expires_in=600)
        app.org(f"org{number}", org)
    listed = app.run("--list")
    assert listed.returncode == 0 and listed.stdout.count("Voice Virtual Agent") == 3
    assert sum(len(org.requests("GET", "/v1/dataSources/schemas")) for org in orgs) == 1
    rotated = app.run("--rotate-expiring", "60")
    assert rotated.returncode == 0 and sum(len(org.requests("GET", "/v1/dataSources/schemas")) for org in orgs) == 1


# -- snapshots: the overview at once ----------------------------------------------------------


def test_every_read_leaves_a_snapshot_that_holds_no_token_and_is_no_record(app, fake):
    app.two_orgs("Acme", "Globex")
    assert app.run("--list").returncode == 0
    for name in ("acme", "globex"):
        snapshot = app.records / name / "state.json"
        assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600 and "jwsToken\"" not in snapshot.read_text()
        assert json.loads(snapshot.read_text())["views"][0]["claims"]["aud"] in ("Acme", "Globex")
    history = app.run("--history", "--json")
    assert json.loads(history.stdout) == [] and "could not be read" not in history.stderr


def test_list_cached_prints_the_last_snapshot_and_asks_webex_nothing(app, fake):
    globex = app.two_orgs("Acme Cached", "Globex Cached")
    app.run("--list")
    before = len(fake.requests()) + len(globex.requests())
    cached = app.run("--list", "--cached")
    assert cached.returncode == 0 and "Acme Cached" in cached.stdout and "Globex Cached" in cached.stdout
    assert "The last snapshots, read " in cached.stderr and len(fake.requests()) + len(globex.requests()) == before
    as_json = app.run("--list", "--cached", "--json")
    assert as_json.returncode == 0 and {s["audience"] for s in json.loads(as_json.stdout)} == {"Acme Cached", "Globex Cached"}
    assert {s["signature"] for s in json.loads(as_json.stdout)} == {None}  # not checked: nothing was asked
    assert len(fake.requests()) + len(globex.requests()) == before


def test_the_overview_opens_from_snapshots_then_shows_the_fresh_answer(app, fake):
    globex = app.two_orgs("Acme", "Globex")
    assert app.run("--list").returncode == 0  # leaves the snapshots
    globex.add_source(audience="Globex New", expires_in=600)
    globex.fail("GET", "/v1/dataSources/", None, delay=3)  # a slow org
    term = app.terminal()
    screen = menu_ready(term)  # drawn while globex's answer is held back 3 s
    assert re.search(r"globex .* read \d+[smhd].* ago", screen)  # the last snapshot, and how old it is
    assert globex.wait_for(lambda f: len(f.requests("GET", "/v1/dataSources/")) == 2)
    term.choose("globex")  # its own menu waits for the fresh read
    assert "Globex New" in term.wait_for("Back to all orgs")
    term.choose("Quit")
    assert term.exit_code() == 0


def test_quitting_the_overview_does_not_wait_for_the_orgs_still_to_be_read(app, fake):
    orgs = [fake, *(fake.add_org() for _ in range(5))]
    for number, org in enumerate(orgs):
        org.add_source(audience=f"Org {number}", expires_in=20 * 3600)
        app.org(f"org{number}", org)
    assert app.run("--list").returncode == 0  # leaves the snapshots
    for org in orgs:
        org.fail("GET", "/v1/dataSources/", None, delay=2)  # every org slow: one at a time, 12 s for all
    term = app.terminal("--workers", "1")
    menu_ready(term)  # drawn from the snapshots
    term.choose("Quit")
    assert term.exit_code() == 0
    asked = sum(len(org.requests("GET", "/v1/dataSources/")) for org in orgs) - len(orgs)  # beyond the first --list
    assert asked <= 2  # the read on its way (and perhaps the next), never the rest


def test_rotating_from_the_overview_waits_for_the_fresh_read_and_never_sends_a_snapshot(app, fake):
    globex = fake.add_org()
    fake.add_source(audience="Acme", expires_in=20 * 3600)
    source = globex.add_source(audience="Globex", expires_in=600)
    app.org("acme", fake)
    app.org("globex", globex)
    assert app.run("--list").returncode == 0  # the snapshot has the old URL
    source["url"] = "https://dap.example.com/moved-since"
    globex.issue(source)
    globex.fail("GET", "/v1/dataSources/", None, delay=3)
    term = app.terminal()
    menu_ready(term)
    term.choose("Rotate everything expiring")
    term.wait_for(r"Rotate 1 token\(s\) in 1 org\(s\) now\?")
    term.press("enter")
    term.wait_for(r"Rotated 1, skipped 0, failed 0")
    [put] = globex.requests("PUT")
    assert json.loads(put.body)["url"] == "https://dap.example.com/moved-since"
    term.choose("Quit")
    assert term.exit_code() == 0
