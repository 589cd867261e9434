"""The ``sdfl`` command. Heavy modules are imported inside the commands, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from controllers.launch import FRAMEWORK_NAMES

TEST_CHOICES = ("pingall", "iperf", "all")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCENARIO = REPO / "scenarios" / "paper.toml"


def format_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdfl",
        description="Secure decentralized federated learning across SDN domains: an emulation testbed.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("check", help="what this machine can emulate (root, OVS, datapath, netem, deps)")
    _add_net(commands)
    run = _add_scenario_command(commands, "run", "run a DFL experiment from a scenario file (default: the reference)",
                                "run folder (default runs/<name>-<time>)")
    run.add_argument("--pcap", action="store_true", help="capture every host's traffic into <out>/pcap/<host>.pcap")
    _add_scenario_command(commands, "simulate", "the same scenario in one process, no network and no root: "
                                                "the reference a run is compared with",
                          "result folder (default runs/<name>-sim-<time>)")
    sweep = commands.add_parser("sweep", help="run the cross product of a sweep file's axes (resumes)")
    sweep.add_argument("sweep", type=Path, help="TOML sweep file, e.g. scenarios/matrix.toml")
    sweep.add_argument("--out", type=Path, default=None, help="sweep folder (default runs/sweep-<name>)")
    sweep.add_argument("--simulate", action="store_true", help="simulate each cell (sdfl simulate) instead of "
                                                               "running it: no root, no network")
    sweep.add_argument("--jobs", type=int, default=0, help="cells at once, each a process of its own (default: "
                                                          "one per core as far as memory allows, printed)")
    sweep.add_argument("--ray", metavar="ADDRESS", default=None,
                       help="run the cells as tasks on the Ray cluster at ADDRESS (pip install .[cluster]; each "
                            "worker started with --resources '{\"sdfl_slot\": N}')")
    report = commands.add_parser("report", help="rebuild report.md and its plots from a run's or sweep's saved results")
    report.add_argument("folder", type=Path, help="a run folder (summary.json) or sweep folder (results.csv)")
    ledger = commands.add_parser("ledger", help="check the domains' signed decisions of a run")
    ledger.add_argument("action", choices=("verify",), help="verify: every chain and signature, and who decided what")
    ledger.add_argument("folder", type=Path, help="a run folder (controller-dN.ledger, keys/domains.pub.json)")
    clean = commands.add_parser("clean", help="remove what killed runs left (processes, bridges, interfaces)")
    clean.add_argument("--all", action="store_true", help="also tear down runs that are still alive")
    return parser


def _add_scenario_command(commands, name: str, help_text: str, out_help: str) -> argparse.ArgumentParser:
    """A command over a scenario file: ``[SCENARIO] [--set KEY=VALUE ...] [--out DIR]``."""
    command = commands.add_parser(name, help=help_text)
    command.add_argument("scenario", nargs="?", type=Path, default=DEFAULT_SCENARIO,
                         help=f"TOML scenario (default {DEFAULT_SCENARIO.relative_to(REPO)})")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a scenario key, e.g. --set dfl.rounds=5 (repeatable)")
    command.add_argument("--out", type=Path, default=None, help=out_help)
    return command


def _add_net(commands) -> None:
    net = commands.add_parser("net", help="bring up a multi-domain network with one controller per domain")
    net.add_argument("--domains", type=int, default=3, help="number of SDN domains, 1-8 (default 3)")
    net.add_argument("--hosts", type=int, default=4, help="hosts per domain, 1-16 (default 4)")
    net.add_argument("--domain-graph", choices=("line", "ring", "mesh"), default="ring",
                     help="how the domains are linked (default ring)")
    net.add_argument("--test", choices=TEST_CHOICES, action="append", default=[],
                     help="pingall (every host pair), iperf (first host of the first and last domain), "
                          "or all; may be repeated")
    net.add_argument("--cli", action="store_true", help="open the Mininet CLI before tearing down")
    net.add_argument("--hold", type=positive_float, default=None, metavar="SECONDS",
                     help="keep the network up this long after the tests (Ctrl-C ends it early)")
    net.add_argument("--host-bw", type=non_negative_float, default=100.0,
                     help="host link Mbit/s, 0 = unshaped (default 100)")
    net.add_argument("--border-bw", type=non_negative_float, default=100.0,
                     help="inter-domain link Mbit/s, 0 = unshaped (default 100)")
    net.add_argument("--border-delay", type=positive_float, default=None,
                     help="inter-domain link delay in ms (needs netem)")
    net.add_argument("--border-loss", type=positive_float, default=None,
                     help="inter-domain link loss in %% (needs netem)")
    net.add_argument("--datapath", choices=("auto", "kernel", "user"), default="auto",
                     help="OVS datapath (default auto: kernel where the module exists)")
    net.add_argument("--poll-interval", type=positive_float, default=1.0,
                     help="controller flow-stats poll interval in s (default 1)")
    net.add_argument("--controller", choices=FRAMEWORK_NAMES, default="os-ken",
                     help="the controllers' framework (default os-ken; ryu needs scripts/install.sh --ryu)")
    net.add_argument("--controller-python", type=Path, default=None, metavar="PYTHON",
                     help="the controllers' interpreter (default: the framework's venv)")
    net.add_argument("--controller-port-base", type=int, default=6653,
                     help="domain d's controller listens on BASE+d (default 6653)")
    net.add_argument("--iperf-seconds", type=positive_float, default=3.0, help="iperf3 duration (default 3)")
    net.add_argument("--out", type=Path, default=None, help="run folder (default runs/net-<time>)")


def become_root(args) -> None:
    """Re-run this very command with sudo when it needs root and we are not root.

    Called after the arguments were validated, so bad input never asks for a password.
    """
    if os.geteuid() == 0:
        return
    if not shutil.which("sudo"):
        raise SystemExit(f"sdfl {args.command} needs root (network namespaces, Open vSwitch); run it as root")
    os.execvp("sudo", ["sudo", "--preserve-env=CI,PATH", sys.executable, "-m", "sdfl", *args.argv])


def prepare_emulation() -> None:
    """Mininet's log level, and signals that always reach the teardown.

    Ctrl-C raises KeyboardInterrupt even when SIGINT was inherited as ignored (a background job
    of a non-interactive shell, e.g. under CI); SIGTERM and SIGHUP become SystemExit.
    """
    from mininet.log import setLogLevel

    setLogLevel("info" if logging.getLogger().level <= logging.INFO else "warning")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)


def cmd_check(args) -> int:
    from sdfl.environment import FAIL, run_checks

    checks = run_checks()
    print(format_table(["check", "status", "detail"], [[c.name, c.status, c.detail] for c in checks]))
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        print("\nMissing:")
        for check in failed:
            print(f"  {check.name}: {check.fix}")
        return 1
    return 0


def cmd_net(args) -> int:
    from controllers.launch import ControllerRuntime
    from sdfl.emulation import Emulation
    from topologies.layout import LinkParams, make_layout

    layout = make_layout(
        args.domains, args.hosts, args.domain_graph,
        controller_port_base=args.controller_port_base,
        host_link=LinkParams(bw_mbit=args.host_bw or None),
        border_link=LinkParams(bw_mbit=args.border_bw or None, delay_ms=args.border_delay,
                               loss_pct=args.border_loss),
    )
    become_root(args)
    prepare_emulation()
    out = args.out or Path("runs") / f"net-{time.strftime('%Y%m%d-%H%M%S')}"
    controller = ControllerRuntime.probe(args.controller, args.controller_python)
    summary: dict = {"network": {"domains": args.domains, "hosts_per_domain": args.hosts,
                                 "domain_graph": args.domain_graph, "controller": controller.to_dict()}}
    with Emulation(layout, out, datapath=args.datapath, poll_interval=args.poll_interval,
                   controller=controller) as emulation:
        summary["network"]["datapath"] = emulation.datapath
        summary["timings"] = dict(emulation.timings)
        print(f"network up: {args.domains} domains x {args.hosts} hosts, {args.domain_graph} graph, "
              f"{emulation.datapath} datapath, {emulation.timings['bring_up_s']:.1f} s; controllers "
              f"{controller.framework.value} {controller.version} on Python {controller.python_version}")
        ok = _probe_network(emulation, layout, args, summary)
        if args.cli:
            from mininet.cli import CLI

            CLI(emulation.net)
        if args.hold:
            print(f"holding the network for {args.hold:.0f} s (Ctrl-C ends it)", flush=True)
            time.sleep(args.hold)
        counters = emulation.fresh_counters(since=time.time())
        summary["counters"] = {str(d): record["hosts"] for d, record in sorted(counters.items())}
    rows = [[name, domain, c["packets"], c["bytes"], c["flows_total"], c["dropped_packets"]]
            for domain, hosts in summary["counters"].items() for name, c in hosts.items()]
    print("\nper-host counters from the controllers' flow statistics:")
    print(format_table(["host", "domain", "packets", "bytes", "flows", "dropped"], rows))
    (out / "net_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nresults: {out / 'net_summary.json'}")
    return 0 if ok else 1


def _probe_network(emulation, layout, args, summary: dict) -> bool:
    """``sdfl net --test``'s probes, into ``summary``; False if a ping was lost."""
    from sdfl.probes import iperf3, ping_all

    tests = {"pingall", "iperf"} if "all" in args.test else set(args.test)
    ok = True
    if "pingall" in tests:
        result = ping_all(emulation.net)
        summary["pingall"] = {"sent": result.sent, "received": result.received, "dropped_pct": result.dropped_pct}
        ok = result.received == result.sent
        print(f"pingall: {result.dropped_pct:.0f}% dropped ({result.received}/{result.sent} received)")
    if "iperf" in tests:
        client = emulation.net.get(layout.hosts_in(1)[0].name)
        server = emulation.net.get(layout.hosts_in(layout.domains)[-1].name)
        summary["iperf"] = iperf3(client, server, args.iperf_seconds)
        print(f"iperf3 {client.name} -> {server.name}: {summary['iperf']['mbit_s']:.1f} Mbit/s")
    return ok


