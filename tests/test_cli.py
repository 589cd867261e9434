import subprocess
import sys

import pytest

from sdfl.cli import build_parser, format_table, main


def run_sdfl(*args):
    return subprocess.run([sys.executable, "-m", "sdfl", *args], capture_output=True, text=True, timeout=60)


def test_help_imports_nothing_heavy():
    probe = ("import sys; from sdfl.cli import build_parser; build_parser();"
             "heavy = [m for m in ('torch', 'mininet', 'os_ken', 'scapy', 'river') if m in sys.modules];"
             "print(heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    result = run_sdfl("--help")
    assert result.returncode == 0 and "net" in result.stdout and "clean" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["net", "--domain-graph", "star"], "invalid choice: 'star'"),
    (["net", "--domains", "three"], "invalid int value: 'three'"),
    (["net", "--host-bw", "-5"], "must be >= 0"),
    (["net", "--poll-interval", "0"], "must be > 0"),
    (["net", "--test", "traceroute"], "invalid choice: 'traceroute'"),
    (["bogus"], "invalid choice: 'bogus'"),
    ([], "required: COMMAND"),
])
def test_argument_errors_name_the_problem(args, message):
    result = run_sdfl(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_out_of_range_sizes_fail_before_touching_the_network(capsys):
    assert main(["net", "--domains", "9"]) == 2
    assert "domains must be between 1 and 8" in capsys.readouterr().err
    assert main(["net", "--hosts", "0"]) == 2
    assert "hosts per domain must be between 1 and 16" in capsys.readouterr().err


def test_defaults_are_the_reference_network():
    args = build_parser().parse_args(["net"])
    assert (args.domains, args.hosts, args.domain_graph, args.poll_interval) == (3, 4, "ring", 1.0)


def test_table_format_aligns_columns():
    text = format_table(["a", "bb"], [[1, 2], ["long", 3]])
    assert text.splitlines() == ["a     bb", "----  --", "1     2", "long  3"]
