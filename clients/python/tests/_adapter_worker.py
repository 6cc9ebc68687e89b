"""One business-server process using wechatpy through HubWeChatClient.

Started by test_wechatpy.py, several at once. Reads the client key from
WXHUB_CLIENT_KEY (not argv: argv is visible to every user of the machine).

    python _adapter_worker.py HUB_URL APPID SIM_URL [--prefetch]

Prints "ready" once its client exists (with --prefetch: once it holds the
hub's token), waits for a line on stdin, calls client.user.get_followers()
and prints one JSON line: {"total": n, "reports": k} or {"error": "..."}.
"""

from __future__ import annotations

import json
import os
import sys

from wxhub_client import HubClient
from wxhub_client.wechatpy import HubWeChatClient


def main() -> int:
    hub_url, appid, sim = sys.argv[1:4]
    hub = HubClient(hub_url, os.environ["WXHUB_CLIENT_KEY"], appid)
    reports = 0
    report = hub.invalidate

    def counting(failed: str) -> str:
        nonlocal reports
        reports += 1
        return report(failed)

    hub.invalidate = counting  # type: ignore[method-assign]
    client = HubWeChatClient(hub, api_base_url=sim, timeout=10)
    if "--prefetch" in sys.argv:
        hub.access_token()
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        followers = client.user.get_followers()
        out = {"total": followers["total"], "reports": reports}
    except Exception as e:  # the test reads the failure from stdout
        out = {"error": "%s: %s" % (type(e).__name__, e), "reports": reports}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
