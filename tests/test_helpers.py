"""Pure helpers: validators, claims, lifetime, expiry, payloads, records, settings. No network."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import load_record, write_env
from hypothesis import example, given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def encode(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def token_with(claims) -> str:
    return f"{encode({'alg': 'RS256', 'kid': 'k'})}.{encode(claims)}.c2ln"


def item(**fields) -> dict:
    claims = {
        "aud": "Acme",
        "sub": "calls",
        "iss": "https://idbroker.webex.com/idb",
        "iat": 1_000_000,
        "exp": 1_000_000 + 3600,
        "jti": "nonce-1",
        "com.cisco.datasource.url": "https://dap.example.com/x",
        "com.cisco.datasource.schema.uuid": "schema-1",
    }
    base = {
        "id": "7791dc84-989c-4903-a3b5-8c48c039dfb3",
        "schemaId": "schema-1",
        "status": "active",
        "url": "https://dap.example.com/x",
        "nonce": "nonce-1",
        "jwsToken": token_with(claims),
    }
    base.update(fields)
    return base


# -- validators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://dap.example.com/byods",
        "https://dap.example.com:8443/x?y=1",
        "https://bücher.example/path",
        "https://10.0.0.5/hook",
        "https://[::1]:443/",
    ],
)
def test_validate_url_accepts_https_urls_with_real_hosts(ds, url):
    assert ds.validate_url(url) is True


@pytest.mark.parametrize(
    "url, reason",
    [
        ("", "required"),
        ("http://dap.example.com", "https://"),
        ("javascript:alert(1)", "https://"),
        ("https://dap example.com", "spaces"),
        (" https://dap.example.com", "spaces"),
        ("https://user:pw@dap.example.com", "user names"),
        ("https://dap.example.com:99999/", "port"),
        ("https://dap.example.com:0/", "port"),
        ("https://localhost/x", "host name"),
        ("https://-bad-.example.com", "host name"),
        ("https://", "host name"),
    ],
)
def test_validate_url_refuses_with_a_reason(ds, url, reason):
    verdict = ds.validate_url(url)
    assert verdict is not True and reason in verdict


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_validate_url_never_crashes_and_accepts_only_https_without_spaces(ds, text):
    verdict = ds.validate_url(text)
    assert verdict is True or (isinstance(verdict, str) and verdict)
    if verdict is True:
        assert text.lower().startswith("https://") and not any(ch.isspace() for ch in text) and "@" not in text


@given(st.text(max_size=12))
@settings(max_examples=300, deadline=None)
def test_validate_lifetime_accepts_exactly_ascii_integers_1_to_1440(ds, text):
    expected = text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 1440
    assert (ds.validate_lifetime(text) is True) == expected


@pytest.mark.parametrize("text", ["0", "1441", "-5", "60.5", "1e3", "", " 60", "٦٠", "99999999999999999999"])
def test_validate_lifetime_refuses_out_of_range_fractional_and_foreign_digits(ds, text):
    assert "1440" in ds.validate_lifetime(text)


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_required_fields_refuse_blank_padded_or_control_text(ds, text):
    verdict = ds.validate_required(text)
    if verdict is True:
        assert text.strip() == text and text and all(ch.isprintable() for ch in text)
    else:
        assert isinstance(verdict, str)


def test_nonce_refuses_spaces_and_error_message_says_why_it_is_needed(ds):
    assert "spaces" in ds.validate_nonce("a b")
    assert ds.validate_nonce("5f0c1c9e-1111") is True
    assert "Control Hub" in ds.validate_error_message("")


# -- claims, lifetime, expiry ------------------------------------------------------------------


def test_source_view_fills_audience_subject_and_lifetime_from_the_claims(ds):
    view = ds.source_view(item())
    assert (view.audience, view.subject, view.lifetime_minutes) == ("Acme", "calls", 60)
    assert view.expires_at == datetime.fromtimestamp(1_000_000 + 3600, UTC)
    assert view.warnings == []


def test_source_view_prefers_the_apis_fields_when_it_sends_them(ds):
    view = ds.source_view(item(audience="From API", subject="api-sub", tokenLifetimeMinutes="90"))
    assert (view.audience, view.subject, view.lifetime_minutes) == ("From API", "api-sub", 90)


@pytest.mark.parametrize("api_lifetime", [0, "0", -5, "ninety", None])
def test_a_lifetime_from_the_api_that_is_not_a_positive_number_gives_way_to_the_claims(ds, api_lifetime):
    assert ds.source_view(item(tokenLifetimeMinutes=api_lifetime)).lifetime_minutes == 60


def test_source_view_survives_missing_and_garbage_tokens(ds):
    for token in (None, "", "not-a-jwt", "a.!!!.c", token_with(["a list"]), 42):
        view = ds.source_view({"id": "x", "jwsToken": token})
        assert view.audience is None and view.lifetime_minutes is None and view.token_problem
        assert ds.expiry_text(view, NOW) == "unknown"


def test_source_view_uses_token_expiry_time_when_the_token_is_unreadable(ds):
    view = ds.source_view({"id": "x", "tokenExpiryTime": "2026-11-22T13:00:00.000Z"})
    assert ds.expiry_text(view, NOW) == "in 1h 0m"


def test_claim_mismatches_name_the_claim_and_the_field(ds):
    view = ds.source_view(item(url="https://other.example.com/y", nonce="nonce-2"))
    text = " ".join(view.warnings)
    assert "com.cisco.datasource.url" in text and "jti" in text and "schema" not in text


@given(
    st.dictionaries(
        st.sampled_from(["iat", "exp", "aud", "sub", "jti"]),
        st.one_of(st.integers(), st.floats(), st.text(), st.none(), st.lists(st.text(), max_size=2)),
    )
)
@example(claims={"iat": 0, "exp": 1.0})  # a token living one second still has a lifetime of 1 minute
@settings(max_examples=300, deadline=None)
def test_any_claims_give_a_view_without_crashing(ds, claims):
    view = ds.source_view({"id": "x", "jwsToken": token_with(claims)})
    lifetime = view.lifetime_minutes
    assert lifetime is None or lifetime > 0
    ds.expiry_text(view, NOW)
    ds.urgency(view, NOW)


@pytest.mark.parametrize(
    "delta, text",
    [
        (timedelta(hours=-3, minutes=-12), "expired 3h 12m ago"),
        (timedelta(minutes=42), "in 42m"),
        (timedelta(days=1, hours=2), "in 1d 2h"),
        (timedelta(seconds=30), "in 30s"),
    ],
)
def test_expiry_text_says_time_left_or_since(ds, delta, text):
    view = ds.SourceView(id="x", expires_at=NOW + delta)
    assert ds.expiry_text(view, NOW) == text


def test_sorting_puts_expired_then_unknown_then_soon_then_fine(ds):
    views = [
        ds.SourceView(id=name, expires_at=None if delta is None else NOW + delta)
        for name, delta in [
            ("fine", timedelta(hours=5)),
            ("soon", timedelta(minutes=5)),
            ("unknown", None),
            ("expired", timedelta(minutes=-1)),
        ]
    ]
    assert [v.id for v in ds.sort_views(views, NOW)] == ["expired", "unknown", "soon", "fine"]


# -- payloads ---------------------------------------------------------------------------------


def test_rotation_payload_changes_only_the_nonce_and_keeps_the_lifetime(ds):
    view = ds.source_view(item())
    payload = ds.rotation_payload(view)
    before = ds.payload_from_view(view)
    assert [name for name, _, _ in ds.changed_fields(before, payload)] == ["nonce"]
    assert payload["tokenLifetimeMinutes"] == 60 and payload["status"] == "active"
    assert ds.rotation_payload(view, lifetime=15)["tokenLifetimeMinutes"] == 15


def test_rotation_payload_refuses_when_audience_is_unknown(ds):
    with pytest.raises(ValueError, match="audience"):
        ds.rotation_payload(ds.source_view({"id": "x", "schemaId": "s", "url": "https://a.example.com", "status": "active"}))


def test_changed_fields_shows_a_cleared_error_message(ds):
    before = {"status": "disabled", "errorMessage": "paused"}
    assert ds.changed_fields(before, {"status": "active"}) == [("status", "disabled", "active"), ("errorMessage", "paused", None)]


# -- records ----------------------------------------------------------------------------------


def test_redact_replaces_every_jws_token_with_claims_and_fingerprint(ds):
    raw = item()
    out = ds.redact({"data_sources": [raw], "body": raw})
    text = json.dumps(out)
    assert raw["jwsToken"] not in text
    assert out["body"]["jwsTokenClaims"]["aud"] == "Acme"
    assert out["body"]["jwsTokenFingerprint"].startswith("sha256:")


def test_a_hundred_records_in_the_same_second_give_a_hundred_files_with_mode_0600(ds, tmp_path):
    records = tmp_path / "records"
    ds.ensure_records_dir(records)
    paths = {ds.write_record(records, "data_source_update_abc", {"n": n}) for n in range(100)}
    assert len(paths) == 100 == len(list(records.glob("*.json")))
    assert not list(records.glob(".*.tmp"))
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {0o600}
    assert stat.S_IMODE(records.stat().st_mode) == 0o700
    assert sorted(load_record(p)["n"] for p in paths) == list(range(100))


def test_record_names_follow_the_contract(ds, tmp_path):
    path = ds.write_record(tmp_path, "data_source_rotation_7791dc84", {})
    assert __import__("re").fullmatch(r"data_source_rotation_7791dc84_\d{8}_\d{6}_\d{6}\.json", path.name)


def test_a_record_folder_that_cannot_be_made_is_refused_before_anything_is_sent(ds, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ds.RecordError, match="Nothing was sent"):
        ds.ensure_records_dir(blocker / "records")


def test_workers_making_the_records_folder_at_once_all_succeed(ds, tmp_path):
    for attempt in range(30):
        folder, start, errors = tmp_path / str(attempt) / "records", threading.Barrier(8), []

        def make(folder=folder, start=start, errors=errors):
            start.wait()
            try:
                ds.ensure_records_dir(folder)
            except ds.RecordError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=make) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and folder.is_dir()


def test_secrets_are_scrubbed_from_records(ds, tmp_path):
    ds.remember_secret("super-secret-token-value")
    path = ds.write_record(tmp_path, "x", {"error": "bad token super-secret-token-value"})
    assert "super-secret-token-value" not in path.read_text()


# -- settings and .env ------------------------------------------------------------------------


def test_missing_or_placeholder_token_is_a_config_error_saying_where_to_put_it(ds, tmp_path, monkeypatch):
    monkeypatch.delenv("WEBEX_ACCESS_TOKEN", raising=False)
    env = write_env(tmp_path / ".env", {"WEBEX_ACCESS_TOKEN": ds.TOKEN_PLACEHOLDER})
    with pytest.raises(ds.ConfigError, match="WEBEX_ACCESS_TOKEN"):
        ds.load_settings(env, ds.read_env_file(env), None)


def test_real_environment_variables_win_over_the_env_file(ds, tmp_path, monkeypatch):
    env = write_env(tmp_path / ".env", {"WEBEX_ACCESS_TOKEN": "from-file-1234", "WEBEX_API_BASE_URL": "https://a.example.com/v1"})
    monkeypatch.setenv("WEBEX_ACCESS_TOKEN", "from-environment-1234")
    settings_ = ds.load_settings(env, ds.read_env_file(env), None)
    assert settings_.tokens.access == "from-environment-1234" and settings_.base_url == "https://a.example.com/v1"


def test_plain_http_is_refused_for_remote_hosts(ds, tmp_path, monkeypatch):
    monkeypatch.delenv("WEBEX_API_BASE_URL", raising=False)
    env = write_env(tmp_path / ".env", {"WEBEX_ACCESS_TOKEN": "t" * 20, "WEBEX_API_BASE_URL": "http://webexapis.com/v1"})
    with pytest.raises(ds.ConfigError, match="https"):
        ds.load_settings(env, ds.read_env_file(env), None)


def test_malformed_env_file_names_the_line(ds, tmp_path):
    env = tmp_path / ".env"
    env.write_text("WEBEX_ACCESS_TOKEN=abc\nthis is not a setting\n")
    with pytest.raises(ds.ConfigError, match="Line 2"):
        ds.read_env_file(env)


def test_unreadable_env_file_is_a_config_error(ds, tmp_path):
    env = tmp_path / ".env"
    env.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ds.ConfigError, match="UTF-8"):
        ds.read_env_file(env)


ENV_TEXT = """# Webex settings
export WEBEX_API_BASE_URL="https://webexapis.com/v1"   # the API

