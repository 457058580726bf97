"""Customers joining and leaving: --onboard mints an org's token, writes its file and registers its
source from the template; drift from the template is flagged and put back; --offboard disables or
deletes every source and sets the org's file aside; an org with no active source, or one that
withdrew the Service App, is named as such.

Each test runs a copy of the script in its own folder (the App fixture), so the shared .env beside
it, the orgs/ folder and the records are real."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import stat
import subprocess
import sys
from datetime import datetime

from conftest import OUTPUTS, ROOT, child_env, load_record, menu_ready, run_cli, write_env
from prometheus_client.parser import text_string_to_metric_families

TEMPLATE_URL = "https://dap.example.com/byods/{org_id}"


def onboarding_app(app, fake, **template):
    """The shared .env holds the Service App's minting keys and the template."""
    minting = {key: value for key, value in fake.mint_env(fake).items() if key != "WEBEX_TARGET_ORG_ID"}
    app.share(**minting, **{"WEBEX_SOURCE_URL": TEMPLATE_URL, "WEBEX_SOURCE_SCHEMA_ID": next(iter(fake.schemas)), **template})


def command(app, *args):
    """The tool as a webhook receiver or a person calls it: no --env-file, the shared .env beside it."""
    return run_cli(*args, script=app.script)


def org_file(app, name: str):
    return app.root / "orgs" / f"{name}.env"


def onboarded(app, fake, name: str = "acme"):
    """A customer org onboarded under name: its fake org."""
    onboarding_app(app, fake)
    customer = fake.add_org()
    result = command(app, "--onboard", customer.org_id, "--org-name", name)
    assert result.returncode == 0, result.stdout + result.stderr
    return customer


def writes(org) -> list:
    return [seen for seen in org.requests() if seen.method != "GET"]


# -- onboarding -----------------------------------------------------------------------------------


def test_onboarding_mints_once_writes_a_private_file_registers_from_the_template_and_records_it(app, fake):
    onboarding_app(app, fake)
    customer = fake.add_org()
    result = command(app, "--onboard", customer.org_id)
    assert result.returncode == 0, result.stdout + result.stderr
    name = f"org-{customer.org_id[:8]}"
    path = org_file(app, name)
    assert customer.mints == 1 and stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = path.read_text()
    assert f"WEBEX_ORG_NAME={name}\n" in saved and f"WEBEX_TARGET_ORG_ID={customer.org_id}\n" in saved
    assert f"WEBEX_ACCESS_TOKEN={customer.access_token}\n" in saved and f"WEBEX_REFRESH_TOKEN={customer.refresh_token}\n" in saved
    [post] = customer.requests("POST")
    sent = json.loads(post.body)
    assert sent["url"] == f"https://dap.example.com/byods/{customer.org_id}" and sent["schemaId"] == next(iter(fake.schemas))
    assert (sent["audience"], sent["subject"], sent["tokenLifetimeMinutes"]) == ("BYODS", "BYODS", 1440)
    [record] = app.records_of(name)
    assert load_record(record)["operation_type"] == "registration" and load_record(record)["org_id"] == customer.org_id
    [source] = customer.sources.values()
    assert f"{name} is onboarded: data source {source['id']} at {sent['url']}" in result.stdout
    assert "Its token's signature: valid." in result.stdout


def test_onboarding_again_repeats_nothing_that_is_done(app, fake):
    customer = onboarded(app, fake)
    sent_before, mints = len(writes(customer)) + len(writes(fake)), customer.mints
    again = command(app, "--onboard", customer.org_id)
    assert again.returncode == 0, again.stdout + again.stderr
    [source] = customer.sources.values()
    assert f"already registered as {source['id']}" in again.stdout and "onboarded before, as acme" in again.stdout
    assert customer.mints == mints and len(writes(customer)) + len(writes(fake)) == sent_before  # reads only
    assert len(app.records_of("acme")) == 1


