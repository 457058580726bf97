"""The menu as a person uses it: a pseudo-terminal, keys in, the rendered screen out, then the
requests the fake received and the records on disk."""

from __future__ import annotations

import json
import re

from conftest import break_folder, keep_defaults, load_record, menu_ready, record_files, rotate_first
from fake_webex import seed_demo


def quit_cleanly(term):
    term.choose("Quit")
    assert term.exit_code() == 0


def open_update(term, audience):
    term.choose(audience)
    term.wait_for(r"Update this data source\?")
    term.press("y")


def delete_first(term, typed):
    term.choose("Delete")
    term.wait_for("Delete which source")
    term.press("enter")
    term.wait_for("To delete, type its audience")
    term.type(typed)
    term.press("enter")


def test_startup_lists_the_sources_trouble_on_top_with_the_fix_for_it(fake, terminal, env_file):
    seed_demo(fake)
    term = terminal()
    screen = menu_ready(term)
    rows = [line for line in screen.splitlines() if re.match(r"^ (»| ) [0-9a-f]{8}  ", line)]
    assert "Initech" in rows[0] and "expired" in rows[0] and "Globex Voice" in rows[1] and len(rows) == 5
    assert "Data sources (5) · 1 expired · 1 expiring within the hour · 1 disabled" in screen
    # the command to copy names the env file in use, whole on its own line
    assert f"  python data-sources.py --env-file {env_file} --rotate-expiring 60" in screen.splitlines()
    assert "live(s) only 60 minutes" in screen
    for word in ("Register", "Rotate", "Refresh", "Quit", "Delete"):
        assert word in screen
    quit_cleanly(term)


def test_view_shows_details_claims_and_a_verified_signature(fake, terminal):
    source = fake.add_source(audience="Acme", subject="calls", lifetime=90)
    term = terminal()
    term.choose("Acme")
    screen = term.wait_for(r"Update this data source\?")
    assert source["id"] in screen and "90 minutes" in screen and "Connects Webex calls" in screen
    assert re.search(r"Signature\s+valid", screen) and '"jti"' in screen and "sha256:" in screen
    assert source["jwsToken"] not in term.transcript
    term.press("n")
    quit_cleanly(term)
    assert len(fake.requests("GET", server="idb")) == 1


def test_update_keeping_every_default_sends_the_same_values_with_a_new_nonce(fake, terminal, records):
    source = fake.add_source(audience="Acme", subject="calls", lifetime=90)
    term = terminal()
    open_update(term, "Acme")
    keep_defaults(term, "Audience: Acme", "Subject: calls", "URL: https://")
    assert "Schema: Voice Virtual Agent (kept" in term.wait_for(r"\? Token lifetime")
    keep_defaults(term, r"Token lifetime .*: 90", "Nonce:", "Status:")
    screen = term.wait_for(r"Send this update")
    assert "nonce" in screen and source["nonce"] in screen
    term.press("y")
    term.wait_for("Record:")
    [put] = fake.requests("PUT")
    body = json.loads(put.body)
    assert body == {
        "audience": "Acme",
        "subject": "calls",
        "url": source["url"],
        "schemaId": source["schemaId"],
        "tokenLifetimeMinutes": 90,
        "nonce": body["nonce"],
        "status": "active",
    }
    assert body["nonce"] != source["nonce"]
    [record] = record_files(records, f"data_source_update_{source['id']}_*.json")
    assert load_record(record)["configuration"] == body
    quit_cleanly(term)


def test_disabling_requires_an_error_message_and_shows_what_changes(fake, terminal):
    source = fake.add_source(audience="Acme")
    term = terminal()
    open_update(term, "Acme")
    keep_defaults(term, "Audience:", "Subject:", "URL:", "Token lifetime", "Nonce:")
    term.wait_for(r"\? Status:")
    term.press("down", "enter")
    term.wait_for(r"\? Error message:")
    term.press("enter")
    term.wait_for("Disabling needs an error message: Control Hub shows it", after_last_key=True)
    term.type("Contract ended")
    term.press("enter")
    screen = term.wait_for(r"Send this update")
    assert re.search(r"status\s+│\s+active\s+│\s+disabled", screen) and "Contract ended" in screen
    term.press("y")
    term.wait_for("Record:")
    body = json.loads(fake.requests("PUT")[0].body)
    assert body["status"] == "disabled" and body["errorMessage"] == "Contract ended"
    assert fake.sources[source["id"]]["status"] == "disabled"
    quit_cleanly(term)


