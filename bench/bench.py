#!/usr/bin/env python3
"""kube-fencer benchmark on the local control plane (harness/cluster.sh).

Run through bench/run.sh, which builds what is missing first. Sections:

  control     no kube-fencer: a powered-off node's StatefulSet replica stays stuck
  ttr         time to recovery, per configuration profile, --runs times each
  api         API load of the agents at steady state and during a fencing
  failover    the leader's node dies while a fencing is pending
  scale       leader/follower memory, CPU and detection time at 10/100/1000 nodes

Every section writes docs/benchmarks/raw/<name>.json as soon as it is done;
`report` renders docs/benchmarks/README.md from whatever raw results exist.
The API is read over HTTPS (standard library) with the
cluster's admin client certificate.
"""

import argparse
import json
import os
import platform
import re
import signal
import string
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from report import pct  # bench/report.py: one nearest-rank percentile for both

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "harness" / "cluster.sh"
OUT = REPO / "docs" / "benchmarks"
RAW = OUT / "raw"
NS_FENCER = "kube-fencer"
LEADER_LEASE = "kube-fencer-leader"
STATE_ANN = "kube-fencer.io/state"
PERMIT_PREFIX = "kube-fencer-permit-"
ARMED_ANN = "kube-fencer.io/armed"
GRANTORS_ANN = "kube-fencer.io/grantors"
AGENT_ANN = "kube-fencer.io/agent"
OOS_TAINT = "node.kubernetes.io/out-of-service"
BULK_LABEL = "bench.kube-fencer.io/bulk"
STS_NS = "bench"
STS = "db"
REPLICAS = 3
# Agents log every API request they make (kube-client's request span), so
# requests can be attributed to one agent exactly.
AGENT_LOG_FILTER = "info,kube_client::client::builder=debug"

AGENT_BIN = None
BIN_DIR = None
PROCS = []  # every subprocess.Popen we started that may outlive a call
CLUSTERS = []  # cluster directories to tear down


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ profiles --

# Self-fence timings of the agents (exec: self-fence, as in the e2e tests).
SF_DEFAULT = []  # the agent's documented defaults: safe time 48 s
# The default install's protocol (daemonset/10-daemonset.yaml): the permit.
SF_PERMIT = ["--fencing-protocol", "permit", "--watchdog-timeout", "5s"]
SF_TIGHT = [
    "--api-check-interval", "1s",
    "--api-check-timeout", "500ms",
    "--api-failure-threshold", "3",
    "--peer-silence-timeout", "3s",
    "--watchdog-timeout", "5s",
    "--safe-time-margin", "3s",
]

# The leader's timings on the tight cluster (node Lease 10 s, renewed every 2.5 s).
TIGHT_ARGS = [
    "--unreachable-after", "6s", "--fence-timeout", "10s", "--healthy-after", "5s",
    "--leader-lease-duration", "8s", "--node-heartbeat-interval", "3s",
    "--strategy", "out-of-service",
]

CLUSTERS_CFG = {
    # kubelet defaults: 40 s node Lease (renewed every 10 s), 40 s grace period
    "default": {"lease": 40, "grace": "40s", "nodes": 4},
    # the test timings: 10 s node Lease (renewed every 2.5 s)
    "tight": {"lease": 10, "grace": "10s", "nodes": 5},
}

PROFILES = {
    "default": {
        "cluster": "default",
        "title": "defaults, self-fencing (exec)",
        "args": ["--strategy", "out-of-service"],
        "self_fence": SF_DEFAULT,
        "fence_command": False,
        "unreachable": 20.0,
        "fence_timeout": 40.0,
        "healthy_after": 30.0,
        "leader_lease": 12.0,
        "safe_time": 48.0,
        "safe_time_terms": "heartbeat 10 + detect 17 + consultation 6 + watchdog 10 + margin 5",
        "deadline": 200.0,
    },
    "default-fence-command": {
        "cluster": "default",
        "title": "defaults, --fence-command",
        "args": ["--strategy", "out-of-service"],
        "self_fence": None,
        "fence_command": True,
        "unreachable": 20.0,
        "fence_timeout": 40.0,
        "healthy_after": 30.0,
        "leader_lease": 12.0,
        "safe_time": None,
        "deadline": 200.0,
    },
    "tight": {
        "cluster": "tight",
        "title": "tight, self-fencing (exec)",
        "args": TIGHT_ARGS,
        "self_fence": SF_TIGHT,
        "fence_command": False,
        "unreachable": 6.0,
        "fence_timeout": 10.0,
        "healthy_after": 5.0,
        "leader_lease": 8.0,
        "safe_time": 20.0,
        "safe_time_terms": "heartbeat 3 + detect 5.5 + consultation 3.5 + watchdog 5 + margin 3",
        "deadline": 150.0,
    },
    "tight-fence-command": {
        "cluster": "tight",
        "title": "tight, --fence-command",
        "args": TIGHT_ARGS,
        "self_fence": None,
        "fence_command": True,
        "unreachable": 6.0,
        "fence_timeout": 10.0,
        "healthy_after": 5.0,
        "leader_lease": 8.0,
        "safe_time": None,
        "deadline": 120.0,
    },
}


# The default install's protocol: the defaults, fenced through the permit.
PROFILES["default-permit"] = dict(
    PROFILES["default"],
    title="defaults, self-fencing under the permit (exec)",
    self_fence=SF_PERMIT,
    permit=True,
    safe_time=None,
    safe_time_terms=None,
)


# --------------------------------------------------------------- processes --

