"""keepalived's pool logic (check/ipwrapper.c, ipvswrapper.c) as a pure state machine.

One ``VsPool`` per virtual_server: its configuration, its state (which real servers
are alive and which are in the IPVS table, quorum, sorry server) and the keepalived
functions that change them.  Every change is returned as ipvsadm argv (``take()``),
never applied here, so the same code runs in the daemon (initial table, reload) and
in the checker process (transitions), and in unit tests.

Rules kept from keepalived:
  * ipvs_cmd(): removing a server with inhibit_on_failure sets its weight to 0
    instead; adding one that is still in the table restores its weight;
  * update_svr_checker_state(): a real server goes down when its first checker fails
    and comes back only when no checker is failed;
  * update_quorum_state(): quorum is lost when the live weight is 0 or below
    quorum - hysteresis, gained at quorum + hysteresis; with a sorry server, losing
    quorum swaps the live servers for it and gaining swaps them back, and while it
    serves, server changes are only recorded;
  * update_svr_wgt(): a MISC_CHECK misc_dynamic weight is pushed only while the
    server is alive, in the table and not displaced by the sorry server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyvs.engine.health import ipvsops
from pyvs.engine.health.model import HealthConfig, RealServer, Target, VirtualServer

WEIGHT_LIMIT = 65535


def real_weight(effective: int) -> int:
    """real_weight(): the effective weight clamped to what IPVS takes."""
    return max(0, min(effective, WEIGHT_LIMIT))


@dataclass
class CheckerState:
    up: bool = True
    has_run: bool = False
    cur_weight: int = 0  # misc_dynamic: exit status - 2 - configured weight
    since: float = 0.0
    reason: str = ""


@dataclass
class ServerState:
    alive: bool = False
    set: bool = False  # in the IPVS table (keepalived's rs->set)
    effective_weight: int = 1
    checkers: list[CheckerState] = field(default_factory=list)
    since: float = 0.0
    reason: str = ""

    def failed(self) -> int:
        return sum(1 for c in self.checkers if not c.up)


@dataclass
class VsState:
    quorum_up: bool = False
    sorry: ServerState | None = None
    servers: dict[str, ServerState] = field(default_factory=dict)


def vs_id(vs: VirtualServer) -> str:
    """vs_iseq(): what makes a virtual_server the same one across a reload."""
    if vs.group:
        return f"GROUP {vs.group} {vs.protocol}"
    if vs.fwmark:
        return f"FWM {vs.fwmark} {vs.ip_family or ''}".rstrip()
    return f"{vs.protocol} {ipvsops.addr_port(vs.addr, vs.port)}"


def rs_id(rs: Target) -> str:
    return ipvsops.addr_port(rs.addr, rs.port)


def initial_state(vs: VirtualServer) -> VsState:
    """A virtual server before init_services(): nothing alive, nothing in the table;
    alpha checkers start failed (check_check_config())."""
    state = VsState()
    for rs in vs.real_servers:
        state.servers[rs_id(rs)] = ServerState(
            effective_weight=rs.weight or 0,
            checkers=[CheckerState(up=not c.alpha) for c in rs.checkers])
    if vs.sorry_server is not None:
        state.sorry = ServerState(effective_weight=vs.sorry_server.weight or 0)
    state.quorum_up = weigh_live(vs, state) >= vs.quorum + vs.hysteresis
    return state


def weigh_live(vs: VirtualServer, state: VsState) -> int:
    """weigh_live_realservers()."""
    return sum(real_weight(state.servers[rs_id(rs)].effective_weight)
               for rs in vs.real_servers if state.servers[rs_id(rs)].alive)


class VsPool:
    def __init__(self, vs: VirtualServer, cfg: HealthConfig, state: VsState | None = None,
                 now: float = 0.0) -> None:
        self.vs = vs
        self.refs = ipvsops.services(vs, cfg)
        self.state = state if state is not None else initial_state(vs)
        self.now = now
        self.ops: list[list[str]] = []
        self.lines: list[str] = []
        self.scripts: list[str] = []

    def take(self) -> tuple[list[list[str]], list[str], list[str]]:
        out = (self.ops, self.lines, self.scripts)
        self.ops, self.lines, self.scripts = [], [], []
        return out

    def server(self, rs: Target) -> ServerState:
        if rs is self.vs.sorry_server:
            return self.state.sorry
        return self.state.servers[rs_id(rs)]

    def log(self, text: str) -> None:
        self.lines.append(text)

    def table_weight(self, t: Target) -> int:
        """The weight a destination in the table has now: 0 while inhibited down or
        displaced by the sorry server (which itself has its weight only while serving)."""
        st, sorry = self.server(t), self.state.sorry
        if t is self.vs.sorry_server:
            return real_weight(st.effective_weight) if st.alive else 0
        if (t.inhibit_on_failure and not st.alive) or (sorry is not None and sorry.alive):
            return 0
        return real_weight(st.effective_weight)

    # -- ipvs_cmd() ------------------------------------------------------------------------
    def ipvs_cmd(self, add: bool, t: Target, force_remove: bool = False,
                 failed: int | None = None) -> None:
        st = self.server(t)
        inhibit = bool(t.inhibit_on_failure) and not force_remove
        weight = real_weight(st.effective_weight)
        if not add and inhibit:
            self.ops += [ipvsops.edit_dest(ref, t, 0) for ref in self.refs]
        elif add and inhibit and st.set:
            self.ops += [ipvsops.edit_dest(ref, t, weight) for ref in self.refs]
        elif add and not st.set:
            st.set = True
            if inhibit and (st.failed() if failed is None else failed):
                weight = 0
            self.ops += [ipvsops.add_dest(ref, t, weight) for ref in self.refs]
        elif not add and st.set:
            st.set = False
            self.ops += [ipvsops.del_dest(ref, t) for ref in self.refs]

    def edit_dest(self, t: Target) -> None:
        weight = real_weight(self.server(t).effective_weight)
        self.ops += [ipvsops.edit_dest(ref, t, weight) for ref in self.refs]

    def notify(self, rs: RealServer) -> None:
        script = rs.notify_up if self.server(rs).alive else rs.notify_down
        if script:
            self.scripts.append(script)

    def vs_notify(self) -> None:
        script = self.vs.quorum_up if self.state.quorum_up else self.vs.quorum_down
        if script:
            self.scripts.append(script)

    # -- init_services() -------------------------------------------------------------------
    def init_service(self, new_service: bool = True,
                     reloaded: dict[str, int] | None = None) -> None:
        """init_service_vs(): the service, its real servers, quorum, sorry server.
        On reload, ``reloaded`` maps each kept real server to its previous effective
        weight: its weight changes in place and it is not re-added (init_service_rs)."""
        if new_service:
            self.ops += [ipvsops.add_service(self.vs, ref) for ref in self.refs]
        reloaded = reloaded or {}
        for rs in self.vs.real_servers:
            st = self.server(rs)
            if rs_id(rs) in reloaded:
                if st.effective_weight != reloaded[rs_id(rs)]:
                    target, st.effective_weight = st.effective_weight, reloaded[rs_id(rs)]
                    self.update_weight(rs, target)
                continue
            if (not st.failed() and not st.alive) or (rs.inhibit_on_failure and not st.set):
                self.ipvs_cmd(True, rs)
                if not st.failed():
                    st.alive = True
                    st.since = self.now
        self.update_quorum_state(init=True)
        sorry = self.vs.sorry_server
        if sorry is not None and sorry.inhibit_on_failure and not self.state.sorry.set:
            self.ipvs_cmd(True, sorry, failed=1)  # in the table at weight 0

    # -- transitions -----------------------------------------------------------------------
    def perform_quorum_state(self, add: bool) -> None:
        self.log(f"{'Adding alive servers to' if add else 'Removing alive servers from'} "
                 f"the pool for VS {self.vs.name()}")
        for rs in self.vs.real_servers:
            st = self.server(rs)
            if st.alive:
                self.ipvs_cmd(add, rs)

    def update_quorum_state(self, init: bool = False) -> None:
        vs, state = self.vs, self.state
        weight_sum = weigh_live(vs, state)
        threshold = vs.quorum + (-1 if state.quorum_up else 1) * vs.hysteresis
        sorry = state.sorry
        if not state.quorum_up and weight_sum >= threshold:
            state.quorum_up = True
            self.log(f"Gained quorum {vs.quorum}+{vs.hysteresis}={threshold} <= {weight_sum} "
                     f"for VS {vs.name()}")
            if sorry is not None and sorry.alive:
                self.log(f"Removing sorry server {rs_id(vs.sorry_server)} from VS {vs.name()}")
                self.ipvs_cmd(False, vs.sorry_server)
                sorry.alive = False
                self.perform_quorum_state(True)
            self.vs_notify()
        elif (state.quorum_up and (not weight_sum or weight_sum < threshold)) or \
                (init and not state.quorum_up and sorry is not None and not sorry.alive):
            state.quorum_up = False
            self.log(f"{'Starting with quorum down' if init else 'Lost quorum'} "
                     f"{vs.quorum}-{vs.hysteresis}={threshold} > {weight_sum} for VS "
                     f"{vs.name()}")
            if sorry is not None and not sorry.alive:
                self.log(f"Adding sorry server {rs_id(vs.sorry_server)} to VS {vs.name()}")
                self.perform_quorum_state(False)
                self.ipvs_cmd(True, vs.sorry_server)
                sorry.alive = True
            self.vs_notify()

    def pushes_changes(self) -> bool:
        """Changes reach IPVS only with quorum, or when no sorry server displaces them."""
        sorry = self.state.sorry
        return self.state.quorum_up or sorry is None or not sorry.alive

    def perform_svr_state(self, rs: RealServer, alive: bool) -> None:
        st = self.server(rs)
        if st.alive == alive:
            return
        if self.pushes_changes():
            self.ipvs_cmd(alive, rs)
        st.alive = alive
        st.since = self.now
        self.notify(rs)
        self.update_quorum_state()

    def checker_result(self, rs: RealServer, index: int, alive: bool, reason: str) -> bool:
        """update_svr_checker_state(); True when the real server changed state."""
        st = self.server(rs)
        checker = st.checkers[index]
        was = st.alive
        if checker.up == alive:
            checker.has_run = True
            return False
        checker.has_run = True
        if alive and st.failed() <= 1:
            self.perform_svr_state(rs, True)
        elif not alive and st.failed() == 0:
            self.perform_svr_state(rs, False)
        checker.up = alive
        checker.since = self.now
        checker.reason = reason
        if st.alive != was:
            st.reason = reason
        return st.alive != was

    def update_weight(self, rs: RealServer, effective: int) -> None:
        """update_svr_wgt()."""
        st = self.server(rs)
        old, new = real_weight(st.effective_weight), real_weight(effective)
        st.effective_weight = effective
        if new != old:
            self.log(f"Changing weight from {old} to {new} for "
                     f"{'' if st.alive else 'in'}active service {rs_id(rs)} of VS "
                     f"{self.vs.name()}")
            if st.set and st.alive and self.pushes_changes():
                self.edit_dest(rs)
            self.update_quorum_state()

    def dynamic_weight(self, rs: RealServer, index: int, status: int) -> None:
        """misc_check_child_thread(): exit status 2..255 sets the weight to status - 2
        (for the server's only MISC_CHECK), 0 takes the checker's share away."""
        st = self.server(rs)
        checker = st.checkers[index]
        cur = status - 2 - (rs.weight or 0) if status else 0
        if cur != checker.cur_weight:
            effective = st.effective_weight - checker.cur_weight + cur
            checker.cur_weight = cur
            self.update_weight(rs, effective)

    def drop_dynamic_weight(self, rs: RealServer, index: int) -> None:
        st = self.server(rs)
        checker = st.checkers[index]
        st.effective_weight -= checker.cur_weight
        checker.cur_weight = 0

    # -- removal ---------------------------------------------------------------------------
    def clear_service(self) -> None:
        """clear_service_vs(): take everything of this virtual server out of IPVS."""
        sorry = self.vs.sorry_server
        if sorry is not None and self.state.sorry.set:
            self.ipvs_cmd(False, sorry, force_remove=True)
        for rs in self.vs.real_servers:
            self.clear_rs(rs)
        self.ops += [ipvsops.del_service(ref) for ref in self.refs]

    def clear_rs(self, rs: RealServer) -> None:
        """clear_service_rs(): out of the table even with inhibit_on_failure."""
        st = self.server(rs)
        if st.set:
            self.log(f"Removing service {rs_id(rs)} from VS {self.vs.name()}")
            self.ipvs_cmd(False, rs, force_remove=True)
        if st.alive:
            st.alive = False
            self.notify(rs)