WEBEX_ACCESS_TOKEN=old-token  # keep me
WEBEX_REFRESH_TOKEN='old-refresh'
# trailing comment without newline"""


def test_saving_tokens_rewrites_only_their_lines_byte_for_byte(ds, tmp_path):
    env = tmp_path / ".env"
    env.write_text(ENV_TEXT)
    ds.save_env_values(env, {"WEBEX_ACCESS_TOKEN": "new-token", "WEBEX_REFRESH_TOKEN": "new-refresh", "WEBEX_CLIENT_ID": "cid"})
    expected = ENV_TEXT.replace("WEBEX_ACCESS_TOKEN=old-token  # keep me", "WEBEX_ACCESS_TOKEN=new-token").replace(
        "WEBEX_REFRESH_TOKEN='old-refresh'", "WEBEX_REFRESH_TOKEN=new-refresh"
    )
    assert env.read_text() == expected + "\nWEBEX_CLIENT_ID=cid\n"
    assert ds.read_env_file(env)["WEBEX_ACCESS_TOKEN"] == "new-token"


def test_saving_a_token_keeps_the_files_mode_and_a_new_file_is_0600(ds, tmp_path):
    shared = tmp_path / "shared.env"
    shared.write_text("WEBEX_ACCESS_TOKEN=old\n")
    shared.chmod(0o640)
    ds.save_env_values(shared, {"WEBEX_ACCESS_TOKEN": "new"})
    ds.save_env_values(tmp_path / "new.env", {"WEBEX_ACCESS_TOKEN": "new"})
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640 and stat.S_IMODE((tmp_path / "new.env").stat().st_mode) == 0o600


