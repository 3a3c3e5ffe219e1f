"""REMOTE-001: where the remote cache's settings come from, and how bad
values are refused (exit 2, naming the variable and the value, never a
secret)."""
from __future__ import annotations

import dataclasses
import os

import pytest

from hazrun.cache.remote import parse_bool, resolve_remote
from hazrun.config import RemoteCacheConfig
from hazrun.errors import UsageError

from conftest import run_hazrun

TOML = RemoteCacheConfig(url="http://toml.example/c", protocol="turbo", team="t-toml",
                         read_only=False, timeout=7.0)


def test_remote_001_nothing_configured_is_no_remote():
    assert resolve_remote(None, {}) is None
    assert resolve_remote(RemoteCacheConfig(), {}) is None


def test_remote_001_haz_toml_alone():
    s = resolve_remote(TOML, {})
    assert (s.url, s.protocol, s.team, s.read_only, s.timeout) == \
        ("http://toml.example/c", "turbo", "t-toml", False, 7.0)
    assert s.token is None and s.signature_key is None


def test_remote_001_environment_overrides_haz_toml():
    env = {"HAZ_REMOTE_CACHE_URL": "https://env.example:8443/x/",
           "HAZ_REMOTE_CACHE_PROTOCOL": "HTTP", "HAZ_REMOTE_CACHE_TEAM": "t-env",
           "HAZ_REMOTE_CACHE_READ_ONLY": "on", "HAZ_REMOTE_CACHE_TIMEOUT": "2.5",
           "HAZ_REMOTE_CACHE_TOKEN": "tok", "HAZ_REMOTE_CACHE_SIGNATURE_KEY": "k"}
    s = resolve_remote(TOML, env)
    assert (s.url, s.protocol, s.team, s.read_only, s.timeout) == \
        ("https://env.example:8443/x", "http", "t-env", True, 2.5)
    assert s.token == "tok" and s.signature_key == b"k"


def test_remote_001_command_line_overrides_the_environment():
    env = {"HAZ_REMOTE_CACHE_URL": "http://env.example", "HAZ_REMOTE_CACHE_READ_ONLY": "0"}
    s = resolve_remote(TOML, env, url="http://cli.example/", read_only=True)
    assert s.url == "http://cli.example" and s.read_only is True
    assert resolve_remote(TOML, env, url="http://cli.example", disabled=True) is None


def test_remote_001_empty_variables_count_as_unset():
    env = {"HAZ_REMOTE_CACHE_URL": "", "HAZ_REMOTE_CACHE_READ_ONLY": "",
           "HAZ_REMOTE_CACHE_TIMEOUT": "", "HAZ_REMOTE_CACHE_TOKEN": ""}
    s = resolve_remote(TOML, env)
    assert s.url == "http://toml.example/c" and s.timeout == 7.0 and s.token is None


@pytest.mark.parametrize("text,value", [
    ("1", True), ("true", True), ("TRUE", True), ("Yes", True), ("on", True), ("oN", True),
    ("0", False), ("false", False), ("False", False), ("NO", False), ("off", False)])
def test_remote_001_booleans(text, value):
    assert parse_bool("HAZ_REMOTE_CACHE_READ_ONLY", text) is value


@pytest.mark.parametrize("text", ["2", "y", "enabled", "truee", "-"])
def test_remote_001_other_booleans_are_refused(text):
    with pytest.raises(UsageError) as e:
        parse_bool("HAZ_REMOTE_CACHE_READ_ONLY", text)
    assert f"HAZ_REMOTE_CACHE_READ_ONLY={text!r}" in str(e.value)