def kill_proc(p, sig=signal.SIGKILL):
    """Signal one process we started (its own process group) and reap it."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            p.send_signal(sig)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)


def cleanup():
    for p in list(PROCS):
        kill_proc(p)
    PROCS.clear()
    for d in list(CLUSTERS):
        subprocess.run([str(CLUSTER_SH), "down", str(d)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    CLUSTERS.clear()


def run(cmd, input_text=None, timeout=300, check=True):
    res = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, KUBE_FENCER_BIN_DIR=BIN_DIR))
    if check and res.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({res.returncode}): {res.stderr[-2000:]}{res.stdout[-500:]}")
    return res.stdout


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_ts(s):
    """RFC 3339 (with or without fraction) -> epoch seconds."""
    if not s:
        return None
    import datetime
    s = s.replace("Z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", s)
    if m and m.group(2) and len(m.group(2)) > 7:  # fromisoformat wants <= 6 digits
        s = m.group(1) + m.group(2)[:7] + m.group(3)
    try:
        return datetime.datetime.fromisoformat(s).timestamp()
    except ValueError:
        return None


def proc_stats(pid):
    """RSS, peak RSS (KiB) and CPU seconds (user+system) of a process."""
    st = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                st[k] = int(v.split()[0])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        st["cpu_s"] = (int(fields[11]) + int(fields[12])) / tck
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None
    return st


# ---------------------------------------------------------------- API client --

class Api:
    def __init__(self, base, pki):
        self.base = base
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def raw(self, path, timeout=15):
        req = urllib.request.Request(self.base + path)
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
            return r.read().decode()

    def get(self, path, timeout=15):
        """JSON object, or None if it does not exist."""
        try:
            return json.loads(self.raw(path, timeout))
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise


def ready_status(node):
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status")
    return "Missing"


def pod_running_ready(pod):
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


def annotations(obj):
    return (obj.get("metadata") or {}).get("annotations") or {}


def node_clean(node):
    spec = node.get("spec") or {}
    return (STATE_ANN not in annotations(node) and not spec.get("unschedulable")
            and not any(t.get("key") == OOS_TAINT for t in spec.get("taints") or [])
            and ready_status(node) == "True")


# ------------------------------------------------------------------ cluster --

class Cluster:
    def __init__(self, name, nodes, lease, grace, workdir):
        self.name = name
        self.dir = Path(workdir) / f"cluster-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lease = lease
        self.agents = {}  # node -> dict(proc, listen, boot, log)
        self.profile = None
        self.stopped = set()
        log(f"[{name}] starting control plane with {nodes} node(s), node Lease {lease}s")
        CLUSTERS.append(self.dir)
        t = time.time()
        run([str(CLUSTER_SH), "up", str(self.dir), "--nodes", str(nodes), "--node-lease-seconds", str(lease),
             "--node-monitor-grace-period", grace], timeout=300)
        log(f"[{name}] control plane up in {time.time() - t:.1f}s")
        env = dict(l.split("=", 1) for l in (self.dir / "cluster.env").read_text().split() if "=" in l)
        self.api = Api(f"https://127.0.0.1:{env['API_PORT']}", self.dir / "pki")
        self.peer_key = self.dir / "peer.key"
        self.peer_key.write_text(f"bench-peer-key-{time.time_ns():x}\n")

    def kubectl(self, *args, input_text=None, timeout=120):
        return run([f"{BIN_DIR}/kubectl", "--kubeconfig", str(self.dir / "kubeconfig"),
                    "--request-timeout=60s", *args], input_text=input_text, timeout=timeout)

    def script(self, *args, timeout=180):
        return run([str(CLUSTER_SH), *args], timeout=timeout)

    def install(self, daemonset=True):
        paths = ["-f", str(REPO / "rbac")]
        if daemonset:
            paths += ["-f", str(REPO / "daemonset")]
        self.kubectl("apply", *paths)
        token = self.kubectl("create", "token", "kube-fencer", "-n", NS_FENCER, "--duration=6h").strip()
        self.agent_kc = self.dir / "agent.kubeconfig"
        self.agent_kc.write_text(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n"
            f"    server: {self.api.base}\n    certificate-authority: {self.dir / 'pki/ca.crt'}\n"
            f"users:\n- name: kube-fencer\n  user:\n    token: {token}\n"
            "contexts:\n- name: agent\n  context: {cluster: local, user: kube-fencer, namespace: kube-fencer}\n"
            "current-context: agent\n")

    def node_names(self):
        return sorted(n["metadata"]["name"] for n in self.api.get("/api/v1/nodes")["items"])

    # ---------------------------------------------------------- agents --

    def spawn_agent(self, node, profile, peer_port=None, extra_args=()):
        p = PROFILES[profile]
        listen = f"127.0.0.1:{free_port()}"
        boot = f"boot-{node}-{time.time_ns():x}"
        bootfile = self.dir / f"boot-id-{node}"
        bootfile.write_text(boot + "\n")
        logfile = self.dir / "logs" / f"agent-{node}.log"
        args = [AGENT_BIN, "--node-name", node, "--namespace", NS_FENCER, "--listen", listen,
                "--boot-id-file", str(bootfile)]
        if p["fence_command"]:
            args += ["--self-fence", "none", "--peer-listen", "",
                     "--fence-command", f'{CLUSTER_SH} node-stop {self.dir} "$NODE_NAME"']
        else:
            marker = self.dir / f"self-fenced-{node}"
            newboot = f"boot-{node}-selffenced-{time.time_ns():x}"
            args += ["--self-fence",
                     f"exec:{CLUSTER_SH} node-stop {self.dir} {node} >/dev/null 2>&1; "
                     f'echo "$(date +%s.%N) $KUBE_FENCER_SELF_FENCE_REASON" >> {marker}; '
                     f"echo {newboot} > {bootfile}",
                     "--peer-key-file", str(self.peer_key), "--peer-listen", f"127.0.0.1:{peer_port or free_port()}"]
            args += p["self_fence"]
        args += p["args"] + list(extra_args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE_")}
        env.update(KUBECONFIG=str(self.agent_kc), NODE_NAME=node, POD_NAMESPACE=NS_FENCER,
                   RUST_LOG=AGENT_LOG_FILTER, NO_COLOR="1")
        with open(logfile, "a") as f:
            f.write(f"### agent for {node} started {time.time():.3f} profile {profile}\n")
            f.flush()
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=env,
                                    start_new_session=True)
        PROCS.append(proc)
        self.agents[node] = {"proc": proc, "listen": listen, "boot": boot, "log": logfile}

    def stop_agent(self, node):
        a = self.agents.pop(node, None)
        if a:
            kill_proc(a["proc"])
            if a["proc"] in PROCS:
                PROCS.remove(a["proc"])

    def stop_all_agents(self):
        for n in list(self.agents):
            self.stop_agent(n)

    def spawn_agents(self, profile, nodes=None):
        self.profile = profile
        for n in nodes or self.node_names():
            self.spawn_agent(n, profile)

    def leader(self):
        lease = self.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{NS_FENCER}/leases/{LEADER_LEASE}")
        if not lease:
            return None, None
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        node = holder[len("kube-fencer-"):] if holder.startswith("kube-fencer-") else None
        return node, parse_ts(spec.get("renewTime"))

    def agent_metrics(self, node):
        a = self.agents.get(node)
        if not a:
            return ""
        try:
            with urllib.request.urlopen(f"http://{a['listen']}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return ""

    # -------------------------------------------------------- workload --

    def deploy_statefulset(self):
        self.kubectl("create", "namespace", STS_NS)
        for i in range(REPLICAS):
            self.script("pv-create", str(self.dir), f"{STS_NS}-{STS}-{i}", "1Gi", f"{STS_NS}/data-{STS}-{i}")
        self.kubectl("apply", "-f", "-", input_text=statefulset_manifest())

    def sts_pods(self):
        out = {}
        for i in range(REPLICAS):
            out[f"{STS}-{i}"] = self.api.get(f"/api/v1/namespaces/{STS_NS}/pods/{STS}-{i}")
        return out

    def pvc(self, claim):
        return self.api.get(f"/api/v1/namespaces/{STS_NS}/persistentvolumeclaims/{claim}")

    # ----------------------------------------------------------- waits --

    def wait(self, what, timeout, check, interval=0.5):
        t = time.time()
        last = None
        while time.time() - t < timeout:
            try:
                v = check()
                if v:
                    return v
            except (OSError, ValueError, KeyError, urllib.error.URLError) as e:
                last = e
            time.sleep(interval)
        raise RuntimeError(f"[{self.name}] timed out after {timeout:.0f}s waiting for {what} (last error: {last})")

    def steady(self, timeout=240):
        """Every node Ready and unfenced, every replica Running, every agent
        advertised with its current boot ID (under the permit: armed in it),
        a live leader."""
        def check():
            nodes = self.api.get("/api/v1/nodes")["items"]
            for n in nodes:
                name = n["metadata"]["name"]
                if not node_clean(n):
                    return None
                a = self.agents.get(name)
                if a and not PROFILES[self.profile]["fence_command"]:
                    adv = annotations(n).get(AGENT_ANN)
                    if not adv or json.loads(adv).get("bootId") != a["boot"]:
                        return None
                if a and PROFILES[self.profile].get("permit"):
                    # Armed under the permit in this boot: else revoking its
                    # permit would prove nothing, and nothing fences it. And
                    # its grantor set listed by the leader: until then the
                    # grantors' silence reports say nothing to it (the first
                    # seconds after an install), and the node is fenced by
                    # its Lease alone, which is not the steady state.
                    obj = self.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{NS_FENCER}/leases/{PERMIT_PREFIX}{name}")
                    armed = annotations(obj or {}).get(ARMED_ANN)
                    if not armed or json.loads(armed).get("boot") != a["boot"]:
                        return None
                    if not annotations(obj or {}).get(GRANTORS_ANN):
                        return None
            for p in self.sts_pods().values():
                if not p or not pod_running_ready(p) or p["metadata"].get("deletionTimestamp"):
                    return None
            if self.agents:
                node, renewed = self.leader()
                if node not in self.agents or renewed is None or time.time() - renewed > 30:
                    return None
                return node
            return True
        return self.wait("a steady cluster", timeout, check)

    def events(self, node, since):
        """First kube-fencer Event time per reason about Node `node` at or after `since`.

        Read through the core/v1 view of the events.k8s.io Events, which
        supports field selectors (a cluster of 1000 nodes has many Events)."""
        sel = urllib.parse.quote(f"involvedObject.kind=Node,involvedObject.name={node},reportingComponent=kube-fencer")
        items = self.api.get(f"/api/v1/namespaces/default/events?fieldSelector={sel}")["items"]
        out = {}
        for ev in items:
            times = [parse_ts(ev.get("eventTime")) or parse_ts(ev.get("firstTimestamp"))]
            series = ev.get("series") or {}
            if series.get("lastObservedTime"):
                times.append(parse_ts(series["lastObservedTime"]))
            times = [t for t in times if t is not None and t >= since]
            if not times:
                continue
            r = ev.get("reason")
            t = min(times)
            if r not in out or t < out[r]["t"]:
                out[r] = {"t": t, "instance": ev.get("reportingInstance"), "note": ev.get("message")}
        return out

    def lease_renew(self, node):
        lease = self.api.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}")
        return parse_ts(((lease or {}).get("spec") or {}).get("renewTime"))

    # ------------------------------------------------------------ power --

    def power_off(self, node, with_agent=True):
        if with_agent:
            self.stop_agent(node)
        self.script("node-stop", str(self.dir), node)
        self.stopped.add(node)

    def power_on(self, node, profile=None):
        self.script("node-start", str(self.dir), node)
        self.stopped.discard(node)
        if profile:
            self.spawn_agent(node, profile)  # new boot ID: the node rebooted

    # -------------------------------------------------- API accounting --

    def log_offsets(self):
        return {n: a["log"].stat().st_size for n, a in self.agents.items()}

    def requests_since(self, offsets):
        """Per agent: Counter of 'VERB resource' for requests logged after `offsets`."""
        out = {}
        for n, off in offsets.items():
            path = self.dir / "logs" / f"agent-{n}.log"
            with open(path, "rb") as f:
                f.seek(off)
                text = f.read().decode(errors="replace")
            counts = {}
            for line in text.splitlines():
                if "requesting" not in line:
                    continue
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                m = re.search(r"http\.method=(\w+) http\.url=([^\s}]+)", line)
                if not m:
                    continue
                k = classify(m.group(1), m.group(2))
                counts[k] = counts.get(k, 0) + 1
            out[n] = counts
        return out

    def apiserver_metrics(self):
        return parse_apiserver_metrics(self.api.raw("/metrics", timeout=30))


def classify(method, url):
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query)
    parts = [p for p in u.path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return f"{method} {u.path}"
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] if rest else "?"
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource += "/" + rest[2]
    verb = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "PATCH", "DELETE": "DELETE"}.get(method)
    if method == "GET":
        verb = "WATCH" if q.get("watch", ["false"])[0] in ("true", "1") else ("GET" if name else "LIST")
    return f"{verb or method} {resource}"


LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_apiserver_metrics(text):
    req, longrun = {}, {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            dest = req
        elif line.startswith("apiserver_longrunning_requests{"):
            dest = longrun
        else:
            continue
        lab, _, val = line.rpartition("} ")
        labels = dict(LABEL_RE.findall(lab))
        res = labels.get("resource", "")
        if labels.get("subresource"):
            res += "/" + labels["subresource"]
        key = f"{labels.get('verb', '?')} {res}".strip()
        dest[key] = dest.get(key, 0.0) + float(val)
    return {"requests": req, "longrunning": longrun}


def metrics_delta(a, b):
    d = {}
    for k, v in b["requests"].items():
        x = v - a["requests"].get(k, 0.0)
        if x > 0:
            d[k] = x
    return d


def statefulset_manifest():
    """harness/statefulset.yaml filled in (the workload of every scenario)."""
    template = (REPO / "harness" / "statefulset.yaml").read_text()
    body = "\n".join(l for l in template.splitlines() if not l.startswith("#"))
    return string.Template(body).substitute(
        NAMESPACE=STS_NS, NAME=STS, REPLICAS=REPLICAS, SIZE="1Gi", STORAGE_CLASS="static"
    ) + "\n"


# ----------------------------------------------------------------- results --

def save(name, data):
    RAW.mkdir(parents=True, exist_ok=True)
    data = dict(data, recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                command=os.environ.get("BENCH_COMMAND"))
    (RAW / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    log(f"wrote {RAW / (name + '.json')}")




def summary(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"n": len(v), "min": min(v), "p50": pct(v, 50), "p95": pct(v, 95), "max": max(v)}


# ---------------------------------------------------------------- sections --

def new_cluster(kind, workdir, daemonset=True):
    cfg = CLUSTERS_CFG[kind]
    c = Cluster(kind, cfg["nodes"], cfg["lease"], cfg["grace"], workdir)
    c.install(daemonset=daemonset)
    c.deploy_statefulset()
    c.profile = None
    c.steady(timeout=180)
    return c


def pick_victim(c, leader):
    """A replica whose node is not the leader's (the leader never fences itself)."""
    pods = c.sts_pods()
    for name in (f"{STS}-1", f"{STS}-0", f"{STS}-2"):
        node = pods[name]["spec"].get("nodeName")
        if node and node != leader:
            return name, node, pods[name]
    raise RuntimeError("no replica on a non-leader node")