def test_register_with_defaults_needs_only_the_url_and_the_new_source_appears(fake, terminal, records):
    term = terminal()
    term.choose("Register")
    keep_defaults(term, "Audience: BYODS", "Subject: BYODS")
    term.wait_for(r"\? URL:")
    term.type("https://dap.example.com/new-customer")
    term.press("enter")
    keep_defaults(term, "Schema:", r"Token lifetime .*: 1440")
    nonce = re.search(r"\? Nonce: ([0-9a-f-]{36})", term.wait_for(r"\? Nonce: [0-9a-f-]{36}")).group(1)
    term.press("enter")
    term.wait_for(r"Register this data source\?")
    term.press("y")
    screen = term.wait_for(r"Record:.*registration")
    [post] = fake.requests("POST")
    body = json.loads(post.body)
    assert body == {
        "audience": "BYODS",
        "subject": "BYODS",
        "url": "https://dap.example.com/new-customer",
        "schemaId": next(iter(fake.schemas)),
        "tokenLifetimeMinutes": 1440,
        "nonce": nonce,
    }
    [new_id] = fake.sources
    assert len(record_files(records, f"data_source_registration_{new_id}_*.json")) == 1
    screen = menu_ready(term)
    assert new_id[:8] in screen
    quit_cleanly(term)


def test_bad_url_and_lifetime_are_refused_at_the_prompt_which_stays_open(fake, terminal):
    term = terminal()
    term.choose("Register")
    keep_defaults(term, "Audience:", "Subject:")
    term.wait_for(r"\? URL:")
    term.type("http://dap.example.com")
    term.press("enter")
    term.wait_for("must start with https://")
    term.press("ctrl-u")
    term.type("https://dap.example.com/ok")
    term.press("enter")
    keep_defaults(term, "Schema:")
    term.wait_for(r"\? Token lifetime")
    term.press("ctrl-u")
    term.type("2000")
    term.press("enter")
    term.wait_for("1 to 1440 minutes")
    term.press("ctrl-u")
    term.type("abc")
    term.press("enter")
    term.wait_for("whole number")
    term.press("ctrl-u")
    term.type("30")
    term.press("enter")
    keep_defaults(term, "Nonce:")
    term.wait_for(r"Register this data source\?")
    term.press("y")
    term.wait_for("Record:")
    body = json.loads(fake.requests("POST")[0].body)
    assert body["url"] == "https://dap.example.com/ok" and body["tokenLifetimeMinutes"] == 30
    quit_cleanly(term)


def test_a_refused_registration_is_offered_again_with_everything_typed_kept(fake, terminal, records):
    fake.allowed_domains = {"dap.example.com"}
    term = terminal()
    term.choose("Register")
    term.wait_for(r"\? Audience:")
    term.press("ctrl-u")
    term.type("Typed Audience")
    term.press("enter")
    keep_defaults(term, "Subject:")
    term.wait_for(r"\? URL:")
    term.type("https://wrong.example.org/x")
    term.press("enter")
    keep_defaults(term, "Schema:", "Token lifetime", "Nonce:")
    term.wait_for(r"Register this data source\?")
    term.press("y")
    screen = term.wait_for(r"Edit and try again\?")
    assert "400" in screen and "not registered for the Service App" in screen and "ROUTER_" in screen
    assert len(record_files(records, "data_source_registration_failed_*.json")) == 1
    term.press("y")  # everything below was on screen the first time: wait for what is drawn anew
    term.wait_for(r"\? Audience: Typed Audience", after_last_key=True)
    term.press("enter")
    keep_defaults(term, "Subject:")
    term.wait_for(r"\? URL: https://wrong.example.org/x", after_last_key=True)
    term.press("ctrl-u")
    term.type("https://dap.example.com/x")
    term.press("enter")
    keep_defaults(term, "Schema:", "Token lifetime", "Nonce:")
    term.wait_for(r"Register this data source\?", after_last_key=True)
    term.press("y")
    term.wait_for(r"Done: registration")
    assert [s["audience"] for s in fake.sources.values()] == ["Typed Audience"]
    quit_cleanly(term)


def test_rotate_takes_two_keystrokes_after_choosing_it_and_shows_the_new_expiry(fake, terminal, records):
    source = fake.add_source(audience="Acme", expires_in=600, lifetime=120)
    term = terminal()
    term.choose("Rotate")
    term.wait_for("Rotate which source")
    term.press("enter")
    term.wait_for(r"Rotate 1 token\(s\) now\?")
    term.press("enter")
    term.wait_for(r"Done: rotation .*\(in (1h 59m|2h 0m)\)")
    body = json.loads(fake.requests("PUT")[0].body)
    assert body["nonce"] != source["nonce"] and body["tokenLifetimeMinutes"] == 120
    assert len(record_files(records, f"data_source_rotation_{source['id']}_*.json")) == 1
    quit_cleanly(term)