def test_a_duplicated_key_is_saved_on_its_last_line_which_is_the_one_read(ds, tmp_path):
    env = tmp_path / "org.env"
    env.write_text("WEBEX_ACCESS_TOKEN=first\nWEBEX_ORG_NAME=acme\nWEBEX_ACCESS_TOKEN=second\n")
    ds.save_env_values(env, {"WEBEX_ACCESS_TOKEN": "renewed"})
    assert env.read_text() == "WEBEX_ACCESS_TOKEN=first\nWEBEX_ORG_NAME=acme\nWEBEX_ACCESS_TOKEN=renewed\n"
    assert ds.read_env_file(env)["WEBEX_ACCESS_TOKEN"] == "renewed"


def test_saving_keeps_crlf_endings_a_bom_and_export_prefixes(ds, tmp_path):
    env = tmp_path / "org.env"
    env.write_bytes(b"\xef\xbb\xbf# org\r\nexport WEBEX_ACCESS_TOKEN=old\r\nWEBEX_ORG_NAME=acme\r\n")
    ds.save_env_values(env, {"WEBEX_ACCESS_TOKEN": "new", "WEBEX_REFRESH_TOKEN": "refresh"})
    assert env.read_bytes() == (b"\xef\xbb\xbf# org\r\nexport WEBEX_ACCESS_TOKEN=new\r\nWEBEX_ORG_NAME=acme\r\n"
                                b"WEBEX_REFRESH_TOKEN=refresh\r\n")