def section_control(c, window):
    """No kube-fencer running: stop the node of a replica and watch it stay stuck."""
    assert not c.agents
    c.steady(timeout=120)
    pod_name, victim, pod = pick_victim(c, None)
    old_uid = pod["metadata"]["uid"]
    log(f"[control] powering off {victim} (runs {pod_name}); no kube-fencer; watching {window:.0f}s")
    t0 = time.time()
    c.power_off(victim, with_agent=False)
    notready = recovered = None
    samples = 0
    while time.time() - t0 < window:
        try:
            n = c.api.get(f"/api/v1/nodes/{victim}")
            if notready is None and ready_status(n) != "True":
                notready = time.time() - t0
            p = c.api.get(f"/api/v1/namespaces/{STS_NS}/pods/{pod_name}")
        except (OSError, urllib.error.URLError) as e:
            log(f"[control] poll failed: {e}")
            time.sleep(1)
            continue
        samples += 1
        if (not p or p["metadata"]["uid"] != old_uid) and recovered is None:
            if p and pod_running_ready(p):
                recovered = time.time() - t0
        time.sleep(1)
    p = c.api.get(f"/api/v1/namespaces/{STS_NS}/pods/{pod_name}")
    final = {
        "same_uid": bool(p) and p["metadata"]["uid"] == old_uid,
        "node": (p or {}).get("spec", {}).get("nodeName"),
        "phase": (p or {}).get("status", {}).get("phase"),
        "deletion_timestamp": (p or {}).get("metadata", {}).get("deletionTimestamp"),
    }
    log(f"[control] after {window:.0f}s: recovered={recovered} notready_after={notready} final={final}")
    save("control", {"window_s": window, "node_lease_s": c.lease, "victim": victim, "pod": pod_name,
                     "notready_after_s": notready, "recovered_after_s": recovered, "final": final,
                     "polls": samples})
    c.power_on(victim)
    try:
        c.steady(timeout=30)
    except RuntimeError:
        # The simulated node may not mark the old pod Ready again after its
        # restart; recreate it (set-up for the next section, not measured).
        c.kubectl("-n", STS_NS, "delete", "pod", pod_name, "--force", "--grace-period=0")
        c.steady(timeout=180)


