#!/usr/bin/env python3
"""Cold start to first window, and idle memory (RSS and PSS, every process of the app) after
60 s and CPU over the 60 s after that, for Countersign in demo mode with 20 items pending, beside a minimal Tauri 2 app
measured the same way in the same run. Run inside scripts/session.sh (a display, D-Bus, a
keyring). Figures only: nothing here passes or fails.

    python3 e2e/measure.py COUNTERSIGN_BINARY MINIMAL_BINARY [--runs N] [--settle S] [--idle S]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK = os.sysconf("SC_CLK_TCK")


def tree(pid):
    """`pid` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def memory(pids):
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK


def window_shown(title):
    out = subprocess.run(["xwininfo", "-root", "-tree"], capture_output=True, text=True).stdout
    return any(f'"{title}"' in line and "x" in line for line in out.splitlines())


def submit_pending(demo_dir, n):
    path = os.path.join(demo_dir, "demo.json")
    until = time.monotonic() + 30
    while not os.path.exists(path):  # written once the embedded broker listens
        if time.monotonic() > until:
            raise RuntimeError("the demo did not start its broker")
        time.sleep(0.05)
    with open(path) as f:
        demo = json.load(f)
    agent = demo["agents"][0]
    for i in range(n):
        body = {
            "subject": {"type": "user", "id": demo["owner"]},
            "actor": {"id": agent["id"], **({"act": {"sub": agent["delegated_by"]}} if agent["delegated_by"] else {})},
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "id": "stripe/refunds.create"},
            "context": {"intent": f"Refund order {7000 + i} after a complaint",
                        "arguments": {"order": str(7000 + i), "amount": "5000.00", "currency": "EUR"},
                        "data": {"domain": "payments", "classification": ["financial"]}},
        }
        req = urllib.request.Request(demo["broker"] + "/access/v1/evaluation", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Authorization": "Bearer " + agent["secret"]})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert not json.loads(r.read())["decision"]


def run(binary, args, title, settle, idle, demo):
    env = dict(os.environ)
    demo_dir = tempfile.mkdtemp(prefix="countersign-measure-")
    if demo:
        # One scripted call, then an hour's pause: the 20 pending items are ours.
        env.update(COUNTERSIGN_DEMO_DIR=demo_dir, COUNTERSIGN_DEMO_PAUSE_MS="3600000")
    start = time.monotonic()
    proc = subprocess.Popen([binary, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not window_shown(title):
            if time.monotonic() - start > 60:
                raise RuntimeError(f"{binary}: no window after 60 s")
            time.sleep(0.02)
        cold = time.monotonic() - start
        if demo:
            submit_pending(demo_dir, 20)
        # Idle for `settle` seconds with the items pending (arrival, notifications, the UI's
        # refreshes all happen then), then memory, and CPU over the next `idle` seconds.
        time.sleep(settle)
        pids = tree(proc.pid)
        rss, pss = memory(pids)
        cpu0 = cpu_seconds(pids)
        time.sleep(idle)
        cpu = (cpu_seconds(tree(proc.pid)) - cpu0) / idle * 100
        return {"cold_start_s": cold, "rss_mb": rss, "pss_mb": pss, "idle_cpu_pct": cpu, "processes": len(pids)}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    ours, minimal = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
    idle = float(sys.argv[sys.argv.index("--idle") + 1]) if "--idle" in sys.argv else 60
    settle = float(sys.argv[sys.argv.index("--settle") + 1]) if "--settle" in sys.argv else 60
    results = {"countersign": [], "minimal": []}
    for i in range(runs):
        results["minimal"].append(run(minimal, [], "Minimal", settle, idle, False))
        results["countersign"].append(run(ours, ["--demo"], "Countersign", settle, idle, True))
        print(f"run {i + 1}: {json.dumps(results)}", file=sys.stderr)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    print(f"{'':14}{'cold start':>12}{'RSS MB':>10}{'PSS MB':>10}{'idle CPU %':>12}{'procs':>7}")
    for k in ("minimal", "countersign"):
        m = med[k]
        print(f"{k:14}{m['cold_start_s']:>11.2f}s{m['rss_mb']:>10.0f}{m['pss_mb']:>10.0f}{m['idle_cpu_pct']:>12.2f}{m['processes']:>7.0f}")
    print(f"ratio (countersign / minimal): RSS {med['countersign']['rss_mb'] / med['minimal']['rss_mb']:.2f}, "
          f"PSS {med['countersign']['pss_mb'] / med['minimal']['pss_mb']:.2f} (medians of {runs} runs; memory after {settle:.0f} s idle, CPU over the {idle:.0f} s after that)")


if __name__ == "__main__":
    main()
