"""``aliasd run`` fails with one clear line, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aliasd", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, check=False)


def test_broken_aliases_file(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("aliases:\n  web: {addresses: [300.1.1.1]}\n")
    out = run("run", "--aliases-file", str(f), "--dns-listen", "127.0.0.1:0",
              "--http-listen", "127.0.0.1:0")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"aliasd: error: {f}: alias 'web': '300.1.1.1' is not an IP address")
    assert "Traceback" not in out.stderr


def test_port_in_use(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("aliases:\n  web: {addresses: [192.0.2.1]}\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = run("run", "--aliases-file", str(f), "--dns-listen", f"127.0.0.1:{port}",
                  "--http-listen", "127.0.0.1:0")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"aliasd: error: cannot listen on 127.0.0.1:{port}/udp for DNS: address already in use")
    assert "Traceback" not in out.stderr


def test_unknown_flag_and_bad_values() -> None:
    out = run("run", "--bogus")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == "aliasd: error: unrecognized arguments: --bogus"
    out = run("run", "--aliases-file", "x", "--dns-listen", "nowhere")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "aliasd: error: --dns-listen 'nowhere': expected HOST:PORT, e.g. 0.0.0.0:5353")
    out = run("run", "--zone", "bad_zone!", "--aliases-file", "x")
    assert out.returncode == 1 and "zone 'bad_zone!'" in out.stderr


def test_migration_flags_fail_in_one_line(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("aliases:\n  web: {addresses: [192.0.2.1]}\n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "token").write_text("t0ken\n")
    listen = ["--dns-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    cases = [
        (["--allow-takeover", "namespace=Bad_NS"],
         "aliasd: error: --allow-takeover 'namespace=Bad_NS': 'Bad_NS' is not a namespace name"),
        (["--default-allowed-names", "*.{ns}.internal"],
         "aliasd: error: --default-allowed-names '*.{ns}.internal': the only placeholder is "
         "{namespace}"),
        (["--default-allowed-names", "shop.internal, a*.{namespace}.internal"],
         "aliasd: error: --default-allowed-names 'a*.{namespace}.internal': '*' is allowed "
         "only as the whole first label ('*.shop.internal') or alone ('*')"),
        (["--api-token-file", str(tmp_path / "missing")],
         f"aliasd: error: --api-token-file {tmp_path / 'missing'}: No such file or directory"),
        (["--api-token-file", str(tmp_path / "empty")],
         f"aliasd: error: --api-token-file {tmp_path / 'empty'} is empty"),
        (["--api-token-file", str(tmp_path / "token")],  # standalone: needs the state file
         "aliasd: error: --api-token-file without Kubernetes needs --state-file: that is "
         "where overrides are kept across restarts"),
    ]
    for extra, message in cases:
        out = run("run", "--aliases-file", str(f), *listen, *extra)
        assert (out.returncode, out.stderr.strip()) == (1, message), extra


def test_env_vars_are_flags(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "aliasd", "run"], capture_output=True, text=True,
                         timeout=30, cwd=ROOT, check=False,
                         env={"ALIASD_DNS_LISTEN": "bogus", "PATH": "/usr/bin"})
    assert out.returncode == 1
    assert "--dns-listen 'bogus'" in out.stderr


def test_stop_deployment_goes_with_remove_only() -> None:
    for action in ("diff", "apply"):
        out = run("coredns", action, "--stop-deployment", "aliasd-system/aliasd")
        assert (out.returncode, out.stderr) == (
            2, "aliasd: error: --stop-deployment goes with remove only\n")
    out = run("coredns", "remove", "--stop-deployment", "aliasd")
    assert (out.returncode, out.stderr) == (
        2, "aliasd: error: --stop-deployment 'aliasd': expected NAMESPACE/NAME\n")
