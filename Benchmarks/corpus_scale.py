#!/usr/bin/env python3
"""Corpus-scale cluster benchmark (issue 15 §6): coordinator start → first lease (leases start while the
coordinator still scans), coordinator start → scan finished, coordinator and worker peak RSS, at small and
large manifests.

Generates manifests under --work (nothing is checked in) whose lines cycle over real demo images (so the
path check and decoding are real), starts a release coordinator, head and one worker on loopback
(plaintext: this measures memory and start-up, not encryption), and reads machine state only: the
coordinator's Prometheus samples (`featstream_shards_leased_total`, `..._committed_total`,
`featstream_scanning`) and each process's own peak RSS (VmHWM in /proc/PID/status, read just before it is
stopped, once the scan has ended and the worker committed --shards shards). Sizes alternate
(small, large, small, large, ...) so both see the same machine load.

    python3 Benchmarks/corpus_scale.py                                # 2,000 vs 2,000,000 lines, 2 rounds
    python3 Benchmarks/corpus_scale.py --sizes 2000,20000000 --rounds 1
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("FEATSTREAM_HOME", os.path.join(ROOT, ".featstream"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build():
    subprocess.run(["swift", "build", "-c", "release", "--product", "featstream"], cwd=ROOT, check=True)
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    return os.path.join(out, "featstream")


def demo_images(limit=256):
    root = os.path.join(HOME, "data/fashion-mnist-demo/imagefolder/val")
    images = []
    for label in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, label))):
            images.append((os.path.join(root, label, name), label))
    return images[:limit]


def write_manifest(path, lines, images):
    if os.path.exists(path):
        return
    with open(path + ".tmp", "w") as f:
        f.write("path,label\n")
        for start in range(0, lines, 100_000):
            f.write("".join("%s,%s\n" % images[i % len(images)] for i in range(start, min(lines, start + 100_000))))
    os.rename(path + ".tmp", path)


def counter(port, name):
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2).read().decode()
    except OSError:
        return None
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def one_job(binary, manifest, work, shards_to_commit):
    job = os.path.join(work, "job-%d" % os.getpid())
    shutil.rmtree(job, ignore_errors=True)
    os.makedirs(job)
    control, data, metrics = "tcp://127.0.0.1:%d" % free_port(), "tcp://127.0.0.1:%d" % free_port(), free_port()
    model = os.path.join(HOME, "models/efficientnet-lite0")
    logs = {name: open(os.path.join(job, name + ".log"), "w") for name in ["coordinator", "head", "worker"]}
    start = time.monotonic()
    coordinator = subprocess.Popen([binary, "coordinator", "--bind", control, "--head", data, "--data", manifest,
                                    "--journal", os.path.join(job, "coordinator.journal"), "--metrics-port", str(metrics),
                                    "--insecure-plaintext"], stdout=logs["coordinator"], stderr=subprocess.STDOUT)
    head = subprocess.Popen([binary, "head", "--bind", data, "--coordinator", control, "--store", os.path.join(job, "store"),
                             "--insecure-plaintext"], stdout=logs["head"], stderr=subprocess.STDOUT)
    worker = subprocess.Popen([binary, "worker", "--coordinator", control, "--model", model, "--name", "w0", "--batch", "16",
                               "--insecure-plaintext"], stdout=logs["worker"], stderr=subprocess.STDOUT)
    processes = [coordinator, head, worker]
    result = {}
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            leased = counter(metrics, "featstream_shards_leased_total")
            if leased and "first_lease_s" not in result:
                result["first_lease_s"] = round(time.monotonic() - start, 2)
            scanning = counter(metrics, "featstream_scanning")
            if scanning == 0 and leased and "scan_done_s" not in result:
                result["scan_done_s"] = round(time.monotonic() - start, 2)
            committed = counter(metrics, "featstream_shards_committed_total") or 0
            if committed >= shards_to_commit and "scan_done_s" in result:
                break
            time.sleep(0.05)
        result["committed_shards"] = counter(metrics, "featstream_shards_committed_total")
        result["coordinator_peak_rss_mib"] = round(peak_rss_mib(coordinator.pid), 1)
        result["worker_peak_rss_mib"] = round(peak_rss_mib(worker.pid), 1)
        result["head_peak_rss_mib"] = round(peak_rss_mib(head.pid), 1)
    finally:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(job, ignore_errors=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,2000000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shards", type=int, default=10, help="shards (of 64) the worker commits before the RSS is read")
    parser.add_argument("--work", default="/tmp/featstream-corpus-scale")
    args = parser.parse_args()
    binary = build()
    os.makedirs(args.work, exist_ok=True)
    images = demo_images()
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        write_manifest(os.path.join(args.work, "manifest-%d.csv" % size), size, images)
    rows = []
    for round_number in range(args.rounds):
        for size in sizes:
            r = one_job(binary, os.path.join(args.work, "manifest-%d.csv" % size), args.work, args.shards)
            r.update(lines=size, round=round_number)
            rows.append(r)
            print(json.dumps(r), flush=True)
    print(json.dumps({"load_average": os.getloadavg(), "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
