"""deploy/compose/compose.yaml parses and wires what setup.sh makes to every service.

    python check_compose.py deploy/compose/compose.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def main() -> int:
    path = Path(sys.argv[1])
    doc = yaml.safe_load(path.read_text())
    services = doc["services"]
    hubs = sorted(n for n in services if n.startswith("hub"))
    if hubs != ["hub1", "hub2", "hub3"]:
        raise SystemExit("compose: expected hub1, hub2, hub3, found %s" % hubs)
    for name in ("setup", "sim", "redis"):
        if name not in services:
            raise SystemExit("compose: no %s service" % name)
    setup = services["setup"]
    run_dir = setup["environment"]["DIR"]
    script = setup["entrypoint"][-1]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in setup["volumes"]}
    if script not in mounted or not (path.parent / mounted[script]).exists():
        raise SystemExit("compose: setup runs %s, which is not mounted from an existing file" % script)
    if setup["environment"]["SIM_URL"] != "http://sim:%s" % services["sim"]["command"][-1].rsplit(":", 1)[1]:
        raise SystemExit("compose: setup's SIM_URL is not where the sim listens")
    if "%s/world.toml" % run_dir not in services["sim"]["command"]:
        raise SystemExit("compose: the sim does not load the world setup writes")
    host_ports = set()
    for name in hubs:
        hub = services[name]
        if hub["command"] != ["serve", "--config", "%s/wxhub.toml" % run_dir]:
            raise SystemExit("compose: %s does not serve the configuration setup writes" % name)
        if not hub["environment"]["WXHUB_REDIS_URL"].startswith("redis://redis:"):
            raise SystemExit("compose: %s does not use the redis service" % name)
        if hub["depends_on"]["setup"]["condition"] != "service_completed_successfully":
            raise SystemExit("compose: %s may start before setup has finished" % name)
        if not any(v.startswith("run:%s" % run_dir) for v in hub["volumes"]):
            raise SystemExit("compose: %s does not mount %s" % (name, run_dir))
        (port,) = hub["ports"]
        host_ports.add(port)
        if not port.endswith(":8780"):
            raise SystemExit("compose: %s does not publish the hub's port 8780" % name)
    if len(host_ports) != 3:
        raise SystemExit("compose: the three hubs must publish distinct host ports")
    print("compose: setup, sim, redis and %s wired to %s" % (", ".join(hubs), run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
