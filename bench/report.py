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
    """Nearest-rank percentile (None for no values)."""
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
               "`--self-fence exec:…` fed under the permit by every agent (the leader begins once the node's "
               "grantors report that no permit it could hold is left and its Lease missed a renewal, revokes "
               "its permit and marks it fenced at the revocation's deadline; [docs/permits.md](../permits.md))"
               if cfg.get("permit") else
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
        what = ("the configured safe time" if cfg.get("safe_time_s") else
                "the revocation's deadline" if cfg.get("permit") else
                "no safe time: the fence command's exit")
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
    # Followers watch their own Node and the leader Lease; the leader also
    # watches all Nodes and all node Leases.
    expected = 2 * (n_agents - 1) + 4
    out.append(f"`apiserver_longrunning_requests{{verb=\"WATCH\"}}`: {wb:.0f} without the agents, {ww:.0f} with them: "
               f"**{(ww - wb) / n_agents:.1f} watches per agent** on average ({ww - wb:.0f} for {n_agents} agents, "
               f"the leader's included)" +
               ("; that is 2 per follower (its own Node and the leader Lease) and 4 for the leader (also all "
                f"Nodes and all node Leases): 2 × {n_agents - 1} + 4 = {expected}" if round(ww - wb) == expected else
                f"; the agent's design gives 2 per follower (its own Node and the leader Lease) and 4 for the "
                f"leader (also all Nodes and all node Leases), 2 × {n_agents - 1} + 4 = {expected}: the "
                f"measured difference of {ww - wb:+.0f} is not that (other clients' watches varied between "
                f"the two samples, or the agents were not built from this tree)") + ".\n")
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
    ttr = {n: load(f"ttr-{n}") for n in ("default", "default-permit", "tight", "default-fence-command", "tight-fence-command")}
    ttr_ok = {n: d for n, d in ttr.items() if d and d["runs"]}
    steady = load("api-steady")
    scale = load("scale")
    failover = load("failover")
    realnode = load("realnode")
    commands = sorted({d.get("command") for d in [control, steady, scale, failover, realnode, load("scale-static-peers"),
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
                    rows.append((f"  … same, with a fixed `--peers` list (no peer discovery)",
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
    for name in ("default", "default-permit", "default-fence-command", "tight", "tight-fence-command"):
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
        big = max(scale["sizes"], key=lambda x: x["nodes"])
        bigfol = [a for a in big["agents"].values() if a["role"] != "leader"]
        bigpeak = max(a["peak_rss_kib"] for a in bigfol) / 1024 if bigfol else None
        sp = load("scale-static-peers")
        r = sp["sizes"][-1] if sp and sp["sizes"] else None
        fol = [a for a in r["agents"].values() if a["role"] != "leader"] if r else []
        if fol or (bigpeak is not None and bigpeak > 20):
            txt = ("**What makes a follower grow with the cluster.** A follower discovers its peers with a paged "
                   "metadata-only Node list (100 per page) 5 s after start, then at doubling intervals up to "
                   "every 5 min, and keeps only the peer addresses, so its peak should be bounded by the page "
                   "size, not the cluster size. (It replaced one unpaged list of all Nodes, with which an earlier "
                   "run measured 29.3 MiB follower RSS at 1000 nodes, against 12.7 MiB with a fixed `--peers` "
                   "list.) ")
            if bigpeak is not None:
                txt += (f"Measured here at {big['nodes']} nodes with discovery: follower peak {bigpeak:.1f} MiB, "
                        f"{'within' if bigpeak <= 20 else '**above**'} the 20 MiB target")
                txt += "" if big["nodes"] >= 1000 else " (1000 nodes not reached)"
            if fol:
                base = [x for x in scale["sizes"] if x["nodes"] == r["nodes"]]
                bfol = [a for a in base[0]["agents"].values() if a["role"] != "leader"] if base else []
                txt += (f"; rerun at {r['nodes']} nodes with a fixed `--peers` list instead (no discovery): "
                        f"follower RSS {max(a['rss_kib'] for a in fol) / 1024:.1f} MiB, "
                        f"peak {max(a['peak_rss_kib'] for a in fol) / 1024:.1f} MiB"
                        + (f", against {max(a['rss_kib'] for a in bfol) / 1024:.1f} MiB / "
                           f"{max(a['peak_rss_kib'] for a in bfol) / 1024:.1f} MiB with discovery" if bfol else "")
                        + "".join(f"; the leader, which runs the same discovery, {L2['rss_kib'] / 1024:.1f} MiB "
                                  f"instead of {L1['rss_kib'] / 1024:.1f} MiB"
                                  for L2 in [a for a in r["agents"].values() if a["role"] == "leader"][:1]
                                  for L1 in ([a for a in base[0]["agents"].values() if a["role"] == "leader"][:1]
                                             if base else [])))
            if bigpeak is not None and bigpeak > 20:
                txt += (". Above the target: " +
                        ("the difference to the fixed `--peers` run is what discovery still costs"
                         if fol else "`./bench/run.sh --only scale-static-peers` measures how much of it discovery "
                         "still costs") +
                        " (RSS also includes what the allocator keeps after a page is dropped)")
            out.append(txt + ".\n")
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

    if realnode and realnode["runs"]:
        realnode_section(realnode, out)

    from chart import ttr_chart
    rows = []
    for name, target in (("default", 45), ("default-permit", 45), ("default-fence-command", 45), ("tight", 25), ("tight-fence-command", 25)):
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


def realnode_section(data, out):
    runs = data["runs"]
    out.append("## 5. Real nodes\n")
    out.append(f"the real-node chaos test (`tests/realnode/chaos/`), {len(runs)} run(s)"
               + (f" ({len(data['failed'])} more failed: see the raw file)" if data.get("failed") else "")
               + ": three real nodes, each a kubelet, containerd, runc, the CNI plugins and kube-proxy in "
               "network, mount and cgroup namespaces of its own, with a FUSE watchdog device that powers its "
               "node off when it fires; the default manifests applied unchanged (`kubectl apply -f rbac/ -f "
               "daemonset/`), the agents in containers of the image the Dockerfile describes; a StatefulSet "
               "pod with a PVC. Power-off = freeze and kill every process of the node; cut = veth down; "
               "frozen agent = packets dropped, then SIGSTOP of the agent 2 s later. TTR = from the fault to "
               "the replica Running and Ready on another node with the same PVC (the test's 0.5 s "
               "polling); unlike the kwok runs above, it includes the real container start.\n")
    out.append("| | min | p50 | p95 | max |\n|---|---|---|---|---|")

    def row(label, vals):
        s = stats(vals)
        if s:
            out.append(f"| {label} | {f(s['min'])} | {f(s['p50'])} | {f(s['p95'])} | {f(s['max'])} |")
    row("nodes Ready after add", [v for r in runs for v in r["node_ready"]])
    row("DaemonSet pods Ready after `kubectl apply`", [r["daemonset_ready"] for r in runs])
    row("power-off: Fencing recorded", [r["poweroff"]["fencing"] for r in runs])
    row("power-off: Fenced recorded", [r["poweroff"]["fenced"] for r in runs])
    row("**power-off: TTR**", [r["poweroff"]["ttr"] for r in runs])
    row("cut: the agent decides to fence itself", [r["cut"]["decision"] for r in runs])
    row("cut: its watchdog fires, after the decision", [r["cut"]["watchdog_after_decision"] for r in runs])
    row("**cut: TTR**", [r["cut"]["ttr"] for r in runs])
    row("frozen agent: its watchdog fires, after the freeze", [r["frozen"]["watchdog_after_freeze"] for r in runs])
    row("**frozen agent: TTR**", [r["frozen"]["ttr"] for r in runs])
    row("unfenced after the reboot (`--healthy-after` 30 s)",
        [r[k]["unfence_after_boot"] for r in runs for k in ("poweroff", "cut", "frozen")])
    row("unprivileged variant: pods Ready after `kubectl apply`", [r["unprivileged"]["daemonset_ready"] for r in runs])
    row("whole script", [r["total"] for r in runs])
    out.append("")


def analysis(out, ttr, steady, scale):
    d = ttr.get("default")
    s = stats([r["running"] for r in d["runs"]]) if d else None
    if s is None:
        out.append("## The default TTR: the safe-time floor, and what would go lower\n")
    elif s["p50"] > 45 or s["p95"] > 60:
        out.append("## Why the default TTR target is missed, and what would reach it safely\n")
    else:
        out.append("## Where the default TTR goes, and what would go lower\n")
    rule = ("safe time = last observed heartbeat + max(isolated, reported, hung) + watchdog + margin; docs/safety.md, "
            "\"Split-brain safety\"")
    if d:
        cfg = d["config"]
        st = cfg.get("safe_time_s")
        renew = cfg["node_lease_s"] / 4
        hb = stats([r.get("last_heartbeat") for r in d["runs"]])
        nf = stats([r.get("node_fenced") for r in d["runs"]])
        rec = stats([r["running"] - r["node_fenced"] for r in d["runs"]
                     if r.get("running") is not None and r.get("node_fenced") is not None])
        out.append(f"With self-fencing and the default timings the leader may mark a dead node fenced only once "
                   f"its **safe time** has passed: {f(st, 0)} after the last heartbeat it saw "
                   f"({cfg.get('safe_time_terms')}; {rule}). The kubelet's last renewal "
                   f"is 0–{renew:g} s before the power-off (measured: {f(hb['min'] if hb else None)} … "
                   f"{f(hb['max'] if hb else None)}), so `NodeFenced` comes {f(nf['min'] if nf else None)} – "
                   f"{f(nf['max'] if nf else None)} after the stop, and the StatefulSet controller, scheduler "
                   f"and kwok add {f(rec['p50'] if rec else None)} (p50) to recreate the pod: "
                   f"TTR p50 {f(s['p50'])}, p95 {f(s['p95'])}. So **TTR ≈ safe time − (last renewal → "
                   f"power-off, 0–{renew:g} s) + pod start**" +
                   (f": p50 ≈ {st:g} − {renew / 2:g} + a few seconds, p95 up to about the full {st:g} s + a few "
                    f"seconds" if st else "") +
                   "; nothing in kube-fencer's own processing is on the critical path (the phases after "
                   "`NodeFenced` take seconds). " +
                   (f"Against the targets (p50 ≤ 45 s, p95 ≤ 60 s): p50 {met(s['p50'] <= 45)} by "
                    f"{abs(45 - s['p50']):.1f} s, p95 {met(s['p95'] <= 60)} by {abs(60 - s['p95']):.1f} s. ") +
                   "The wait is the safety rule working as designed: a node that merely *looks* dead may still "
                   "be writing to its volume until its watchdog has certainly fired.\n")
    else:
        out.append("With self-fencing and the default timings the safe time is 48 s after the last observed "
                   "heartbeat (heartbeat interval 10 + detect 17 (5 + 2 × 5 + 2) + peer consultation 6 + "
                   f"watchdog 10 + margin 5; {rule}). TTR ≈ safe time − (last renewal → power-off, 0–10 s with "
                   "the kubelet's 10 s renewal) + pod start, so p50 ≈ 48 − 5 + a few seconds (not measured in "
                   "this run).\n")
    missed = s is not None and (s["p50"] > 45 or s["p95"] > 60)
    out.append("Ways to reach p50 ≤ 45 s / p95 ≤ 60 s (1 and 2 keep every rule):\n" if missed else
               "Ways to go lower (1 and 2 keep every rule):\n")
    dfc = ttr.get("default-fence-command")
    fc_txt = ""
    if dfc:
        sf = stats([r["running"] for r in dfc["runs"]])
        gap = stats([r["node_fenced"] - r["fencing_started"] for r in dfc["runs"]
                     if r.get("node_fenced") is not None and r.get("fencing_started") is not None])
        fc_txt = (f" Measured here with the default timings: the leader records "
                  f"`FencingStarted` at `--unreachable-after` ({f(dfc['config'].get('unreachable_after_s'), 0)} after "
                  f"the last heartbeat), runs the command once the node has been suspect for the settle window "
                  f"(`--node-heartbeat-interval` + `--burst-spread`, 12 s, so that a burst of failures is counted whole by "
                  f"the storm guard first), and `NodeFenced` follows {f(gap['p50'] if gap else None)} after `FencingStarted` (p50); "
                  f"TTR p50 {f(sf['p50'])}, p95 {f(sf['p95'])}.")
    fc_met = bool(dfc) and stats([r["running"] for r in dfc["runs"]])["p50"] <= 45 and \
        stats([r["running"] for r in dfc["runs"]])["p95"] <= 60
    out.append(f"1. **External fencing** (`--fence-command`: IPMI, a cloud API, a PDU). The node is *known* off "
               f"when the command exits 0, so no safe time is waited.{fc_txt} This is the recommended "
               "configuration where a power API exists" +
               ("; it meets the default-timing target." if fc_met else "."))
    t = ttr.get("tight")
    if t:
        tc = t["config"]
        tight_txt = (f" — the `tight` profile above (node Lease {tc['node_lease_s']} s): safe time "
                     f"{f(tc.get('safe_time_s'), 0)} ({tc.get('safe_time_terms')}), measured TTR p50 "
                     f"{f(stats([r['running'] for r in t['runs']])['p50'])}, p95 "
                     f"{f(stats([r['running'] for r in t['runs']])['p95'])}")
    else:
        tight_txt = " — the `tight` profile (node Lease 10 s, 5 s watchdog: safe time 20 s; not measured in this run)"
    out.append("2. **Shorter self-fence timings.** Every term of the safe time is a flag or the kubelet's "
               "renewal interval, and each must still be true of the node; the defaults already assume a 10 s "
               "hardware watchdog. Every second cut from a term comes off the TTR one for one (e.g. a 5 s "
               "watchdog: safe time 43 s). The largest terms follow the kubelet's node Lease: shorten it "
               "(`nodeLeaseDurationSeconds`, renewed every quarter) and `--node-heartbeat-interval`, "
               "`--unreachable-after` and the check timings can shrink with it" + tight_txt + ".")
    out.append("3. **Design change, with a trade-off (proposal, not measured): a hardware-enforced promise.** "
               "The agent would feed its watchdog only while its own renewals of a short promise (say 10 s, "
               "renewed every 3 s) succeed; the leader's safe time would shrink to promise + watchdog timeout + "
               "margin ≈ 25 s after the last renewal it saw (with the default watchdog and margin, instead of "
               "48 s), dropping the detection and peer-consultation terms. "
               "The price is rule 4 of the self-fence table: a control-plane outage longer than the promise would "
               "reboot every node. That is the wrong default, but a cluster that values recovery time over "
               "riding out API outages could opt in; it needs its own review and tests.")
    out.append("4. **Not** an option: a `--node-heartbeat-interval` below the kubelet's real renewal interval, "
               "a `--watchdog-timeout` shorter than the device really uses, `--fence-timeout` below "
               "`--unreachable-after`, or treating a stale heartbeat as proof — each would let a partitioned "
               "node keep running its pod while the replacement starts.\n")
    if steady:
        w = steady["window_s"]
        fol = [a for a in steady["agents"].values() if a["role"] == "follower"]
        rz = [a["requests"].get("GET /readyz", 0) / w for a in fol]
        other = [(sum(a["requests"].values()) - a["requests"].get("GET /readyz", 0)) / w for a in fol]
        design = ("A follower counts every contact with the API server as a passed check: events on its "
                  "watches (its own Node, its own kubelet's Lease and the leader Lease, which the leader renews every "
                  "`--leader-lease-duration`/3 = 4 s with the default 12 s) or any request. It probes `/readyz` "
                  "only after an `--api-check-interval` (5 s) without contact, so at steady state it should "
                  "send ~0 requests.")
        if fol and max(rz) > 0:
            mean = sum(rz) / len(rz)
            out.append("## Finding: followers probe `/readyz` at steady state\n")
            out.append(f"{design} Measured over {w:.0f} s: {mean:.3f} `/readyz` probes/s per follower on "
                       f"average (one every {1 / mean:.0f} s; other requests: {max(other):.3f}/s at most), so "
                       "some check intervals passed without any event — the leader's renewals arrived further "
                       "apart than the check interval (a longer `--leader-lease-duration`, or renewals delayed "
                       "on this loaded machine), or the agents predate this behaviour. That is about "
                       f"{mean * 1000:.0f} requests/s for 1000 followers "
                       f"({'within' if mean * 1000 <= 100 else 'above'} the N/10 budget of 100/s); `/readyz` "
                       "is answered from the API server's memory (no etcd read), but it is not \"no requests\".\n")
        elif fol:
            out.append(f"**Followers at steady state:** {max(sum(a['requests'].values()) for a in fol) / w:.3f} "
                       f"requests/s at most per follower over {w:.0f} s, no `/readyz` probe. {design}\n")
    out.append("## What is not measured yet\n")
    missing = []
    few = [n for n in ("default", "default-fence-command") if not ttr.get(n) or len(ttr[n]["runs"]) < 10]
    if few:
        missing.append(f"{', '.join(f'`{n}`' for n in few)} with fewer than 10 runs (each self-fencing run takes "
                       "~1.5 min: the 48 s safe time plus the reboot and the 30 s `--healthy-after`); run "
                       "`./bench/run.sh --only ttr-default` for the full count")
    if not scale or max(r["nodes"] for r in scale["sizes"]) < 1000:
        missing.append("the 1000-node scale point")
    if not steady:
        missing.append("the steady-state API load")
    missing.append("the steady-state API load with the tight timings (its `--api-check-interval 1s` is shorter "
                   "than the leader's renewal period, 8 s / 3, so followers probe `/readyz` between renewals); "
                   "only the default timings were measured")
    missing.append("the leader failover with the default timings (one run with the tight timings), and more than one "
                   "failover run")
    missing.append("a real multi-machine cluster: here every process shares 2 cores and one clock, and kwok "
                   "pods start instantly without volume attach")
    for m in missing:
        out.append(f"- {m}")
    out.append("")