def ttr_once(c, profile, run_no, api_capture=False):
    p = PROFILES[profile]
    leader = c.steady()
    pod_name, victim, pod = pick_victim(c, leader)
    old_uid = pod["metadata"]["uid"]
    claim = f"data-{pod_name}"
    pvc0 = c.pvc(claim)
    pvc_uid = pvc0["metadata"]["uid"]
    offsets = c.log_offsets() if api_capture else None
    m0 = c.apiserver_metrics() if api_capture else None
    log(f"[{profile} #{run_no}] leader {leader}; powering off {victim} (runs {pod_name})")
    t0 = time.time()
    c.power_off(victim)
    t_off = time.time()
    last_hb = c.lease_renew(victim)
    gone = scheduled = running = None
    new_pod = None
    while True:
        now = time.time()
        if now - t0 > p["deadline"]:
            raise RuntimeError(f"[{profile} #{run_no}] no recovery within {p['deadline']:.0f}s")
        q = c.api.get(f"/api/v1/namespaces/{STS_NS}/pods/{pod_name}")
        if not q or q["metadata"]["uid"] != old_uid:
            gone = gone or now
        if q and q["metadata"]["uid"] != old_uid:
            if q["spec"].get("nodeName"):
                scheduled = scheduled or now
            if pod_running_ready(q) and not q["metadata"].get("deletionTimestamp"):
                running = now
                new_pod = q
                break
        time.sleep(0.25)
    m1 = c.apiserver_metrics() if api_capture else None
    reqs = c.requests_since(offsets) if api_capture else None
    window = time.time() - t0
    evs = c.events(victim, t0 - 1)
    new_node = new_pod["spec"]["nodeName"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in new_pod["spec"].get("volumes") or []
              if "persistentVolumeClaim" in v]
    pvc1 = c.pvc(claim)
    same_pvc = claims == [claim] and pvc1 and pvc1["metadata"]["uid"] == pvc_uid
    rel = lambda t: None if t is None else round(t - t0, 3)  # noqa: E731
    result = {
        "run": run_no, "victim": victim, "pod": pod_name, "leader": leader, "new_node": new_node,
        "stop_call_s": round(t_off - t0, 3),
        "last_heartbeat": rel(last_hb),
        "fencing_started": rel(evs.get("FencingStarted", {}).get("t")),
        "node_fenced": rel(evs.get("NodeFenced", {}).get("t")),
        "pod_force_deleted": rel(evs.get("PodForceDeleted", {}).get("t")),
        "old_pod_gone": rel(gone),
        "scheduled": rel(scheduled),
        "running": rel(running),
        "same_pvc": bool(same_pvc),
        "pvc_uid": pvc_uid,
        "new_node_healthy": new_node != victim and new_node not in c.stopped,
        "fenced_by": evs.get("NodeFenced", {}).get("instance"),
    }
    log(f"[{profile} #{run_no}] recovered in {result['running']:.1f}s on {new_node} "
        f"(FencingStarted {result['fencing_started']}, NodeFenced {result['node_fenced']}, "
        f"PodForceDeleted {result['pod_force_deleted']}), same PVC: {same_pvc}")
    if not same_pvc or not result["new_node_healthy"]:
        raise RuntimeError(f"replacement check failed: {result}")
    # The node reboots: new boot ID, its agent starts again; wait for the unfence.
    t1 = time.time()
    c.power_on(victim, profile)
    def unfenced():
        return node_clean(c.api.get(f"/api/v1/nodes/{victim}"))
    c.wait(f"{victim} unfenced", 240, unfenced)
    result["unfenced_after_restart"] = round(time.time() - t1, 3)
    if api_capture:
        result["api"] = {"window_s": window, "apiserver": metrics_delta(m0, m1),
                         "agents": reqs, "leader": leader}
    return result


