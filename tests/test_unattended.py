"""Run unattended and shared: overlapping runs, signals, crashes, hostile org files and answers,
files that cannot be written. Each test runs the real command line against the fake and checks
what the fake received and what is on disk."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from conftest import OUTPUTS, SCRIPT, child_env, load_record, record_files, run_cli, write_env
from fake_webex import FakeWebex, self_signed_context


def start_cli(*args, env_file, preexec_fn=None, **extra_env) -> subprocess.Popen:
    """The tool in the background, as cron starts it; finish() collects what it printed."""
    argv = [sys.executable, str(SCRIPT), "--env-file", str(env_file), *map(str, args)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(**extra_env), preexec_fn=preexec_fn)  # noqa: PLW1509 (the fake's threads do not fork)


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    OUTPUTS.append(stdout + stderr)
    return process.returncode, stdout, stderr


def nonce_of(put) -> str:
    return json.loads(put.body)["nonce"]


# -- one writer per org -----------------------------------------------------------------------


def test_two_runs_started_together_rotate_each_expiring_source_exactly_once(fake, env_file, records):
    sources = [fake.add_source(audience=f"S{n}", expires_in=600) for n in range(8)]
    fake.latency = 0.05  # each run takes a while, so the two overlap
    first, second = (start_cli("--rotate-expiring", "60", env_file=env_file) for _ in range(2))
    results = [finish(first), finish(second)]
    assert [code for code, _, _ in results] == [0, 0], results
    puts = fake.requests("PUT")
    assert sorted(put.path.rsplit("/", 1)[1] for put in puts) == sorted(s["id"] for s in sources)
    recorded = [load_record(path)["configuration"]["nonce"] for path in record_files(records, "data_source_rotation_*.json")]
    assert sorted(recorded) == sorted(nonce_of(put) for put in puts)  # every record names the nonce that stands
    assert {fake.sources[s["id"]]["nonce"] for s in sources} == set(recorded)


def test_a_run_that_cannot_take_the_orgs_lock_in_time_leaves_it_alone_and_says_busy(fake, env_file, records):
    fake.add_source(expires_in=600)
    records.mkdir()
    with open(records / ".lock", "w") as held:  # another run is writing to this org
        fcntl.flock(held, fcntl.LOCK_EX)
        plain = run_cli("--rotate-expiring", "60", env_file=env_file, WEBEX_LOCK_WAIT="0.2")
        as_json = run_cli("--rotate-expiring", "60", "--json", env_file=env_file, WEBEX_LOCK_WAIT="0")
        listed = run_cli("--list", env_file=env_file)  # reading takes no lock
    assert plain.returncode == 0 and plain.stdout.startswith("busy     Another run is writing") and "Busy 1" in plain.stdout
    answer = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and [r["result"] for r in answer["results"]] == ["busy"] and answer["summary"]["busy"] == 1
    assert listed.returncode == 0 and fake.requests("PUT") == []


def test_sixteen_processes_saving_one_env_file_under_the_orgs_lock_keep_all_sixteen_updates(tmp_path):
    """What the token saver does (the org's lock, then re-read and write), from 16 processes at once."""
    env = write_env(tmp_path / "org.env", {"WEBEX_ORG_NAME": "acme"})
    saver = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ds', {str(SCRIPT)!r})\n"
        "ds = sys.modules['ds'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(ds)\n"
        "from pathlib import Path\n"
        "with ds.OrgLock(Path(sys.argv[1])).held('saving'):\n"
        "    ds.save_env_values(Path(sys.argv[2]), {f'WEBEX_KEY_{sys.argv[3]}': 'saved-value-' + sys.argv[3]})\n"
    )
    runs = [subprocess.Popen([sys.executable, "-c", saver, str(tmp_path / "records"), str(env), str(n)], env=child_env())
            for n in range(16)]
    assert [run.wait(60) for run in runs] == [0] * 16
    saved = ds_values(env)
    assert saved["WEBEX_ORG_NAME"] == "acme" and sorted(saved) == sorted(["WEBEX_ORG_NAME", *(f"WEBEX_KEY_{n}" for n in range(16))])


