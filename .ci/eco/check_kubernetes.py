"""The Kubernetes manifests parse and agree with each other and with the hub.

    python check_kubernetes.py DIR HUB_URL OUT_DIR

- every YAML document parses; kustomization.yaml lists files that exist, and every manifest is listed;
- the Deployment's container port is the `listen` port of the wxhub.toml in the ConfigMap, and its
  probes and the Service point at that port (by name or number);
- the probe paths answer 200 on a running hub (HUB_URL: a wxhub dev);
- the files the configuration reads (secret_file, state_secret_file) are where the Secret volume is
  mounted, with the Secret's items; the Redis URL's environment variable comes from the same Secret;
- terminationGracePeriodSeconds leaves time after the preStop sleep for the hub's own shutdown;
- the PodDisruptionBudget and the Service select the Deployment's pods.

Writes OUT_DIR/wxhub.toml (the ConfigMap's configuration) and OUT_DIR/env (the overrides that point
its secret files at stand-ins) for `wxhub check` to load next.
"""

from __future__ import annotations

import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import yaml


def fail(msg: str) -> None:
    raise SystemExit("kubernetes: " + msg)


def main() -> int:
    root, hub, out = Path(sys.argv[1]), sys.argv[2].rstrip("/"), Path(sys.argv[3])
    docs: List[Dict[str, Any]] = []
    files = sorted(root.glob("*.yaml"))
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    for f in files:
        if f.name == "kustomization.yaml":
            continue
        if f.name not in listed:
            fail("%s is not listed in kustomization.yaml" % f.name)
        for d in yaml.safe_load_all(f.read_text()):
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                fail("%s: a document without kind/apiVersion" % f.name)
            docs.append(d)
    for name in listed:
        if not (root / name).exists():
            fail("kustomization.yaml lists %s, which does not exist" % name)

    def one(kind: str) -> Dict[str, Any]:
        found = [d for d in docs if d["kind"] == kind]
        if len(found) != 1:
            fail("expected one %s, found %d" % (kind, len(found)))
        return found[0]

    deploy, svc, pdb, cm = one("Deployment"), one("Service"), one("PodDisruptionBudget"), one("ConfigMap")
    config = tomllib.loads(cm["data"]["wxhub.toml"])
    listen_port = int(config["listen"].rsplit(":", 1)[1])

    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    if deploy["spec"]["selector"]["matchLabels"].items() - labels.items():
        fail("the Deployment's selector does not match its pods")
    for what, sel in (("PodDisruptionBudget", pdb["spec"]["selector"]["matchLabels"]), ("Service", svc["spec"]["selector"])):
        if sel.items() - labels.items():
            fail("the %s does not select the Deployment's pods" % what)
    if deploy["spec"]["replicas"] < 2 or "maxUnavailable" not in pdb["spec"]:
        fail("several replicas and a PodDisruptionBudget with maxUnavailable are expected")
    if config["store"]["kind"] != "redis":
        fail("several replicas need store.kind = \"redis\" (shared mode)")

    (container,) = pod["spec"]["containers"]
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    if listen_port not in ports.values():
        fail("containerPort %s is not the configured listen port %d" % (sorted(ports.values()), listen_port))

    def port_of(ref: Any) -> int:
        return ports[ref] if isinstance(ref, str) else int(ref)

    probes = {}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            continue
        if port_of(get["port"]) != listen_port:
            fail("%s probes port %r, not the listen port %d" % (probe, get["port"], listen_port))
        probes[probe] = get["path"]
    if probes.get("livenessProbe") != "/healthz" or probes.get("readinessProbe") != "/readyz":
        fail("liveness must probe /healthz and readiness /readyz, got %r" % probes)
    if port_of(svc["spec"]["ports"][0]["targetPort"]) != listen_port:
        fail("the Service's targetPort is not the listen port")
    for path in sorted(set(probes.values())):
        try:
            with urllib.request.urlopen(hub + path, timeout=10) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        if status != 200:
            fail("%s on a running hub answered %d" % (path, status))

    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    pre = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre[-1]) if pre and pre[0].endswith("sleep") else 0
    if not 0 < sleep < grace - 10:
        fail("preStop sleeps %ss of a %ss grace period: the hub needs time after it to hand its leases back" % (sleep, grace))

    # Secret files: where the configuration reads them is where the Secret is mounted.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    secret_files = {}
    for m in container["volumeMounts"]:
        v = volumes.get(m["name"])
        if v is None:
            fail("volumeMount %s has no volume" % m["name"])
        if "secret" in v:
            for item in v["secret"]["items"]:
                secret_files[m["mountPath"].rstrip("/") + "/" + item["path"]] = (v["secret"]["secretName"], item["key"])
        if "configMap" in v and v["configMap"]["name"] != cm["metadata"]["name"]:
            fail("the config volume names ConfigMap %s, not %s" % (v["configMap"]["name"], cm["metadata"]["name"]))
    wanted = [a["secret_file"] for a in config["accounts"]] + [config["oauth"]["state_secret_file"]]
    for path in wanted:
        if path not in secret_files:
            fail("the configuration reads %s, which no Secret item is mounted at" % path)
    secret_names = {name for name, _ in secret_files.values()}
    env = {e["name"]: e for e in container.get("env", [])}
    url_env = config["store"]["url_env"]
    ref = env.get(url_env, {}).get("valueFrom", {}).get("secretKeyRef")
    if ref is None or ref["name"] not in secret_names:
        fail("%s (store.url_env) must come from the same Secret (secretKeyRef)" % url_env)
    sec = container.get("securityContext", {})
    if not (pod["spec"]["securityContext"].get("runAsNonRoot") and sec.get("readOnlyRootFilesystem") and sec.get("allowPrivilegeEscalation") is False):
        fail("the pod must run as non-root with a read-only root filesystem and no privilege escalation")

    # For `wxhub check`: the same configuration, its secret files replaced by stand-ins in OUT_DIR.
    out.mkdir(parents=True, exist_ok=True)
    (out / "wxhub.toml").write_text(cm["data"]["wxhub.toml"])
    lines = ["%s=redis://127.0.0.1:6379/0" % url_env]
    for i, a in enumerate(config["accounts"]):
        stand_in = out / ("account-%d" % i)
        stand_in.write_text("a-stand-in-appsecret-for-the-check\n")
        lines.append("WXHUB__ACCOUNTS__%d__SECRET_FILE=%s" % (i, stand_in))
    state = out / "state-secret"
    state.write_text("x" * 48 + "\n")
    lines.append("WXHUB__OAUTH__STATE_SECRET_FILE=%s" % state)
    (out / "env").write_text("\n".join(lines) + "\n")
    print(
        "kubernetes: %d documents; port %d; probes %s answer 200; %d secret files mounted where the config reads them"
        % (len(docs), listen_port, sorted(set(probes.values())), len(wanted))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