def section_ttr(c, profile, runs, api_capture_first=False):
    if c.profile != profile:
        c.stop_all_agents()
        c.spawn_agents(profile)
    results, failed = [], []
    for i in range(1, runs + 1):
        try:
            results.append(ttr_once(c, profile, i, api_capture=(api_capture_first and i == 1)))
        except (RuntimeError, OSError, urllib.error.URLError, subprocess.TimeoutExpired) as e:
            log(f"[{profile} #{i}] FAILED: {e}")
            failed.append({"run": i, "error": str(e)[:500]})
            for n in list(c.stopped):  # put the cluster back together for the next run
                try:
                    c.power_on(n, profile)
                except (RuntimeError, subprocess.TimeoutExpired) as e2:
                    log(f"[{profile}] could not restart {n}: {e2}")
            if len(failed) >= 2:
                break
        save(f"ttr-{profile}", {"profile": profile, "config": profile_doc(profile, c),
                                "runs": results, "failed_runs": failed, "requested_runs": runs})
    return results


def profile_doc(profile, c):
    p = PROFILES[profile]
    return {"title": p["title"], "agent_args": p["args"] + (p["self_fence"] or []),
            "fence_command": p["fence_command"], "node_lease_s": c.lease,
            "node_monitor_grace_period": CLUSTERS_CFG[p["cluster"]]["grace"],
            "unreachable_after_s": p["unreachable"], "fence_timeout_s": p["fence_timeout"],
            "safe_time_s": p["safe_time"], "leader_lease_s": p["leader_lease"], "safe_time_terms": p.get("safe_time_terms"),
            "permit": p.get("permit", False), "nodes": len(c.node_names())}


