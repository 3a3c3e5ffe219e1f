"""The manual pages man/hazrun.1 and man/haz.toml.5: clean roff, and in
step with the code -- every option the command line's help lists, every
subcommand, every haz.toml key of the schema, every environment variable
hazrun reads."""
from __future__ import annotations

import argparse
import configparser
import re
import shutil
import subprocess

import pytest

from conftest import REPO

import hazrun
from hazrun import config
from hazrun.cli import build_parser
from hazrun.scheduler import SECRET_VARIABLES

MAN1 = REPO / "man" / "hazrun.1"
MAN5 = REPO / "man" / "haz.toml.5"
PAGES = [MAN1, MAN5]

needs_groff = pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")


def plain(page) -> str:
    """The page's source with roff escapes for '-' and fonts undone, so
    options read as they are typed."""
    text = page.read_text()
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\c", "")
    return re.sub(r"\\f[BIRP]", "", text)


def section(text: str, title: str) -> str:
    """The body of ``.SH title`` up to the next ``.SH``."""
    match = re.search(r"^\.SH " + re.escape(title) + r"\n(.*?)(?=^\.SH |\Z)", text,
                      re.M | re.S)
    assert match, f"no section {title}"
    return match.group(1)


def parsers():
    """(name, parser) for the top level and every subcommand, nested too."""
    found = []

    def walk(name, parser):
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    walk(f"{name} {sub}".strip(), p)
    walk("", build_parser())
    return found


def help_options(help_text: str):
    """The option strings a --help text lists under its options."""
    options = set()
    for line in help_text.splitlines():
        if not re.match(r"  {1,4}-", line):
            continue
        head = re.split(r"\s{2,}", line.strip())[0]
        options.update(re.findall(r"(?<![\w-])(--?[A-Za-z][A-Za-z0-9-]*)", head))
    return options


@needs_groff
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_cli_man_pages_have_no_groff_warnings(page):
    proc = subprocess.run(["groff", "-man", "-ww", "-z", str(page)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@needs_groff
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_cli_man_pages_render(page):
    proc = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", str(page)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "NAME" in proc.stdout and "SEE ALSO" in proc.stdout


@pytest.mark.skipif(shutil.which("man") is None, reason="man not installed")
def test_cli_man_l_renders_hazrun_1():
    proc = subprocess.run(["man", "-l", str(MAN1)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "MANPAGER": "cat",
                                           "PAGER": "cat", "MANWIDTH": "80"})
    assert proc.returncode == 0, proc.stderr
    assert "EXIT STATUS" in proc.stdout


@pytest.mark.parametrize("name,parser", parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_cli_every_help_option_is_in_hazrun_1(name, parser):
    # Each option must head an entry of its own (the tag line of a .TP),
    # not merely be mentioned somewhere.
    tags = "\n".join(re.findall(r"^\.TP\n(.*)$", plain(MAN1), re.M))
    options = help_options(parser.format_help())
    assert options, f"no options found in 'hazrun {name} --help'"
    missing = [o for o in sorted(options)
               if not re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", tags)]
    assert not missing, f"hazrun.1 lacks the options of 'hazrun {name} --help': {missing}"


def test_cli_every_subcommand_is_in_hazrun_1():
    commands = section(plain(MAN1), "COMMANDS")
    synopsis = section(plain(MAN1), "SYNOPSIS")
    for name, _parser in parsers():
        if not name:
            continue
        assert re.search(r"^\.(?:B|BI|BR) " + re.escape(name) + r"\b", commands, re.M), \
            f"COMMANDS lacks 'hazrun {name}'"
        assert re.search(r"^\.B " + re.escape(name) + r"\b", synopsis, re.M), \
            f"SYNOPSIS lacks 'hazrun {name}'"


def test_cli_remote_cache_options_are_documented():
    # REMOTE-001; documented even before the command line grows them.
    text = plain(MAN1)
    for option in ("--remote-cache", "--remote-cache-read-only", "--no-remote-cache"):
        assert re.search(r"^\.TP\n\.BI? " + re.escape(option) + r"(?![\w-])", text, re.M), option


def test_cli_environment_is_documented():
    environment = section(plain(MAN1), "ENVIRONMENT")
    names = ["HAZ_CACHE_DIR", "MAKEFLAGS", "NO_COLOR", "FORCE_COLOR",
             "HAZ_PROJECT", "HAZ_TASK", "HAZ_ROOT", *SECRET_VARIABLES]
    names += [f"HAZ_REMOTE_CACHE_{key.upper()}" for key in config.REMOTE_SCHEMA]
    missing = [n for n in names if n not in environment]
    assert not missing, f"ENVIRONMENT of hazrun.1 lacks {missing}"


def test_cli_exit_statuses_are_documented():
    exits = section(plain(MAN1), "EXIT STATUS")
    tags = " ".join(re.findall(r"^\.TP\n(.*)$", exits, re.M))
    for code in ("0", "1", "2", "3", "130", "143"):
        assert re.search(r"\b" + code + r"\b", tags), code


@pytest.mark.parametrize("title,schema", [
    ("[workspace]", config.WORKSPACE_SCHEMA),
    ("[workspace.remote_cache]", config.REMOTE_SCHEMA),
    ("[project]", config.PROJECT_SCHEMA),
    ("[tasks.NAME]", config.TASK_SCHEMA),
])
def test_cfg_every_haz_toml_key_is_in_haz_toml_5(title, schema):
    body = section(plain(MAN5), title)
    missing = [key for key in schema if not re.search(r"^\.BR " + key + r' "', body, re.M)]
    assert not missing, f"haz.toml.5 section {title} lacks {missing}"


def test_cli_man_pages_carry_the_version():
    for page in PAGES:
        head = next(l for l in page.read_text().splitlines() if l.startswith(".TH "))
        assert f'"hazrun {hazrun.__version__}"' in head, (page.name, head)


def test_cli_man_pages_are_installed_data_files():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    data = cfg["options.data_files"]
    assert data["share/man/man1"].split() == ["man/hazrun.1"]
    assert data["share/man/man5"].split() == ["man/haz.toml.5"]
