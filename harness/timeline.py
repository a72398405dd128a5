#!/usr/bin/env python3
"""Watch a node failure unfold and print a timeline relative to the failure.

Used by harness/demo.sh (local cluster) and harness/kind-chaos.sh (kind).
Polls the API server through kubectl once a second and prints, each time it
first happens:

  heartbeat lost        the node's Lease in kube-node-lease stopped renewing
  node NotReady         the node lifecycle controller gave up on the node
  kube-fencer state     every new value of the node's kube-fencer.io/state
  cordoned / tainted    spec.unschedulable, node.kubernetes.io/out-of-service
  kube-fencer events    Events reported by kube-fencer (any object)
  pod deleted           the StatefulSet pod on the failed node is gone
  replica scheduled     the replacement pod is bound to a node
  replica Running       the replacement is Running and Ready (recovery)

With --until unfenced it keeps going after recovery until the node's taint,
cordon and annotation are gone, and prints the time to unfence (from
--restarted-at). Exits 0 when the goal is reached, 1 on
timeout. Only the standard library and kubectl are needed.
"""

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone

STATE_ANNOTATION = "kube-fencer.io/state"
OOS_TAINT = "node.kubernetes.io/out-of-service"


NOT_FOUND = {"notFound": True}


def kubectl(args, kubectl_cmd):
    """JSON output of kubectl; NOT_FOUND if the object does not exist, None on
    any other error (the caller skips this round)."""
    try:
        res = subprocess.run(kubectl_cmd + args, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        return NOT_FOUND if "NotFound" in res.stderr else None
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        return None


def parse_time(s):
    if not s:
        return None
    s = s.replace("Z", "+00:00")
    # Kubernetes MicroTime has microseconds; fromisoformat handles both.
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        return None


class Timeline:
    """Milestones are printed once each, in time order within one poll."""

    def __init__(self, t0):
        self.t0 = t0
        self.seen = set()
        self.pending = []

    def emit(self, key, msg, at=None):
        if key in self.seen:
            return False
        self.seen.add(key)
        self.pending.append(((at if at is not None else time.time()) - self.t0, msg))
        return True

    def flush(self):
        for when, msg in sorted(self.pending, key=lambda p: p[0]):
            print(f"  {when:+7.1f}s  {msg}", flush=True)
        self.pending = []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node", required=True, help="the node that failed")
    ap.add_argument("--pod", required=True, help="NAMESPACE/NAME of the StatefulSet pod that ran on it")
    ap.add_argument("--since", type=float, required=True, help="epoch seconds of the failure")
    ap.add_argument("--old-uid", required=True, help="UID of the pod before the failure")
    ap.add_argument("--unreachable-after", type=float, default=20.0, help="seconds without a Lease renewal that count as heartbeat lost")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--until", choices=["recovered", "unfenced"], default="recovered")
    ap.add_argument("--restarted-at", type=float, help="with --until unfenced: epoch seconds the node was powered back on; only what follows is shown")
    ap.add_argument("--kubectl", default="kubectl", help="kubectl command (may include flags, space-separated)")
    args = ap.parse_args()

    kc = args.kubectl.split()
    ns, pod_name = args.pod.split("/", 1)
    tl = Timeline(args.since)
    deadline = time.time() + args.timeout
    last_state = None
    recovered_at = None
    event_uids = set()
    events_since = args.since - 5
    if args.until == "unfenced":
        # Second act: the failure and recovery were already shown.
        restarted = args.restarted_at or time.time()
        tl.seen.update({"heartbeat lost", "notready", "cordoned", "tainted", "deleted", "terminating", "scheduled", "running"})
        recovered_at = restarted
        events_since = restarted
        # Events from the first act are not repeated.
        for ev in (kubectl(["get", "events", "-A", "-o", "json"], kc) or {}).get("items", []):
            event_uids.add(ev.get("metadata", {}).get("uid"))
        node = kubectl(["get", "node", args.node, "-o", "json"], kc)
        node = node if node and node is not NOT_FOUND else {}
        last_state = (node.get("metadata", {}).get("annotations") or {}).get(STATE_ANNOTATION)
        tl.emit("restarted", f"node {args.node} powered back on", restarted)

    while time.time() < deadline:
        now = time.time()
        lease = kubectl(["-n", "kube-node-lease", "get", "lease", args.node, "-o", "json"], kc)
        node = kubectl(["get", "node", args.node, "-o", "json"], kc)
        pod = kubectl(["-n", ns, "get", "pod", pod_name, "-o", "json"], kc)
        events = kubectl(["get", "events", "-A", "-o", "json"], kc)

        if lease is NOT_FOUND:
            lease = None
        if node is NOT_FOUND:
            node = None
        if lease:
            renew = parse_time(lease.get("spec", {}).get("renewTime"))
            if renew is not None and renew > (args.restarted_at or args.since + 1) and "heartbeat lost" in tl.seen:
                tl.emit("heartbeat back", "heartbeat back: the node's Lease is renewed again", renew)
            if renew is not None and now - renew > args.unreachable_after:
                tl.emit(
                    "heartbeat lost",
                    f"heartbeat lost: no Lease renewal for {args.unreachable_after:.0f}s "
                    f"(last renewal at {renew - args.since:+.1f}s)",
                )

        if node:
            conds = {c["type"]: c for c in node.get("status", {}).get("conditions", [])}
            ready = conds.get("Ready", {}).get("status")
            if ready != "True":
                tl.emit("notready", f"node {args.node} Ready={ready} (node lifecycle controller)")
            elif "notready" in tl.seen:
                tl.emit("ready again", f"node {args.node} Ready=True again")
            ann = (node.get("metadata", {}).get("annotations") or {}).get(STATE_ANNOTATION)
            if ann != last_state:
                short = ann if ann is None or len(ann) <= 100 else ann[:100] + "..."
                tl.emit(f"state:{ann}", f"kube-fencer state annotation: {short}")
                last_state = ann
            spec = node.get("spec", {})
            if spec.get("unschedulable"):
                tl.emit("cordoned", f"node {args.node} cordoned")
            taints = [t.get("key") for t in spec.get("taints") or []]
            if OOS_TAINT in taints:
                tl.emit("tainted", f"node {args.node} tainted {OOS_TAINT}")
            if "tainted" in tl.seen and OOS_TAINT not in taints:
                tl.emit("untainted", f"{OOS_TAINT} taint removed")
            if "cordoned" in tl.seen and not spec.get("unschedulable"):
                tl.emit("uncordoned", f"node {args.node} uncordoned")

        for ev in (events or {}).get("items", []):
            who = " ".join(
                str(x)
                for x in (
                    ev.get("reportingComponent"),
                    (ev.get("source") or {}).get("component"),
                    ev.get("reportingController"),
                )
                if x
            )
            if "fencer" not in who:
                continue
            uid = ev.get("metadata", {}).get("uid")
            ts = parse_time(ev.get("eventTime") or ev.get("lastTimestamp") or ev.get("firstTimestamp"))
            if uid in event_uids or (ts is not None and ts < events_since):
                continue
            event_uids.add(uid)
            obj = ev.get("involvedObject") or ev.get("regarding") or {}
            tl.emit(
                f"event:{uid}",
                f"event {ev.get('reason')} on {obj.get('kind')}/{obj.get('name')}: {ev.get('message') or ev.get('note') or ''}".rstrip(),
                ts if ts is not None and ts > args.since else None,
            )

        if pod is NOT_FOUND or (pod and pod.get("metadata", {}).get("uid") != args.old_uid):
            tl.emit("deleted", f"pod {args.pod} on {args.node} deleted")
        elif pod and pod.get("metadata", {}).get("deletionTimestamp"):
            tl.emit("terminating", f"pod {args.pod} marked for deletion (Terminating)")
        if pod and pod is not NOT_FOUND and pod.get("metadata", {}).get("uid") != args.old_uid:
            where = pod.get("spec", {}).get("nodeName")
            if where:
                tl.emit("scheduled", f"replacement {args.pod} scheduled to {where}")
            conds = {c["type"]: c.get("status") for c in pod.get("status", {}).get("conditions", [])}
            if pod.get("status", {}).get("phase") == "Running" and conds.get("Ready") == "True":
                claims = [
                    v["persistentVolumeClaim"]["claimName"]
                    for v in pod.get("spec", {}).get("volumes", [])
                    if "persistentVolumeClaim" in v
                ]
                pvcs = []
                for c in claims:
                    pvc = kubectl(["-n", ns, "get", "pvc", c, "-o", "json"], kc) or {}
                    pvcs.append(f"{c} (uid {pvc.get('metadata', {}).get('uid', '?')})")
                if tl.emit("running", f"RECOVERED: {args.pod} Running on {where} with PVC {', '.join(pvcs) or '-'}"):
                    recovered_at = time.time()
                    tl.flush()
                    print(f"  time to recovery: {recovered_at - args.since:.1f}s after the node failed", flush=True)
                    if args.until == "recovered":
                        return 0

        if args.until == "unfenced" and recovered_at and node:
            spec = node.get("spec", {})
            taints = [t.get("key") for t in spec.get("taints") or []]
            ann = (node.get("metadata", {}).get("annotations") or {}).get(STATE_ANNOTATION)
            if "heartbeat back" in tl.seen and OOS_TAINT not in taints and not spec.get("unschedulable") and ann is None:
                tl.emit("unfenced", f"node {args.node} unfenced (taint, cordon and annotation removed)")
                tl.flush()
                print(
                    f"  time to unfence: {time.time() - recovered_at:.1f}s after the node was powered back on",
                    flush=True,
                )
                return 0
        tl.flush()
        time.sleep(1)

    tl.flush()
    print(f"  timed out after {args.timeout:.0f}s", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
