"""Every menu action has a flag form, so scripts never meet a prompt: --register, --update,
--disable, --enable, --delete, --schemas and --dry-run, through the real command line against the
fake, without a terminal (but for the typed confirmation of a delete). Each checks the exact body
sent, the record, the output and the exit code; every refusal sends nothing."""

from __future__ import annotations

import fcntl
import json
import re
import signal
import subprocess
import sys
import uuid

from conftest import OUTPUTS, SCRIPT, Terminal, child_env, load_record, record_files, run_cli
from test_customers import command, edit_source, onboarded, onboarding_app

URL = "https://dap.example.com/staging"


def writes(fake) -> list:
    """What reached Webex that changes something."""
    return [seen for org in fake.everyone() for seen in org.requests() if seen.method != "GET"]


def body(seen) -> dict:
    return json.loads(seen.body)


def fresh_nonce(payload: dict, before: str) -> bool:
    return payload["nonce"] != before and uuid.UUID(payload["nonce"]).version == 4


def test_register_sends_the_defaults_and_records_it_then_sends_nothing_the_second_time(fake, env_file, records):
    schema = next(iter(fake.schemas))
    result = run_cli("--register", URL, "--schema", schema[:8], env_file=env_file)
    assert result.returncode == 0, result.stderr
    [post] = writes(fake)
    sent = body(post)
    assert sent == {"schemaId": schema, "url": URL, "audience": "BYODS", "subject": "BYODS", "nonce": sent["nonce"],
                    "tokenLifetimeMinutes": 1440} and uuid.UUID(sent["nonce"]).version == 4
    [source] = [s for s in fake.sources.values() if s["url"] == URL]
    [record] = record_files(records)
    assert record.name.startswith(f"data_source_registration_{source['id']}_") and load_record(record)["success"]
    assert f"Done: registration of {source['id'][:8]}" in result.stdout and str(record) in result.stdout
    again = run_cli("--register", URL, "--schema", schema, env_file=env_file)
    assert again.returncode == 0 and f"already registered as {source['id']}: nothing was sent." in again.stdout
    assert len(writes(fake)) == 1 and len(record_files(records)) == 1


def test_register_takes_audience_subject_and_lifetime_and_needs_a_schema_when_there_are_several(fake, env_file):
    refused = run_cli("--register", URL, env_file=env_file)
    assert refused.returncode == 2 and "choose one with --schema ID (--schemas lists them)" in refused.stderr
    unknown = run_cli("--register", URL, "--schema", "nope", env_file=env_file)
    assert unknown.returncode == 2 and "not one of the Service App's schemas" in unknown.stderr
    assert writes(fake) == []
    schema = list(fake.schemas)[1]
    result = run_cli("--register", URL, "--schema", schema, "--audience", "Staging", "--subject", "calls",
                     "--lifetime", "60", env_file=env_file)
    assert result.returncode == 0, result.stderr
    sent = body(writes(fake)[0])
    assert (sent["schemaId"], sent["audience"], sent["subject"], sent["tokenLifetimeMinutes"]) == (schema, "Staging",
                                                                                                    "calls", 60)


def test_update_changes_what_is_given_keeps_the_rest_and_sends_a_fresh_nonce(fake, env_file, records):
    source = fake.add_source(audience="Acme", subject="transcripts", lifetime=720)
    result = run_cli("--update", source["id"][:6], "--url", URL, "--subject", "calls", env_file=env_file)
    assert result.returncode == 0, result.stderr
    [put] = writes(fake)
    sent = body(put)
    assert put.path == f"/v1/dataSources/{source['id']}" and fresh_nonce(sent, source["nonce"])
    assert sent == {"schemaId": source["schemaId"], "url": URL, "audience": "Acme", "subject": "calls",
                    "nonce": sent["nonce"], "tokenLifetimeMinutes": 720, "status": "active"}
    [record] = record_files(records)
    assert record.name.startswith(f"data_source_update_{source['id']}_")
    assert load_record(record)["configuration"]["url"] == URL
    assert run_cli("--update", source["id"], env_file=env_file).returncode == 0  # nothing to change: a new nonce
    resent = body(writes(fake)[1])
    assert resent == {**sent, "nonce": resent["nonce"]} and fresh_nonce(resent, sent["nonce"])


