"""Hostile and broken answers: escapes in claims and messages, odd ids, lost register answers,
huge or mistyped fields. Checked on the raw bytes the tool writes, the paths the fake received
and the records on disk."""

from __future__ import annotations

import json

import pytest
from conftest import load_record, menu_ready, record_files, register_in_menu, run_cli

CLEAR_SCREEN = "\x1b[2J"
OSC_TITLE = "\x1b]0;PWNED\x07"
HYPERLINK = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4=\x07"
RIGHT_TO_LEFT = "\u202e"
RAW_SEQUENCES = (CLEAR_SCREEN, "\x1b]0;", "\x1b]8;", "\x1b]52;", RIGHT_TO_LEFT, "\x9b")


def hostile_source(fake):
    return fake.add_source(
        audience=f"Acme{CLEAR_SCREEN}{RIGHT_TO_LEFT}gnp.exe",
        subject=f"sub{OSC_TITLE}{CLIPBOARD}\x9b31m",
        url=f"https://dap.example.com/x{HYPERLINK}",
    )


def assert_no_raw_sequences(text: str) -> None:
    for sequence in RAW_SEQUENCES:
        assert sequence not in text, f"{sequence!r} reached the terminal raw"


# -- one sanitizer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("bell\x07", "bell\\x07"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b", "c1\\x9b"),
        ("tab\tnl\ncr\r", "tab\\tnl\\ncr\\r"),
        ("rtl\u202eltr\u2066", "rtl\\u202eltr\\u2066"),
        ("line\u2028sep", "line\\u2028sep"),
        ("Zürich 東京 café ✓", "Zürich 東京 café ✓"),
        (42, "42"),
    ],
)
def test_safe_text_makes_controls_and_bidi_overrides_visible_and_keeps_printable_unicode(ds, raw, shown):
    assert ds.safe_text(raw) == shown


def test_safe_text_also_redacts_known_secrets(ds):
    ds.remember_secret("secret-token-value-123")
    assert ds.safe_text("token secret-token-value-123\n") == "token [redacted]\\n"


# -- escapes in claims, urls and messages -------------------------------------------------------


def test_escapes_in_claims_and_urls_are_shown_escaped_in_the_piped_list(fake, env_file, records):
    source = hostile_source(fake)
    result = run_cli("--list", "--save-list", env_file=env_file)
    assert result.returncode == 0, result.stderr
    assert_no_raw_sequences(result.stdout + result.stderr)
    row = result.stdout.splitlines()[1].split("\t")
    assert row[1] == "Acme\\x1b[2J\\u202egnp.exe" and row[2].startswith("sub\\x1b]0;PWNED\\x07")
    saved = load_record(record_files(records, "data_sources_list_*.json")[0])
    assert saved["data_sources"][0]["jwsTokenClaims"]["aud"] == source["audience"]  # records keep exact values


def test_escapes_in_claims_never_reach_the_terminal_in_the_table_or_the_menu(fake, terminal):
    hostile_source(fake)
    fake.add_source(audience="Plain Customer")
    term = terminal()
    screen = term.wait_for(r"type to filter[\s\S]*Quit")
    assert "Acme\\x1b[2J\\u202egnp.exe" in screen and "Plain Customer" in screen
    term.choose("Acme")
    term.wait_for(r"Update this data source\?")
    assert "click" in term.text() and "\\x1b]8;;https://evil.example/" in term.text()
    term.press("n")
    term.choose("Quit")
    assert term.exit_code() == 0
    assert_no_raw_sequences(term.transcript)


def test_an_escape_in_webexs_error_message_is_shown_escaped(fake, env_file):
    fake.fail("GET", "/v1/dataSources/", 400, body={"message": f"bad{CLEAR_SCREEN}{OSC_TITLE}", "trackingId": "ROUTER_X"})
    result = run_cli("--list", env_file=env_file)
    assert result.returncode == 1
    assert "bad\\x1b[2J\\x1b]0;PWNED\\x07" in result.stderr.replace("\n", "")
    assert_no_raw_sequences(result.stdout + result.stderr)


def test_newlines_and_tabs_inside_fields_keep_one_piped_row_per_source(fake, env_file):
    fake.add_source(audience="two\nlines", subject="tab\there", url="https://dap.example.com/a\r\nb")
    fake.add_source(audience="plain")
    result = run_cli("--list", env_file=env_file)
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) == 3
    assert {len(line.split("\t")) for line in lines} == {len(lines[0].split("\t"))}
    assert "two\\nlines" in result.stdout and "tab\\there" in result.stdout


# -- ids that are not ids -----------------------------------------------------------------------

ODD_IDS = ["../schemas", "a/b", "%2F", "has space", "..", "x\x1b[2Jy"]


def test_ids_that_are_not_plain_are_never_sent_and_count_as_failed_in_rotation(fake, env_file, records):
    good = fake.add_source(audience="Good", source_id="Good_id-1=.x")
    for odd in ODD_IDS:
        fake.add_source(audience="Odd", source_id=odd)
    result = run_cli("--rotate", "all", env_file=env_file)
    assert result.returncode == 1
    assert [s.path for s in fake.requests("PUT")] == ["/v1/dataSources/Good_id-1%3D.x"]
    assert fake.sources[good["id"]]["nonce"] != good["nonce"]
    assert result.stdout.count("failed   ") == len(ODD_IDS) and "not a plain identifier" in result.stdout
    assert "Rotated 1, skipped 0, failed 6." in result.stdout
    assert_no_raw_sequences(result.stdout + result.stderr)
    everything = list(records.parent.rglob("*.json"))
    assert everything and all(path.parent == records for path in everything)
    assert len(record_files(records, "data_source_rotation_failed_*.json")) == len(ODD_IDS)


