"""Tables that fit the terminal they are drawn on: pseudo-terminals of 80x24, 100x30 and 120x40,
read off the rendered screen. The short id, Status and Expires (and Org, Result) are never cut."""

from __future__ import annotations

import re

import pytest
from conftest import Terminal, child_env, menu_ready, rotate_first
from fake_webex import seed_demo

SIZES = [(80, 24), (100, 30), (120, 40)]


def sized(args, cols, rows, **extra):
    return Terminal(args, child_env(COLUMNS=cols, LINES=rows, **extra), rows=rows, cols=cols)


def long_sources(fake):
    """Sources whose URL, subject and audience are long enough to push the table past any width."""
    seed_demo(fake)
    fake.add_source(audience="A Customer With A Rather Long Name", subject="a subject that says a great deal about it",
                    url="https://dap.example.com/" + "very-long-path/" * 8, expires_in=5 * 3600)
    return [s for s in fake.sources.values()]


@pytest.mark.parametrize(("cols", "rows"), SIZES)
def test_list_on_a_terminal_shows_every_short_id_status_and_expiry_whole(fake, env_file, cols, rows):
    sources = long_sources(fake)
    term = sized(["--env-file", env_file, "--list"], cols, rows + 20)  # tall enough for every row
    assert term.exit_code() == 0
    lines = term.text().splitlines()
    table = [line for line in lines if line.startswith("│")]
    assert len(table) == len(sources) and all(len(line) <= cols for line in lines)
    for source in sources:
        [row] = [line for line in table if source["id"][:8] in line]
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert source["status"] in cells
        assert any(re.fullmatch(r"(in|expired) (\d+[dhms] ?)+( ago)?", cell) for cell in cells), cells  # never "in 19h 5…"


def test_the_menu_on_80x24_keeps_the_tables_title_and_header_on_screen_after_a_rotation_too(fake, env_file):
    seed_demo(fake)
    term = sized(["--env-file", env_file], 80, 24)
    screen = menu_ready(term)
    assert "Data sources (5)" in screen and re.search(r"┃ ID +┃", screen) and "more: type to find any" in screen
    assert "Initech" in screen  # the most urgent row is there
    rotate_first(term)
    screen = menu_ready(term)
    assert "Rotated 2, skipped 0, failed 0." in term.plain_transcript(term.last_key_at)  # scrolled up by the menu
    assert "Data sources (5)" in screen and re.search(r"┃ ID +┃.*┃ Status ┃ Expires", screen)
    assert all(len(line) <= 80 for line in screen.splitlines())
    term.choose("Quit")
    assert term.exit_code() == 0


def test_the_overview_and_history_on_80_columns_keep_org_names_and_results_whole(app, fake):
    globex = fake.add_org()
    fake.add_source(audience="Acme", expires_in=600)
    globex.add_source(audience="Globex", expires_in=20 * 3600)
    app.org("a-long-customer-name", fake)
    app.org("globex", globex)
    assert app.run("--rotate-expiring", "60").returncode == 0
    history = app.run("--history", COLUMNS="80")
    lines = history.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines) and any("│ ok " in line and "a-long-customer-name" in line for line in lines)
    term = Terminal(["--env-file", *app.env_files()], child_env(COLUMNS=80, LINES=24), rows=24, cols=80, script=app.script)
    app.terminals.append(term)
    screen = menu_ready(term)
    assert "│ a-long-customer-name │" in screen and "│ globex " in screen
    term.choose("Quit")
    assert term.exit_code() == 0


def test_without_a_terminal_messages_are_never_wrapped(fake, tmp_path):
    from conftest import run_cli, write_env

    env = write_env(tmp_path / ("a-folder-with-a-long-name-" * 3 + ".env"), {"WEBEX_ACCESS_TOKEN": ""})
    result = run_cli("--list", env_file=env)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and str(env) in result.stderr