def test_disable_with_a_message_and_enable_again(fake, env_file, records):
    source = fake.add_source(audience="Acme")
    assert run_cli("--disable", source["id"], "--message", "Paused during the incident", env_file=env_file).returncode == 0
    disabled = body(writes(fake)[0])
    assert (disabled["status"], disabled["errorMessage"]) == ("disabled", "Paused during the incident")
    assert fake.sources[source["id"]]["status"] == "disabled"
    result = run_cli("--enable", source["id"], env_file=env_file)
    assert result.returncode == 0, result.stderr
    enabled = body(writes(fake)[1])
    assert (enabled["status"], enabled["errorMessage"]) == ("active", "") and enabled["nonce"] != disabled["nonce"]
    assert [r.name[:19] for r in record_files(records)] == ["data_source_update_"] * 2
    again = run_cli("--enable", source["id"], env_file=env_file)
    assert again.returncode == 0 and "is active already: nothing was sent" in again.stdout and len(writes(fake)) == 2


def test_delete_needs_yes_without_a_terminal_and_records_the_last_configuration(fake, env_file, records):
    source = fake.add_source(audience="Test source")
    refused = run_cli("--delete", source["id"][:8], env_file=env_file)
    assert refused.returncode == 2 and "add --yes" in refused.stderr and writes(fake) == []
    result = run_cli("--delete", source["id"][:8], "--yes", env_file=env_file)
    assert result.returncode == 0 and source["id"] not in fake.sources, result.stderr
    [delete] = writes(fake)
    assert (delete.method, delete.path) == ("DELETE", f"/v1/dataSources/{source['id']}")
    [record] = record_files(records)
    assert record.name.startswith(f"data_source_delete_{source['id']}_")
    assert load_record(record)["configuration"]["audience"] == "Test source"


def test_delete_at_a_terminal_is_confirmed_by_typing_the_audience(fake, env_file):
    keep, drop = fake.add_source(audience="Keep me"), fake.add_source(audience="Drop me")
    wrong = Terminal(["--env-file", env_file, "--delete", keep["id"]], child_env())
    wrong.wait_for("To delete, type its audience")
    wrong.type("Drop me\r")
    assert wrong.exit_code() == 2 and "nothing was deleted" in wrong.text() and writes(fake) == []
    right = Terminal(["--env-file", env_file, "--delete", drop["id"][:8]], child_env())
    right.wait_for("To delete, type its audience")
    right.type("Drop me\r")
    assert right.exit_code() == 0 and drop["id"] not in fake.sources and keep["id"] in fake.sources


def test_a_lost_delete_answer_is_recorded_as_done_once_the_source_is_gone(fake, env_file, records):
    source = fake.add_source()
    fake.fail("DELETE", f"/v1/dataSources/{source['id']}", status=None, drop=True)
    result = run_cli("--delete", source["id"], "--yes", env_file=env_file, WEBEX_RETRY_BACKOFF=0.01)
    assert result.returncode == 0 and source["id"] not in fake.sources, result.stderr
    [record] = record_files(records)
    assert record.name.startswith(f"data_source_delete_{source['id']}_")
    assert load_record(record)["success"] is True and load_record(record)["reconciled"] == "applied"


def test_schemas_piped_as_json_and_tab_separated(fake, env_file):
    piped = run_cli("--schemas", env_file=env_file)
    lines = [line.split("\t") for line in piped.stdout.splitlines()]
    assert piped.returncode == 0 and lines[0][:2] == ["id", "serviceType"]
    assert [line[0] for line in lines[1:]] == list(fake.schemas)
    as_json = run_cli("--schemas", "--json", env_file=env_file)
    assert [schema["id"] for schema in json.loads(as_json.stdout)] == list(fake.schemas)


def test_json_says_one_object_per_write_ok_already_or_failed(fake, env_file, records):
    source = fake.add_source(audience="Acme")
    keys = ["org", "operation", "id", "result", "record", "source", "error"]
    done = run_cli("--update", source["id"], "--audience", "Acme Corp", "--json", env_file=env_file)
    [line] = done.stdout.splitlines()
    answer = json.loads(line)
    assert list(answer) == keys and answer["result"] == "ok" and answer["source"]["audience"] == "Acme Corp"
    assert answer["record"].startswith(str(records)) and answer["error"] is None and done.returncode == 0
    fake.fail("PUT", f"/v1/dataSources/{source['id']}", status=400, body={"message": "url domain is not registered"})
    refused = run_cli("--update", source["id"], "--url", URL, "--json", env_file=env_file)
    answer = json.loads(refused.stdout)
    assert refused.returncode == 1 and answer["result"] == "failed" and answer["source"] is None
    assert "url domain is not registered" in answer["error"] and "_failed_" in answer["record"]
    already = json.loads(run_cli("--enable", source["id"], "--json", env_file=env_file).stdout)
    assert already["result"] == "already" and already["record"] is None