def cmd_run(args) -> int:
    from sdfl.runner import run_experiment
    from sdfl.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides)
    become_root(args)
    prepare_emulation()
    out = args.out or Path("runs") / f"{scenario['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = run_experiment(scenario, out, progress=lambda line: print(line, flush=True), pcap=args.pcap)
    dfl = summary["dfl"]
    print(f"\nhonest accuracy after {scenario['dfl']['rounds']} rounds: {dfl['honest_accuracy_final']:.3f} "
          f"({dfl['honest_nodes_reporting_final']} nodes); median round {dfl['round_time_s_median']:.2f} s; "
          f"model bytes {dfl['model_bytes_total']:,}")
    if summary["attacks"]["malicious_nodes"]:
        print(f"attackers (not counted as honest): {', '.join(summary['attacks']['malicious_nodes'])}")
    if summary["dfl"].get("backdoor_success_final") is not None:
        print(f"backdoor success rate (honest models, final round): {summary['dfl']['backdoor_success_final']:.3f}")
    if "detection" in summary:
        detection, overhead = summary["detection"], summary["overhead"]
        print(f"FU-HST: F1 {detection['f1']:.3f} (precision {detection['precision']:.3f}, recall "
              f"{detection['recall']:.3f}), false-ban rate {detection['false_ban_rate']:.3f}, "
              f"{overhead['interdomain_control_bytes_per_round']:.1f} inter-domain control bytes per round; banned: "
              + (", ".join(f"{b['node']} (round {b['round']}, {b['reason']})" for b in detection["bans"]) or "nobody"))
    inspection = summary.get("inspection", {})
    if inspection.get("gaps") or inspection.get("dropped"):
        print(f"the inspection lost mirrored bytes: {inspection['gaps']} streams read on past them, "
              f"{inspection['dropped']} packets dropped by its sockets (frames the update features never saw; "
              "see 'OVS send buffer' in sdfl check)")
    if dfl["dead_nodes"]:
        print(f"dead agents: {', '.join(dfl['dead_nodes'])}")
    from sdfl.report import write_run_report

    print(f"results: {out}/summary.json, rounds.csv, events.jsonl; report: {write_run_report(out)}")
    return 0 if summary["complete"] else 1


