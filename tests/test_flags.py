"""One table declares every flag: the parser, the environment and the defaults
follow it, and a bad value fails naming the flag (or its variable)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from aliasd import flags
from aliasd.cli import build_parser
from aliasd.model import ConfigError


@pytest.fixture(autouse=True)
def _outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)


def parse(argv: list[str], env: dict[str, str] | None = None) -> flags.Options:
    args = build_parser().parse_args(argv)
    return flags.parse(args.command, args, env or {})


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def test_each_parser_takes_exactly_the_flags_declared_for_it() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions
                      if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subparsers) == set(flags.COMMANDS)
    assert options_of(parser) == {"--help", *(f.name for f in flags.GLOBAL)}
    for command, sub in subparsers.items():
        assert options_of(sub) == {"--help", *(f.name for f in flags.flags_of(command))}


def test_names_and_variables_are_unique_and_follow_the_flag() -> None:
    names = [f.name for f in flags.FLAGS]
    assert len(names) == len(set(names))
    for flag in flags.FLAGS:
        assert flag.commands and set(flag.commands) <= set(flags.COMMANDS)
        if flag.env is not None:
            assert flag.env == "ALIASD_" + flag.name[2:].upper().replace("-", "_")
    assert flags.FORCE.env is None  # a decision for one invocation, never a pod setting


def test_command_line_beats_environment_beats_default() -> None:
    assert parse(["run"]).value(flags.DNS_LISTEN) == ("0.0.0.0", 5353)
    env = {"ALIASD_DNS_LISTEN": "127.0.0.1:53"}
    assert parse(["run"], env).value(flags.DNS_LISTEN) == ("127.0.0.1", 53)
    assert parse(["run", "--dns-listen", "[::1]:5300"], env).value(
        flags.DNS_LISTEN) == ("::1", 5300)


def test_repeatable_flags_take_comma_lists_everywhere() -> None:
    assert parse(["run"]).get(flags.ZONE) == ["internal"]
    assert parse(["run"], {"ALIASD_ZONE": "a, b,"}).get(flags.ZONE) == ["a", "b"]
    given = parse(["run", "--zone", "c,d", "--zone", "e"], {"ALIASD_ZONE": "a"})
    assert given.get(flags.ZONE) == ["c", "d", "e"]
    assert parse(["run"]).get(flags.NAMESPACES) == []


def test_values_are_typed() -> None:
    opts = parse(["run", "--aliases-file", "a.yaml", "--tcp-idle-timeout", "2.5",
                  "--allow-transfer", "10.0.0.0/8", "--lame-duck", "0"])
    assert opts.get(flags.ALIASES_FILE) == Path("a.yaml")
    assert opts.get(flags.STATE_FILE) is None
    assert opts.value(flags.TCP_IDLE_TIMEOUT) == 2.5
    assert opts.value(flags.TCP_MAX_CONNECTIONS) == 256
    assert opts.value(flags.LAME_DUCK) == 0.0
    assert [str(n) for n in opts.get(flags.ALLOW_TRANSFER)] == ["10.0.0.0/8"]
    assert opts.value(flags.OVERRIDES_CONFIGMAP) == ("aliasd-system", "aliasd-overrides")


def test_pod_namespace_fills_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "dns")
    opts = parse(["coredns", "remove"])
    assert opts.value(flags.LEADER_LEASE) == ("dns", "aliasd")
    assert opts.value(flags.DNS_SERVICE) == "dns/aliasd"
    assert opts.get(flags.FORCE) is False
    assert parse(["coredns", "remove", "--force"]).get(flags.FORCE) is True


def test_a_flag_of_another_command_ignores_its_variable() -> None:
    opts = parse(["coredns", "diff"], {"ALIASD_NS_ADDRESS": "192.0.2.1",
                                       "ALIASD_DNS_LISTEN": "bogus"})
    assert opts.get(flags.NS_ADDRESS) == []
    assert opts.get(flags.DNS_LISTEN) == ("0.0.0.0", 5353)


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["run", "--tcp-idle-timeout", "soon"], {},
     "--tcp-idle-timeout 'soon' is not a number"),
    (["run", "--tcp-max-connections", "0"], {}, "--tcp-max-connections must be positive, got 0"),
    (["run", "--lame-duck", "-1"], {}, "--lame-duck must be positive, got -1"),
    (["run", "--leader-lease-duration", "1.5x"], {},
     "--leader-lease-duration '1.5x' is not a number"),
    (["run", "--allow-transfer", "10.0.0.0/33"], {},
     "--allow-transfer '10.0.0.0/33' is not a CIDR (e.g. 10.0.0.0/8)"),
    (["run"], {"ALIASD_HTTP_LISTEN": "8080"},
     "--http-listen '8080': expected HOST:PORT, e.g. 0.0.0.0:5353"),
    (["run", "--leader-lease", "aliasd"], {}, "--leader-lease 'aliasd': expected NAMESPACE/NAME"),
    (["list", "--overrides-configmap", "a/b/c"], {},
     "--overrides-configmap 'a/b/c': expected NAMESPACE/NAME"),
    (["coredns", "diff", "--dns-service", "x"], {}, "--dns-service 'x': expected NAMESPACE/NAME"),
    (["coredns", "diff"], {"ALIASD_COREDNS_CONFIGMAP": "coredns"},
     "--coredns-configmap 'coredns': expected NAMESPACE/NAME"),
    (["coredns", "diff", "--forward-to", "10.0.0.1:0"], {},
     "--forward-to '10.0.0.1:0': port must be 1..65535"),
    (["run"], {"ALIASD_COREDNS_MODE": "coredns"},
     "ALIASD_COREDNS_MODE 'coredns': expected one of auto, corefile, coredns-custom, kube-dns, "
     "node-local-dns, off"),
    (["run"], {"ALIASD_LOG_LEVEL": "verbose"},
     "ALIASD_LOG_LEVEL 'verbose': expected one of debug, info, warning, error"),
])
def test_a_bad_value_names_its_flag(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(argv, env)
    assert str(e.value) == message


def test_the_token_file_is_read_and_checked(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert parse(["run", "--api-token-file", str(token)]).get(flags.API_TOKEN_FILE) == "s3cret"
    token.write_text("two words\n")
    with pytest.raises(ConfigError) as e:
        parse(["run", "--api-token-file", str(token)])
    assert str(e.value) == f"--api-token-file {token}: the token contains whitespace"


def test_value_of_an_unset_flag_is_a_programming_error() -> None:
    with pytest.raises(LookupError):
        parse(["run"]).value(flags.ALIASES_FILE)
