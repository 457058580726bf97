"""WebexClient against the fake API on a real socket: every operation, every fault."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading

import pytest
from fake_webex import FakeWebex, self_signed_context


def payload(fake, **fields):
    base = {
        "schemaId": next(iter(fake.schemas)),
        "url": "https://dap.example.com/new",
        "audience": "BYODS",
        "subject": "BYODS",
        "nonce": "n-" + str(len(fake.seen)) + "-" + str(id(fields)),
        "tokenLifetimeMinutes": 60,
    }
    base.update(fields)
    return base


# -- every operation --------------------------------------------------------------------------


def test_list_sources_returns_items_without_audience_which_the_view_reads_from_claims(ds, fake, client):
    fake.add_source(audience="Acme", subject="calls", lifetime=90)
    items = client.list_sources()
    assert len(items) == 1 and "audience" not in items[0]
    view = ds.source_view(items[0])
    assert (view.audience, view.subject, view.lifetime_minutes) == ("Acme", "calls", 90)


def test_every_operation_hits_its_documented_path(fake, client):
    source = fake.add_source()
    schema_id = next(iter(fake.schemas))
    assert client.get_source(source["id"])["id"] == source["id"]
    assert [s["id"] for s in client.list_schemas()] == list(fake.schemas)
    assert client.get_schema(schema_id)["serviceType"] == "Voice Virtual Agent"
    created = client.create_source(payload(fake))
    assert created.status == 200 and created.tracking_id.startswith("ROUTER_")
    updated = client.update_source(source["id"], payload(fake, status="active"))
    assert updated.body["nonce"] == json.loads(fake.requests("PUT")[0].body)["nonce"]
    assert client.delete_source(source["id"]).status == 204
    seen = [(s.method, s.path) for s in fake.requests()]
    assert seen == [
        ("GET", f"/v1/dataSources/{source['id']}"),
        ("GET", "/v1/dataSources/schemas"),
        ("GET", f"/v1/dataSources/schemas/{schema_id}"),
        ("POST", "/v1/dataSources"),
        ("PUT", f"/v1/dataSources/{source['id']}"),
        ("DELETE", f"/v1/dataSources/{source['id']}"),
    ]
    assert all(s.headers["Authorization"] == f"Bearer {fake.access_token}" for s in fake.requests())


def test_register_accepts_201_as_success(fake, client):
    fake.created_status = 201
    assert client.create_source(payload(fake)).status == 201


def test_webex_error_bodies_become_one_error_with_status_message_and_tracking_id(ds, fake, client):
    with pytest.raises(ds.ApiError) as caught:
        client.get_source("nope")
    error = caught.value
    assert error.status == 404 and error.message == "Data source not found" and error.tracking_id.startswith("ROUTER_")
    assert "404" in str(error) and error.tracking_id in str(error)


def test_a_401_says_the_token_is_invalid_and_how_to_fix_it(ds, fake, make_client):
    client = make_client()
    client.tokens.access = "wrong-token-123456"
    with pytest.raises(ds.ApiError) as caught:
        client.list_sources()
    assert caught.value.status == 401 and "WEBEX_REFRESH_TOKEN" in str(caught.value)


@pytest.mark.parametrize(
    "scope, call, expected",
    [("read", "list_sources", "spark-admin:datasource_read"), ("write", "delete_source", "spark-admin:datasource_write")],
)
def test_a_403_names_the_missing_scope_and_the_service_app_token(ds, fake, client, scope, call, expected):
    fake.scopes.discard(scope)
    with pytest.raises(ds.ApiError) as caught:
        getattr(client, call)(*([] if call == "list_sources" else ["any-id"]))
    assert caught.value.status == 403 and expected in str(caught.value) and "personal token" in str(caught.value)


# -- retries ----------------------------------------------------------------------------------


def test_429_waits_the_retry_after_then_succeeds(fake, client, waits):
    fake.fail("GET", "/v1/dataSources/", 429, headers={"Retry-After": "1"})
    assert client.list_sources() == []
    first, second = fake.requests("GET")
    assert second.at - first.at >= 0.95
    assert waits == [(1.0, "Webex answered 429")]


def test_423_locked_is_retried_for_a_put(fake, client, waits):
    source = fake.add_source()
    fake.fail("PUT", ".*", 423, headers={"Retry-After": "0"})
    assert client.update_source(source["id"], payload(fake, status="active")).status == 200
    assert len(fake.requests("PUT")) == 2


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_with_growing_backoff_for_idempotent_calls(fake, client, waits, status):
    fake.fail("GET", "/v1/dataSources/", status, times=3)
    assert client.list_sources() == []
    assert [seconds for seconds, _ in waits] == [0.5, 1.0, 2.0]


def test_retries_are_bounded_then_reported(ds, fake, client, waits):
    fake.fail("GET", "/v1/dataSources/", 503, times=99)
    with pytest.raises(ds.ApiError) as caught:
        client.list_sources()
    assert caught.value.status == 503 and len(fake.requests("GET")) == ds.MAX_ATTEMPTS
    assert "try again later" in str(caught.value)


def test_a_retry_after_longer_than_the_budget_is_reported_without_waiting(ds, fake, client, waits):
    fake.fail("GET", "/v1/dataSources/", 429, times=99, headers={"Retry-After": "100000"})
    with pytest.raises(ds.ApiError) as caught:
        client.list_sources()
    assert caught.value.status == 429 and len(fake.requests("GET")) == 1
    assert "asked to wait 100000 s" in str(caught.value)


def test_post_is_never_retried_after_a_502(ds, fake, client):
    fake.fail("POST", "/v1/dataSources", 502)
    with pytest.raises(ds.ApiError):
        client.create_source(payload(fake))
    assert len(fake.requests("POST")) == 1


@pytest.mark.parametrize("status", [429, 423, 503])
def test_post_is_retried_when_webex_said_it_did_not_process_it(fake, client, status):
    fake.fail("POST", "/v1/dataSources", status, headers={"Retry-After": "0"})
    assert client.create_source(payload(fake)).status == 200
    assert len(fake.requests("POST")) == 2 and len(fake.sources) == 1


def test_post_is_not_retried_after_a_dropped_connection_and_says_to_check(ds, fake, client):
    fake.fail("POST", "/v1/dataSources", drop=True)
    with pytest.raises(ds.ApiError) as caught:
        client.create_source(payload(fake))
    assert len(fake.requests("POST")) == 1
    assert caught.value.maybe_processed and "Refresh and check" in str(caught.value)


def test_get_is_retried_after_a_dropped_connection(fake, client):
    fake.fail("GET", "/v1/dataSources/", drop=True)
    assert client.list_sources() == []
    assert len(fake.requests("GET")) == 2


def test_post_timeout_is_not_retried(ds, fake, make_client):
    client = make_client(read_timeout=0.3)
    fake.fail("POST", "/v1/dataSources", 200, delay=1.0, body={"id": "late"})
    with pytest.raises(ds.ApiError) as caught:
        client.create_source(payload(fake))
    assert "did not answer within 0.3 s" in str(caught.value) and "may have been created" in str(caught.value)
    assert len(fake.requests("POST")) == 1


def test_get_timeout_is_retried(fake, make_client):
    client = make_client(read_timeout=0.3)
    fake.fail("GET", "/v1/dataSources/", 200, delay=1.0, body={"items": []})
    assert client.list_sources() == []
    assert len(fake.requests("GET")) == 2


# -- no answer at all -------------------------------------------------------------------------


def test_refused_connection_is_one_sentence(ds, make_client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ds.ApiError, match="refused the connection"):
        client.list_sources()


def test_dns_failure_is_one_sentence(ds, make_client, monkeypatch):
    # No name server is reachable here, so the resolver itself answers "no such host".
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    client = make_client(base_url="https://webexapis.invalid/v1")
    with pytest.raises(ds.ApiError, match="Cannot resolve the host webexapis.invalid"):
        client.list_sources()


def test_tls_failure_is_one_sentence(ds, tmp_path, make_client):
    tls_fake = FakeWebex(tls_context=self_signed_context(tmp_path)).start()  # not in any trusted bundle
    try:
        client = make_client(base_url=tls_fake.base_url)
        with pytest.raises(ds.ApiError, match="TLS failed"):
            client.list_sources()
    finally:
        tls_fake.stop()


# -- malformed answers ------------------------------------------------------------------------


def test_non_json_success_is_reported_not_crashed(ds, fake, client):
    fake.fail("GET", "/v1/dataSources/", 200, body="{not json")
    with pytest.raises(ds.ApiError, match="not JSON"):
        client.list_sources()


def test_an_html_error_page_still_gives_the_status(ds, fake, client):
    fake.fail("GET", r"/v1/dataSources/x", 400, body="<html><body>Bad gateway config</body></html>")
    with pytest.raises(ds.ApiError) as caught:
        client.get_source("x")
    assert caught.value.status == 400 and "Bad Request" in str(caught.value)


def test_a_list_without_items_is_reported(ds, fake, client):
    fake.fail("GET", "/v1/dataSources/", 200, body={"nothing": []})
    with pytest.raises(ds.ApiError, match="'items' is missing"):
        client.list_sources()


def test_list_items_without_an_id_are_counted_and_warned_about_never_dropped_silently(ds, fake, client):
    fake.fail("GET", "/v1/dataSources/", 200, body={"items": [{"id": "ok"}, {"url": "no id"}, "junk", {"id": 42}]})
    state = ds.read_sources(client, {})
    assert [v.id for v in state.views] == ["ok", "42"]
    assert any("2 item(s)" in w and "no id" in w for w in state.warnings)


# -- the access token -------------------------------------------------------------------------


def test_a_401_with_refresh_credentials_renews_once_and_retries(ds, fake, make_client):
    client = make_client(client_id=fake.client_id, client_secret=fake.client_secret, refresh_token=fake.refresh_token)
    old = fake.access_token
    renewed = []
    client.on_token_renewed = lambda values, how: renewed.append(values)
    fake.expire_access_token()
    assert client.list_sources() == []
    [values] = renewed
    assert fake.access_token != old
    assert (values["WEBEX_ACCESS_TOKEN"], values["WEBEX_REFRESH_TOKEN"]) == (fake.access_token, fake.refresh_token)
    lasts = ds.datetime.fromisoformat(values["WEBEX_REFRESH_TOKEN_EXPIRES_AT"]) - ds.datetime.now(ds.UTC)
    assert abs(lasts.total_seconds() - 7775999) < 60
    form = fake.requests("POST", "/v1/access_token")[0]
    assert "Authorization" not in form.headers and b"grant_type=refresh_token" in form.body
    assert fake.requests("GET")[-1].headers["Authorization"] == f"Bearer {fake.access_token}"


def test_a_netrc_entry_for_the_host_replaces_neither_the_token_nor_the_renewal_form(fake, make_client, tmp_path, monkeypatch):
    """requests lets a netrc entry for the host override an Authorization header (and add one to the
    renewal's form) unless the session has an auth of its own; curl users keep such entries."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-token\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # where requests looks before ~/.netrc
    client = make_client(client_id=fake.client_id, client_secret=fake.client_secret, refresh_token=fake.refresh_token)
    fake.expire_access_token()
    assert client.list_sources() == []
    assert "Authorization" not in fake.requests("POST", "/v1/access_token")[0].headers
    assert [seen.headers["Authorization"].split()[0] for seen in fake.requests("GET")] == ["Bearer", "Bearer"]
    assert fake.requests("GET")[-1].headers["Authorization"] == f"Bearer {fake.access_token}"


def test_concurrent_401s_renew_the_token_only_once(ds, fake, make_client):
    client = make_client(client_id=fake.client_id, client_secret=fake.client_secret, refresh_token=fake.refresh_token)
    fake.expire_access_token()
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(client.list_sources())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [[]] * 4
    assert len(fake.requests("POST", "/v1/access_token")) == 1


def test_a_failed_renewal_says_what_to_do(ds, fake, make_client):
    client = make_client(client_id=fake.client_id, client_secret="wrong-secret-value", refresh_token=fake.refresh_token)
    fake.expire_access_token()
    with pytest.raises(ds.TokenRefused) as caught:
        client.list_sources()
    assert caught.value.exit_code == 2 and "new refresh token" in str(caught.value)
    assert "wrong-secret-value" not in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_redirect_is_not_followed_so_the_token_stays_home_and_a_put_is_not_turned_into_a_get(ds, fake, client, host):
    source = fake.add_source()
    elsewhere = f"http://{host}:{fake.idb.server_address[1]}/idb/oauth2/v2/keys/verificationjwk"
    fake.fail("PUT", ".*", 302, headers={"Location": elsewhere})
    with pytest.raises(ds.ApiError) as caught:
        client.update_source(source["id"], payload(fake, status="active"))
    assert caught.value.status == 302 and elsewhere in str(caught.value) and "WEBEX_API_BASE_URL" in str(caught.value)
    assert [s.method for s in fake.requests()] == ["PUT"] and fake.requests(server="idb") == []


def test_a_redirected_renewal_is_not_followed_and_says_what_to_do(ds, fake, make_client):
    client = make_client(client_id=fake.client_id, client_secret=fake.client_secret, refresh_token=fake.refresh_token)
    fake.expire_access_token()
    fake.fail("POST", "/v1/access_token", 307, headers={"Location": fake.issuer + "/oauth2/v2/keys/verificationjwk"})
    with pytest.raises(ds.ApiError) as caught:  # not a refused refresh token: only a 400 or 401 says that
        client.list_sources()
    assert caught.value.status == 307 and "which this tool does not follow" in str(caught.value)
    assert fake.requests(server="idb") == [] and fake.client_secret not in str(caught.value)


def test_a_connect_timeout_is_one_sentence_and_nothing_was_sent(ds, make_client):
    # A listener that never accepts, with its queue filled: the next handshake gets no answer.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    client = make_client(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1")
    client.settings = dataclasses.replace(client.settings, timeouts=ds.Timeouts(connect=0.3, read=5.0))
    try:
        with pytest.raises(ds.ApiError) as caught:
            client.create_source({"url": "x"})
        assert "Could not connect" in str(caught.value) and "within 0.3 s" in str(caught.value)
        assert not caught.value.maybe_processed
    finally:
        for sock in [*fillers, listener]:
            sock.close()


# -- one pace for the run -------------------------------------------------------------------------


def test_a_429_after_real_traffic_teaches_the_limit_and_the_pace_goes_on_just_under_it(ds):
    pace = ds.Pace()
    for _ in range(80):  # what Webex let through in the second before it said 429
        pace.went_through()
    pace.slow_down(1.0)
    assert pace.limit == 80 and pace.rate == pytest.approx(72) and pace.slowest == pytest.approx(72)
    for _ in range(200):  # climbs back fast to just under the limit (95 %), then creeps above it
        pace.went_through()
    assert 76 <= pace.rate < 78 and "letting about 4800 requests a minute through" in pace.summary()


def test_a_429_after_a_trickle_is_only_a_pause(ds):
    pace = ds.Pace()
    for _ in range(3):  # another run may be using the limit up: three requests say nothing of it
        pace.went_through()
    pace.slow_down(1.0)
    assert pace.limit is None and pace.rate is None and pace.throttled == 1
    assert pace.summary() == "Webex limited the rate 1 time(s); the run paused each time as it asked."


def test_rate_caps_the_pace_even_after_the_limit_is_learned(ds):
    pace = ds.Pace(per_minute=600)
    for _ in range(50):
        pace.went_through()
    pace.slow_down(1.0)
    for _ in range(500):
        pace.went_through()
    assert pace.rate == pytest.approx(10)  # the cap, not the 50 a second Webex let through