def test_a_rotation_that_cannot_be_recorded_says_so_and_the_menu_carries_on(fake, terminal, records):
    source = fake.add_source(audience="Acme")
    fake.fail("PUT", ".*", None, on_arrival=break_folder(records))
    term = terminal()
    rotate_first(term)
    term.wait_for(r"Done: rotation[\s\S]*went through, but no record of it was kept")
    menu_ready(term)
    assert fake.sources[source["id"]]["nonce"] == json.loads(fake.requests("PUT")[0].body)["nonce"]
    quit_cleanly(term)


def test_rotating_all_urgent_sources_shows_a_progress_bar_and_summary(fake, terminal):
    urgent = [fake.add_source(expires_in=-10), fake.add_source(expires_in=300)]
    fake.add_source(expires_in=20 * 3600)
    term = terminal()
    term.choose("Rotate")
    term.wait_for("All 2 expired or expiring within the hour")
    term.press("enter")
    term.wait_for(r"Rotate 2 token\(s\) now\?")
    term.press("y")
    term.wait_for(r"Rotated 2, skipped 0, failed 0")
    assert re.search(r"Rotating.*100%", term.plain_transcript())
    assert {p.path.rsplit("/", 1)[1] for p in fake.requests("PUT")} == {s["id"] for s in urgent}
    quit_cleanly(term)


def test_refresh_rereads_the_list(fake, terminal):
    term = terminal()
    menu_ready(term)
    fake.add_source(audience="Added Meanwhile")
    term.choose("Refresh")
    term.wait_for("Added Meanwhile")
    quit_cleanly(term)
    assert len(fake.requests("GET", "/v1/dataSources/")) == 2
    assert len(fake.requests("GET", "/v1/dataSources/schemas")) == 1


def test_ctrl_c_at_the_menu_exits_130(fake, terminal):
    term = terminal()
    menu_ready(term)
    term.press("ctrl-c")
    assert term.exit_code() == 130
    assert "Traceback" not in term.transcript


def test_ctrl_c_in_a_wizard_cancels_it_sends_nothing_and_the_menu_carries_on(fake, terminal, records):
    term = terminal()
    term.choose("Register")
    keep_defaults(term, "Audience:")
    term.wait_for(r"\? Subject:")
    term.press("ctrl-c")
    term.wait_for("Cancelled: nothing was sent")
    menu_ready(term)
    quit_cleanly(term)
    assert fake.requests("POST") == [] and record_files(records) == []


def test_ctrl_c_while_a_write_is_in_flight_records_the_answer_then_exits_130(fake, terminal, records):
    source = fake.add_source(audience="Acme")
    fake.fail("PUT", ".*", None, delay=1.5)
    term = terminal()
    rotate_first(term)
    assert fake.wait_for(lambda f: f.requests("PUT"))
    term.press("ctrl-c")
    assert term.exit_code() == 130
    assert "waiting for Webex's answer" in term.plain_transcript()
    [record] = record_files(records, f"data_source_rotation_{source['id']}_*.json")
    assert load_record(record)["success"] is True


def test_an_api_error_shows_status_message_and_tracking_id_and_the_menu_carries_on(fake, terminal):
    fake.add_source(audience="Acme")
    fake.fail("PUT", ".*", 409)
    term = terminal()
    rotate_first(term)
    term.wait_for(r"Webex answered 409.*Injected fault 409.*ROUTER_")
    menu_ready(term)
    quit_cleanly(term)


def test_a_rate_limit_shows_a_countdown_then_succeeds(fake, terminal):
    fake.add_source(audience="Acme")
    fake.fail("PUT", ".*", 429, headers={"Retry-After": "2"})
    term = terminal()
    rotate_first(term)
    term.wait_for(r"Webex answered 429: retrying in \d s")
    term.wait_for(r"Done: rotation")
    quit_cleanly(term)


def test_delete_typed_wrong_sends_nothing(fake, terminal):
    source = fake.add_source(audience="Acme")
    term = terminal()
    delete_first(term, "Acne")
    term.wait_for("does not match: nothing was deleted")
    quit_cleanly(term)
    assert fake.requests("DELETE") == [] and source["id"] in fake.sources