def test_an_odd_id_is_shown_with_a_warning_in_the_list(fake, env_file):
    fake.add_source(audience="Odd", source_id="../schemas")
    result = run_cli("--list", env_file=env_file)
    assert result.returncode == 0 and "../schemas" in result.stdout and "not a plain identifier" in result.stderr
    assert sorted(s.path for s in fake.seen if s.server == "api") == ["/v1/dataSources/", "/v1/dataSources/schemas"]


def test_a_record_name_built_from_an_id_stays_in_its_folder(ds, tmp_path):
    for odd in ODD_IDS + ["a" * 500]:
        path = ds.write_record(tmp_path, f"data_source_update_{ds.file_safe(odd)}", {"x": 1})
        assert path.parent == tmp_path and len(path.name) < 200


def test_every_path_segment_is_checked_before_a_request(ds, fake, client):
    for odd in ODD_IDS:
        with pytest.raises(ds.NotSent, match="not a plain identifier"):
            client.update_source(odd, {})
        with pytest.raises(ds.NotSent, match="not a plain identifier"):
            client.get_schema(odd)
    assert fake.seen == []


# -- a lost register answer ---------------------------------------------------------------------


def register_payload(fake, url="https://dap.example.com/lost"):
    return {
        "schemaId": next(iter(fake.schemas)),
        "url": url,
        "audience": "A",
        "subject": "S",
        "nonce": "nonce-lost-1",
        "tokenLifetimeMinutes": 60,
    }


def test_a_register_whose_answer_is_lost_after_creation_is_found_and_recorded_as_done(ds, fake, org, records):
    fake.fail("POST", "/v1/dataSources", None, drop=True)
    result = ds.register_source(org, register_payload(fake))
    [created] = fake.sources
    assert result.ok and result.reconciled == "created" and result.view.id == created and result.error is None
    record = load_record(result.record)
    assert record["reconciled"] == "created" and record["data_source_id"] == created and record["success"] is True
    assert result.record.name.startswith(f"data_source_registration_{created}_")
    assert len(fake.requests("POST")) == 1 and len(fake.requests("GET")) == 1


def test_a_register_whose_answer_is_lost_before_creation_is_safe_to_send_again(ds, fake, org, records):
    fake.fail("POST", "/v1/dataSources", 500, drop=True)
    result = ds.register_source(org, register_payload(fake))
    assert result.reconciled == "not_created" and result.view is None and fake.sources == {}
    assert "not created: safe to register again" in str(result.error)
    assert load_record(result.record)["reconciled"] == "not_created"


def test_a_register_whose_answer_is_lost_and_the_list_fails_too_is_unknown(ds, fake, org, records):
    fake.fail("POST", "/v1/dataSources", 500, drop=True)
    fake.fail("GET", "/v1/dataSources/", 400)
    result = ds.register_source(org, register_payload(fake))
    assert result.reconciled == "unknown" and "unknown" in str(result.error)
    assert load_record(result.record)["reconciled"] == "unknown"


def test_a_refused_register_is_not_reconciled(ds, fake, org, records):
    fake.allowed_domains = {"elsewhere.example"}
    result = ds.register_source(org, register_payload(fake))
    assert result.reconciled is None and "reconciled" not in load_record(result.record)
    assert fake.requests("GET") == []


def test_in_the_menu_a_lost_answer_that_created_the_source_puts_it_in_the_table(fake, terminal, records):
    fake.fail("POST", "/v1/dataSources", None, drop=True)
    term = terminal()
    register_in_menu(term, "https://dap.example.com/lost-but-made")
    term.wait_for("Done: registration")
    [created] = fake.sources
    assert "reading the source again shows the registration went through" in " ".join(term.text().split())
    screen = menu_ready(term)
    assert created[:8] in screen
    assert load_record(record_files(records, f"data_source_registration_{created}_*.json")[0])["reconciled"] == "created"
    term.choose("Quit")
    assert term.exit_code() == 0


def test_in_the_menu_a_lost_answer_that_created_nothing_offers_the_typed_values_again(fake, terminal, records):
    fake.fail("POST", "/v1/dataSources", 500, drop=True)
    term = terminal()
    register_in_menu(term, "https://dap.example.com/try-again")
    screen = term.wait_for(r"Edit and try again\?")
    assert "not created: safe to register again" in screen.replace("\n", " ")
    term.press("y")
    register_in_menu(term, prefilled="https://dap.example.com/try-again", choose=False)
    term.wait_for("Done: registration")
    assert [s["url"] for s in fake.sources.values()] == ["https://dap.example.com/try-again"]
    posts = [json.loads(p.body) for p in fake.requests("POST")]
    assert len(posts) == 2 and posts[0] == posts[1]
    term.choose("Quit")
    assert term.exit_code() == 0


# -- large and odd answers ----------------------------------------------------------------------


def test_huge_and_mistyped_fields_neither_hang_nor_crash_and_the_table_stays_readable(fake, env_file, terminal):
    long_audience = "A" * 10_000
    fake.add_source(audience=long_audience, extra_claims={"padding": "p" * 1_000_000})
    fake.add_source(audience="Normal")
    items = [fake.public_view(s) for s in fake.sources.values()]
    items[1] = {**items[1], "url": 12345, "status": 7, "nonce": ["x"]}
    fake.fail("GET", "/v1/dataSources/", 200, times=2, body={"items": [*items, "not an object", 17, None]})
    result = run_cli("--list", env_file=env_file)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 and long_audience in result.stdout  # the pipe gets it whole
    assert "3 item(s)" in result.stderr
    term = terminal("--list")
    assert term.exit_code() == 0
    table_lines = [line for line in term.text().splitlines() if "AAAA" in line]
    assert len(table_lines) == 1 and "…" in table_lines[0]