@pytest.mark.parametrize("name,value,message", [
    ("HAZ_REMOTE_CACHE_READ_ONLY", "maybe", "HAZ_REMOTE_CACHE_READ_ONLY='maybe' is not a boolean"),
    ("HAZ_REMOTE_CACHE_TIMEOUT", "soon", "HAZ_REMOTE_CACHE_TIMEOUT='soon' is not a number"),
    ("HAZ_REMOTE_CACHE_TIMEOUT", "0", "HAZ_REMOTE_CACHE_TIMEOUT='0' is not a number"),
    ("HAZ_REMOTE_CACHE_TIMEOUT", "inf", "HAZ_REMOTE_CACHE_TIMEOUT='inf' is not a number"),
    ("HAZ_REMOTE_CACHE_PROTOCOL", "ftp", "HAZ_REMOTE_CACHE_PROTOCOL='ftp' is not a protocol"),
    ("HAZ_REMOTE_CACHE_URL", "ftp://x/y", "HAZ_REMOTE_CACHE_URL: 'ftp://x/y' is not an http"),
    ("HAZ_REMOTE_CACHE_URL", "cache:8080", "is not an http:// or https:// URL"),
    ("HAZ_REMOTE_CACHE_TIMEOUT", "1e12", "HAZ_REMOTE_CACHE_TIMEOUT='1e12' is not a number"),
    ("HAZ_REMOTE_CACHE_URL", "http://h/my cache", "percent-encode them"),
    ("HAZ_REMOTE_CACHE_URL", "http://h/c\u00e4che", "percent-encode them"),
    # An unescaped '/' in the password (base64): shown without it.
    ("HAZ_REMOTE_CACHE_URL", "http://ci:pa/ss@127.0.0.1:1/c", "'http://127.0.0.1:1/c'"),
    # A query or fragment, where API keys go: refused, and not shown.
    ("HAZ_REMOTE_CACHE_URL", "https://h/c?apikey=pa/ss", "'https://h/c' must not have a query"),
    ("HAZ_REMOTE_CACHE_URL", "https://h/c#pa/ss", "'https://h/c' must not have a query"),
])
def test_remote_001_bad_environment_exits_2(make_ws, name, value, message):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "echo ran"\n'})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    env.update({"HAZ_REMOTE_CACHE_URL": "http://127.0.0.1:9/c", name: value})
    proc = run_hazrun(ws, "run", "x", "--no-cache", env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hazrun: error: "), proc.stderr
    assert message in proc.stderr
    assert "ran" not in proc.stdout  # refused before anything ran
    assert "pa/ss" not in proc.stderr


@pytest.mark.parametrize("name,value", [("HAZ_REMOTE_CACHE_READ_ONLY", "maybe"),
                                        ("HAZ_REMOTE_CACHE_TIMEOUT", "soon"),
                                        ("HAZ_REMOTE_CACHE_PROTOCOL", "ftp")])
def test_remote_001_bad_variables_exit_2_without_a_url_too(make_ws, name, value):
    """A CI setting with a typo is refused in every job, not only in the
    one that also sets the URL (README: 'any other value exits 2')."""
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "echo ran"\n'})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    env[name] = value
    proc = run_hazrun(ws, "run", "x", "--no-cache", env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"{name}={value!r}" in proc.stderr and "ran" not in proc.stdout


def test_remote_001_bad_command_line_url_exits_2(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "true"\n'})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    proc = run_hazrun(ws, "run", "x", "--remote-cache", "//u:hunter2@/x", env=env)
    assert proc.returncode == 2
    assert "--remote-cache" in proc.stderr and "hunter2" not in proc.stderr
    proc = run_hazrun(ws, "run", "x", "--remote-cache", "http://h", "--no-remote-cache",
                      env=env)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr


def test_remote_001_a_token_that_cannot_be_a_header_is_refused_unprinted(make_ws):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\ncmd = "true"\n'})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    env.update(HAZ_REMOTE_CACHE_URL="http://127.0.0.1:9/c",
               HAZ_REMOTE_CACHE_TOKEN="abc\rSECRETPART")
    proc = run_hazrun(ws, "run", "x", env=env)
    assert proc.returncode == 2
    assert "HAZ_REMOTE_CACHE_TOKEN" in proc.stderr and "SECRETPART" not in proc.stderr


def test_remote_001_no_remote_cache_skips_the_environment():
    env = {"HAZ_REMOTE_CACHE_URL": "http://x", "HAZ_REMOTE_CACHE_READ_ONLY": "bogus"}
    assert resolve_remote(None, env, disabled=True) is None
    with pytest.raises(UsageError):
        resolve_remote(None, env)


def test_remote_001_secrets_are_not_in_repr_or_display():
    s = resolve_remote(None, {"HAZ_REMOTE_CACHE_URL": "http://user:pw9@h:1/p",
                              "HAZ_REMOTE_CACHE_TOKEN": "tok9",
                              "HAZ_REMOTE_CACHE_SIGNATURE_KEY": "key9"})
    for text in (repr(s), str(s), s.display()):
        assert "tok9" not in text and "key9" not in text and "pw9" not in text
    assert s.basic_auth == "user:pw9" and s.url == "http://h:1/p"


def test_remote_001_secrets_are_not_in_the_tasks_environment(make_ws, tmp_path):
    ws = make_ws({"haz.toml": '[workspace]\n[tasks.x]\n'
                  'cmd = "echo T=${HAZ_REMOTE_CACHE_TOKEN-unset} K=${HAZ_REMOTE_CACHE_SIGNATURE_KEY-unset}"\n'})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAZ_")}
    env.update(HAZ_REMOTE_CACHE_TOKEN="t0k", HAZ_REMOTE_CACHE_SIGNATURE_KEY="k3y")
    proc = run_hazrun(ws, "run", "x", "--no-cache", env=env)
    assert "[root:x] T=unset K=unset" in proc.stdout


def test_remote_001_a_library_timeout_past_an_hour_is_refused_unless_overridden():
    toml = dataclasses.replace(TOML, timeout=1e12)
    with pytest.raises(UsageError, match="key 'timeout': must be greater than 0 and "
                                         "at most 3600 seconds, got 1e\\+12"):
        resolve_remote(toml, {})
    assert resolve_remote(toml, {"HAZ_REMOTE_CACHE_TIMEOUT": "5"}).timeout == 5.0


@pytest.mark.parametrize("line,message", [
    ("timeout = 7200", "key 'timeout': must be at most 3600 seconds, got 7200"),
    ('url = "cache.internal:8080/hazrun"', "key 'url': 'cache.internal:8080/hazrun' is not "
                                           "an http:// or https:// URL with a host"),
    ('url = "http://u:pw@h/a b"', "key 'url': 'http://h/a b' has spaces or non-ASCII"),
])
def test_remote_001_bad_haz_toml_settings_are_load_errors_naming_the_file(make_ws, line, message):
    empty = make_ws({"haz.toml": '[workspace]\n[workspace.remote_cache]\nurl = ""\n'
                                 '[tasks.x]\ncmd = "true"\n'})
    assert run_hazrun(empty, "list").returncode == 0  # "": no remote cache
    """CFG-001: found by every command as the workspace loads (not only by a
    run that reaches the remote), with the file named; never a password."""
    ws = make_ws({"haz.toml": f'[workspace]\n[workspace.remote_cache]\n{line}\n'
                              '[tasks.x]\ncmd = "true"\n'})
    for args in (("list",), ("run", "x", "--dry-run"), ("run", "x", "--no-remote-cache")):
        proc = run_hazrun(ws, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert f"haz.toml: [workspace.remote_cache] {message}" in proc.stderr, proc.stderr
        assert "pw" not in proc.stderr