def section_api(c, profile, window):
    """Steady-state API load: apiserver counters without agents, then with."""
    c.stop_all_agents()
    c.profile = profile
    c.steady(timeout=120)
    log(f"[api] baseline without agents: {window:.0f}s")
    m0 = c.apiserver_metrics()
    time.sleep(window)
    m1 = c.apiserver_metrics()
    base = metrics_delta(m0, m1)
    watches_base = sum(v for k, v in m1["longrunning"].items() if k.startswith("WATCH"))
    c.spawn_agents(profile)
    leader = c.steady(timeout=120)
    time.sleep(20)  # settle: initial lists, advertisement, leader election
    log(f"[api] with {len(c.agents)} agents (leader {leader}): {window:.0f}s")
    offsets = c.log_offsets()
    cpu0 = {n: proc_stats(a["proc"].pid) for n, a in c.agents.items()}
    m2 = c.apiserver_metrics()
    time.sleep(window)
    m3 = c.apiserver_metrics()
    cpu1 = {n: proc_stats(a["proc"].pid) for n, a in c.agents.items()}
    withagents = metrics_delta(m2, m3)
    watches_with = sum(v for k, v in m3["longrunning"].items() if k.startswith("WATCH"))
    reqs = c.requests_since(offsets)
    leader_now, _ = c.leader()
    agents = {}
    for n, counts in reqs.items():
        agents[n] = {"role": "leader" if n == leader_now else "follower", "requests": counts,
                     "rss_kib": (cpu1.get(n) or {}).get("VmRSS"),
                     "cpu_s": round((cpu1[n]["cpu_s"] - cpu0[n]["cpu_s"]), 3) if cpu0.get(n) and cpu1.get(n) else None}
    save("api-steady", {
        "profile": profile, "window_s": window, "nodes": len(c.node_names()), "agents": agents,
        "apiserver_without_agents": base, "apiserver_with_agents": withagents,
        "watches_without_agents": watches_base, "watches_with_agents": watches_with,
        "longrunning_with_agents": m3["longrunning"], "longrunning_without_agents": m1["longrunning"],
        "leader": leader_now})


def section_realnode(runs, workdir):
    """The real-node chaos test (tests/realnode/chaos/) `runs` times: three
    real nodes (kubelet, containerd, runc; the default manifests; a FUSE
    watchdog per node), each run's figures from its
    KUBE_FENCER_REALNODE_RESULT file."""
    test = "chaos::default_install_on_real_nodes_power_off_cut_and_frozen_agent"
    cmd = ["cargo", "test", "--features", "realnode", "--test", "realnode", "--",
           "--exact", "--nocapture", test]
    done, failed = [], []
    for i in range(1, runs + 1):
        result = Path(workdir) / f"realnode-{i}.json"
        logf = Path(workdir) / f"realnode-{i}.log"
        env = dict(os.environ, KUBE_FENCER_REALNODE_RESULT=str(result), KUBE_FENCER_REALNODE_NET="7")
        log(f"[realnode #{i}] {' '.join(cmd)} (log: {logf})")
        t0 = time.time()
        with open(logf, "w") as out:
            # A session of its own: SIGTERM reaches the test, not only cargo.
            child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            try:
                rc = child.wait()
            finally:
                if child.poll() is None:  # interrupted: let the test tear its cluster down
                    os.killpg(child.pid, signal.SIGTERM)
                    child.wait(timeout=120)
        if rc != 0 or not result.exists():
            tail = logf.read_text().splitlines()[-5:]
            failed.append({"run": i, "rc": rc, "tail": tail})
            log(f"[realnode #{i}] FAILED (exit {rc}): " + " | ".join(tail))
            continue
        r = json.loads(result.read_text())
        done.append(r)
        log(f"[realnode #{i}] passed in {time.time() - t0:.0f}s: power-off TTR {r['poweroff']['ttr']:.1f}s, "
            f"cut TTR {r['cut']['ttr']:.1f}s, frozen agent TTR {r['frozen']['ttr']:.1f}s")
        save("realnode", {"runs": done, "failed": failed})
    save("realnode", {"runs": done, "failed": failed})
    if failed:
        raise RuntimeError(f"{len(failed)} of {runs} real-node runs failed")