def cmd_simulate(args) -> int:
    from sdfl.report import write_run_report
    from sdfl.scenario import load_scenario
    from sdfl.simulate import simulate_run

    scenario = load_scenario(args.scenario, args.overrides)
    out = args.out or Path("runs") / f"{scenario['name']}-sim-{time.strftime('%Y%m%d-%H%M%S')}"
    began = time.monotonic()
    summary = simulate_run(scenario, out, progress=lambda line: print(line, flush=True))
    print(f"\nsimulated honest accuracy after {scenario['dfl']['rounds']} rounds: "
          f"{summary['dfl']['honest_accuracy_final']:.3f} in {time.monotonic() - began:.1f} s")
    if summary["attacks"]["malicious_nodes"]:
        print(f"attackers (not counted as honest): {', '.join(summary['attacks']['malicious_nodes'])}")
    if summary["dfl"].get("backdoor_success_final") is not None:
        print(f"backdoor success rate (honest models, final round): {summary['dfl']['backdoor_success_final']:.3f}")
    if "detection" in summary:
        detection = summary["detection"]
        print(f"FU-HST update stream: F1 {detection['f1']:.3f}, false-ban rate {detection['false_ban_rate']:.3f}, "
              f"{summary['overhead']['interdomain_control_bytes_per_round']:.1f} notice bytes per round; banned: "
              + (", ".join(f"{b['node']} (round {b['round']})" for b in detection["bans"]) or "nobody"))
    print(f"results: {out}/summary.json, rounds.csv; report: {write_run_report(out)}")
    return 0


def cmd_report(args) -> int:
    from sdfl.report import write_report

    print(f"report: {write_report(args.folder)}")
    return 0