def test_dry_run_sends_nothing_and_writes_nothing_for_every_write(app, fake):
    onboarding_app(app, fake)
    source = fake.add_source(audience="A", expires_in=600)
    app.org("acme", fake, WEBEX_TARGET_ORG_ID=fake.org_id)
    one = ["--env-file", str(app.root / "orgs" / "acme.env")]
    newcomer = fake.add_org()
    for args in (["--register", URL, "--schema", next(iter(fake.schemas))], ["--update", source["id"], "--url", URL],
                 ["--disable", source["id"], "--message", "Paused"], ["--enable", source["id"]],
                 ["--delete", source["id"]], ["--rotate", "all"], ["--rotate-expiring", "60"],
                 ["--offboard", "acme", "--delete"], ["--offboard", "acme"]):
        result = command(app, *one, *args, "--dry-run")
        assert result.returncode == 0 and "nothing was sent" in result.stdout.lower(), (args, result.stdout, result.stderr)
    onboard = command(app, "--onboard", newcomer.org_id, "--dry-run")
    assert onboard.returncode == 0 and "Nothing was sent" in onboard.stdout, onboard.stderr
    assert writes(fake) == [] and not list(app.records.rglob("data_source_*")) and not list(app.records.rglob(".pending/*"))
    assert sorted(p.name for p in (app.root / "orgs").iterdir()) == ["acme.env"]


def test_dry_run_shows_what_would_be_sent(fake, env_file):
    source = fake.add_source(audience="Acme", expires_in=600)
    update = run_cli("--update", source["id"], "--url", URL, "--dry-run", env_file=env_file, COLUMNS=120)
    assert re.search(rf"url\s+│ {re.escape(source['url'])}\s+│ {URL}", update.stdout), update.stdout
    rotation = run_cli("--rotate", "all", "--dry-run", "--json", env_file=env_file)
    [result] = json.loads(rotation.stdout)["results"]
    assert result["result"] == "dry-run" and result["would_send"]["url"] == source["url"] and result["record"] is None
    assert fresh_nonce(result["would_send"], source["nonce"])


def test_every_refusal_of_a_flag_sends_nothing(app, fake):
    source = fake.add_source(audience="A")
    app.org("acme", fake, WEBEX_TARGET_ORG_ID=fake.org_id)
    one = ["--env-file", str(app.root / "orgs" / "acme.env")]
    for args, words in ((["--register", "http://plain.example"], "must start with https://"),
                        (["--update", source["id"], "--url", "https://"], "--url"),
                        (["--update", source["id"], "--audience", " padded"], "Remove the spaces"),
                        (["--update", source["id"], "--lifetime", "0"], "--lifetime"),
                        (["--disable", source["id"]], "--disable needs --message"),
                        (["--disable", source["id"], "--message", "bad\x07bell"], "--message"),
                        (["--enable", "zzzz"], "is not a data source"),
                        (["--delete"], "--delete needs the ids"),
                        (["--offboard", "acme", "--delete", source["id"]], "it takes no ids"),
                        (["--rotate", "all", "--delete", source["id"]], "--delete goes with --offboard"),
                        (["--schemas", "--dry-run"], "--dry-run goes with"),
                        (["--disable", source["id"], "--enable", source["id"]], "do not go together: give one of them")):
        result = command(app, *one, *args)
        assert result.returncode == 2 and words in " ".join(result.stderr.split()), (args, result.stderr)
    globex = fake.add_org()
    app.org("globex", globex, WEBEX_TARGET_ORG_ID=globex.org_id)
    several = app.run("--enable", source["id"])
    assert several.returncode == 2 and "works on one org" in several.stderr
    assert writes(fake) == []


