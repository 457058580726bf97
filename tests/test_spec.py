"""The API as Webex specifies it: sparse list items, every Webex issuer, key sets without kids,
an update that keeps the schema, no accidental duplicates, and the smaller points."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT, keep_defaults, load_record, record_files, run_cli, write_env

SPEC_LIST_ITEM = ("applicationId", "createdAt", "createdBy", "jwsToken", "orgId")


# -- sparse list items --------------------------------------------------------------------------


def test_sparse_list_items_are_read_one_by_one_before_a_rotation_decides(fake, env_file):
    expiring = fake.add_source(audience="Expiring", expires_in=600)
    fine = fake.add_source(audience="Fine", expires_in=20 * 3600)
    disabled = fake.add_source(audience="Paused", expires_in=60, status="disabled", error_message="paused")
    fake.list_fields = ("id", *SPEC_LIST_ITEM)
    result = run_cli("--rotate-expiring", "60", env_file=env_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(s.path for s in fake.requests("GET", r"/v1/dataSources/[^/]+") if "schemas" not in s.path) == sorted(
        f"/v1/dataSources/{s['id']}" for s in (expiring, fine, disabled)
    )
    assert [s.path for s in fake.requests("PUT")] == [f"/v1/dataSources/{expiring['id']}"]
    assert f"skipped  {disabled['id']}  disabled" in result.stdout and "Rotated 1, skipped 1, failed 0." in result.stdout


def test_a_sparse_item_whose_own_read_fails_cannot_be_judged_and_the_rotation_exits_1(fake, env_file):
    source = fake.add_source(audience="Expiring", expires_in=600)
    fake.list_fields = ("id", *SPEC_LIST_ITEM)
    fake.fail("GET", f"/v1/dataSources/{source['id']}", 404)
    result = run_cli("--rotate-expiring", "60", env_file=env_file)
    assert result.returncode == 1
    assert "cannot be judged" in result.stdout and "Rotated 0, skipped 0, failed 1." in result.stdout
    assert fake.requests("PUT") == []


def test_list_items_in_the_specs_example_shape_without_an_id_fail_a_rotation_instead_of_passing(fake, env_file):
    for n in range(2):
        fake.add_source(audience=f"S{n}", expires_in=600)
    fake.list_fields = SPEC_LIST_ITEM
    result = run_cli("--rotate-expiring", "60", env_file=env_file)
    assert result.returncode == 1
    assert result.stdout.count("without an id, so it cannot be judged") == 2 and "failed 2." in result.stdout
    assert "2 item(s) in Webex's list had no id" in result.stderr
    listing = run_cli("--list", env_file=env_file)
    assert listing.returncode == 0 and "2 item(s)" in listing.stderr and len(listing.stdout.splitlines()) == 1


def test_a_missing_status_is_active_unless_the_source_carries_an_error_message(ds):
    assert ds.source_view({"id": "a"}).status == "active"
    assert ds.source_view({"id": "b", "errorMessage": "stopped"}).status == "disabled"
    assert ds.source_view({"id": "c", "status": "disabled"}).status == "disabled"
    assert any("did not give its status" in w for w in ds.source_view({"id": "a"}).warnings)


# -- issuers ------------------------------------------------------------------------------------

WEBEX_ISSUERS = [
    "https://idbroker.webex.com/idb",
    "https://idbroker-eu.webex.com/idb",
    "https://idbroker-b-us.webex.com/idb",
    "https://idbroker-ca.webex.com/idb",
]


def test_the_default_issuers_are_the_us_eu_us_b_and_ca_brokers_and_the_docs_list_them(ds):
    assert list(ds.DEFAULT_TRUSTED_ISSUERS) == WEBEX_ISSUERS
    sample = (ROOT / ".env.sample").read_text()
    readme = (ROOT / "README.md").read_text()
    assert all(issuer in sample and issuer in readme for issuer in WEBEX_ISSUERS)


# -- update keeps the schema; an old URL may stay ------------------------------------------------




def test_update_keeps_a_url_that_todays_rules_refuse_with_a_warning(fake, terminal):
    source = fake.add_source(audience="Legacy", url="dap.example.com/no-scheme")
    term = terminal()
    term.choose("Legacy")
    term.wait_for(r"Update this data source\?")
    term.press("y")
    keep_defaults(term, "Audience", "Subject")
    screen = term.wait_for(r"\? URL: dap.example.com/no-scheme")
    assert "would not be accepted for a new source" in screen.replace("\n", "")
    term.press("enter")
    keep_defaults(term, "Token lifetime", "Nonce", "Status")
    term.wait_for(r"Send this update")
    term.press("y")
    term.wait_for("Done: update")
    assert json.loads(fake.requests("PUT")[0].body)["url"] == "dap.example.com/no-scheme"
    term.choose("Quit")
    assert term.exit_code() == 0
    assert fake.sources[source["id"]]["nonce"] != source["nonce"]


def test_update_refuses_a_new_url_that_todays_rules_refuse(fake, terminal):
    fake.add_source(audience="Legacy", url="dap.example.com/no-scheme")
    term = terminal()
    term.choose("Legacy")
    term.wait_for(r"Update this data source\?")
    term.press("y")
    keep_defaults(term, "Audience", "Subject")
    term.wait_for(r"\? URL:", after_last_key=True)
    term.type("x")
    term.press("enter")
    term.wait_for("must start with https://")
    term.press("ctrl-c")
    term.wait_for("Cancelled: nothing was sent")
    assert fake.requests("PUT") == []
    term.choose("Quit")
    assert term.exit_code() == 0


def test_re_enabling_sends_an_empty_error_message_to_clear_the_old_one(fake, terminal):
    source = fake.add_source(audience="Paused", status="disabled", error_message="Contract paused")
    term = terminal()
    term.choose("Paused")
    term.wait_for(r"Update this data source\?")
    term.press("y")
    keep_defaults(term, "Audience", "Subject", "URL", "Token lifetime", "Nonce")
    term.wait_for(r"\? Status:", after_last_key=True)
    term.press("up", "enter")
    screen = term.wait_for(r"Send this update")
    assert re.search(r"errorMessage\s+│\s+Contract paused", screen)
    term.press("y")
    term.wait_for("Done: update")
    body = json.loads(fake.requests("PUT")[0].body)
    assert body["status"] == "active" and body["errorMessage"] == ""
    assert fake.sources[source["id"]]["status"] == "active"
    term.choose("Quit")
    assert term.exit_code() == 0


# -- no accidental duplicates -------------------------------------------------------------------


def register_same_as(term, source):
    term.choose("Register")
    for label, value in (("Audience", source["audience"]), ("Subject", source["subject"]), ("URL", source["url"])):
        term.wait_for(rf"\? {label}:", after_last_key=True)
        term.press("ctrl-u")
        term.type(value)
        term.press("enter")
    keep_defaults(term, "Schema", "Token lifetime", "Nonce")


def test_registering_the_same_source_again_offers_to_update_that_one_by_default(fake, terminal, records):
    source = fake.add_source(audience="Acme", subject="calls")
    term = terminal()
    register_same_as(term, source)
    screen = term.wait_for(r"What now\?")
    assert "same URL, schema, audience and subject exists" in screen.replace("\n", "") and "Acme" in screen
    term.press("enter")  # Update that one instead
    keep_defaults(term, "Audience: Acme", "Subject: calls", "URL", "Token lifetime", "Nonce", "Status")
    term.wait_for(r"Send this update")
    term.press("y")
    term.wait_for("Done: update")
    assert fake.requests("POST") == [] and len(fake.requests("PUT")) == 1 and list(fake.sources) == [source["id"]]
    assert len(record_files(records, f"data_source_update_{source['id']}_*.json")) == 1
    term.choose("Quit")
    assert term.exit_code() == 0


def test_registering_another_anyway_creates_a_second_source(fake, terminal):
    source = fake.add_source(audience="Acme", subject="calls")
    term = terminal()
    register_same_as(term, source)
    term.wait_for(r"What now\?")
    term.press("down", "enter")
    term.wait_for(r"Register this data source\?")
    term.press("y")
    term.wait_for("Done: registration")
    assert len(fake.sources) == 2 and len(fake.requests("POST")) == 1
    term.choose("Quit")
    assert term.exit_code() == 0


# -- smaller points -----------------------------------------------------------------------------


def test_a_403_on_the_schema_calls_names_no_scope(ds, fake, client):
    fake.fail("GET", "/v1/dataSources/schemas", 403)
    with pytest.raises(ds.ApiError) as schemas_refused:
        client.list_schemas()
    assert "schemas" in str(schemas_refused.value) and "spark-admin" not in str(schemas_refused.value)
    fake.fail("GET", "/v1/dataSources/", 403)
    with pytest.raises(ds.ApiError, match="spark-admin:datasource_read"):
        client.list_sources()


def test_a_refresh_token_near_its_end_is_saved_with_its_expiry_and_warned_about(fake, tmp_path, records):
    fake.add_source(audience="Soon", expires_in=600)
    fake.refresh_expires_in = 5 * 86400
    env = write_env(
        tmp_path / "org.env",
        {
            **fake.env(),
            "WEBEX_CLIENT_ID": fake.client_id,
            "WEBEX_CLIENT_SECRET": fake.client_secret,
            "WEBEX_REFRESH_TOKEN": fake.refresh_token,
            "WEBEX_RECORDS_DIR": records,
        },
    )
    fake.expire_access_token()
    assert run_cli("--list", env_file=env).returncode == 0
    saved = dict(line.split("=", 1) for line in env.read_text().splitlines())
    assert saved["WEBEX_REFRESH_TOKEN_EXPIRES_AT"].endswith("+00:00")
    rotation = run_cli("--rotate-expiring", "60", env_file=env)
    assert rotation.returncode == 0
    assert re.search(r"^warning  The refresh token in .* expires in 4d 23h", rotation.stdout, re.MULTILINE)
    listing = run_cli("--list", env_file=env)
    assert "refresh token" in listing.stderr and "developer portal" in " ".join(listing.stderr.split())
    assert load_record(record_files(records, "data_source_rotation_*.json")[0])["success"] is True


def test_a_refresh_token_far_from_its_end_is_not_warned_about(fake, tmp_path, records):
    env = write_env(
        tmp_path / "org.env", {**fake.env(), "WEBEX_RECORDS_DIR": records, "WEBEX_REFRESH_TOKEN_EXPIRES_AT": "2099-01-01T00:00:00+00:00"}
    )
    result = run_cli("--list", env_file=env)
    assert result.returncode == 0 and "refresh token" not in result.stderr
