"""The install commands the docs give work in a fresh environment: `trt-gateway` is not on PyPI, so nothing may install
it by name, and an integration package (which depends on it) is installed together with the checkout."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("integrations/*/README.md"))]
BY_NAME = re.compile(r"""(?<![\w/.-])['"]?trt-gateway(?:\[[\w,]+\])?['"]?(?=\s|$)""")
CHECKOUT = re.compile(r"""-e\s+['"]?\.(?:\[[\w,]+\])?['"]?(?=\s|$)""")


def pip_commands(text: str) -> list[str]:
    """Each `pip install ...` up to the end of its inline code span, its comment or its line."""
    commands = []
    for line in text.splitlines():
        for match in re.finditer(r"pip install ", line):
            rest = line[match.start():]
            commands.append(re.split(r"`|\s#|&&", rest)[0].strip())
    return commands


def test_the_page_list_and_the_parser_see_the_install_lines() -> None:
    found = {str(page.relative_to(ROOT)): pip_commands(page.read_text()) for page in PAGES}
    assert 'pip install -e ".[engine,dev]"' in found["README.md"]
    assert pip_commands("x `pip install -e integrations/a` y") == ["pip install -e integrations/a"]


def test_no_command_installs_trt_gateway_by_name() -> None:
    bad = [(page.relative_to(ROOT), cmd) for page in PAGES for cmd in pip_commands(page.read_text())
           if BY_NAME.search(cmd.removeprefix("pip install"))]
    assert not bad, bad


def test_an_integration_is_installed_with_the_checkout() -> None:
    bad = [(page.relative_to(ROOT), cmd) for page in PAGES for cmd in pip_commands(page.read_text())
           if "integrations/" in cmd and not CHECKOUT.search(cmd)]
    assert not bad, bad
