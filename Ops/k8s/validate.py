#!/usr/bin/env python3
"""Structural checks of the FeatureStream Kubernetes manifests (no cluster needed).

python3 Ops/k8s/validate.py          # exit 0 when every document parses and has what it needs
python3 Ops/k8s/validate.py --json   # also print, per container, its args and the file modes it sees
                                     # (Tests/LaunchTests checks them against RoleCommand and the key loader)
"""
import json, pathlib, sys
import yaml

here = pathlib.Path(__file__).parent
errors, docs = [], []
for path in sorted(here.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is not None:
            docs.append((path.name, doc))

def need(cond, where, what):
    if not cond:
        errors.append(f"{where}: {what}")

claims = {d["metadata"]["name"] for _, d in docs if d.get("kind") == "PersistentVolumeClaim"}
secrets = {d["metadata"]["name"] for _, d in docs if d.get("kind") == "Secret"}
pods = {}
rendered = []
for name, d in docs:
    where = f"{name}:{d.get('kind')}/{d.get('metadata', {}).get('name')}"
    for key in ("apiVersion", "kind", "metadata"):
        need(key in d, where, f"missing {key}")
    need("name" in d.get("metadata", {}), where, "missing metadata.name")
    if d["kind"] != "Namespace":
        need(d["metadata"].get("namespace") == "featstream", where, "namespace is not featstream")
    if d["kind"] in ("Deployment", "Job"):
        spec = d["spec"]
        tmpl = spec["template"]
        labels = tmpl["metadata"]["labels"]
        if d["kind"] == "Deployment":
            need(spec.get("replicas") == 1, where, "coordinator/head must have exactly one replica")
            need(spec.get("strategy", {}).get("type") == "Recreate", where, "strategy must be Recreate")
            sel = spec["selector"]["matchLabels"]
            need(all(labels.get(k) == v for k, v in sel.items()), where, "selector does not match template labels")
        else:
            need(tmpl["spec"].get("restartPolicy") in ("OnFailure", "Never"), where, "Job restartPolicy")
            need(spec.get("parallelism") and spec.get("completions") and spec["completions"] <= spec["parallelism"],
                 where, "completions must be set and not exceed parallelism")
        pods[d["metadata"]["name"]] = labels
        vols = {v["name"]: v for v in tmpl["spec"].get("volumes", [])}
        for v in vols.values():
            if "persistentVolumeClaim" in v:
                need(v["persistentVolumeClaim"]["claimName"] in claims, where, f"unknown claim {v}")
            if "secret" in v:
                need(v["secret"]["secretName"] in secrets, where, f"secret {v['secret']['secretName']} not in keys-secret.example.yaml")
        # File modes every container sees: each Secret volume's defaultMode and item modes.
        modes = []
        for v in vols.values():
            if "secret" in v:
                modes.append({"volume": v["name"], "mode": v["secret"].get("defaultMode", 0o644)})
                modes += [{"volume": v["name"], "mode": i["mode"]} for i in v["secret"].get("items", []) if "mode" in i]
        for c in tmpl["spec"].get("initContainers", []) + tmpl["spec"]["containers"]:
            rendered.append({"file": name, "kind": d["kind"], "container": c["name"], "init": c in tmpl["spec"].get("initContainers", []),
                             "args": c.get("args", []), "secretModes": modes,
                             "keysVolume": vols.get("keys"), "mounts": c.get("volumeMounts", [])})
        for c in tmpl["spec"]["containers"]:
            need(c.get("image"), where, "container without image")
            r = c.get("resources", {})
            need(r.get("requests") and r.get("limits"), where, f"{c['name']}: requests and limits")
            need("readinessProbe" in c, where, f"{c['name']}: readinessProbe")
            ports = {p["name"] for p in c.get("ports", [])}
            probe = c.get("readinessProbe", {}).get("httpGet", {})
            need(probe.get("port") in ports, where, f"{c['name']}: probe port not a named container port")
            for m in c.get("volumeMounts", []):
                need(m["name"] in vols, where, f"{c['name']}: mount of undeclared volume {m['name']}")
                if m["name"] == "keys":
                    need(m.get("readOnly") is True, where, "key mounts must be read-only")
                    need(vols["keys"].get("emptyDir", {}).get("medium") == "Memory", where, "the key folder must be a memory-backed emptyDir")
                if m["name"].startswith("secret-"):
                    errors.append(f"{where}: {c['name']} mounts a Secret directly; only the install-keys init container may")
            for e in c.get("env", []) + c.get("envFrom", []):
                need("secretKeyRef" not in e.get("valueFrom", {}) and "secretRef" not in e, where,
                     "keys must be mounted as files, not passed in env")
            args = " ".join(c.get("args", []))
            need("--bind=tcp://0.0.0.0:" in args or c["name"] == "worker", where, "servers bind tcp://0.0.0.0:PORT")
for name, d in docs:
    if d["kind"] == "Service":
        sel = d["spec"]["selector"]
        need(any(all(l.get(k) == v for k, v in sel.items()) for l in pods.values()), f"{name}:Service", "selects no pod template")
kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for _, d in docs)
print(f"{len(docs)} documents: " + ", ".join(kinds))
if "--json" in sys.argv:
    print("JSON " + json.dumps(rendered))
for e in errors:
    print("ERROR", e)
sys.exit(1 if errors else 0)