def test_the_onboarded_orgs_file_takes_a_write(app, fake):
    customer = onboarded(app, fake)
    source = next(iter(customer.sources.values()))
    result = app.run("--disable", source["id"], "--message", "Paused", env_files=[str(app.root / "orgs" / "acme.env")])
    assert result.returncode == 0 and customer.sources[source["id"]]["status"] == "disabled", result.stderr
    [record] = app.records_of("acme")[-1:]
    assert record.name.startswith(f"data_source_update_{source['id']}_")


def test_dry_run_of_an_onboarding_that_would_put_a_source_back_shows_the_change(app, fake):
    customer = onboarded(app, fake)
    source = edit_source(customer, audience="Edited by hand")
    result = command(app, "--onboard", customer.org_id, "--dry-run")
    assert result.returncode == 0 and "Dry run: the update of " + source["id"] in result.stdout, result.stderr
    assert re.search(r"audience\s+│ Edited by hand\s+│ BYODS", result.stdout) and customer.requests("PUT") == []
    assert [load_record(p)["operation_type"] for p in app.records_of("acme")] == ["registration"]


def test_a_dry_run_leaves_an_earlier_runs_marker_for_a_real_run_to_settle(fake, env_file, records):
    source = fake.add_source(expires_in=600)
    (records / ".pending").mkdir(parents=True)
    marker = records / ".pending" / "20260101_000000_000000_rotation_x.json"
    marker.write_text(json.dumps({"operation_type": "rotation", "data_source_id": source["id"],
                                  "configuration": {"nonce": "sent-by-a-run-that-died", "url": source["url"]}}))
    result = run_cli("--update", source["id"], "--subject", "calls", "--dry-run", env_file=env_file)
    assert result.returncode == 0 and marker.exists() and record_files(records) == [] and writes(fake) == []


def test_a_source_given_twice_is_deleted_once_and_one_already_gone_is_no_failure(fake, env_file, records):
    twice, gone = fake.add_source(audience="Twice"), fake.add_source(audience="Gone")
    result = run_cli("--delete", twice["id"], twice["id"][:8], "--yes", env_file=env_file)
    assert result.returncode == 0 and [seen.method for seen in writes(fake)] == ["DELETE"], result.stderr
    fake.fail("DELETE", f"/v1/dataSources/{gone['id']}", status=404)  # deleted by someone else since the list
    again = run_cli("--delete", gone["id"], "--yes", "--json", env_file=env_file)
    assert again.returncode == 0 and json.loads(again.stdout)["result"] == "already", again.stderr


def test_a_write_that_cannot_take_the_orgs_lock_fails_and_sends_nothing(fake, env_file, records):
    source = fake.add_source()
    records.mkdir()
    with open(records / ".lock", "w") as held:  # another run is writing to this org
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_cli("--disable", source["id"], "--message", "Paused", env_file=env_file, WEBEX_LOCK_WAIT="0.2")
    assert result.returncode == 1 and "Another run is writing" in result.stderr and writes(fake) == []


def test_sigterm_during_a_flag_write_lets_it_finish_and_records_it(fake, env_file, records):
    source = fake.add_source()
    fake.fail("PUT", f"/v1/dataSources/{source['id']}", status=None, delay=1.0)  # answered, a second later
    argv = [sys.executable, str(SCRIPT), "--env-file", str(env_file), "--disable", source["id"], "--message", "Paused"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    assert fake.wait_for(lambda f: f.requests("PUT"))
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    OUTPUTS.append(stdout + stderr)
    [record] = record_files(records)
    assert process.returncode == 143 and record.name.startswith(f"data_source_update_{source['id']}_"), stderr
    assert not list((records / ".pending").glob("*.json")) and fake.sources[source["id"]]["status"] == "disabled"


def test_update_can_give_what_a_source_without_a_token_does_not_say(fake, env_file):
    source = fake.add_source(audience="Unreadable")
    del source["jwsToken"]  # the list shows no token: audience and subject cannot be read
    refused = run_cli("--update", source["id"], "--url", URL, env_file=env_file)
    assert refused.returncode == 1 and "--audience" in refused.stdout + refused.stderr and writes(fake) == []
    result = run_cli("--update", source["id"], "--audience", "A", "--subject", "B", env_file=env_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (body(writes(fake)[0])["audience"], body(writes(fake)[0])["subject"]) == ("A", "B")