def section_failover(c, profile):
    if c.profile != profile:
        c.stop_all_agents()
        c.spawn_agents(profile)
    p = PROFILES[profile]
    leader = c.steady()
    pod_name, victim, pod = pick_victim(c, leader)
    old_uid = pod["metadata"]["uid"]
    log(f"[failover] leader {leader}; powering off {victim} (runs {pod_name})")
    t0 = time.time()
    c.power_off(victim)
    fs = c.wait("FencingStarted", 60, lambda: c.events(victim, t0 - 1).get("FencingStarted"), interval=0.25)
    ev0 = c.events(victim, t0 - 1)
    if "NodeFenced" in ev0:
        raise RuntimeError("the fencing completed before the leader could be stopped")
    log(f"[failover] FencingStarted at +{fs['t'] - t0:.1f}s; powering off the leader's node {leader}")
    t1 = time.time()
    c.power_off(leader)
    new_leader = t_new = running = None
    while time.time() - t1 < 200:
        now = time.time()
        if new_leader is None:
            node, _ = c.leader()
            if node and node != leader:
                new_leader, t_new = node, now
        q = c.api.get(f"/api/v1/namespaces/{STS_NS}/pods/{pod_name}")
        if q and q["metadata"]["uid"] != old_uid and pod_running_ready(q) and not q["metadata"].get("deletionTimestamp"):
            running = now
            break
        time.sleep(0.25)
    if running is None:
        raise RuntimeError("no recovery within 200 s after the leader died")
    evs = c.events(victim, t0 - 1)
    rel = lambda t: None if t is None else round(t - t1, 3)  # noqa: E731
    res = {
        "profile": profile, "config": profile_doc(profile, c), "old_leader": leader, "new_leader": new_leader,
        "victim": victim, "pod": pod_name,
        "victim_stop_to_fencing_started": round(fs["t"] - t0, 3),
        "leader_stop_after_victim_stop": round(t1 - t0, 3),
        "new_leader_acquired": rel(t_new),
        "node_fenced": rel(evs.get("NodeFenced", {}).get("t")),
        "node_fenced_by": evs.get("NodeFenced", {}).get("instance"),
        "pod_force_deleted": rel(evs.get("PodForceDeleted", {}).get("t")),
        "running": rel(running),
        "running_after_victim_stop": round(running - t0, 3),
    }
    log(f"[failover] {res}")
    save("failover", res)
    # No restore: the cluster is torn down next.