def test_a_symlinked_env_file_stays_a_link_and_its_target_is_updated(ds, tmp_path):
    target = tmp_path / "secrets" / "acme.env"
    target.parent.mkdir()
    target.write_text("WEBEX_ACCESS_TOKEN=old\n")
    link = tmp_path / "acme.env"
    link.symlink_to(target)
    ds.save_env_values(link, {"WEBEX_ACCESS_TOKEN": "new"})
    assert link.is_symlink() and target.read_text() == "WEBEX_ACCESS_TOKEN=new\n"


@pytest.mark.parametrize("value", ["new\nWEBEX_API_BASE_URL=https://evil.example/v1", "new token", "new\x1b[2J"])
def test_a_value_with_a_control_character_or_a_space_is_never_written(ds, tmp_path, value):
    env = tmp_path / ".env"
    env.write_text(ENV_TEXT)
    with pytest.raises(ds.ConfigError, match="control character or a space"):
        ds.save_env_values(env, {"WEBEX_ACCESS_TOKEN": value})
    assert env.read_text() == ENV_TEXT


def test_a_crash_while_saving_env_leaves_the_old_file_whole_and_no_temporary_file(ds, tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text(ENV_TEXT)

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(ds.ConfigError, match="No space left"):
        ds.save_env_values(env, {"WEBEX_ACCESS_TOKEN": "new"})
    assert env.read_text() == ENV_TEXT
    assert [p.name for p in tmp_path.iterdir()] == [".env"]


def test_a_file_whose_size_says_less_than_it_holds_is_read_whole_up_to_the_limit(ds):
    """Linux's /proc files say 0 bytes (as a file that grew after its size was taken says too few):
    the read goes on past the size, and stops at the limit."""
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0 and ds.read_file(status).startswith(b"Name:")
    assert ds.read_file(status, limit=10) == ds.read_file(status)[:10]
