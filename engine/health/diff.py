"""Reload as a difference: keepalived's clear_diff_services() + init_services(reload).

Given the running configuration, the state of its pools and a new configuration,
``plan_reload`` returns the ipvsadm argv that turn the table into the new one and
the new pools' state.  What did not change is not touched: a service whose
settings are the same gets no -E, a real server whose settings are the same no -e,
so their connections, counters and scheduler state stay.  Removed real servers are
deleted (-d; their connections then follow expire_nodest_conn, as the kernel
decides), changed weights are edited in place (-e), and a real server keeps its
alive/down state and its checkers' results when its checker is unchanged
(migrate_checkers()).

Deliberate differences from keepalived: a real server's -e carries the weight it has
in the table (keepalived sends its configured weight even while inhibited at 0);
threshold changes are applied like forwarding-method changes; a new
virtual_server_group entry gets exactly the destinations the other entries have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyvs.engine.health import ipvsops
from pyvs.engine.health.model import HealthConfig, RealServer, VirtualServer
from pyvs.engine.health.pool import (
    CheckerState,
    ServerState,
    VsPool,
    VsState,
    initial_state,
    rs_id,
    vs_id,
)

TARGET_FIELDS = ("lvs_method", "tun_type", "tun_port", "tun_flags", "uthreshold", "lthreshold")


@dataclass
class Plan:
    ops: list[list[str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    states: dict[str, VsState] = field(default_factory=dict)

    def collect(self, pool: VsPool) -> None:
        ops, lines, scripts = pool.take()
        self.ops += ops
        self.lines += lines
        self.scripts += scripts


def initial_plan(cfg: HealthConfig, now: float) -> Plan:
    """init_services() at start: every service, its live servers, quorum, sorry server."""
    plan = Plan()
    if cfg.lvs_flush:
        plan.ops.append(["-C"])
    if cfg.lvs_timeouts:
        plan.ops.append(ipvsops.set_timeouts(*cfg.lvs_timeouts))
    for vs in cfg.virtual_servers:
        pool = VsPool(vs, cfg, now=now)
        pool.init_service()
        plan.collect(pool)
        plan.states[vs_id(vs)] = pool.state
    return plan


def plan_reload(old: HealthConfig, states: dict[str, VsState], new: HealthConfig,
                now: float) -> Plan:
    plan = Plan()
    old_vs = {vs_id(vs): vs for vs in old.virtual_servers}
    new_vs = {vs_id(vs): vs for vs in new.virtual_servers}
    for key, vs in old_vs.items():
        if key not in new_vs:
            pool = VsPool(vs, old, states[key], now)
            pool.log(f"Removing Virtual Server {vs.name()}")
            pool.clear_service()
            plan.collect(pool)
    if new.lvs_timeouts and new.lvs_timeouts != old.lvs_timeouts:
        plan.ops.append(ipvsops.set_timeouts(*new.lvs_timeouts))
    for key, vs in new_vs.items():
        if key in old_vs:
            plan.states[key] = _reload_vs(plan, old_vs[key], old, states[key], vs, new, now)
        else:
            pool = VsPool(vs, new, now=now)
            pool.init_service()
            plan.collect(pool)
            plan.states[key] = pool.state
    return plan


def _kept_state(rs: RealServer, old_st: ServerState, old_rs: RealServer) -> ServerState:
    """clear_diff_rs() + migrate_checkers(): alive/set/weight and unchanged checkers'
    results carry over; new checkers start up, alpha ones down while the server has
    a failure or has not been checked yet."""
    st = ServerState(alive=old_st.alive, set=old_st.set, since=old_st.since,
                     reason=old_st.reason, effective_weight=old_st.effective_weight,
                     checkers=[CheckerState(since=old_st.since) for _ in rs.checkers])
    used: set[int] = set()
    for new_c, cs in zip(rs.checkers, st.checkers, strict=True):
        for i, old_c in enumerate(old_rs.checkers):
            if i not in used and old_c.identity() == new_c.identity():
                used.add(i)
                prev = old_st.checkers[i]
                cs.up = prev.up if prev.has_run else cs.up
                cs.has_run, cs.cur_weight = prev.has_run, prev.cur_weight
                cs.since, cs.reason = prev.since, prev.reason
                break
    failed = sum(1 for c in st.checkers if c.has_run and not c.up)
    if failed or (not st.alive and not any(c.has_run for c in st.checkers)):
        for new_c, cs in zip(rs.checkers, st.checkers, strict=True):
            if not cs.has_run and new_c.alpha:
                cs.up = False
    return st


def _reload_vs(plan: Plan, ovs: VirtualServer, old: HealthConfig, ost: VsState,
               nvs: VirtualServer, new: HealthConfig, now: float) -> VsState:
    nst = initial_state(nvs)
    nst.quorum_up = ost.quorum_up
    opool = VsPool(ovs, old, ost, now)
    npool = VsPool(nvs, new, nst, now)
    all_refs = list(npool.refs)
    common = [r for r in opool.refs if r in all_refs]
    added = [r for r in all_refs if r not in opool.refs]
    for ref in opool.refs:
        if ref not in all_refs:
            opool.log(f"VS {ref.text()} in group {ovs.group} no longer exists")
            opool.ops.append(ipvsops.del_service(ref))
    opool.refs = npool.refs = common
    if ipvsops.service_options(ovs) != ipvsops.service_options(nvs):
        npool.ops += [ipvsops.edit_service(nvs, ref) for ref in common]
    old_rs = {rs_id(rs): rs for rs in ovs.real_servers}
    reloaded: dict[str, int] = {}  # rs id -> previous effective weight
    for rs in ovs.real_servers:
        if rs_id(rs) not in {rs_id(r) for r in nvs.real_servers}:
            opool.log(f"service {rs_id(rs)} no longer exists")
            opool.clear_rs(rs)
    plan.collect(opool)
    for rs in nvs.real_servers:  # every kept server's state first, then the fixes
        key = rs_id(rs)
        if key in old_rs:
            nst.servers[key] = _kept_state(rs, ost.servers[key], old_rs[key])
            reloaded[key] = nst.servers[key].effective_weight
    for rs in nvs.real_servers:
        key = rs_id(rs)
        if key not in reloaded:
            continue
        st = nst.servers[key]
        if st.failed() == 0 and not st.alive:
            npool.perform_svr_state(rs, True)
        elif st.failed() and st.set != bool(rs.inhibit_on_failure):
            npool.ipvs_cmd(bool(rs.inhibit_on_failure), rs, failed=st.failed())
            st.alive = False
        changed = any(getattr(rs, f) != getattr(old_rs[key], f) for f in TARGET_FIELDS)
        if changed and st.set:
            npool.ops += [ipvsops.edit_dest(ref, rs, npool.table_weight(rs)) for ref in common]
    _reload_sorry(npool, ovs, ost, nvs, opool)
    plan.collect(opool)
    for rs in nvs.real_servers:  # set_effective_weights()
        if rs_id(rs) in reloaded:
            st = nst.servers[rs_id(rs)]
            st.effective_weight = (rs.weight or 0) + sum(c.cur_weight for c in st.checkers)
    npool.refs = all_refs
    for ref in added:
        npool.log(f"VS {ref.text()} added into group {nvs.group}")
        npool.ops.append(ipvsops.add_service(nvs, ref))
        for rs in nvs.real_servers:
            st = nst.servers[rs_id(rs)]
            if rs_id(rs) in reloaded and st.set:
                npool.ops.append(ipvsops.add_dest(ref, rs, npool.table_weight(rs)))
        sorry = nvs.sorry_server
        if sorry is not None and nst.sorry.set:
            npool.ops.append(ipvsops.add_dest(ref, sorry, npool.table_weight(sorry)))
    npool.init_service(new_service=False, reloaded=reloaded)
    plan.collect(npool)
    return nst


def _reload_sorry(npool: VsPool, ovs: VirtualServer, ost: VsState, nvs: VirtualServer,
                  opool: VsPool) -> None:
    """clear_diff_s_srv(): keep an unchanged sorry server's state, remove a changed one."""
    old_ss, new_ss = ovs.sorry_server, nvs.sorry_server
    if old_ss is None:
        return
    same = new_ss is not None and rs_id(old_ss) == rs_id(new_ss)
    if same:
        npool.state.sorry.alive, npool.state.sorry.set = ost.sorry.alive, ost.sorry.set
        if old_ss.inhibit_on_failure == new_ss.inhibit_on_failure or ost.sorry.alive:
            return
    if ost.sorry.alive or (old_ss.inhibit_on_failure and ost.sorry.set):
        opool.log(f"Removing sorry server {rs_id(old_ss)} from VS {ovs.name()}")
        opool.ipvs_cmd(False, old_ss, force_remove=True)
        if new_ss is not None:
            npool.state.sorry.set = False
        if ost.sorry.alive and new_ss is None:
            npool.perform_quorum_state(True)