def sweep_cell(simulate: bool, scenario: dict, folder: Path) -> dict:
    """One sweep cell, run or simulated, with its report (module-level: ``--jobs`` pickles it)."""
    from sdfl.report import write_report

    if simulate:
        from sdfl.simulate import simulate_run as experiment
    else:
        from sdfl.runner import run_experiment as experiment
    summary = experiment(scenario, folder, progress=lambda line: None)
    write_report(folder)
    return summary


def cmd_sweep(args) -> int:
    from sdfl.report import write_report
    from sdfl.sweep import default_jobs, load_sweep, run_sweep

    cells = load_sweep(args.sweep)
    if args.jobs < 0:
        raise ValueError(f"--jobs {args.jobs}: give a number of cells at once (1 = one after another)")
    if not args.simulate:
        become_root(args)
        prepare_emulation()
    if args.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--ray needs Ray: pip install .[cluster] (or bash scripts/install.sh --cluster)") from None
        jobs = 1
        print(f"{len(cells)} cells on the Ray cluster at {args.ray}", flush=True)
    else:
        jobs, why = default_jobs(args.simulate)
        if args.jobs:
            jobs, why = args.jobs, "--jobs"
        print(f"{len(cells)} cells, {jobs} at once ({why})", flush=True)
    out = args.out or Path("runs") / f"sweep-{args.sweep.stem}{'-sim' if args.simulate else ''}"
    began = time.monotonic()
    rows = run_sweep(cells, out, functools.partial(sweep_cell, args.simulate),
                     progress=lambda line: print(line, flush=True), jobs=jobs, ray_address=args.ray)
    failed = [r for r in rows if r["complete"] is not True]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} cells complete in {(time.monotonic() - began) / 60:.1f} min; "
          f"results: {out / 'results.csv'}; report: {write_report(out)}")
    return 1 if failed else 0


def cmd_ledger(args) -> int:
    """``sdfl ledger verify RUN``: exit 1, naming the entry, if any ledger line is not what its
    origin signed; otherwise who decided what, when, on what evidence, and any equivocation."""
    from controllers.ledger import LedgerAuditError, audit_run

    try:
        found, description = audit_run(args.folder)
    except LedgerAuditError as error:
        print(f"ledger verification FAILED: {error}")
        return 1
    print(f"{len(found.files)} ledger files: " + ", ".join(f"{n} ({c} entries)" for n, c in found.files.items()))
    for origin, chain in sorted(found.chains.items()):
        print(f"domain {origin}: {len(chain)} decision(s)")
        for decision in chain:
            print("  " + _decision_line(decision, description, found.refusals.get((origin, decision.seq))))
    for name, proof in found.equivocations:
        print(f"EQUIVOCATION by domain {proof.other.origin}, decision {proof.other.seq}: {name} holds another "
              "signed decision under that number than the ledgers before it (both signatures verify)")
    print(f"every chain and signature verifies; equivocations: {len(found.equivocations) or 'none'}")
    return 0


def _decision_line(decision, description, refusal: str | None) -> str:
    notice = decision.notice
    when = (time.strftime("%H:%M:%S", time.gmtime(decision.decided_at))
            + f".{int(decision.decided_at * 1000) % 1000:03d}")
    if notice.links:
        what = ", ".join(f"d{a}-d{b}" for a, b in notice.links)
    else:
        what = ", ".join(
            f"{host.name if (host := description.host_with_key(e.node_key)) else f'key {e.node_key}'} "
            f"({e.stream.name.lower()} stream, score {e.score:.3f}, evidence {e.m}/{e.n})" for e in notice.entries)
    verdict = "in force" if refusal is None else f"refused: {refusal}"
    return f"#{decision.seq} {when} UTC round {notice.round} {notice.type.name.lower()} {what}: {verdict}"


def cmd_clean(args) -> int:
    from sdfl.records import clean

    become_root(args)
    report = clean(include_live=args.all)
    if report.empty():
        print("nothing to clean")
    for label, items in (("removed runs", report.runs), ("removed processes", report.processes),
                         ("removed bridges", report.bridges), ("removed interfaces", report.interfaces),
                         ("resumed (it was stopped)", report.resumed)):
        if items:
            print(f"{label}: {', '.join(items)}")
    if report.live_runs:
        print(f"left alone (still running): {', '.join(report.live_runs)}; use --all to stop them")
    return 0


COMMANDS = {"check": cmd_check, "net": cmd_net, "run": cmd_run, "simulate": cmd_simulate, "sweep": cmd_sweep,
            "report": cmd_report, "ledger": cmd_ledger, "clean": cmd_clean}


def _exit_on_signal(signum, frame):
    """Turn SIGTERM/SIGHUP into SystemExit so every ``finally`` and ``__exit__`` runs."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; everything this run started was torn down", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, OSError) as error:
        print(f"sdfl {args.command}: {error}", file=sys.stderr)
        return 2
