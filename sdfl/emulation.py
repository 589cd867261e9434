"""Bring a multi-domain network up with its controllers, and always tear it down again.

The order is fixed: record what will be created, write the description, start one controller
process per domain and wait until each listens, build the Mininet network, connect every
switch to its own domain's controller, and wait until each controller reports its rules
installed. Teardown runs in reverse from ``__exit__`` whatever happened (errors, Ctrl-C,
SIGTERM turned into SystemExit by the CLI).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

from common.events import Event, read_events
from common.keys import controller_party, inspector_party, key_path
from controllers.defense import DefenseConfig
from controllers.domain import defense_state_path
from controllers.launch import ControllerRuntime, Framework, controller_command, controller_environment
from sdfl.cluster import ClusterPlan
from sdfl.launcher import LaunchedProcess, Launcher
from sdfl.records import CleanReport, RunRecord, claim_slot, release, stop_processes, track
from topologies.builder import (
    attach_monitors,
    build_network,
    choose_datapath,
    require_link_features,
    start_switches,
)
from topologies.layout import NetworkLayout, write_description

LOG = logging.getLogger(__name__)
STATS_SETTLE_S = 1.0


class EmulationError(RuntimeError):
    """The network or a controller could not be brought up; the message says which and why."""


def ovs_running() -> bool:
    result = subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True)
    return result.returncode == 0


def port_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Emulation:
    """A running multi-domain network; use as a context manager.

    Parameters
    ----------
    layout:
        The declared network.
    out_dir:
        Where the description, controller logs and event files go.
    datapath:
        ``auto`` (kernel where available), ``kernel`` or ``user``.
    poll_interval:
        Seconds between the controllers' flow-statistics polls.
    ready_timeout:
        Seconds to wait for controllers to listen and for switches to get their rules.
    watched_ports:
        Destination ports whose bytes the controllers report per host (e.g. the DFL port).
    defense:
        The :class:`controllers.defense.DefenseConfig` of FU-HST in every controller (None:
        controllers forward and count only).
    frame_bounds:
        :class:`controllers.inspector.FrameBounds` of the run's model: what the inspection
        services accept as an honest frame (required with ``defense``).
    start_rule:
        :class:`controllers.inspector.StartRule`: how the honest agents aggregate, so the
        inspection measures each update from where its sender started (None: FedAvg).
    controller:
        The :class:`controllers.launch.ControllerRuntime` the controllers run on (None: os-ken
        in this interpreter, probed at start).
    byzantine:
        Compromised domains' controllers: :class:`controllers.byzantine.ByzantinePlan` by domain.
    cluster:
        A :class:`sdfl.cluster.ClusterPlan` (preflighted) to place each domain on its server, or None.
    """

    def __init__(self, layout: NetworkLayout, out_dir: Path, *, datapath: str = "auto",
                 poll_interval: float = 1.0, ready_timeout: float = 60.0,
                 watched_ports: tuple[int, ...] = (), defense: DefenseConfig | None = None, pcap: bool = False,
                 keyed: bool = False, frame_bounds=None, start_rule=None, controller: ControllerRuntime | None = None,
                 byzantine: dict | None = None, cluster: ClusterPlan | None = None,
                 progress=lambda line: None) -> None:
        if defense is not None and (frame_bounds is None or not keyed):
            raise ValueError("FU-HST needs frame_bounds and keyed=True: the inspection services judge frames "
                             "against the model and tag their reports with the run's keys")
        self.frame_bounds = frame_bounds
        self.start_rule = start_rule
        self.controller = controller
        self.byzantine = byzantine or {}
        self.cluster = cluster
        self.progress = progress  # a line per bring-up stage, with the time so far
        self.layout = layout
        self.keyed = keyed  # controllers get their key files (common.keys, written by the runner)
        self.pcap = pcap
        self.defense = defense
        self.out_dir = Path(out_dir)
        self.requested_datapath = datapath
        self.poll_interval = poll_interval
        self.watched_ports = watched_ports
        self.ready_timeout = ready_timeout
        self.datapath = "unknown"
        self.net = None
        self.record: RunRecord | None = None
        self.controllers: dict[int, LaunchedProcess] = {}
        self.controller_launchers: dict[str | None, Launcher] = {}  # by server (None: no cluster)
        self.stopped_controllers: set[int] = set()  # killed on purpose (a fault), not dead
        self.inspectors: dict[int, LaunchedProcess] = {}
        self.inspector_launchers: dict[str | None, Launcher] = {}
        self.captures: list[subprocess.Popen] = []
        self.timings: dict[str, float] = {}
        self.tunnels: list[str] = []  # border links between servers (cluster runs)

    # --- paths -------------------------------------------------------------------------
    @property
    def description_path(self) -> Path:
        return self.out_dir / "network.json"

    def events_path(self, domain: int) -> Path:
        return self.out_dir / f"controller-d{domain}.jsonl"

    def state_path(self, domain: int) -> Path:
        """The controller's persisted state (its default SDFL_STATE, beside its events)."""
        return self.events_path(domain).with_suffix(".state")

    def ledger_path(self, domain: int) -> Path:
        """The controller's ledger file (its default SDFL_LEDGER, beside its events)."""
        return self.events_path(domain).with_suffix(".ledger")

    def log_path(self, domain: int) -> Path:
        return self.out_dir / f"controller-d{domain}.log"

    # --- life cycle --------------------------------------------------------------------
    def __enter__(self) -> Emulation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        began = time.monotonic()
        self.datapath = choose_datapath(self.requested_datapath)
        require_link_features(self.layout)
        if not ovs_running():
            raise EmulationError(
                "Open vSwitch is not running: start it with "
                "'/usr/share/openvswitch/scripts/ovs-ctl start --system-id=random' "
                "(scripts/install.sh does this)"
            )
        if self.controller is None:
            self.controller = ControllerRuntime.probe(Framework.OS_KEN)
        self.record = RunRecord(
            run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
            out_dir=str(self.out_dir.resolve()),
            runner=track(os.getpid(), "runner"),
        )
        # Another run may be up on this machine: this one's names and ports carry its own slot.
        self.layout = self.layout.in_slot(claim_slot(self.record))
        inspection = self.defense is not None
        self.record.bridges = [s.name for s in self.layout.switches]
        self.record.interfaces = (self.layout.interface_names()
                                  + (self.layout.monitor_interfaces() if inspection else []))
        self.record.save()
        if self.cluster:
            self._place_on_servers()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Their imports overlap the checks, the description and (inspectors) the network's build.
        self.controller_launchers = self._start_launchers("controller", python=self.controller.python,
                                                          env=controller_environment({}))
        if inspection:
            self.inspector_launchers = self._start_launchers("inspector")
        if self.layout.slot:
            self.progress(f"another run holds this machine's slot 0: this one runs in slot {self.layout.slot} "
                          f"(switches {self.layout.switches[0].name}..., controller ports from "
                          f"{self.layout.controller_port(1)})")
        for domain in range(1, self.layout.domains + 1):
            port = self.layout.controller_port(domain)
            if port_listening(self.layout.controller_address(domain), port):
                raise EmulationError(
                    f"controller port {port} for domain {domain} is already in use; "
                    "is another run active? ('sdfl clean' removes leftovers of killed runs)"
                )
        for domain in range(1, self.layout.domains + 1):
            self.events_path(domain).unlink(missing_ok=True)
            self.state_path(domain).unlink(missing_ok=True)  # a new run starts with no bans
            defense_state_path(self.state_path(domain)).unlink(missing_ok=True)  # ... and untrained trees
            self.ledger_path(domain).unlink(missing_ok=True)  # ... and no decisions (its keys are new)
        description = self.layout.to_description(self.datapath, monitor=inspection)
        write_description(description, self.description_path)
        self._start_controllers()
        self.timings["controllers_listening_s"] = time.monotonic() - began
        self.progress(f"bring-up: {len(self.controllers)} controllers listening "
                      f"({self.timings['controllers_listening_s']:.1f} s)")
        self.net = build_network(self.layout, self.datapath, **self._placement())
        # Every Mininet node has a shell, remote controllers included; net.stop() leaves
        # those of RemoteController nodes running, so the record's teardown stops them all.
        # A node on another server has its shell there, under a local ssh client: ending the
        # client hangs up the shell.
        for node in (*self.net.hosts, *self.net.switches, *self.net.controllers):
            if getattr(node, "isRemote", False):
                self.record.add_process(node.shell.pid, f"ssh to the mininet shell of {node.name} on {node.server}")
            else:
                self.record.add_process(node.pid, f"mininet shell {node.name}")
        for link in self.net.links:
            if getattr(link, "tunnel", None):  # a border link between servers
                ends = f"{link.intf1.name} ({link.intf1.node.server}) - {link.intf2.name} ({link.intf2.node.server})"
                self.tunnels.append(ends)
                if hasattr(link.tunnel, "pid"):  # an ssh tunnel's client: the link lives as long as it
                    self.record.add_process(link.tunnel.pid, f"ssh tunnel {ends}")
        start_switches(self.net, self.layout)
        self.progress(f"bring-up: {len(self.net.hosts)} hosts and {len(self.net.switches)} switches built "
                      f"({time.monotonic() - began:.1f} s)")
        if inspection:
            if self.cluster:
                missing = attach_monitors(description,
                                          lambda d, argv: self.cluster.run(self.cluster.server_of(d), argv))
            else:
                missing = attach_monitors(description)
            for what in missing:
                LOG.warning("%s", what)
            self._start_inspectors()
        self._wait_ready()
        if self.pcap:
            self._start_captures()
        self.timings["bring_up_s"] = time.monotonic() - began
        LOG.info("network up in %.1f s (%s datapath)", self.timings["bring_up_s"], self.datapath)

    def _place_on_servers(self) -> None:
        """Controllers listen at their domain's server; the run record names what each other
        server gets, so that ``sdfl clean`` here repairs it there."""
        plan = self.cluster
        self.layout = self.layout.on_servers(tuple(plan.address(plan.server_of(d))
                                                   for d in range(1, self.layout.domains + 1)))
        for server in plan.remote_servers:
            domains = set(plan.domains_on(server))
            switches = [s.name for s in self.layout.switches if s.domain in domains]
            interfaces = [name for name in self.record.interfaces if name.split("-")[0] in switches]
            self.record.add_server(server, plan.user, switches, interfaces)

    def _placement(self) -> dict:
        if not self.cluster:
            return {}
        plan = self.cluster
        return {"servers": {d: plan.mininet_name(plan.server_of(d)) for d in range(1, self.layout.domains + 1)},
                "tunnel": plan.link, "user": plan.user}

    def _start_inspectors(self) -> None:
        """One inspection service per domain, in the root namespace beside the controllers,
        forked by its server's inspector launcher."""
        for domain in range(1, self.layout.domains + 1):
            argv = ["--network", str(self.description_path.resolve()), "--domain", str(domain),
                    "--out", str(self.out_dir.resolve()),
                    "--keys", str(key_path(self.out_dir, inspector_party(domain)).resolve()),
                    "--bounds", self.frame_bounds.to_json(),
                    *(["--rule", self.start_rule.to_json()] if self.start_rule else []),
                    "--wait", str(self.defense.round_wait_s), "--warmup-rounds", str(self.defense.warmup_rounds)]
            self.inspectors[domain] = self._fork(self.inspector_launchers, domain, f"inspector d{domain}",
                                                 "controllers.inspector", argv,
                                                 self.out_dir / f"inspector-d{domain}.log")

    def _start_captures(self) -> None:
        """tcpdump on every host's switch-side interface (root namespace): ``pcap/<host>.pcap``
        holds all a host sent and received, written through (-U) so a killed run keeps it."""
        folder = self.out_dir / "pcap"
        folder.mkdir(exist_ok=True)
        for host in self.layout.hosts:
            path = folder / f"{host.name}.pcap"
            proc = subprocess.Popen(["tcpdump", "-i", f"{host.switch}-eth{host.port}", "-U", "-q", "-w", str(path)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            self.captures.append(proc)
            self.record.add_process(proc.pid, f"tcpdump {host.name}")
        deadline = time.monotonic() + 10
        while not all((folder / f"{h.name}.pcap").exists() for h in self.layout.hosts):  # listening
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.captures):
                raise EmulationError(f"tcpdump did not start on every host interface (see {folder})")
            time.sleep(0.05)

    def _start_launchers(self, role: str, **interpreter) -> dict[str | None, Launcher]:
        """One ``role`` launcher (:mod:`sdfl.launcher`) per server that holds a domain (None: no
        cluster), in the interpreter ``interpreter`` names (``python``, ``env``): the domains'
        processes of that role are forked from it."""
        servers = {self.cluster.server_of(d) if self.cluster else None for d in range(1, self.layout.domains + 1)}
        launchers = {}
        for server in sorted(servers, key=str):
            launcher = launchers[server] = Launcher(
                self.out_dir / (f"{role}-launcher-{server}.log" if server else f"{role}-launcher.log"),
                plan=self.cluster, server=server, role=role, **interpreter)
            if launcher.remote:
                self.record.add_remote_process(server, *launcher.remote_pid, f"{role} launcher")
                self.record.add_process(launcher.process.pid, f"ssh to the {role} launcher on {server}")
            else:
                self.record.add_process(launcher.process.pid, f"{role} launcher")
        return launchers

    def _launch_controller(self, domain: int) -> None:
        args, env = controller_command(
            self.controller, domain, self.layout.controller_address(domain), self.layout.controller_port(domain),
            self.description_path.resolve(), self.events_path(domain).resolve(), self.poll_interval,
            self.watched_ports, self.defense,
            key_path(self.out_dir, controller_party(domain)).resolve() if self.keyed else None,
            self.byzantine.get(domain),
        )
        self.controllers[domain] = self._fork(self.controller_launchers, domain, f"controller d{domain}",
                                              "controllers.manager", args, self.log_path(domain), env)

    def _fork(self, launchers: dict[str | None, Launcher], domain: int, role: str, program: str, argv: list[str],
              log: Path, env: dict[str, str] | None = None) -> LaunchedProcess:
        """The domain's ``program`` forked by its server's launcher (of ``launchers``), in the root
        namespace; recorded here unless it is on another server, where it ends with its launcher."""
        launcher = launchers[self.cluster.server_of(domain) if self.cluster else None]
        try:
            proc = launcher.start(role, None, program, argv, log, env=env)
        except RuntimeError as error:
            raise EmulationError(f"{error}; see {log}") from error
        if not launcher.remote:
            self.record.add_process(proc.pid, role)
        return proc

    def _start_controllers(self) -> None:
        for domain in range(1, self.layout.domains + 1):
            self._launch_controller(domain)
        self._wait_listening(set(self.controllers))

    def _wait_listening(self, waiting: set[int]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while waiting:
            self.raise_if_controller_died()
            waiting = {d for d in waiting
                       if not port_listening(self.layout.controller_address(d), self.layout.controller_port(d))}
            if waiting and time.monotonic() > deadline:
                raise EmulationError(f"controllers of domains {sorted(waiting)} did not listen within "
                                     f"{self.ready_timeout:.0f} s; see {self.log_path(min(waiting))}")
            time.sleep(0.1)

    # --- faults ------------------------------------------------------------------------
    def kill_controller(self, domain: int) -> None:
        """SIGKILL the domain's controller (its switches keep their rules: fail mode secure)."""
        self.stopped_controllers.add(domain)
        proc = self.controllers[domain]
        proc.kill()
        proc.wait()

    def restart_controller(self, domain: int) -> None:
        """Start the domain's controller again; it reads its persisted state back."""
        self._launch_controller(domain)
        self.stopped_controllers.discard(domain)
        self._wait_listening({domain})

    def set_border_link(self, a: int, b: int, up: bool) -> None:
        """Take the border link between domains ``a`` and ``b`` down (both ends) or up again."""
        border = next((x for x in self.layout.borders if {x.domain, x.neighbour} == {a, b}), None)
        if border is None:
            raise EmulationError(f"there is no border link between domains {a} and {b}")
        self.net.configLinkStatus(border.switch, border.peer_switch, "up" if up else "down")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        expected = {s.name for s in self.layout.switches}
        while True:
            self.raise_if_controller_died()
            ready = {r["switch"] for d in self.controllers for r in read_events(self.events_path(d), Event.READY)}
            if expected <= ready:
                return
            if time.monotonic() > deadline:
                raise EmulationError(f"switches {sorted(expected - ready)} got no rules from their "
                                     f"controllers within {self.ready_timeout:.0f} s")
            time.sleep(0.1)

    def dead_controllers(self) -> dict[int, int]:
        """Domains whose controller process has exited, with its exit code."""
        return {d: p.returncode for d, p in self.controllers.items()
                if d not in self.stopped_controllers and p.poll() is not None}

    def raise_if_controller_died(self) -> None:
        """A dead controller or inspection service ends the run, naming it and its last words."""
        dead = self.dead_controllers()
        if dead:
            domain, code = sorted(dead.items())[0]
            tail = _tail(self.log_path(domain))
            raise EmulationError(f"controller of domain {domain} exited with code {code}; "
                                 f"last lines of {self.log_path(domain)}:\n{tail}")
        for domain, proc in sorted(self.inspectors.items()):
            if proc.poll() is not None:
                log = self.out_dir / f"inspector-d{domain}.log"
                raise EmulationError(f"inspection service of domain {domain} exited with code {proc.returncode}; "
                                     f"last lines of {log}:\n{_tail(log)}")

    def stop(self) -> None:
        """Stop everything this emulation started; safe to call more than once."""
        for capture in self.captures:  # before the interfaces go: tcpdump flushes on SIGTERM
            if capture.poll() is None:
                capture.terminate()
        for capture in self.captures:
            try:
                capture.wait(timeout=5)
            except subprocess.TimeoutExpired:
                capture.kill()
                capture.wait()
        self.captures = []
        if self.net is not None:
            try:
                self.net.stop()
            except Exception:  # teardown must go on: the record sweep below removes the rest
                LOG.exception("Mininet stop failed; removing what is left from the run record")
            self.net = None
        processes = [*self.inspectors.values(), *self.controllers.values()]
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for launcher in [*self.controller_launchers.values(), *self.inspector_launchers.values()]:
            launcher.close()
        self.controller_launchers, self.inspector_launchers = {}, {}
        if self.record is not None:
            stop_processes(self.record.processes)
            release(self.record, CleanReport())
            self.record = None

    # --- observation -------------------------------------------------------------------
    def cluster_report(self) -> dict:
        """Where each domain ran, the tunnels between servers and the processes started there."""
        return {"servers": list(self.cluster.servers), "placement": self.cluster.placement(), "link": self.cluster.link,
                "tunnels": self.tunnels,
                "remote_processes": {s["server"]: [p["role"] for p in s["processes"]] for s in self.record.servers}}

    def counters(self, domain: int) -> list[dict]:
        return read_events(self.events_path(domain), Event.COUNTERS)

    def fresh_counters(self, since: float, timeout: float | None = None) -> dict[int, dict]:
        """The first counters record of every domain that includes all traffic before ``since``.

        That is a poll requested at least ``STATS_SETTLE_S`` after ``since``: OVS moves its
        datapath's counters into the OpenFlow rules' counters only every half second or so.
        """
        deadline = time.monotonic() + (timeout or 5 * self.poll_interval + 5 + STATS_SETTLE_S)
        while True:
            self.raise_if_controller_died()
            latest = {}
            for domain in self.controllers:
                newer = [r for r in self.counters(domain) if r["requested_at"] >= since + STATS_SETTLE_S]
                if newer:
                    latest[domain] = newer[0]
            if len(latest) == len(self.controllers):
                return latest
            if time.monotonic() > deadline:
                missing = sorted(set(self.controllers) - set(latest))
                raise EmulationError(f"no fresh counters from the controllers of domains {missing}")
            time.sleep(self.poll_interval / 4)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