def test_onboarding_an_org_that_has_not_authorized_the_service_app_exits_1_and_writes_no_file(app, fake):
    onboarding_app(app, fake)
    stranger = fake.add_org()
    stranger.authorized = False
    result = command(app, "--onboard", stranger.org_id, "--org-name", "stranger")
    assert result.returncode == 1
    said = " ".join(result.stderr.split())
    assert f"Org {stranger.org_id} has not authorized the Service App: a Full Admin of that org authorizes it in Control Hub" in said
    assert list((app.root / "orgs").iterdir()) == [] and stranger.requests() == [] and stranger.mints == 0


def test_onboarding_without_a_template_or_minting_keys_is_bad_usage_and_sends_nothing(app, fake):
    customer = fake.add_org()
    result = command(app, "--onboard", customer.org_id)
    assert result.returncode == 2 and fake.requests() == []
    said = " ".join(result.stderr.split())
    assert "set WEBEX_SOURCE_URL, WEBEX_SERVICE_APP_ID, WEBEX_CLIENT_ID, WEBEX_CLIENT_SECRET, WEBEX_INTEGRATION_TOKEN in" in said
    onboarding_app(app, fake, WEBEX_SOURCE_LIFETIME="0")
    result = command(app, "--onboard", customer.org_id)
    assert result.returncode == 2 and fake.requests() == []
    assert "WEBEX_SOURCE_LIFETIME (the onboarding template) is not usable" in " ".join(result.stderr.split())


def test_a_template_url_with_an_unknown_placeholder_is_refused(app, fake):
    onboarding_app(app, fake)
    app.share(WEBEX_SOURCE_URL="https://dap.example.com/{orgid}")  # the later line wins
    result = command(app, "--onboard", fake.add_org().org_id)
    assert result.returncode == 2 and fake.requests() == []
    assert "Only {org_id} and {org_name} are filled in" in " ".join(result.stderr.split())


def test_onboarding_reuses_the_file_of_an_org_onboarded_under_another_name_and_refuses_a_clash(app, fake):
    customer = onboarded(app, fake, "acme")
    clash = command(app, "--onboard", customer.org_id, "--org-name", "globex")
    assert clash.returncode == 2 and "onboarded already, as acme" in " ".join(clash.stderr.split())
    other = fake.add_org()
    taken = command(app, "--onboard", other.org_id, "--org-name", "acme")
    assert taken.returncode == 2 and "names another org" in taken.stderr and other.mints == 0


def test_onboarding_with_several_schemas_and_no_schema_id_says_which_to_choose(app, fake):
    onboarding_app(app, fake, WEBEX_SOURCE_SCHEMA_ID="")
    customer = fake.add_org()
    result = command(app, "--onboard", customer.org_id)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Set WEBEX_SOURCE_SCHEMA_ID" in said
    assert all(schema_id in said for schema_id in fake.schemas) and customer.requests("POST") == []


# -- drift from the template --------------------------------------------------------------------


def edit_source(org, **changes) -> dict:
    """Change the org's one source at Webex, as someone with the portal would."""
    [source] = org.sources.values()
    source.update(changes)
    org.issue(source)
    return source