def test_delete_typed_right_deletes_and_records_the_last_configuration(fake, terminal, records):
    source = fake.add_source(audience="Acme", subject="calls", lifetime=45)
    term = terminal()
    delete_first(term, source["id"][:8])
    term.wait_for("Done: delete")
    screen = menu_ready(term)
    assert "No data sources yet" in screen
    assert fake.sources == {}
    [record] = record_files(records, f"data_source_delete_{source['id']}_*.json")
    content = load_record(record)
    assert content["configuration"] == {
        "schemaId": source["schemaId"],
        "url": source["url"],
        "audience": "Acme",
        "subject": "calls",
        "tokenLifetimeMinutes": 45,
    }
    assert content["api_response"]["status_code"] == 204
    quit_cleanly(term)


def test_deleting_a_source_that_is_already_gone_says_so(fake, terminal, records):
    source = fake.add_source(audience="Acme")
    term = terminal()
    menu_ready(term)
    fake.sources.clear()
    delete_first(term, "Acme")
    term.wait_for("already gone")
    menu_ready(term)
    quit_cleanly(term)
    [record] = record_files(records, "data_source_delete_failed_*.json")
    assert load_record(record)["data_source_id"] == source["id"]


def test_schemas_lists_every_schema_and_shows_one(fake, terminal):
    term = terminal()
    term.choose("Schemas")
    term.wait_for(r"Contact Center Transcripts[\s\S]*gRPC[\s\S]*Show which schema[\s\S]*Back")
    term.press("enter")
    term.wait_for(r'Schema [0-9a-f-]{36}[\s\S]*"serviceType": "Voice Virtual Agent"')
    quit_cleanly(term)
    assert len(fake.requests("GET", r"/v1/dataSources/schemas/[0-9a-f-]+")) == 1


def test_a_token_refused_at_startup_is_replaced_at_once_checked_hidden_saved_and_the_sources_load(fake, terminal, env_file):
    fake.access_token = "fresh-token-typed-by-the-operator"  # the one in the env file no longer works
    fake.add_source(audience="Loaded After The New Token")
    term = terminal()
    term.wait_for(r"Paste a new access token now\? \(Y/n\)")
    assert term.text().count("Webex answered 401") == 1  # said once
    term.press("enter")
    term.wait_for("input hidden")
    term.type("a-wrong-token-value")
    term.press("enter")
    term.wait_for("Webex answered 401")
    term.wait_for("input hidden")
    term.type(fake.access_token)
    term.press("enter")
    term.wait_for("works and was saved")
    assert "Loaded After The New Token" in menu_ready(term)
    quit_cleanly(term)
    assert f"WEBEX_ACCESS_TOKEN={fake.access_token}\n" in env_file.read_text()
    assert fake.access_token not in term.transcript and "a-wrong-token-value" not in term.transcript


def test_an_expired_token_in_the_menu_offers_a_new_one_and_carries_on(fake, terminal, env_file):
    term = terminal()
    menu_ready(term)
    fake.expire_access_token()
    fake.access_token = "pasted-after-expiry-token"
    fake.add_source(audience="After Expiry")
    term.choose("Refresh")
    term.wait_for(r"Paste a new access token now\?")
    term.press("y")
    term.wait_for("input hidden")
    term.type(fake.access_token)
    term.press("enter")
    term.wait_for("works and was saved")
    assert "After Expiry" in menu_ready(term)
    quit_cleanly(term)
    assert f"WEBEX_ACCESS_TOKEN={fake.access_token}" in env_file.read_text()


def test_with_many_sources_the_menu_shows_the_most_urgent_and_finds_any(fake, terminal):
    for n in range(60):
        fake.add_source(audience=f"Org {n:02d}", expires_in=3600 * (n + 2))
    fake.add_source(audience="Lapsed", expires_in=-5)
    term = terminal()
    term.choose("Org 59")  # not among the most urgent: typing finds it
    assert re.search(r"── \d+ more: type to filter, or scroll ──", term.plain_transcript())
    assert "Org 59" in term.wait_for(r"Update this data source\?")
    term.press("n")
    quit_cleanly(term)


def test_enter_all_the_way_through_register_registers_once_the_payload_is_shown(fake, terminal, records):
    term = terminal()
    term.choose("Register")
    keep_defaults(term, "Audience", "Subject")
    term.wait_for(r"\? URL:", after_last_key=True)
    term.type("https://dap.example.com/all-enter")
    term.press("enter")
    keep_defaults(term, "Schema", "Token lifetime", "Nonce")
    term.wait_for(r"What will be registered[\s\S]*Register this data source\? \(Y/n\)", after_last_key=True)
    term.press("enter")
    term.wait_for("Done: registration")
    assert [s["url"] for s in fake.sources.values()] == ["https://dap.example.com/all-enter"]
    quit_cleanly(term)