def section_scale(workdir, sizes, window, profile="default", static_peers=False):
    """With static_peers, the agents get --peers instead of discovering their
    peers from a list of all Nodes (to see what that list costs a follower)."""
    p = PROFILES[profile]
    name = "scale-static-peers" if static_peers else "scale"
    c = Cluster(name, 3, 40, "40s", workdir)
    c.install(daemonset=False)  # no DaemonSet: it would put one pod on every simulated node
    c.script("node-add", str(c.dir), "victim")
    kwok_log = open(c.dir / "logs" / "kwok-bulk.log", "a")
    bulk = subprocess.Popen(
        [f"{BIN_DIR}/kwok", "--kubeconfig", str(c.dir / "kubeconfig"),
         "--manage-nodes-with-label-selector", f"{BULK_LABEL}=true",
         "--node-lease-duration-seconds", "40", "--node-ip", "127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=kwok_log, stderr=kwok_log, start_new_session=True)
    PROCS.append(bulk)
    (c.dir / "pids" / "kwok-bulk.pid").write_text(f"{bulk.pid}\n")
    agent_nodes = ["node-1", "node-2", "node-3"]
    results = []
    have = 0
    for size in sizes:
        want = size - 4
        if want > have:
            log(f"[scale] adding {want - have} bulk nodes (total {size})")
            for start in range(have, want, 250):
                items = []
                for i in range(start, min(want, start + 250)):
                    items.append({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": f"bulk-{i:05d}",
                                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                                     "labels": {"kubernetes.io/hostname": f"bulk-{i:05d}", "kubernetes.io/os": "linux",
                                                "type": "kwok", BULK_LABEL: "true"}},
                        "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                                   "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"}}})
                c.kubectl("create", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                          timeout=300)
            have = want
        def all_ready():
            nodes = c.api.get("/api/v1/nodes", timeout=60)["items"]
            ready = sum(1 for n in nodes if ready_status(n) == "True")
            return len(nodes) == size and ready == size
        c.wait(f"{size} nodes Ready", 600, all_ready, interval=3)
        log(f"[scale] {size} nodes Ready; starting agents on {agent_nodes}")
        c.profile = profile
        ports = {n: free_port() for n in agent_nodes}
        for n in agent_nodes:
            extra = (["--peers", ",".join(f"127.0.0.1:{ports[m]}" for m in agent_nodes if m != n)]
                     if static_peers else [])
            c.spawn_agent(n, profile, peer_port=ports[n], extra_args=extra)
        leader = c.wait("a leader with synced caches", 180, lambda: (
            c.leader()[0] in c.agents and "kube_fencer_cache_synced 1" in c.agent_metrics(c.leader()[0])
            and c.leader()[0]), interval=1)
        c.wait("victim released and Ready", 240,
               lambda: node_clean(c.api.get("/api/v1/nodes/victim")), interval=1)
        time.sleep(15)
        offsets = c.log_offsets()
        s0 = {n: proc_stats(a["proc"].pid) for n, a in c.agents.items()}
        time.sleep(window)
        s1 = {n: proc_stats(a["proc"].pid) for n, a in c.agents.items()}
        reqs = c.requests_since(offsets)
        # Detection: power off the separate victim node (no agent on it).
        last_hb_before = c.lease_renew("victim")
        t0 = time.time()
        c.power_off("victim", with_agent=False)
        last_hb = c.lease_renew("victim") or last_hb_before
        fs = c.wait("FencingStarted on victim", 120, lambda: c.events("victim", t0 - 1).get("FencingStarted"),
                    interval=0.25)
        s2 = {n: proc_stats(a["proc"].pid) for n, a in c.agents.items()}
        leader_now, _ = c.leader()
        agents = {}
        for n in agent_nodes:
            agents[n] = {
                "role": "leader" if n == leader_now else "follower",
                "rss_kib": s1[n]["VmRSS"], "peak_rss_kib": s2[n]["VmHWM"], "rss_after_fencing_kib": s2[n]["VmRSS"],
                "cpu_s_total": s2[n]["cpu_s"],
                "cpu_s_window": round(s1[n]["cpu_s"] - s0[n]["cpu_s"], 3),
                "requests": reqs.get(n, {}),
            }
        r = {
            "nodes": size, "window_s": window, "leader": leader_now, "agents": agents,
            "unreachable_after_s": p["unreachable"],
            "stop_to_fencing_started": round(fs["t"] - t0, 3),
            "heartbeat_to_fencing_started": round(fs["t"] - last_hb, 3) if last_hb else None,
            "last_heartbeat_before_stop": round(last_hb - t0, 3) if last_hb else None,
        }
        r["detection_over_timeout_from_stop"] = round(r["stop_to_fencing_started"] - p["unreachable"], 3)
        if last_hb:
            r["detection_over_timeout_from_heartbeat"] = round(r["heartbeat_to_fencing_started"] - p["unreachable"], 3)
        log(f"[scale] {size} nodes: {json.dumps({k: v for k, v in r.items() if k != 'agents'})}")
        for n, a in agents.items():
            log(f"[scale]   {n} {a['role']}: RSS {a['rss_kib'] / 1024:.1f} MiB, peak {a['peak_rss_kib'] / 1024:.1f} MiB, "
                f"CPU {a['cpu_s_window']:.2f}s in {window:.0f}s")
        results.append(r)
        save(name, {"profile": profile, "sizes": results, "requested_sizes": sizes, "static_peers": static_peers})
        c.stop_all_agents()
        c.power_on("victim")
        # Released by the next leader: the victim was only Fencing (no agent, never fenced).
    return results


# ------------------------------------------------------------------ report --

def fmt(x, unit="s", nd=1):
    if x is None:
        return "–"
    return f"{x:.{nd}f}{unit}"


def machine_facts():
    facts = {}
    facts["nproc"] = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    facts["free"] = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.rstrip()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts["cpu"] = model
    facts["kernel"] = platform.release()
    facts["versions"] = {}
    for line in (REPO / "harness" / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            facts["versions"][k] = v
    if AGENT_BIN:
        facts["kube_fencer"] = subprocess.run([AGENT_BIN, "--version"], capture_output=True, text=True).stdout.strip()
    # The agent binary is built from src/: name the last commit that changed it.
    facts["commit"] = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h", "--", "src", "Cargo.toml",
                                      "Cargo.lock"], capture_output=True, text=True).stdout.strip()
    return facts


def main():
    global AGENT_BIN, BIN_DIR
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent-bin", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--runs", type=int, default=10, help="TTR runs per profile (default 10)")
    ap.add_argument("--runs-default", type=int, help="TTR runs for the default-timing profiles (default: --runs)")
    ap.add_argument("--runs-realnode", type=int, default=3, help="real-node chaos runs (default 3)")
    ap.add_argument("--only", default="control,ttr-tight,failover,api,ttr-default,scale",
                    help="comma-separated sections: control, ttr-tight, failover, api, ttr-default, scale, "
                    "scale-static-peers and realnode (root; not in the default set)")
    ap.add_argument("--profiles-tight", default="tight,tight-fence-command")
    ap.add_argument("--profiles-default", default="default,default-permit,default-fence-command")
    ap.add_argument("--control-window", type=float, default=120.0)
    ap.add_argument("--api-window", type=float, default=60.0)
    ap.add_argument("--scale-sizes", default="10,100,1000")
    ap.add_argument("--scale-window", type=float, default=30.0)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    AGENT_BIN = str(Path(args.agent_bin).resolve())
    BIN_DIR = args.bin_dir
    from report import render  # noqa: E402  (bench/report.py)
    if args.report_only:
        render(machine_facts())
        return
    only = set(args.only.split(","))
    runs_default = args.runs_default or args.runs

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    failures = []
    try:
        if only & {"control", "ttr-tight", "failover"}:
            c = new_cluster("tight", args.workdir)
            try:
                if "control" in only:
                    section_control(c, args.control_window)
                if "ttr-tight" in only:
                    for prof in args.profiles_tight.split(","):
                        try:
                            section_ttr(c, prof, args.runs)
                        except Exception as e:  # noqa: BLE001  keep the other sections going
                            failures.append(f"{prof}: {e}")
                            log(f"FAILED {prof}: {e}")
                if "failover" in only:
                    section_failover(c, "tight")
            finally:
                c.stop_all_agents()
                run([str(CLUSTER_SH), "down", str(c.dir)], check=False)
                CLUSTERS.remove(c.dir)
        if only & {"api", "ttr-default"}:
            c = new_cluster("default", args.workdir)
            try:
                if "api" in only:
                    section_api(c, "default", args.api_window)
                if "ttr-default" in only:
                    for i, prof in enumerate(args.profiles_default.split(",")):
                        try:
                            section_ttr(c, prof, runs_default, api_capture_first=(i == 0))
                        except Exception as e:  # noqa: BLE001
                            failures.append(f"{prof}: {e}")
                            log(f"FAILED {prof}: {e}")
            finally:
                c.stop_all_agents()
                run([str(CLUSTER_SH), "down", str(c.dir)], check=False)
                CLUSTERS.remove(c.dir)
        if "scale" in only:
            sizes = [int(s) for s in args.scale_sizes.split(",") if s]
            section_scale(args.workdir, sizes, args.scale_window)
        if "scale-static-peers" in only:
            sizes = [int(s) for s in args.scale_sizes.split(",") if s]
            section_scale(args.workdir, sizes, args.scale_window, static_peers=True)
        if "realnode" in only:
            try:
                section_realnode(args.runs_realnode, args.workdir)
            except Exception as e:  # noqa: BLE001
                failures.append(f"realnode: {e}")
                log(f"FAILED realnode: {e}")
    finally:
        cleanup()
        render(machine_facts())
    if failures:
        log("some sections failed: " + "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
