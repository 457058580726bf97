"""The README's examples are the demo's real output: every console block that starts with
`$ python tests/fake_webex.py --demo ...` is run as written (a fresh demo each time, whose ids are
fixed) and its output compared, with what differs from run to run set aside: times, the demo's
temporary folder, fresh nonces. The menu's first screen is compared at 80x24, as a person sees it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, Terminal, child_env

README = (ROOT / "README.md").read_text()
DEMO = "python tests/fake_webex.py --demo"
EXAMPLES = re.findall(rf"```console\n\$ ((?:COLUMNS=\d+ )?{re.escape(DEMO)}[^\n]*)\n(.*?)```", README, re.DOTALL)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def comparable(text: str) -> list[str]:
    """The lines, with what changes from run to run replaced by a word for it."""
    text = re.sub(r"/tmp/byods-demo-\w+", "DEMO", text)
    text = re.sub(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\+00:00| UTC)?|\d{8}_\d{6}_\d{6}", "TIME", text)
    text = re.sub(r"Service ended on \d{4}-\d{2}-\d{2}", "Service ended on DATE", text)
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return [re.sub(UUID, "NONCE", line) if "nonce" in line else line for line in lines]


def test_the_readme_has_demo_examples_for_what_people_do_first():
    commands = " ".join(command for command, _ in EXAMPLES)
    for flag in ("--list", "--check", "--rotate-expiring", "--register", "--dry-run", "--onboard", "--offboard"):
        assert flag in commands, flag


@pytest.mark.parametrize(("command", "expected"), EXAMPLES, ids=[command.split("--demo")[1].strip() for command, _ in EXAMPLES])
def test_a_readme_example_is_the_demos_real_output(command, expected):
    for tool in re.findall(r"\| (\w+)", command):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed here")
    run = command.replace("python", sys.executable, 1)
    result = subprocess.run(run, shell=True, cwd=ROOT, env=child_env(COLUMNS="80"), capture_output=True, text=True,
                            timeout=60, check=False)
    shown, wanted = comparable(result.stdout), comparable(expected)
    if "--rotate" in command:  # rotations run side by side: each line as it finishes
        shown, wanted = sorted(shown), sorted(wanted)
    assert shown == wanted, result.stderr


def test_the_readmes_first_screen_is_what_80x24_shows():
    [expected] = re.findall(rf"<!-- screen: {re.escape(DEMO)} -->\n```text\n(.*?)```", README, re.DOTALL)
    term = Terminal(["--demo"], child_env(), rows=24, cols=80, script=ROOT / "tests" / "fake_webex.py")
    try:
        screen = term.wait_for(r"Quit")
        assert comparable(screen[screen.index("? Data sources"):]) == comparable(expected)  # below the fake's line
    finally:
        term.child.terminate(force=True)
