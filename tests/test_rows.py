"""The row model and its formatters, in-process: one SourceRow per source feeds the table, the
piped TSV, --json, the Nagios line and the metrics. No network, no terminal."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import run_cli, write_env
from fake_webex import other_key

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SCHEMA = "6518b096-f5f9-4ff3-8754-916695b9b148"
SHARED_ID = "7791dc84-989c-4903-a3b5-8c48c039dfb3"
OLD_ID = "11111111-2222-3333-4444-555555555555"


def view(ds, source_id, audience, seconds_left, status="active"):
    return ds.SourceView(id=source_id, status=status, schema_id=SCHEMA, url=f"https://dap.example.com/{audience.lower()}/hook",
                         audience=audience, subject="transcripts", lifetime_minutes=1440, expires_at=NOW + timedelta(seconds=seconds_left))


def org(ds, name, *views):
    made = ds.Org(name, ds.ToolError("not read"), ds.Connections())
    made.state, made.problem = ds.State(list(views), {SCHEMA: {"id": SCHEMA, "serviceType": "Voice Virtual Agent"}}), None
    return made


@pytest.fixture
def fleet(ds):
    """Two orgs that list the same source id, one of them invalid: each keeps its own verdict."""
    acme = org(ds, "acme", view(ds, SHARED_ID, "Acme", 7200), view(ds, OLD_ID, "Acme Old", -600))
    globex = org(ds, "globex", view(ds, SHARED_ID, "Globex", 1800))
    fleet = ds.Fleet([acme, globex], ds.Connections())
    fleet.verdicts = {("acme", SHARED_ID): ds.Verdict("valid"), ("acme", OLD_ID): ds.Verdict("expired"),
                      ("globex", SHARED_ID): ds.Verdict("invalid", "the signature does not match")}
    return fleet


def render(ds, renderable_of, width: int) -> list[str]:
    buffer = io.StringIO()
    screen = ds.Screen(file=buffer, width=width)
    screen.print(renderable_of(screen))
    return buffer.getvalue().splitlines()


def test_rows_come_trouble_first_across_orgs_and_keep_each_orgs_own_verdict(ds, fleet):
    rows = fleet.rows(NOW)
    assert [(r.org_label, r.short_id, r.expiry, r.signature.state) for r in rows] == [
        ("acme", "11111111", "expired 10m ago", "expired"),
        ("globex", "7791dc84", "in 30m", "invalid"),
        ("acme", "7791dc84", "in 2h 0m", "valid"),
    ]
    assert rows[1].schema_name == "Voice Virtual Agent" and rows[1].seconds_left == 1800 and rows[1].urgency == 2


def test_a_fleet_of_one_names_no_org_in_its_rows(ds):
    fleet = ds.Fleet([org(ds, "default", view(ds, SHARED_ID, "Acme", 7200))], ds.Connections())
    [row] = fleet.rows(NOW)
    assert row.org == "default" and row.org_label is None and row.signature is None
    assert ds.tsv_text([row]).splitlines()[0] == "id\taudience\tsubject\tschema\turl\tstatus\texpires_at\texpires"


def test_the_menu_lists_an_orgs_rows_trouble_first_with_their_expiry(ds, fleet):
    acme = fleet.orgs[0]
    rows = fleet.rows(NOW, acme)
    titles = [ds.menu_title(row, ds.source_columns(rows), 80) for row in rows]
    assert titles == ["11111111  active  expired 10m ago  Acme Old", "7791dc84  active  in 2h 0m         Acme"]


def test_the_table_at_200_columns_shows_every_column_whole(ds, fleet):
    lines = render(ds, lambda screen: ds.sources_table(screen, fleet.rows(NOW)), 200)
    assert lines[5] == ("│ globex │ 7791dc84 │ Globex   │ transcripts │ Voice Virtual Agent │ https://dap.example.com/globex/hook   "
                        "│ active │ in 30m          │ invalid: the signature does not match │")
    assert not any("Left out" in line for line in lines)


def test_the_table_at_80_columns_keeps_id_status_and_expiry_whole_and_says_what_it_left_out(ds, fleet):
    lines = render(ds, lambda screen: ds.sources_table(screen, fleet.rows(NOW)), 80)
    assert lines[4] == "│ acme   │ 11111111 │ Acme Old │ active │ expired 10m ago │ expired (signatur… │"
    assert all(len(line) <= 80 for line in lines)
    assert "Left out to fit: Subject, Schema, URL" in " ".join(lines)


def test_the_piped_rows_are_tab_separated_with_full_ids(ds, fleet):
    lines = ds.tsv_text(fleet.rows(NOW)).splitlines()
    assert lines[0] == "org\tid\taudience\tsubject\tschema\turl\tstatus\texpires_at\texpires\tsignature"
    assert lines[2] == (f"globex\t{SHARED_ID}\tGlobex\ttranscripts\tVoice Virtual Agent\thttps://dap.example.com/globex/hook\tactive\t"
                        "2026-11-22T12:30:00+00:00\tin 30m\tinvalid: the signature does not match")


def test_one_source_in_json(ds, fleet):
    assert ds.source_json(fleet.rows(NOW)[1]) == {
        "org": "globex", "id": SHARED_ID, "audience": "Globex", "subject": "transcripts", "url": "https://dap.example.com/globex/hook",
        "schema_id": SCHEMA, "schema_name": "Voice Virtual Agent", "status": "active", "expires_at": "2026-11-22T12:30:00+00:00",
        "seconds_left": 1800, "lifetime_minutes": 1440, "signature": "invalid: the signature does not match", "warnings": [],
    }


def test_the_nagios_line_names_each_problem_with_its_org(ds, fleet):
    assert ds.check_line(fleet.rows(NOW), [], 60) == (2, (
        "CRITICAL - 1 expired (acme/Acme Old), 1 invalid signature (globex/Globex), 1 within 60m (globex/Globex) "
        "| expired=1 expiring=1 invalid=1 sources=3 unreadable_orgs=0 unknown_expiry=0"))


def test_the_metrics_give_each_org_its_own_signature_verdict(ds, fleet):
    lines = ds.metrics_text(fleet.rows(NOW), fleet.org_rows(NOW), NOW).splitlines()
    assert f'byods_source_signature_valid{{org="globex",id="{SHARED_ID}",audience="Globex"}} 0' in lines
    assert f'byods_source_signature_valid{{org="acme",id="{SHARED_ID}",audience="Acme"}} 1' in lines
    assert 'byods_org_sources{org="acme"} 2' in lines


def test_the_overview_at_80_columns_keeps_every_org_name_whole(ds, fleet):
    fleet.orgs.append(ds.Org("a-long-customer-name", ds.ConfigError("x " * 80), ds.Connections()))
    lines = [ds.overview_title(row, 20, 80) for row in fleet.org_rows(NOW)]
    assert lines[0].startswith("acme                        2        1          0  expired 10m ago")
    assert lines[2].startswith("a-long-customer-name  unreadable: bad settings") and all(len(line) <= 76 for line in lines)


def test_two_orgs_that_list_the_same_id_keep_their_own_signature_verdicts(fake, tmp_path):
    globex = fake.add_org()
    acme_source = fake.add_source(audience="Acme", expires_in=20 * 3600)
    twin = globex.add_source(audience="Globex", expires_in=20 * 3600, source_id=acme_source["id"])
    globex.issue(twin, key=other_key())  # signed by a key the issuer does not publish
    records = tmp_path / "records"
    files = [write_env(tmp_path / f"{name}.env", {"WEBEX_ACCESS_TOKEN": org.access_token, "WEBEX_RECORDS_DIR": records})
             for name, org in (("acme", fake), ("globex", globex))]
    listed = run_cli("--env-file", *files, "--list", "--json", **fake.shared_env())
    verdicts = {(s["org"], s["id"]): s["signature"] for s in json.loads(listed.stdout)}
    assert verdicts[("acme", twin["id"])] == "valid" and verdicts[("globex", twin["id"])].startswith("invalid")
    check = run_cli("--env-file", *files, "--check", "60", **fake.shared_env())
    assert check.returncode == 2 and "1 invalid signature (globex/Globex)" in check.stdout


def test_the_schemas_table_at_80_columns_never_splits_an_id(ds):
    schemas = [{"id": SCHEMA, "serviceType": "Voice Virtual Agent", "description": "Connects Webex calls to a virtual agent " * 3,
                "protocol": "gRPC", "appType": "BYODS", "url": "https://schemas.example/" + SCHEMA}]
    lines = render(ds, lambda screen: ds.schemas_table(screen, schemas), 80)
    assert any(SCHEMA in line for line in lines) and all(len(line) <= 80 for line in lines)


def test_one_orgs_rows_come_trouble_first_and_soonest_first_within_each(ds, fleet):
    acme = fleet.orgs[0]
    acme.state.views.append(view(ds, "22222222-0000-0000-0000-000000000000", "Acme Later", 5 * 3600))
    acme.state.views.append(view(ds, "33333333-0000-0000-0000-000000000000", "Acme Sooner", 3 * 3600))
    assert [r.audience for r in fleet.rows(NOW, acme)] == ["Acme Old", "Acme", "Acme Sooner", "Acme Later"]
