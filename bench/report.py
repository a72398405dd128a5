"""Render docs/benchmarks/README.md from docs/benchmarks/raw/*.json."""

import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "benchmarks"
RAW = OUT / "raw"

PHASES = [
    ("last_heartbeat", "last Lease renewal seen (before the stop)"),
    ("fencing_started", "`FencingStarted` Event (suspect, recorded, cordoned)"),
    ("node_fenced", "`NodeFenced` Event (known fenced, tainted)"),
    ("pod_force_deleted", "`PodForceDeleted` Event"),
    ("old_pod_gone", "old pod gone from the API (poll)"),
    ("scheduled", "replacement bound to a node (poll)"),
    ("running", "replacement Running + Ready (poll) = **TTR**"),
]


def load(name):
    p = RAW / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    return v[max(1, math.ceil(p / 100 * len(v))) - 1]


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"n": len(v), "min": min(v), "p50": pct(v, 50), "p95": pct(v, 95), "max": max(v)}


def f(x, nd=1, unit=" s"):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


def met(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def ttr_section(name, data, out):
    cfg = data["config"]
    runs = data["runs"]
    out.append(f"### {cfg['title']} (`{name}`)\n")
    out.append(f"{len(runs)} run(s) of {data['requested_runs']} requested, on one cluster of {cfg['nodes']} nodes "
               f"(node Lease {cfg['node_lease_s']} s, renewed every {cfg['node_lease_s'] / 4:g} s; "
               f"`--node-monitor-grace-period {cfg['node_monitor_grace_period']}`).\n")
    fencing = ("`--self-fence none --fence-command 'cluster.sh node-stop …'` (external fencing: the leader "
               "\"powers off\" the node and marks it fenced when the command exits 0)"
               if cfg["fence_command"] else
               f"`--self-fence exec:…` advertised by every agent (the safe-time rule applies: "
               f"safe time = {cfg.get('safe_time_terms')} = **{f(cfg['safe_time_s'], 0)}** after the last observed heartbeat)")
    out.append(f"Agent flags: `{' '.join(cfg['agent_args'])}`; fencing: {fencing}.\n")
    for fr in data.get("failed_runs") or []:
        out.append(f"- run {fr['run']} **failed**: {fr['error']}")
    if data.get("failed_runs"):
        out.append("")
    s = stats([r["running"] for r in runs])
    if not s:
        out.append("No successful run.\n")
        return None
    out.append("| TTR (stop → replica Running elsewhere, same PVC) | min | p50 | p95 | max |")
    out.append("|---|---|---|---|---|")
    out.append(f"| {s['n']} runs | {f(s['min'])} | {f(s['p50'])} | {f(s['p95'])} | {f(s['max'])} |\n")
    out.append("Per phase, seconds after the stop (negative: before it):\n")
    out.append("| phase | min | p50 | p95 | max |")
    out.append("|---|---|---|---|---|")
    for key, label in PHASES:
        st = stats([r.get(key) for r in runs])
        if st:
            out.append(f"| {label} | {f(st['min'])} | {f(st['p50'])} | {f(st['p95'])} | {f(st['max'])} |")
    st = stats([r["node_fenced"] - r["last_heartbeat"] for r in runs
                if r.get("node_fenced") is not None and r.get("last_heartbeat") is not None])
    if st:
        what = ("the configured safe time" if cfg.get("safe_time_s") else "no safe time: the fence command's exit")
        out.append(f"| `NodeFenced` − last heartbeat ({what}) | {f(st['min'], 2)} | {f(st['p50'], 2)} | "
                   f"{f(st['p95'], 2)} | {f(st['max'], 2)} |")
    st = stats([r.get("unfenced_after_restart") for r in runs])
    if st:
        out.append(f"| (after the restart with a new boot ID: node unfenced) | {f(st['min'])} | {f(st['p50'])} | "
                   f"{f(st['p95'])} | {f(st['max'])} |")
    out.append("")
    out.append("<details><summary>every run</summary>\n")
    out.append("| # | victim | pod | heartbeat | FencingStarted | NodeFenced | PodForceDeleted | scheduled | Running | new node | same PVC (name+UID) | unfence after restart |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        out.append(f"| {r['run']} | {r['victim']} | {r['pod']} | {f(r.get('last_heartbeat'))} | {f(r.get('fencing_started'))} | "
                   f"{f(r.get('node_fenced'))} | {f(r.get('pod_force_deleted'))} | {f(r.get('scheduled'))} | "
                   f"{f(r.get('running'))} | {r['new_node']} | {'yes' if r['same_pvc'] else 'NO'} | "
                   f"{f(r.get('unfenced_after_restart'))} |")
    out.append("\n</details>\n")
    return s


def per_second(counts, window):
    return {k: v / window for k, v in counts.items()}


def api_section(steady, fencing_run, out):
    w = steady["window_s"]
    n_agents = len(steady["agents"])
    out.append(f"Cluster of {steady['nodes']} nodes, one agent per node (`{steady['profile']}` profile), "
               f"{w:.0f} s windows. Agent requests are counted exactly, per agent, from each agent's own "
               f"request log (kube-client's per-request span, `RUST_LOG={'info,kube_client::client::builder=debug'}`); "
               f"the API server's `apiserver_request_total` carries no client label, so its totals are "
               f"compared with and without the agents.\n")
    out.append("| agent | role | requests in window | requests/s | by verb + resource | CPU in window | RSS |")
    out.append("|---|---|---|---|---|---|---|")
    total = 0
    for n, a in sorted(steady["agents"].items(), key=lambda kv: kv[1]["role"] != "leader"):
        c = sum(a["requests"].values())
        total += c
        by = ", ".join(f"{k} {v}" for k, v in sorted(a["requests"].items(), key=lambda kv: -kv[1])) or "none"
        out.append(f"| {n} | {a['role']} | {c} | {c / w:.3f} | {by} | {f(a.get('cpu_s'), 2)} | "
                   f"{f((a.get('rss_kib') or 0) / 1024, 1, ' MiB')} |")
    out.append(f"| **all {n_agents} agents** | | {total} | **{total / w:.3f}** | | | |\n")
    base = sum(steady["apiserver_without_agents"].values()) / w
    witha = sum(steady["apiserver_with_agents"].values()) / w
    out.append(f"API server, all clients (kube-controller-manager, scheduler, {steady['nodes']} kwok nodes, and the agents): "
               f"{base:.2f} requests/s without the agents, {witha:.2f} requests/s with them "
               f"(difference {witha - base:+.2f}/s; the other clients vary between windows, so the per-agent "
               f"counts above are the precise figure).\n")
    wb = steady["watches_without_agents"]
    ww = steady["watches_with_agents"]
    out.append(f"`apiserver_longrunning_requests{{verb=\"WATCH\"}}`: {wb:.0f} without the agents, {ww:.0f} with them: "
               f"**{(ww - wb) / n_agents:.1f} watches per agent** on average ({ww - wb:.0f} for {n_agents} agents, "
               f"the leader's included)" + ("; that is 3 per follower (its own Node, its own node Lease, the "
               "leader Lease) and 5 for the leader (also all Nodes and all node Leases): "
               f"3 × {n_agents - 1} + 5 = {3 * (n_agents - 1) + 5}" if round(ww - wb) == 3 * (n_agents - 1) + 5 else "") + ".\n")
    diff = {}
    for k in set(steady["longrunning_with_agents"]) | set(steady["longrunning_without_agents"]):
        d = steady["longrunning_with_agents"].get(k, 0) - steady["longrunning_without_agents"].get(k, 0)
        if d:
            diff[k] = d
    if diff:
        out.append("Watches added by the agents, by resource: " +
                   ", ".join(f"{k} {v:+.0f}" for k, v in sorted(diff.items())) + ".\n")
    if fencing_run and fencing_run.get("api"):
        api = fencing_run["api"]
        fw = api["window_s"]
        out.append(f"**During one fencing** (default profile, run 1: stop → replica Running, {fw:.0f} s, "
                   f"victim {fencing_run['victim']}, leader {api['leader']}):\n")
        out.append("| agent | role | requests | requests/s | by verb + resource |")
        out.append("|---|---|---|---|---|")
        tot = 0
        for n, counts in sorted(api["agents"].items()):
            c = sum(counts.values())
            tot += c
            role = "leader" if n == api["leader"] else ("victim (killed at the stop)" if n == fencing_run["victim"] else "follower")
            by = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"
            out.append(f"| {n} | {role} | {c} | {c / fw:.3f} | {by} |")
        out.append(f"| **all** | | {tot} | **{tot / fw:.3f}** | |\n")
    return total / w


def render(facts):
    out = []
    control = load("control")
    ttr = {n: load(f"ttr-{n}") for n in ("default", "default-tuned", "tight", "default-fence-command", "tight-fence-command")}
    ttr_ok = {n: d for n, d in ttr.items() if d and d["runs"]}
    steady = load("api-steady")
    scale = load("scale")
    failover = load("failover")
    commands = sorted({d.get("command") for d in [control, steady, scale, failover, load("scale-static-peers"),
                                                   *ttr.values()] if d and d.get("command")})

    out.append("# kube-fencer benchmarks\n")
    out.append("Measured on the local control plane of `harness/` (real etcd, kube-apiserver, "
               "kube-controller-manager, kube-scheduler on loopback; one kwok process per simulated node, "
               "plus one kwok for the bulk nodes of the scale test). The agents run as host processes "
               "authenticated as the `kube-fencer` ServiceAccount, exactly as in `tests/e2e/`. A node "
               "\"powers off\" by SIGKILLing its kwok and its agent together. Generated by `bench/` — "
               "do not edit by hand; the raw numbers are in [`raw/`](raw/).\n")
    out.append("## Reproduce\n")
    out.append("```sh\n./bench/run.sh                 # everything: about 1.5 hours on 2 cores\n"
               "./bench/run.sh --runs 3 --only ttr-tight   # one section; see ./bench/run.sh --help\n```\n")
    if commands:
        out.append("These results were produced by:\n")
        out.append("```sh\n" + "\n".join(commands) + "\n```\n")

    out.append("## Machine and versions\n")
    out.append("| | |\n|---|---|")
    out.append(f"| CPUs (`nproc`) | {facts.get('nproc')} ({facts.get('cpu')}) |")
    mem = facts.get("free", "").splitlines()
    if len(mem) > 1:
        out.append(f"| memory (`free -m`) | {' '.join(mem[1].split()[1:2])} MiB total |")
    out.append(f"| kernel | {facts.get('kernel')} |")
    for k, v in facts.get("versions", {}).items():
        out.append(f"| {k} (harness/versions.env) | {v} |")
    out.append(f"| `kube-fencer --version` | {facts.get('kube_fencer')} (built from the tree at commit {facts.get('commit')}, the last change to `src/`; release build) |")
    out.append("")
    out.append("The machine is shared by the control plane, every simulated node, the agents and the "
               "benchmark's own polling; numbers on a real cluster depend on its API server, not on this box.\n")
    notes = RAW / "notes.md"
    if notes.exists():
        out.append("**About this run:** " + notes.read_text().strip() + "\n")

    # ------------------------------------------------------------ targets --
    rows = []
    d = ttr_ok.get("default")
    if d:
        s = stats([r["running"] for r in d["runs"]])
        rows.append(("defaults: TTR p50 ≤ 45 s", f(s["p50"]), met(s["p50"] <= 45)))
        rows.append(("defaults: TTR p95 ≤ 60 s", f(s["p95"]), met(s["p95"] <= 60)))
    dtu = ttr_ok.get("default-tuned")
    if dtu:
        s = stats([r["running"] for r in dtu["runs"]])
        rows.append(("defaults with a 10 s watchdog's self-fence timings (safe time 50 s): TTR p50 ≤ 45 s / p95 ≤ 60 s",
                     f"{f(s['p50'])} / {f(s['p95'])}", met(s["p50"] <= 45 and s["p95"] <= 60)))
    dfc = ttr_ok.get("default-fence-command")
    if dfc:
        s = stats([r["running"] for r in dfc["runs"]])
        rows.append(("defaults with `--fence-command`: TTR p50 ≤ 45 s / p95 ≤ 60 s",
                     f"{f(s['p50'])} / {f(s['p95'])}", met(s["p50"] <= 45 and s["p95"] <= 60)))
    t = ttr_ok.get("tight")
    if t:
        s = stats([r["running"] for r in t["runs"]])
        rows.append(("tight: TTR p50 ≤ 25 s", f(s["p50"]), met(s["p50"] <= 25)))
    tfc = ttr_ok.get("tight-fence-command")
    if tfc:
        s = stats([r["running"] for r in tfc["runs"]])
        rows.append(("tight with `--fence-command`: TTR p50 ≤ 25 s", f(s["p50"]), met(s["p50"] <= 25)))
    if steady:
        w = steady["window_s"]
        fol = [sum(a["requests"].values()) / w for a in steady["agents"].values() if a["role"] == "follower"]
        tot = sum(sum(a["requests"].values()) for a in steady["agents"].values()) / w
        n = steady["nodes"]
        rows.append(("each follower ~no requests at steady state",
                     f"max {max(fol):.3f}/s per follower" if fol else "–", met(bool(fol) and max(fol) < 0.05)))
        rows.append((f"all agents together ≤ N/10 requests/s (N = {n}: ≤ {n / 10:g}/s)", f"{tot:.3f}/s",
                     met(tot <= n / 10)))
    if scale:
        big = max(scale["sizes"], key=lambda r: r["nodes"])
        lead = [a for a in big["agents"].values() if a["role"] == "leader"]
        fol = [a for a in big["agents"].values() if a["role"] == "follower"]
        if lead:
            rss = lead[0]["peak_rss_kib"] / 1024
            rows.append((f"leader ≤ 64 MiB RSS at 1000 nodes (measured at {big['nodes']})", f"{rss:.1f} MiB peak",
                         met(rss <= 64) if big["nodes"] >= 1000 else "not reached"))
        if fol:
            rss = max(a["peak_rss_kib"] for a in fol) / 1024
            rows.append((f"follower ≤ 20 MiB RSS at 1000 nodes (measured at {big['nodes']})", f"{rss:.1f} MiB peak",
                         met(rss <= 20) if big["nodes"] >= 1000 else "not reached"))
            sp = load("scale-static-peers")
            if sp and sp["sizes"]:
                r = sp["sizes"][-1]
                f2 = [a for a in r["agents"].values() if a["role"] != "leader"]
                if f2:
                    rss2 = max(a["peak_rss_kib"] for a in f2) / 1024
                    rows.append((f"  … same, with a fixed `--peers` list (no discovery list of all Nodes)",
                                 f"{rss2:.1f} MiB peak", met(rss2 <= 20)))
        for r in scale["sizes"]:
            w = r["window_s"]
            L = [a for a in r["agents"].values() if a["role"] == "leader"]
            F = [a for a in r["agents"].values() if a["role"] != "leader"]
            if L and F:
                lr = sum(L[0]["requests"].values()) / w
                fr = sum(sum(a["requests"].values()) for a in F) / w / len(F)
                est = lr + (r["nodes"] - 1) * fr
                rows.append((f"all agents ≤ N/10 requests/s at N = {r['nodes']} (≤ {r['nodes'] / 10:g}/s; leader + "
                             f"(N−1) × mean follower, from the 3 measured agents)", f"{est:.2f}/s",
                             met(est <= r["nodes"] / 10)))
        worst = max(r.get("detection_over_timeout_from_heartbeat") or 0 for r in scale["sizes"])
        rows.append(("detection within 2 s of `--unreachable-after` (last heartbeat → FencingStarted)",
                     f"worst {worst:+.2f} s", met(worst <= 2)))
    if rows:
        out.append("## Targets\n")
        out.append("| target | measured | |\n|---|---|---|")
        for r in rows:
            out.append(f"| {r[0]} | {r[1]} | {r[2]} |")
        out.append("")

    # ---------------------------------------------------------------- TTR --
    out.append("## 1. Time to recovery\n")
    out.append("TTR = from the power-off (the benchmark's clock just before it kills the node's agent and kwok) "
               "to the StatefulSet replica that ran there being Running and Ready on another node, with the same "
               "PVC (claim name and UID checked every run). Event times are the Events' `eventTime` (or "
               "`series.lastObservedTime`) written by the leader; pod milestones come from the benchmark's "
               "own 250 ms polling; all clocks are the same host's. After each run the node is started again "
               "with a new boot ID (a reboot) and its agent restarted, and the next run waits until it is "
               "unfenced and every agent has advertised itself. The leader's own node is never the victim "
               "(it never fences itself; see [leader failover](#4-leader-failover)). Percentiles are "
               "nearest-rank (with 10 runs p95 is the slowest run). kwok reports a pod Running as soon as it is bound "
               "and has no volumes to attach, so the replacement runs within one poll of the old pod's deletion; "
               "on real nodes add the container start and the volume attach and mount.\n")
    for name in ("default", "default-tuned", "default-fence-command", "tight", "tight-fence-command"):
        if ttr.get(name):
            ttr_section(name, ttr[name], out)
    if control:
        out.append("### Control: no kube-fencer\n")
        fin = control["final"]
        out.append(f"Same tight cluster (node Lease {control['node_lease_s']} s) before any agent started: "
                   f"{control['victim']} (running {control['pod']}) powered off and watched for "
                   f"{control['window_s']:.0f} s. The node went NotReady after {f(control['notready_after_s'])}; "
                   f"recovery: **{'none' if control['recovered_after_s'] is None else f(control['recovered_after_s'])}**. "
                   f"At the end the pod was still the original one: {'yes' if fin['same_uid'] else 'no'}, on "
                   f"{fin['node']}, phase {fin['phase']}, deletionTimestamp {fin['deletion_timestamp'] or 'none'}. "
                   "(After the default 300 s `tolerationSeconds` the taint manager marks it Terminating, "
                   "and it stays so until someone proves the node is dead — which is the job kube-fencer does.)\n")

    # ---------------------------------------------------------------- API --
    if steady:
        out.append("## 2. API load\n")
        api_section(steady, (ttr_ok.get("default") or {"runs": [None]})["runs"][0], out)

    # -------------------------------------------------------------- scale --
    if scale:
        out.append("## 3. Scale\n")
        out.append("One kwok simulates the bulk nodes (label selector), a separate kwok the node that is stopped "
                   "(`victim`, no agent on it, so it is suspected and recorded but — correctly — never marked "
                   "fenced); three agents (the leader and two followers) on node-1..3 with the default timings "
                   "(node Lease 40 s renewed every 10 s, `--unreachable-after 20s`). The agents are restarted "
                   "for each size; memory is `VmRSS` / `VmHWM` from `/proc/PID/status`, CPU is user+system "
                   f"time from `/proc/PID/stat` over a {scale['sizes'][0]['window_s']:.0f} s steady window. "
                   "Detection is FencingStarted minus `--unreachable-after`, measured from the stop and from "
                   "the victim's last Lease renewal (the leader's clock starts at the last renewal it saw).\n")
        out.append("| nodes | leader RSS | leader peak | leader CPU (window) | leader requests/s | follower RSS (max) | follower CPU (max) | follower requests/s (max) | stop → FencingStarted | detection − timeout (from stop) | (from last heartbeat) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in scale["sizes"]:
            w = r["window_s"]
            lead = [a for a in r["agents"].values() if a["role"] == "leader"]
            fol = [a for a in r["agents"].values() if a["role"] != "leader"]
            L = lead[0] if lead else None
            mib = lambda k: f"{k / 1024:.1f} MiB"  # noqa: E731
            out.append(
                f"| {r['nodes']} | {mib(L['rss_kib']) if L else '–'} | {mib(L['peak_rss_kib']) if L else '–'} | "
                f"{f(L['cpu_s_window'], 2) if L else '–'} ({100 * L['cpu_s_window'] / w:.1f} %) | "
                f"{sum(L['requests'].values()) / w:.3f} | "
                f"{mib(max(a['rss_kib'] for a in fol)) if fol else '–'} | "
                f"{f(max(a['cpu_s_window'] for a in fol), 2) if fol else '–'} | "
                f"{max(sum(a['requests'].values()) for a in fol) / w:.3f} | "
                f"{f(r['stop_to_fencing_started'])} | {r['detection_over_timeout_from_stop']:+.1f} s | "
                f"{'–' if r.get('detection_over_timeout_from_heartbeat') is None else format(r['detection_over_timeout_from_heartbeat'], '+.2f') + ' s'} |")
        out.append("")
        sp = load("scale-static-peers")
        if sp and sp["sizes"]:
            r = sp["sizes"][-1]
            fol = [a for a in r["agents"].values() if a["role"] != "leader"]
            base = [x for x in scale["sizes"] if x["nodes"] == r["nodes"]]
            bfol = [a for a in base[0]["agents"].values() if a["role"] != "leader"] if base else []
            if fol:
                out.append(f"**What makes a follower grow with the cluster.** A follower discovers its peers with one "
                           f"metadata-only list of *all* Nodes (at start and every 5 min), served from the watch "
                           f"cache in one piece. Rerun at {r['nodes']} nodes with a fixed `--peers` list instead "
                           f"(no discovery list): follower RSS {max(a['rss_kib'] for a in fol) / 1024:.1f} MiB, "
                           f"peak {max(a['peak_rss_kib'] for a in fol) / 1024:.1f} MiB"
                           + (f", against {max(a['rss_kib'] for a in bfol) / 1024:.1f} MiB / "
                              f"{max(a['peak_rss_kib'] for a in bfol) / 1024:.1f} MiB with discovery" if bfol else "")
                           + "".join(f"; the leader, which runs the same discovery, {L2['rss_kib'] / 1024:.1f} MiB "
                                     f"instead of {L1['rss_kib'] / 1024:.1f} MiB"
                                     for L2 in [a for a in r["agents"].values() if a["role"] == "leader"][:1]
                                     for L1 in ([a for a in base[0]["agents"].values() if a["role"] == "leader"][:1] if base else []))
                           + ". Proposal: page the discovery list (`limit` with continue tokens) and keep only "
                           "the peer addresses, so a follower's peak is bounded by the page size, not the cluster "
                           "size (RSS also includes what the allocator keeps after the list is dropped).\n")
        if len(scale["sizes"]) < len(scale.get("requested_sizes", [])):
            out.append(f"Only {', '.join(str(r['nodes']) for r in scale['sizes'])} of the requested "
                       f"{', '.join(map(str, scale['requested_sizes']))} nodes were measured.\n")

    # ----------------------------------------------------------- failover --
    if failover:
        out.append("## 4. Leader failover\n")
        c = failover["config"]
        out.append(f"{c['title']} profile, {c['nodes']} nodes (the storm guard's 40 % allows the two dead nodes). "
                   f"{failover['victim']} (running {failover['pod']}) powered off; once the leader "
                   f"({failover['old_leader']}) had recorded `FencingStarted` "
                   f"(+{failover['victim_stop_to_fencing_started']:.1f} s), the leader's own node was powered off "
                   f"(+{failover['leader_stop_after_victim_stop']:.1f} s after the first stop). Times below are "
                   "from the leader's power-off:\n")
        out.append("| milestone | after the leader died |\n|---|---|")
        out.append(f"| new leader ({failover['new_leader']}) holds the leader Lease | {f(failover['new_leader_acquired'])} |")
        out.append(f"| `NodeFenced` for {failover['victim']} (by {failover['node_fenced_by']}) | {f(failover['node_fenced'])} |")
        out.append(f"| `PodForceDeleted` | {f(failover['pod_force_deleted'])} |")
        out.append(f"| replica Running elsewhere | **{f(failover['running'])}** ({f(failover['running_after_victim_stop'])} after the first node died) |")
        out.append("")
        after = (failover["node_fenced"] - failover["new_leader_acquired"]
                 if failover.get("node_fenced") is not None and failover.get("new_leader_acquired") is not None else None)
        out.append(f"The new leader took over within one leader-Lease duration ({f(c.get('leader_lease_s'), 0)}; "
                   "the old leader's last renewal was before its node died). It cannot reuse the old leader's "
                   "heartbeat observations (durations are never compared across machines), so it restarts every "
                   f"staleness timer when it takes over and marks the node fenced one full safe time "
                   f"({f(c['safe_time_s'], 0)}) later: measured {f(after)} after the takeover. It continues from "
                   "the `Fencing` record on the Node; nothing is deleted before its own safe time has passed. "
                   "Worst case after a leader failure: leader-Lease duration + safe time + recreate time.\n")

    from chart import ttr_chart
    rows = []
    for name, target in (("default", 45), ("default-tuned", 45), ("default-fence-command", 45), ("tight", 25),
                         ("tight-fence-command", 25)):
        d = ttr_ok.get(name)
        if d:
            v = [r["running"] for r in d["runs"]]
            rows.append((name, v, pct(v, 50), target))
    OUT.mkdir(parents=True, exist_ok=True)
    if ttr_chart(rows, OUT / "ttr.png"):
        i = out.index("## 1. Time to recovery\n")
        out.insert(i + 2, "![TTR per run and profile](ttr.png)\n")
    analysis(out, ttr_ok, steady, scale)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "README.md").write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote {OUT / 'README.md'}")


def analysis(out, ttr, steady, scale):
    d = ttr.get("default")
    out.append("## Why the default TTR target is missed, and what would reach it safely\n")
    if d:
        s = stats([r["running"] for r in d["runs"]])
        hb = stats([r.get("last_heartbeat") for r in d["runs"]])
        nf = stats([r.get("node_fenced") for r in d["runs"]])
        out.append(f"With self-fencing and the default timings the leader may mark a dead node fenced only once "
                   f"its **safe time** has passed: 160 s after the last heartbeat it saw "
                   f"(max(20 + 30, 20) + 20 + 60 + 30: detection 5 × 3 + 5 s plus 30 s peer silence, a 20 s check round, the 60 s watchdog timeout and the 30 s margin; README \"Split-brain safety\"). The last renewal "
                   f"is 0–10 s before the power-off (measured: {f(hb['min'] if hb else None)} … "
                   f"{f(hb['max'] if hb else None)}), so `NodeFenced` comes {f(nf['min'] if nf else None)} – "
                   f"{f(nf['max'] if nf else None)} after the stop, and the StatefulSet controller, scheduler "
                   f"and kwok add a few seconds: TTR p50 {f(s['p50'])}. **The floor with these timings is "
                   f"about 150 s + recreate time**; nothing in kube-fencer's own processing is on the critical "
                   f"path (the phases after `NodeFenced` take seconds). This is the safety rule working as "
                   f"designed: a node that merely *looks* dead may still be writing to its volume until its "
                   f"watchdog has certainly fired.\n")
    else:
        out.append("With self-fencing and the default timings the safe time is 160 s after the last observed "
                   "heartbeat, so TTR cannot be below about 150 s.\n")
    out.append("Ways to reach p50 ≤ 45 s / p95 ≤ 60 s (1 and 2 keep every rule):\n")
    dfc = ttr.get("default-fence-command")
    fc_txt = ""
    if dfc:
        s = stats([r["running"] for r in dfc["runs"]])
        gap = stats([r["node_fenced"] - r["fencing_started"] for r in dfc["runs"]
                     if r.get("node_fenced") is not None and r.get("fencing_started") is not None])
        fc_txt = (f" Measured here with the default timings: the leader runs the command as soon as it records "
                  f"`FencingStarted` (`--unreachable-after` 20 s after the last heartbeat) and `NodeFenced` follows "
                  f"{f(gap['p50'] if gap else None)} later (p50); TTR p50 {f(s['p50'])}, p95 {f(s['p95'])}.")
    out.append(f"1. **External fencing** (`--fence-command`: IPMI, a cloud API, a PDU). The node is *known* off "
               f"when the command exits 0, so no safe time is waited.{fc_txt} This is the recommended "
               "configuration where a power API exists" +
               ("; it meets the default-timing target." if dfc and stats([r["running"] for r in dfc["runs"]])["p95"] <= 60 else "."))
    out.append("2. **Shorter self-fence timings with a hardware watchdog.** Every term of the safe time is a "
               "flag; each must still be true of the node. E.g. `--api-check-interval 2s --api-check-timeout 2s "
               "--api-failure-threshold 3 --peer-silence-timeout 10s --watchdog-timeout 10s` (a 10 s hardware "
               "watchdog) and `--safe-time-margin 12s` (still above the kubelet's 10 s renewal interval): "
               "safe time = max(2 × 3 + 2 + 10, 20) + (2 + 3 × 2) + 10 + 12 = 50 s" +
               (f"; measured as the `default-tuned` profile: TTR p50 {f(stats([r['running'] for r in ttr['default-tuned']['runs']])['p50'])}, "
                f"p95 {f(stats([r['running'] for r in ttr['default-tuned']['runs']])['p95'])}"
                if ttr.get("default-tuned") else " → TTR ≈ 40–50 s") +
               (" — just above the p50 target" if ttr.get("default-tuned") and
                stats([r["running"] for r in ttr["default-tuned"]["runs"]])["p50"] > 45 else "") +
               ". TTR is the safe time minus 0–10 s (where the failure falls in the kubelet's 10 s renewal "
               "interval) plus about a second; every second cut from a term that is still true of the node "
               "(e.g. a 5 s watchdog: safe time 45 s) comes off the TTR one for one. To get "
               "lower, shorten the node Lease (the kubelet's `nodeLeaseDurationSeconds`, renewal every "
               "quarter) so that `--unreachable-after` and the margin can shrink with it — which is the "
               "`tight` profile above.")
    out.append("3. **Design change, with a trade-off (proposal, not measured): a hardware-enforced promise.** "
               "The agent would feed its watchdog only while its own renewals of a short promise (say 10 s, "
               "renewed every 3 s) succeed; the leader's safe time would shrink to promise + watchdog timeout + "
               "margin ≈ 30 s after the last renewal it saw, dropping the detection and peer-consultation terms. "
               "The price is rule 4 of the self-fence table: a control-plane outage longer than the promise would "
               "reboot every node. That is the wrong default, but a cluster that values recovery time over "
               "riding out API outages could opt in; it needs its own review and tests.")
    out.append("4. **Not** an option: lowering `--safe-time-margin` below the kubelet renewal interval, "
               "`--fence-timeout` below `--unreachable-after`, or treating a stale heartbeat as proof — each "
               "would let a partitioned node keep running its pod while the replacement starts.\n")
    if steady:
        w = steady["window_s"]
        fol = [a for a in steady["agents"].values() if a["role"] == "follower"]
        rz = [a["requests"].get("GET /readyz", 0) / w for a in fol]
        other = [(sum(a["requests"].values()) - a["requests"].get("GET /readyz", 0)) / w for a in fol]
        if fol and max(rz) > 0:
            mean = sum(rz) / len(rz)
            out.append("## Finding: followers probe `/readyz` at steady state\n")
            out.append(f"A follower's only steady-state requests are `GET /readyz`: {mean:.3f}/s on average "
                       f"(other requests: {max(other):.3f}/s at most). The agent counts an API check as passed "
                       "when a watch event arrived since the previous check; with `--api-check-interval 5s` and "
                       "the kubelet renewing its Lease every 10 s, every other check sees no event and probes "
                       f"`/readyz`. That is about {mean * 1000:.0f} requests/s for 1000 followers "
                       f"({'within' if mean * 1000 <= 100 else 'above'} the N/10 budget of 100/s), and `/readyz` is answered from the API server's memory (no etcd read), but "
                       "it is not \"no requests\". Both ways to remove it cost recovery time: "
                       "`--api-check-interval 10s` (one check per renewal) adds 3 × 5 s to the detection term "
                       "and 5 s to the check round of the safe time; counting a check as passed while the last "
                       "watch event is younger than one renewal interval delays outage detection by up to 10 s, "
                       "which the safe time's `detect` term would then have to include. **Proposal** (not yet "
                       "measured): also count events of the leader-Lease watch every follower already holds — "
                       "the leader renews it every `--leader-lease-duration`/3 = 5 s, the same cadence as the "
                       "check, and an event on it proves the same thing (this agent's API path works and delivers "
                       "fresh events). Most checks would then pass without a probe, at no cost to detection.\n")
    out.append("## What is not measured yet\n")
    missing = []
    if not ttr.get("default") or len(ttr["default"]["runs"]) < 10:
        missing.append("the default-timing profiles with fewer than 10 runs each (each run takes ~4 min: 160 s safe "
                       "time plus the reboot and the 30 s `--healthy-after`); run `./bench/run.sh --only ttr-default` "
                       "for the full count")
    if not scale or max(r["nodes"] for r in scale["sizes"]) < 1000:
        missing.append("the 1000-node scale point")
    if not steady:
        missing.append("the steady-state API load")
    missing.append("the steady-state API load with the tight timings (`--api-check-interval 1s` makes each "
                   "follower's `/readyz` probes more frequent); only the default timings were measured")
    missing.append("the leader failover with the default timings (one run with the tight timings), and more than one "
                   "failover run")
    missing.append("a real multi-machine cluster: here every process shares 2 cores and one clock, and kwok "
                   "pods start instantly without volume attach")
    for m in missing:
        out.append(f"- {m}")
    out.append("")