def test_a_source_that_drifted_is_flagged_in_list_and_json_and_onboard_puts_it_back_with_yes(app, fake):
    customer = onboarded(app, fake)
    source = edit_source(customer, audience="Edited by hand")
    listed = app.run("--list", "--json")
    [row] = json.loads(listed.stdout)
    assert any("differs from the template" in w and "'Edited by hand', the template 'BYODS'" in w for w in row["warnings"])
    piped = app.run("--list")
    assert "differs from the template" in piped.stderr and "\tactive\t" in piped.stdout  # the TSV keeps its plain status
    nonce = source["nonce"]
    unasked = command(app, "--onboard", customer.org_id)
    assert unasked.returncode == 2 and "run again with --yes" in " ".join(unasked.stderr.split())
    assert customer.requests("PUT") == []
    fixed = command(app, "--onboard", customer.org_id, "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    [put] = customer.requests("PUT")
    sent = json.loads(put.body)
    assert sent["audience"] == "BYODS" and sent["url"] == source["url"] and sent["nonce"] != nonce and sent["status"] == "active"
    assert [load_record(p)["operation_type"] for p in app.records_of("acme")].count("update") == 1
    assert json.loads(app.run("--list", "--json").stdout)[0]["warnings"] == []


def test_a_template_url_that_changed_flags_the_source_in_the_table_and_onboard_moves_it(app, fake):
    customer = onboarded(app, fake)
    app.share(WEBEX_SOURCE_URL="https://new.example.com/byods/{org_name}")
    term = app.terminal("--list")
    assert term.exit_code() == 0
    assert re.search(r"│ active · drift │", term.text())
    menu = app.terminal()  # the org's own menu says so above the choices, with the command that mends it
    screen = menu_ready(menu)
    assert f"1 source(s) differ from the onboarding template (see its details): python data-sources.py --onboard {customer.org_id}" \
        in " ".join(screen.split())
    menu.choose("BYODS")
    details = " ".join(menu.wait_for(r"Update this data source\?").split())
    assert "Warning differs from the template (WEBEX_SOURCE_*): url 'https://dap.example.com/byods/" in details
    menu.press("enter")  # No: nothing changes
    menu_ready(menu)
    menu.choose("Quit")
    assert menu.exit_code() == 0
    fixed = command(app, "--onboard", customer.org_id, "--yes")
    assert fixed.returncode == 0 and customer.requests("POST")[1:] == []  # moved, not registered again
    assert json.loads(customer.requests("PUT")[0].body)["url"] == "https://new.example.com/byods/acme"


def test_a_source_disabled_at_offboarding_is_enabled_again_when_the_org_comes_back(app, fake):
    customer = onboarded(app, fake)
    assert command(app, "--offboard", "acme", "--yes").returncode == 0
    back = command(app, "--onboard", customer.org_id, "--org-name", "acme", "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    enabled = json.loads(customer.requests("PUT")[-1].body)
    assert enabled["status"] == "active" and enabled["errorMessage"] == "" and customer.mints == 2
    assert org_file(app, "acme").exists() and (app.root / "orgs" / "acme.env.offboarded").exists()


# -- offboarding ----------------------------------------------------------------------------------


def customer_with_sources(app, fake, name="acme"):
    customer = fake.add_org()
    customer.add_source(audience="Voice")
    customer.add_source(audience="Transcripts")
    customer.add_source(audience="Paused", status="disabled", error_message="Contract paused")
    app.org(name, customer, WEBEX_TARGET_ORG_ID=customer.org_id)
    return customer


def test_offboarding_without_a_terminal_needs_yes_and_sends_nothing(app, fake):
    customer = customer_with_sources(app, fake)
    result = command(app, "--offboard", "acme")
    assert result.returncode == 2 and "add --yes" in result.stderr
    assert customer.requests() == [] and org_file(app, "acme").exists()


def test_offboarding_disables_each_active_source_with_the_message_records_each_and_sets_the_file_aside(app, fake):
    customer = customer_with_sources(app, fake)
    result = command(app, "--offboard", customer.org_id, "--yes", "--message", "Contract ended: call us")
    assert result.returncode == 0, result.stdout + result.stderr
    bodies = [json.loads(put.body) for put in customer.requests("PUT")]
    assert sorted(body["audience"] for body in bodies) == ["Transcripts", "Voice"]  # the paused one is left as it is
    assert all(body["status"] == "disabled" and body["errorMessage"] == "Contract ended: call us" for body in bodies)
    assert {source["status"] for source in customer.sources.values()} == {"disabled"}
    assert [load_record(p)["operation_type"] for p in app.records_of("acme")] == ["update", "update"]
    assert not org_file(app, "acme").exists() and (app.root / "orgs" / "acme.env.offboarded").exists()
    assert "unchanged " in result.stdout and "acme is offboarded" in result.stdout
    assert app.env_files() == []  # orgs/*.env no longer reads it


def test_offboarding_with_delete_deletes_every_source_with_a_record_each(app, fake):
    customer = customer_with_sources(app, fake)
    result = command(app, "--offboard", "acme", "--delete", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(customer.requests("DELETE")) == 3 and customer.sources == {} and customer.requests("PUT") == []
    assert [load_record(p)["operation_type"] for p in app.records_of("acme")] == ["delete"] * 3
    assert (app.root / "orgs" / "acme.env.offboarded").exists()


def test_the_default_message_says_when_the_service_ended(app, fake):
    customer = customer_with_sources(app, fake)
    assert command(app, "--offboard", "acme", "--yes").returncode == 0
    assert {json.loads(put.body)["errorMessage"] for put in customer.requests("PUT")} == {
        f"Service ended on {datetime.now().date().isoformat()}"}


def test_a_failed_disable_keeps_the_file_so_that_offboarding_can_run_again(app, fake):
    customer = customer_with_sources(app, fake)
    customer.fail("PUT", r"/v1/dataSources/.*", 400, times=1)
    result = command(app, "--offboard", "acme", "--yes")
    assert result.returncode == 1 and "could not be changed" in result.stderr and org_file(app, "acme").exists()
    again = command(app, "--offboard", "acme", "--yes")
    assert again.returncode == 0 and (app.root / "orgs" / "acme.env.offboarded").exists()


def test_offboarding_twice_keeps_the_earlier_file_and_an_unknown_org_is_bad_usage(app, fake):
    customer_with_sources(app, fake)
    (app.root / "orgs" / "acme.env.offboarded").write_text("# from an earlier customer\n")
    assert command(app, "--offboard", "acme", "--yes").returncode == 0
    assert (app.root / "orgs" / "acme.env.offboarded").read_text() == "# from an earlier customer\n"
    assert len(list((app.root / "orgs").glob("acme.env.offboarded.*"))) == 1
    unknown = command(app, "--offboard", "acme", "--yes")
    assert unknown.returncode == 2 and "No org file in" in unknown.stderr


def test_usage_errors_of_the_new_flags(app, fake):
    for args, words in ((["--list", "--org-name", "x"], "--org-name goes with --onboard"),
                        (["--list", "--delete"], "--delete goes with --offboard"),
                        (["--offboard", "a", "--delete", "--message", "bye"], "a deleted one shows nothing"),
                        (["--list", "--yes"], "--yes goes with --onboard, --offboard or --delete"),
                        (["--onboard", "abc", "--env-file", "x.env"], "--env-file does not go with it"),
                        (["--onboard", "a b"], "customer org's id"),
                        (["--onboard", "abc", "--org-name", ".."], "letters, digits")):
        result = command(app, *args)
        assert result.returncode == 2 and words in " ".join(result.stderr.split()), (args, result.stderr)
    assert fake.requests() == []


# -- orgs with nothing coming in ------------------------------------------------------------------


def test_an_org_with_no_active_source_is_a_warning_in_check_and_zero_in_metrics(app, fake):
    idle = fake.add_org()
    idle.add_source(audience="Paused", status="disabled", error_message="paused")
    fake.add_source(audience="Fine", expires_in=20 * 3600)
    app.org("acme", fake)
    app.org("idle", idle)
    check = app.run("--check", "60")
    assert check.returncode == 1
    assert check.stdout.startswith("WARNING - 1 org(s) with no active data source (idle) | ")
    metrics = app.run("--metrics")
    families = {family.name: family for family in text_string_to_metric_families(metrics.stdout)}
    active = {sample.labels["org"]: sample.value for sample in families["byods_org_active_sources"].samples}
    assert active == {"acme": 1.0, "idle": 0.0}


def test_a_single_org_with_no_source_at_all_is_a_warning(fake, env_file):
    check = run_cli("--check", "60", env_file=env_file)
    assert check.returncode == 1 and check.stdout.startswith("WARNING - no active data source | ")


def test_an_org_that_withdrew_is_named_in_check_the_rotation_summary_and_the_overview_with_offboard_next(app, fake):
    onboarding_app(app, fake)
    gone = fake.add_org()
    gone.add_source(audience="Gone", expires_in=600)
    write_env(org_file(app, "gone"), {"WEBEX_TARGET_ORG_ID": gone.org_id, "WEBEX_ACCESS_TOKEN": "revoked-token-000000"})
    gone.authorized = False
    fake.add_source(audience="Fine", expires_in=600)
    app.org("acme", fake)
    check = app.run("--check", "60")
    assert check.returncode == 3 and "gone: not authorized (403): --offboard gone if the customer left" in check.stdout
    rotation = app.run("--rotate-expiring", "60")
    said = " ".join(rotation.stdout.split())
    assert rotation.returncode == 1 and "gone: could not be read:" in said
    assert f"offboard it: python data-sources.py --env-file {org_file(app, 'gone')} --offboard gone" in said
    term = app.terminal()
    assert "not authorized (403): --offboard gone" in menu_ready(term)
    term.choose("Quit")
    assert term.exit_code() == 0
    retired = command(app, "--offboard", "gone", "--yes")
    assert retired.returncode == 0 and "no longer authorizes the Service App" in " ".join(retired.stderr.split())
    assert not org_file(app, "gone").exists() and gone.requests("PUT") == []


def test_template_keys_in_an_org_file_fail_that_org_only(app, fake):
    onboarding_app(app, fake)
    globex = app.two_orgs("Acme", "Globex")
    app.org("globex", globex, WEBEX_SOURCE_URL="https://elsewhere.example.com/{org_id}")
    result = app.run("--list")
    assert result.returncode == 1 and "Acme" in result.stdout and "Globex" not in result.stdout
    assert "sets WEBEX_SOURCE_URL, which only the shared .env" in " ".join(result.stderr.split())
    assert globex.requests() == []


# -- the menu ------------------------------------------------------------------------------------


def onboard_in_menu(term, org_id: str, name: str | None = None) -> str:
    """Onboarding's questions answered: the org's id, and its name (None: Enter keeps org-...).
    Returns the screen that asks to confirm, with the payload on it."""
    term.choose("Onboard a customer org")
    term.wait_for(r"\? The customer.s org id", after_last_key=True)
    term.type(org_id)
    term.press("enter")
    term.wait_for(rf"\? Org name .*org-{org_id[:8]}", after_last_key=True)
    if name:
        term.press("ctrl-u")
        term.type(name)
    term.press("enter")
    return term.wait_for(r"now\?", after_last_key=True)


def offboard_in_menu(term, typed: str) -> None:
    """Offboard this org: disable (the default), the default message, the name as typed."""
    term.choose("Offboard this org")
    term.wait_for(r"Offboard how\?", after_last_key=True)
    term.press("enter")
    term.wait_for(r"\? Error message: Service ended on", after_last_key=True)
    term.press("enter")
    term.wait_for(r"type the org's name \(\w+\)")
    term.type(typed)
    term.press("enter")


def test_the_overview_onboards_a_customer_org_after_showing_the_payload_and_lists_it(app, fake):
    onboarding_app(app, fake)
    app.two_orgs("Acme", "Globex")
    customer = fake.add_org()
    term = app.terminal()
    menu_ready(term)
    screen = onboard_in_menu(term, customer.org_id, "initech")
    assert "Onboard initech now?" in screen and f"https://dap.example.com/byods/{customer.org_id}" in screen
    assert customer.mints == 0  # the payload is shown before anything is sent
    term.press("enter")
    term.wait_for("initech is onboarded")
    screen = menu_ready(term)
    assert re.search(r"initech +1 +0 +0 ", screen)
    term.choose("Quit")
    assert term.exit_code() == 0
    assert customer.mints == 1 and len(customer.requests("POST")) == 1 and org_file(app, "initech").exists()


def test_a_single_orgs_menu_offers_onboarding_when_the_minting_keys_are_set(app, fake):
    fake.add_source(audience="Acme")
    single = write_env(app.root / ".env", {**fake.env(), "WEBEX_RECORDS_DIR": "records"})
    plain = app.terminal(env_files=[single])
    assert "Onboard a customer org" not in menu_ready(plain) and "Offboard this org" not in plain.text()
    plain.choose("Quit")
    assert plain.exit_code() == 0
    onboarding_app(app, fake)
    customer = fake.add_org()
    term = app.terminal(env_files=[single])
    menu_ready(term)
    onboard_in_menu(term, customer.org_id)
    term.press("enter")
    term.wait_for("To see it beside the others")
    term.choose("Quit")
    assert term.exit_code() == 0
    assert org_file(app, f"org-{customer.org_id[:8]}").exists() and len(customer.requests("POST")) == 1


def test_an_orgs_menu_offboards_it_after_its_name_is_typed_and_the_overview_drops_it(app, fake):
    customer = customer_with_sources(app, fake, "globex")
    fake.add_source(audience="Acme")
    app.org("acme", fake)
    term = app.terminal()
    menu_ready(term)
    term.choose("globex")
    term.wait_for(r"Back to all orgs[\s\S]*Quit", after_last_key=True)
    offboard_in_menu(term, "glob")  # a slip: nothing is sent
    term.wait_for("Cancelled: nothing was sent.")
    assert customer.requests("PUT") == [] and "type the org's name (globex)" in term.text()
    offboard_in_menu(term, "globex")
    screen = menu_ready(term)
    assert "globex is offboarded" in term.plain_transcript()
    assert not re.search(r"^ ..globex ", screen.split("Choose an org")[-1], re.MULTILINE)
    term.choose("Quit")
    assert term.exit_code() == 0
    assert len(customer.requests("PUT")) == 2 and (app.root / "orgs" / "globex.env.offboarded").exists()


# -- the README's webhook receiver ----------------------------------------------------------------


def test_the_readmes_webhook_receiver_onboards_on_a_signed_authorized_event_only(app, fake, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    [receiver] = [block for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "def command_for" in block]
    monkeypatch.setenv("BYODS_WEBHOOK_SECRET", "the-webhook-secret")
    namespace = {"__name__": "readme_receiver"}
    exec(compile(receiver, "README.md", "exec"), namespace)  # noqa: S102 (the README's own example, run as written)
    namespace["TOOL"] = [sys.executable, str(app.script)]
    onboarding_app(app, fake)
    customer = fake.add_org()
    event = json.dumps({"resource": "serviceApp", "event": "authorized", "orgId": fake.org_id,
                        "data": {"authorizerOrgId": customer.org_id}}).encode()
    signature = hmac.new(b"the-webhook-secret", event, hashlib.sha1).hexdigest()
    assert namespace["command_for"](event, "0" * 40) is None  # not from Webex: nothing happens
    command = namespace["command_for"](event, signature)
    assert command[-3:] == ["--onboard", customer.org_id, "--yes"]
    result = subprocess.run(command, capture_output=True, text=True, env=child_env(), stdin=subprocess.DEVNULL, check=False)
    OUTPUTS.append(result.stdout + result.stderr)  # searched for secrets, as every run's output is
    assert result.returncode == 0, result.stdout + result.stderr
    assert customer.mints == 1 and len(customer.requests("POST")) == 1


def test_a_source_already_gone_does_not_stop_an_offboarding_by_delete(app, fake):
    customer = customer_with_sources(app, fake)
    gone = next(iter(customer.sources))
    customer.fail("DELETE", f"/v1/dataSources/{gone}", 404)  # deleted by hand meanwhile
    result = command(app, "--offboard", "acme", "--delete", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deleted   {gone}" in result.stdout and (app.root / "orgs" / "acme.env.offboarded").exists()
    assert len(customer.requests("DELETE")) == 3 and len(app.records_of("acme")) == 3
