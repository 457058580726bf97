"""JWS signature verification, through --list's Signature column and the details view."""

from __future__ import annotations

import base64
import json
import re

from conftest import run_cli, write_env


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
    alg_none = fake.add_source(alg="none")
    hs256 = fake.add_source(alg="HS256")
    verdicts = signatures(run_cli("--list", env_file=env_file))
    assert verdicts[valid["id"]] == "valid"
    assert verdicts[expired["id"]] == "expired (signature valid)"
    assert verdicts[tampered["id"]] == "invalid: the signature does not match"
    assert verdicts[wrong_kid["id"]] == "invalid: no key with kid 'unknown-kid' in the issuer's key set"
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
    env = write_env(tmp_path / "defaults.env", {"WEBEX_ACCESS_TOKEN": fake.access_token, "WEBEX_API_BASE_URL": fake.base_url, "WEBEX_RECORDS_DIR": records})
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
