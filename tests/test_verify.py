"""JWS signature verification, through --list's Signature column and the details view."""

from __future__ import annotations

import base64
import json
import re

from conftest import run_cli, write_env
from fake_webex import other_key


def signatures(result) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return {row.split("\t")[0]: row.split("\t")[8] for row in result.stdout.splitlines()[1:]}


def tamper(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return header + "." + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + signature


def test_each_kind_of_token_gets_its_verdict(fake, env_file):
    valid = fake.add_source()
    expired = fake.add_source(expires_in=-60)
    tampered = fake.add_source()
    tampered["jwsToken"] = tamper(tampered["jwsToken"], aud="Someone Else")
    wrong_kid = fake.add_source(kid="unknown-kid")
    unknown_signer = fake.add_source(kid="unknown-kid", key=other_key())
    alg_none = fake.add_source(alg="none")
    hs256 = fake.add_source(alg="HS256")
    verdicts = signatures(run_cli("--list", env_file=env_file))
    assert verdicts[valid["id"]] == "valid"
    assert verdicts[expired["id"]] == "expired (signature valid)"
    assert verdicts[tampered["id"]] == "invalid: the signature does not match"
    assert verdicts[wrong_kid["id"]] == "valid (matched by trying each key)"
    assert verdicts[unknown_signer["id"]] == "invalid: no key in the issuer's set verifies it (none has kid 'unknown-kid')"
    assert verdicts[alg_none["id"]] == "invalid: algorithm 'none' is not RS256"
    assert verdicts[hs256["id"]] == "invalid: algorithm 'HS256' is not RS256"


def test_keys_are_fetched_once_per_issuer_and_without_the_access_token(fake, env_file):
    for _ in range(5):
        fake.add_source()
    signatures(run_cli("--list", env_file=env_file))
    [jwks] = fake.requests("GET", server="idb")
    assert jwks.path == "/idb/oauth2/v2/keys/verificationjwk"
    assert "Authorization" not in jwks.headers and fake.access_token not in json.dumps(jwks.headers)


def test_an_untrusted_issuer_is_never_contacted(fake, env_file):
    evil_issuer = fake.issuer.replace("/idb", "/evil")
    source = fake.add_source(issuer=evil_issuer)
    verdicts = signatures(run_cli("--list", env_file=env_file))
    assert verdicts[source["id"]] == "untrusted issuer"
    assert fake.requests(server="idb") == []


def test_the_default_trusted_issuers_are_webexs_so_the_fakes_issuer_is_untrusted(fake, tmp_path, records):
    source = fake.add_source()
    env = write_env(
        tmp_path / "defaults.env",
        {"WEBEX_ACCESS_TOKEN": fake.access_token, "WEBEX_API_BASE_URL": fake.base_url, "WEBEX_RECORDS_DIR": records},
    )
    assert signatures(run_cli("--list", env_file=env))[source["id"]] == "untrusted issuer"
    assert fake.requests(server="idb") == []


def test_unreachable_keys_leave_the_tool_working_and_say_not_verified(fake, env_file):
    sources = [fake.add_source(audience=f"S{n}") for n in range(3)]
    fake.jwks_down = True
    verdicts = signatures(run_cli("--list", env_file=env_file))
    assert {verdicts[s["id"]] for s in sources} == {"not verified (keys unreachable)"}
    assert len(fake.requests(server="idb")) == 1


def test_claims_that_disagree_with_the_source_are_warned_about(fake, env_file, terminal):
    source = fake.add_source(audience="Acme")
    source["url"] = "https://moved.example.com/x"  # the token still names the old url
    source["nonce"] = "changed-nonce"
    result = run_cli("--list", env_file=env_file)
    assert signatures(result)[source["id"]] == "valid"
    term = terminal()
    term.choose("Acme")
    screen = term.wait_for(r"Update this data source\?")
    assert re.search(r"Warning\s+token claim com.cisco.datasource.url is", screen)
    assert re.search(r"Warning\s+token claim jti is", screen)
    term.press("n")
    term.choose("Quit")
    assert term.exit_code() == 0


def test_a_tampered_token_shows_invalid_in_the_details_view(fake, terminal):
    source = fake.add_source(audience="Acme")
    source["jwsToken"] = tamper(source["jwsToken"], exp=source["exp"] + 10**6)
    term = terminal()
    term.choose("Acme")
    screen = term.wait_for(r"Update this data source\?")
    assert re.search(r"Signature\s+invalid: the signature does not match", screen)
    term.press("n")
    term.choose("Quit")
    assert term.exit_code() == 0


def test_a_key_set_without_kids_and_with_two_keys_is_tried_key_by_key_and_fetched_twice_at_most(fake, env_file):
    fake.jwks_with_kids = False
    fake.jwks_other_key = True
    good = [fake.add_source(audience=f"S{n}") for n in range(3)]
    expired = fake.add_source(expires_in=-60)
    stranger = fake.add_source(key=other_key())
    tampered = fake.add_source()
    tampered["jwsToken"] = tamper(tampered["jwsToken"], aud="Someone Else")
    verdicts = signatures(run_cli("--list", env_file=env_file))
    assert {verdicts[s["id"]] for s in good} == {"valid (matched by trying each key)"}
    assert verdicts[expired["id"]] == "expired (signature valid, matched by trying each key)"
    assert verdicts[stranger["id"]] == "valid (matched by trying each key)"  # the other key is in the set
    assert verdicts[tampered["id"]] == "invalid: no key in the issuer's set verifies it (none has kid 'fake-kid-1')"
    assert len(fake.requests(server="idb")) == 2  # once, and once more for the kid the set lacks: never per token


def test_a_key_set_that_rotated_during_the_run_is_fetched_again_once(fake, env_file):
    old = fake.add_source(audience="Old key", expires_in=3 * 3600)
    new = fake.add_source(audience="New key", kid="fake-kid-2", expires_in=5 * 3600)
    arrivals = []

    def publish_the_new_kid_from_the_second_fetch_on():
        arrivals.append(1)
        if len(arrivals) == 2:
            fake.kid = "fake-kid-2"

    fake.fail("GET", "/idb/.*", None, times=5, on_arrival=publish_the_new_kid_from_the_second_fetch_on)
    verdicts = signatures(run_cli("--list", env_file=env_file))
    assert verdicts[old["id"]] == "valid" and verdicts[new["id"]] == "valid"  # each matched by its own kid
    assert len(fake.requests(server="idb")) == 2


def test_a_kid_match_that_fails_is_not_retried_with_other_keys(fake, env_file):
    fake.jwks_other_key = True
    forged = fake.add_source(kid="fake-kid-other")  # claims the other key's kid, signed with the real one
    assert signatures(run_cli("--list", env_file=env_file))[forged["id"]] == "invalid: the signature does not match"
