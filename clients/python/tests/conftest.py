"""A real ``wxhub dev`` (simulator + hub + demo account) per test, on loopback.

The binary is ``$WXHUB_BIN`` (default ``target/debug/wxhub`` at the
repository root). Keys are the ones the process generates and prints; they
stay in memory.
"""

from __future__ import annotations

import json
import os
import re
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
# The hub and the simulator are on loopback; a proxy from the environment
# must not stand between them and the tests.
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"


def wxhub_bin() -> Path:
    path = Path(os.environ.get("WXHUB_BIN", REPO / "target" / "debug" / "wxhub"))
    if not path.is_absolute():
        path = REPO / path
    if not path.exists():
        pytest.fail(
            "no wxhub binary at %s: build it (cargo build -p wxhub) or set WXHUB_BIN" % path,
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _json(method: str, url: str, body: Optional[Dict[str, Any]] = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read().decode())


@dataclass
class Dev:
    hub: str
    sim: str
    demo: str
    appid: str
    client_key: str = field(repr=False)
    proc: "subprocess.Popen[str]" = field(repr=False)

    def sim_stats(self) -> Dict[str, Any]:
        stats: Dict[str, Any] = _json("GET", self.sim + "/_sim/stats")["apps"][self.appid]
        return stats

    def tokens_issued(self) -> int:
        t = self.sim_stats()["tokens_issued"]
        return int(t["stable"]) + int(t["classic"])

    def arm_fault(self, endpoint: str, errcode: int, count: int = 1) -> None:
        _json("POST", self.sim + "/_sim/faults", {"endpoint": endpoint, "count": count, "errcode": errcode})

    def arm(self, fault: Dict[str, Any]) -> None:
        _json("POST", self.sim + "/_sim/faults", fault)

    def openid(self, person: str) -> str:
        return str(_json("GET", "%s/_sim/openid?appid=%s&person=%s" % (self.sim, self.appid, person))["openid"])

    def kill_token_elsewhere(self) -> str:
        """Forces a new stable token the way another system with the AppSecret would.

        The platform kills the hub's token at once (stable_force_grace_seconds
        is 0 in the demo world), so the next call with it gets a real 40001.
        """
        world = _json("GET", self.sim + "/_sim/world")
        secret = next(a["secret"] for a in world["accounts"] if a["appid"] == self.appid)
        body = _json(
            "POST",
            self.sim + "/cgi-bin/stable_token",
            {"grant_type": "client_credential", "appid": self.appid, "secret": secret, "force_refresh": True},
        )
        assert "access_token" in body, "the simulator refused the foreign force refresh: %r" % (body.get("errcode"),)
        return str(body["access_token"])

    def metrics(self) -> List[str]:
        with urllib.request.urlopen(self.hub + "/metrics", timeout=10) as resp:
            return resp.read().decode().splitlines()

    def requests_to(self, route_tail: str, status: Optional[str] = None) -> int:
        """Sum of wxhub_http_requests_total for client "dev" on /v1/apps/{appid}/<route_tail>."""
        labels = {"client": "dev", "route": "/v1/apps/{appid}/" + route_tail}
        if status is not None:
            labels["status"] = status
        return int(self.metric("wxhub_http_requests_total", **labels))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            if metric != name:
                continue
            # Label values may hold braces (route="/v1/apps/{appid}/..."):
            # read quoted values, never split on "}".
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(value)
        return total


def _lines_of(proc: "subprocess.Popen[str]") -> "queue.Queue[Optional[str]]":
    """stdout lines as they come, then None; read by a thread so a wait can time out."""
    out: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def start_dev() -> Dev:
    binary = wxhub_bin()
    last_error = ""
    # A port picked free can be taken before the process binds it: try again.
    for _ in range(3):
        hub_port, sim_port, demo_port = free_port(), free_port(), free_port()
        proc = subprocess.Popen(
            [
                str(binary),
                "dev",
                "--listen", "127.0.0.1:%d" % hub_port,
                "--sim-listen", "127.0.0.1:%d" % sim_port,
                "--demo-listen", "127.0.0.1:%d" % demo_port,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ, RUST_LOG="warn"),
        )
        lines = _lines_of(proc)
        fields: Dict[str, str] = {}
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            m = re.match(r"\s+(account|client key|hub|simulator|demo page)\s+(\S+)", line)
            if m:
                fields[m.group(1)] = m.group(2)
            if line.startswith("listening on "):
                break
        if {"account", "client key", "hub", "simulator", "demo page"} <= fields.keys():
            return Dev(
                hub=fields["hub"],
                sim=fields["simulator"],
                demo=fields["demo page"],
                appid=fields["account"],
                client_key=fields["client key"],
                proc=proc,
            )
        last_error = "exit status %r" % proc.poll()
        stop_dev(proc)
    raise RuntimeError("wxhub dev did not print its addresses and keys (%s)" % last_error)


def stop_dev(proc: "subprocess.Popen[str]") -> None:
    if proc.poll() is None:
        # SIGINT is what wxhub dev waits for: it shuts the hub down and
        # removes its temporary store.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def dev() -> Iterator[Dev]:
    d = start_dev()
    try:
        yield d
    finally:
        stop_dev(d.proc)