def ds_values(path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


# -- signals and crashes ----------------------------------------------------------------------


@pytest.mark.parametrize(("stop", "code", "said"), [(signal.SIGTERM, 143, "Stopped by SIGTERM"), (signal.SIGHUP, 129, "Stopped by SIGHUP")])
def test_a_signal_during_a_rotation_records_every_put_sent_prints_the_summary_and_exits_128_plus_it(
        fake, env_file, records, stop, code, said):
    for n in range(6):
        fake.add_source(audience=f"S{n}", expires_in=600)
    fake.fail("PUT", ".*", None, times=6, delay=1.0)  # each PUT takes a second to answer
    run = start_cli("--rotate-expiring", "60", "--workers", "2", env_file=env_file)
    assert fake.wait_for(lambda f: len(f.requests("PUT")) >= 2)
    run.send_signal(stop)
    exit_code, stdout, stderr = finish(run)
    assert exit_code == code and "Rotated 2, skipped 0, failed 0." in stdout and said in stderr
    puts = fake.requests("PUT")
    assert len(puts) == 2  # no new write started after the signal
    recorded = {load_record(p)["configuration"]["nonce"] for p in record_files(records, "data_source_rotation_*.json")}
    assert recorded == {nonce_of(put) for put in puts}
    assert list((records / ".pending").glob("*.json")) == []


def test_after_a_sigkill_the_next_run_records_what_was_sent_as_applied(fake, env_file, records):
    source = fake.add_source(audience="Killed", expires_in=600)
    arrived = threading.Event()
    fake.fail("PUT", ".*", None, delay=1.0, on_arrival=arrived.set)
    run = start_cli("--rotate-expiring", "60", env_file=env_file)
    assert arrived.wait(20)
    run.kill()
    finish(run)
    [marker] = (records / ".pending").glob("*_rotation_*.json")
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    sent = nonce_of(fake.requests("PUT")[0])
    assert fake.wait_for(lambda f: f.sources[source["id"]]["nonce"] == sent)  # Webex carried it out
    assert record_files(records, "data_source_rotation_*.json") == []
    listed = run_cli("--list", env_file=env_file)
    assert listed.returncode == 0 and "stopped before recording it: applied" in listed.stderr
    [record] = record_files(records, f"data_source_rotation_{source['id']}_*.json")
    content = load_record(record)
    assert content["reconciled"] == "applied" and content["configuration"]["nonce"] == sent and content["success"] is True
    assert list((records / ".pending").glob("*.json")) == [] and len(fake.requests("PUT")) == 1


def test_a_marker_whose_write_never_arrived_is_recorded_as_not_applied(ds, fake, env_file, records):
    source = fake.add_source(audience="Never sent", expires_in=20 * 3600)
    org = ds.Fleet([], ds.Connections()).load([env_file]).orgs[0]
    ds.make_private_folder(records)
    org.mark_pending("rotation", source["id"], {"nonce": "a-nonce-webex-never-saw", "url": source["url"]})
    result = run_cli("--rotate-expiring", "60", env_file=env_file)
    assert result.returncode == 0 and fake.requests("PUT") == []
    [record] = record_files(records, "data_source_rotation_failed_*.json")
    assert load_record(record)["reconciled"] == "not_applied" and load_record(record)["data_source_id"] == source["id"]


# -- time and size ----------------------------------------------------------------------------


def trickling_server(stop: threading.Event) -> int:
    """Answers every request with headers at once, then one byte of body at a time, slowly."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve(connection):
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(600):  # at most a minute
                if stop.wait(0.1):
                    return
                try:
                    connection.sendall(b" ")
                except OSError:
                    return

    def accept():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(connection,), daemon=True).start()
        listener.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def test_a_trickling_answer_is_cut_off_at_webex_timeout_however_slowly_it_comes(ds, make_client, waits):
    stop = threading.Event()
    port = trickling_server(stop)
    try:
        client = make_client(base_url=f"http://127.0.0.1:{port}/v1", read_timeout=5.0, total_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ds.ApiError, match=r"did not send its whole answer within 0.5 s \(WEBEX_TIMEOUT\)"):
            client.list_sources()
        assert time.monotonic() - started < ds.MAX_ATTEMPTS * 0.5 + 2  # each attempt cut at 0.5 s; the waits between are recorded
        assert len(waits) == ds.MAX_ATTEMPTS - 1
    finally:
        stop.set()


def test_an_answer_over_16_mib_is_a_bad_answer_in_one_sentence(ds, fake, client):
    fake.fail("GET", "/v1/dataSources/", 200, body=b'{"items": ["' + b"x" * (17 * 1024 * 1024) + b'"]}')
    with pytest.raises(ds.ApiError, match="larger than 16 MiB"):
        client.list_sources()


def test_a_deep_or_huge_answer_in_one_org_of_three_is_that_orgs_failure(app, fake):
    deep, odd = fake.add_org(), fake.add_org()
    fake.add_source(audience="Acme", expires_in=600)
    deep.fail("GET", "/v1/dataSources/", 200, times=5, body="[" * 100_000 + "]" * 100_000)
    odd.add_source(audience="Odd", expires_in=600, extra_claims={"exp": 10**400})  # Webex's tokenExpiryTime: in 10 minutes
    for name, org in (("acme", fake), ("deep", deep), ("odd", odd)):
        app.org(name, org)
    result = app.run("--rotate-expiring", "60")
    stderr = " ".join(result.stderr.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr and "unexpected" not in stderr
    assert "deep: could not be read: Webex answered 200: Webex's answer nests deeper than 100 levels" in result.stdout
    assert "acme: Rotated 1, skipped 0, failed 0." in result.stdout and "odd: Rotated 1" in result.stdout
    assert len(fake.requests("PUT")) == 1 and len(odd.requests("PUT")) == 1 and deep.requests("PUT") == []


def test_a_huge_error_message_is_cut_on_screen_and_kept_in_the_record(fake, env_file, records):
    source = fake.add_source(expires_in=600)
    fake.fail("PUT", ".*", 400, body={"message": "m" * 5_000_000, "trackingId": "ROUTER_HUGE"})
    result = run_cli("--rotate", source["id"], env_file=env_file)
    assert result.returncode == 1 and len(result.stdout) < 2000 and "m" * 499 + "…" in result.stdout
    [record] = record_files(records, "data_source_rotation_failed_*.json")
    assert 64 * 1024 <= len(load_record(record)["error"]) < 65 * 1024


# -- hostile org files and answers ------------------------------------------------------------


def test_an_org_file_that_sets_a_shared_key_fails_that_org_and_no_secret_reaches_its_host(app, fake):
    hostile = FakeWebex().start()
    try:
        globex = fake.add_org()
        fake.add_source(audience="Acme", expires_in=600)
        app.share(**{k: v for k, v in fake.mint_env(fake).items() if k != "WEBEX_TARGET_ORG_ID"},
                  WEBEX_INTEGRATION_REFRESH_TOKEN=fake.integration_refresh_token)
        app.org("acme", fake)
        app.org("globex", globex, WEBEX_TARGET_ORG_ID=globex.org_id, WEBEX_API_BASE_URL=hostile.base_url)
        result = app.run("--rotate-expiring", "60")
        assert result.returncode == 1 and "acme: Rotated 1" in result.stdout
        assert "globex.env sets WEBEX_API_BASE_URL, which only the shared .env" in result.stdout
        assert hostile.seen == []
    finally:
        hostile.stop()


def test_a_renewal_answer_carrying_a_line_break_is_refused_and_nothing_is_written(fake, tmp_path, records):
    env = write_env(tmp_path / ".env", {**fake.env(), "WEBEX_RECORDS_DIR": records, "WEBEX_CLIENT_ID": fake.client_id,
                                        "WEBEX_CLIENT_SECRET": fake.client_secret, "WEBEX_REFRESH_TOKEN": fake.refresh_token})
    before = env.read_text()
    fake.expire_access_token()
    smuggled = "fake-access-smuggled-0123456789\nWEBEX_API_BASE_URL=http://127.0.0.1:9/v1"
    fake.fail("POST", "/v1/access_token", 200, body={"access_token": smuggled, "refresh_token": "fake-refresh-smuggled-0123"})
    result = run_cli("--list", env_file=env)
    assert result.returncode == 1 and "held a token with a control character" in " ".join(result.stderr.split())
    assert env.read_text() == before and "smuggled" not in result.stdout + result.stderr


@pytest.mark.parametrize("url", ["http://evil.example\\@127.0.0.1/v1", "https://user:pw@webexapis.com/v1", "https://webexapis.com /v1"])
def test_a_base_url_that_parsers_could_read_two_ways_is_refused(ds, url):
    with pytest.raises(ds.ConfigError, match="plain https:// URL"):
        ds.check_service_url("WEBEX_API_BASE_URL", url)


def test_an_org_named_dot_dot_fails_with_a_sentence_and_writes_nothing_outside(app, fake):
    evil = fake.add_org()
    evil.add_source(expires_in=600)
    fake.add_source(expires_in=600)
    app.org("acme", fake)
    app.org("evil", evil, WEBEX_ORG_NAME="..")
    result = app.run("--rotate-expiring", "60")
    assert result.returncode == 1 and "evil: could not be read: WEBEX_ORG_NAME in" in result.stdout and evil.requests("PUT") == []
    assert sorted(p.name for p in app.root.iterdir()) == [".env", "data-sources.py", "orgs", "records"]


# -- saving tokens ----------------------------------------------------------------------------


def renewing(app, fake, org, name):
    app.share(WEBEX_CLIENT_ID=fake.client_id, WEBEX_CLIENT_SECRET=fake.client_secret)
    path = app.org(name, org, WEBEX_REFRESH_TOKEN=org.refresh_token, WEBEX_ORG_NAME=name)
    org.expire_access_token()
    return path


def run_with_read_only(app, folder, *args, **extra_env):
    """The tool with folder mounted read-only, as a Kubernetes secret is (a mount namespace of its own)."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("no mount namespace here to mount a folder read-only")
    argv = [sys.executable, str(app.script), "--env-file", *app.env_files(), *args]
    shell = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    result = subprocess.run(["unshare", "-m", "sh", "-c", shell, str(folder), *argv], capture_output=True, text=True,
                            env=child_env(**extra_env), stdin=subprocess.DEVNULL, timeout=60, check=False)
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def test_a_read_only_env_file_among_three_orgs_keeps_its_token_in_the_state_dir(app, fake, tmp_path):
    (app.root / "orgs" / "secret").mkdir()
    globex, initech = fake.add_org(), fake.add_org()
    for org in (fake, globex, initech):
        org.add_source(expires_in=600)
    app.org("acme", fake)
    app.org("initech", initech)
    path = renewing(app, fake, globex, "globex")
    mounted = app.root / "orgs" / "secret" / "globex.env"
    path.rename(mounted)
    (app.root / "orgs" / "globex.env").symlink_to(mounted)
    state = tmp_path / "state"
    first = run_with_read_only(app, mounted.parent, "--rotate-expiring", "60", WEBEX_STATE_DIR=state)
    assert first.returncode == 0, first.stderr
    assert "globex: The access token was renewed with the refresh token and kept in" in " ".join(first.stderr.split())
    assert len(fake.requests("PUT")) == len(globex.requests("PUT")) == len(initech.requests("PUT")) == 1
    kept = (state / "globex.env").read_text()
    assert f"WEBEX_ACCESS_TOKEN={globex.access_token}\n" in kept and stat.S_IMODE((state / "globex.env").stat().st_mode) == 0o600
    renewals = len(fake.requests("POST", "/v1/access_token"))
    second = run_with_read_only(app, mounted.parent, "--list", WEBEX_STATE_DIR=state)
    assert second.returncode == 0 and len(fake.requests("POST", "/v1/access_token")) == renewals  # the kept token works


def test_a_token_saved_by_root_keeps_the_service_users_file_its_own(ds, tmp_path):
    env = write_env(tmp_path / "acme.env", {"WEBEX_ACCESS_TOKEN": "old"})
    os.chown(env, 65534, 65534)  # nobody's file, as a service user's would be
    env.chmod(0o600)
    ds.save_env_values(env, {"WEBEX_ACCESS_TOKEN": "new"})
    after = env.stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (65534, 65534, 0o600)


def test_a_key_set_of_more_than_100_keys_is_not_used(ds, fake, env_file):
    fake.add_source(audience="Many keys")
    many = {"keys": [{"kty": "RSA", "kid": f"k{n}", "n": "AQAB", "e": "AQAB"} for n in range(101)]}
    fake.fail("GET", "/idb/.*", 200, body=many)
    result = run_cli("--list", env_file=env_file)
    assert result.stdout.splitlines()[1].split("\t")[-1] == "invalid: the issuer's key set is unusable (it must list at most 100 keys)"


def test_without_a_state_dir_an_unsaveable_token_serves_the_run_and_says_the_next_must_renew(app, fake):
    (app.root / "orgs" / "secret").mkdir()
    globex = fake.add_org()
    globex.add_source(expires_in=600)
    path = renewing(app, fake, globex, "globex")
    mounted = app.root / "orgs" / "secret" / "globex.env"
    path.rename(mounted)
    (app.root / "orgs" / "globex.env").symlink_to(mounted)
    app.org("acme", fake)
    result = run_with_read_only(app, mounted.parent, "--rotate-expiring", "60")
    stderr = " ".join(result.stderr.split())
    assert result.returncode == 0 and len(globex.requests("PUT")) == 1
    assert "the next run must renew it again: set WEBEX_STATE_DIR" in stderr


def test_a_token_that_the_environment_overrides_is_saved_and_the_override_is_named(fake, tmp_path, records):
    env = write_env(tmp_path / ".env", {**fake.env(), "WEBEX_RECORDS_DIR": records, "WEBEX_CLIENT_ID": fake.client_id,
                                        "WEBEX_CLIENT_SECRET": fake.client_secret, "WEBEX_REFRESH_TOKEN": fake.refresh_token})
    stale = fake.access_token
    fake.expire_access_token()
    result = run_cli("--list", env_file=env, WEBEX_ACCESS_TOKEN=stale)
    assert result.returncode == 0
    assert "WEBEX_ACCESS_TOKEN is set in the environment, which overrides the file" in " ".join(result.stderr.split())
    assert f"WEBEX_ACCESS_TOKEN={fake.access_token}\n" in env.read_text()


# -- display and files ------------------------------------------------------------------------


def test_format_characters_from_webex_are_shown_as_escapes(fake, env_file):
    fake.add_source(audience="Ac\u200bme\u2060 \ufeffCorp\U000e0041\u00ad")
    result = run_cli("--list", env_file=env_file)
    assert "Ac\\u200bme\\u2060 \\ufeffCorp\\U000e0041\\xad" in result.stdout
    assert not any(ch in result.stdout for ch in "\u200b\u2060\ufeff\U000e0041\u00ad")


def test_every_format_character_is_escaped(ds):
    import unicodedata

    format_characters = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert all("\\" in ds.safe_text(ch) for ch in format_characters)


def test_a_jws_inside_an_error_message_is_shown_and_recorded_as_its_fingerprint(ds, fake, env_file, records):
    source = fake.add_source(expires_in=600)
    token = source["jwsToken"]
    fake.fail("PUT", ".*", 400, body={"message": f"bad token {token} here", "trackingId": "ROUTER_JWS"})
    result = run_cli("--rotate", source["id"], env_file=env_file)
    assert ds.fingerprint(token) in result.stdout and token not in result.stdout
    [record] = record_files(records, "data_source_rotation_failed_*.json")
    assert ds.fingerprint(token) in record.read_text() and token not in record.read_text()


def test_folders_made_under_umask_000_are_0700(fake, tmp_path):
    fake.add_source(expires_in=600)
    nested = tmp_path / "deep" / "er" / "records"
    env = write_env(tmp_path / ".env", {**fake.env(), "WEBEX_RECORDS_DIR": nested})
    code, _, _ = finish(start_cli("--rotate-expiring", "60", env_file=env, preexec_fn=lambda: os.umask(0)))
    assert code == 0
    for folder in (tmp_path / "deep", tmp_path / "deep" / "er", nested, nested / ".pending"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_full_disk_is_found_before_anything_is_sent(fake, env_file, records):
    fake.add_source(expires_in=600)

    def tiny_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))  # a write past 1 KiB fails, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    code, _, stderr = finish(start_cli("--rotate-expiring", "60", env_file=env_file, preexec_fn=tiny_files))
    assert code == 1 and "Cannot write records" in stderr and "Nothing was sent" in stderr
    assert fake.requests("PUT") == []


def test_keys_are_fetched_with_the_ca_bundle_the_api_uses(tmp_path):
    tls_fake = FakeWebex(tls_context=self_signed_context(tmp_path), tls_keys=True).start()
    try:
        tls_fake.add_source(audience="Behind a proxy")
        env = write_env(tmp_path / ".env", {**tls_fake.env(), "WEBEX_RECORDS_DIR": tmp_path / "records"})
        result = run_cli("--list", env_file=env, REQUESTS_CA_BUNDLE=tmp_path / "cert.pem")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1].split("\t")[-1] == "valid" and len(tls_fake.requests(server="idb")) == 1
    finally:
        tls_fake.stop()
