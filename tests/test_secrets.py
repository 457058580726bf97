"""Nothing leaked: run every kind of scenario with known secrets and scan all that came out."""

from __future__ import annotations

import pytest
from conftest import record_files, rotate_first, run_cli
from fake_webex import seed_demo


@pytest.fixture
def renewing_env(fake, env_file):
    with env_file.open("a") as handle:
        handle.write(
            f"WEBEX_CLIENT_ID={fake.client_id}\nWEBEX_CLIENT_SECRET={fake.client_secret}\nWEBEX_REFRESH_TOKEN={fake.refresh_token}\n"
        )
    return env_file


def test_no_secret_or_raw_token_reaches_any_output_or_record(fake, renewing_env, records, terminal):
    seed_demo(fake)
    secrets = {fake.access_token, fake.client_secret, fake.refresh_token}
    outputs = []

    def run(*args):
        result = run_cli(*args, env_file=renewing_env)
        outputs.append(result.stdout + result.stderr)
        return result

    run("--list")
    run("--save-list")
    fake.fail("PUT", ".*", 400)  # one failed rotation record
    fake.fail("PUT", ".*", 503, times=1)
    run("--rotate", "all")
    fake.expire_access_token()  # renewal on 401, written back to .env
    assert run("--rotate-expiring", "1440").returncode == 0
    secrets |= {fake.access_token, fake.refresh_token}
    fake.expire_access_token()
    fake.fail("POST", "/v1/access_token", 400, times=5)  # renewal refused: the error must not echo anything
    assert run("--list").returncode == 2

    fake.access_token = "menu-session-token-value"
    secrets.add(fake.access_token)
    renewing_env.write_text(renewing_env.read_text().replace("WEBEX_ACCESS_TOKEN=", "WEBEX_ACCESS_TOKEN=menu-session-token-value\n#", 1))
    term = terminal()
    term.choose("Acme")
    term.wait_for(r"Update this data source\?")
    term.press("n")
    rotate_first(term)
    term.wait_for("Record:")
    term.choose("Quit")
    assert term.exit_code() == 0
    outputs.append(term.transcript)

    written = [path.read_text() for path in record_files(records)]
    assert len(written) >= 10
    raw_tokens = set(fake.issued_tokens)
    assert len(raw_tokens) >= 10
    for text in outputs + written:
        for secret in secrets | raw_tokens:
            assert secret not in text
