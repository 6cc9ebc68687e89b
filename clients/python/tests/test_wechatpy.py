"""wechatpy 1.8 (the real package from PyPI) with HubWeChatClient, against a real wxhub dev."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from wechatpy.exceptions import WeChatClientException  # type: ignore[import-untyped]

from wxhub_client import HubClient
from wxhub_client.wechatpy import HubWeChatClient

from conftest import Dev

WORKER = Path(__file__).with_name("_adapter_worker.py")


def wechat(dev: Dev) -> HubWeChatClient:
    return HubWeChatClient(HubClient(dev.hub, dev.client_key, dev.appid), api_base_url=dev.sim, timeout=10)


def test_wechatpy_calls_reach_the_platform_with_the_hubs_token(dev: Dev) -> None:
    client = wechat(dev)
    alice = dev.openid("alice")
    followers = client.user.get_followers()
    assert alice in followers["data"]["openid"]
    user = client.user.get(alice)
    assert (user["openid"], user["subscribe"]) == (alice, 1)
    calls = dev.sim_stats()["calls"]
    # The simulator attributes a call through its access_token: these came
    # with the demo account's token, the one the hub fetched.
    assert calls["/cgi-bin/user/get"] == 1 and calls["/cgi-bin/user/info"] == 1
    assert dev.tokens_issued() == 1
    assert dev.requests_to("access_token") == 1


def test_a_rejected_token_is_reported_once_and_the_call_still_succeeds(dev: Dev) -> None:
    client = wechat(dev)
    client.access_token  # noqa: B018 - cached before the fault, as in a warm process
    before = dev.sim_stats()
    dev.arm_fault("/cgi-bin/user/get", 40001)
    followers = client.user.get_followers()
    assert dev.openid("alice") in followers["data"]["openid"]
    after = dev.sim_stats()
    assert after["faults_fired"] - before["faults_fired"] == 1
    assert dev.requests_to("access_token/invalidate") == 1
    assert dev.tokens_issued() - 1 <= 1, "at most one refresh"
    assert after["force_refreshes"] - before["force_refreshes"] <= 1
    assert after["tokens_issued"]["classic"] == 0, "nothing called /cgi-bin/token"


def test_a_second_token_error_raises_wechatpys_exception(dev: Dev) -> None:
    client = wechat(dev)
    dev.arm_fault("/cgi-bin/user/get", 40001, count=3)
    with pytest.raises(WeChatClientException) as err:
        client.user.get_followers()
    assert err.value.errcode == 40001
    assert dev.sim_stats()["calls"]["/cgi-bin/user/get"] == 2, "one call and one retry, no recursion"
    assert dev.requests_to("access_token/invalidate") == 1


def test_other_errors_are_wechatpys_as_before(dev: Dev) -> None:
    client = wechat(dev)
    with pytest.raises(WeChatClientException) as err:
        client.user.get("o" + "x" * 27)
    assert err.value.errcode == 40003
    assert dev.requests_to("access_token/invalidate") == 0


def test_js_sdk_tickets_come_from_the_hub(dev: Dev) -> None:
    client = wechat(dev)
    ticket = client.jsapi.get_jsapi_ticket()
    assert ticket == client.hub.jsapi_ticket()
    signature = client.jsapi.get_jsapi_signature("nonce", ticket, 1700000000, "http://127.0.0.1/")
    assert len(signature) == 40
    assert dev.sim_stats()["tickets_issued"]["jsapi"] == 1, "only the hub fetched a ticket"


def test_the_client_never_fetches_a_token_itself(dev: Dev) -> None:
    client = wechat(dev)
    with pytest.raises(RuntimeError, match="wxhub"):
        client.fetch_access_token()
    assert dev.sim_stats()["calls"].get("/cgi-bin/token") is None


def run_workers(dev: Dev, n: int, prefetch: bool, between: Any = None) -> List[Dict[str, Any]]:
    """n processes: each says ready, then all are released together."""
    env = dict(os.environ, WXHUB_CLIENT_KEY=dev.client_key, PYTHONPATH=str(WORKER.parent))
    args = [sys.executable, str(WORKER), dev.hub, dev.appid, dev.sim] + (["--prefetch"] if prefetch else [])
    procs = [
        subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        if between is not None:
            between()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=60)
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_eight_processes_at_once_cause_one_upstream_fetch_in_all(dev: Dev) -> None:
    results = run_workers(dev, 8, prefetch=False)
    assert all("error" not in r for r in results), results
    assert all(r["total"] >= 1 and r["reports"] == 0 for r in results), results
    # The hub's one fetch at start; eight cold processes added none.
    assert dev.tokens_issued() == 1
    assert dev.requests_to("access_token") == 8
    assert dev.sim_stats()["calls"]["/cgi-bin/user/get"] == 8


def test_eight_processes_report_a_killed_token_once_each_and_the_hub_refreshes_once(dev: Dev) -> None:
    refreshes_before: List[float] = []

    def kill() -> None:
        # Every worker holds the hub's token now: the hub's own fetch is done.
        refreshes_before.append(dev.metric("wxhub_refresh_total", kind="access_token"))
        dev.kill_token_elsewhere()

    results = run_workers(dev, 8, prefetch=True, between=kill)
    assert all("error" not in r for r in results), results
    assert [r["reports"] for r in results] == [1] * 8, results
    # 200s only: a hub that rate-limits invalidate per client may answer some with 429 first,
    # which the client waits out (Retry-After) and repeats; each process still reports once.
    assert dev.requests_to("access_token/invalidate", "200") == 8
    assert dev.metric("wxhub_refresh_total", kind="access_token") - refreshes_before[0] <= 1
    # Eight failed calls and eight retries.
    assert dev.sim_stats()["calls"]["/cgi-bin/user/get"] == 16
