"""Live Azure inventory through the real azure-mgmt clients against a local ARM fake on 127.0.0.1."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from azure.core.credentials import AccessToken

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes.azure_arm import arm_handler, nic, vm
from fakes.http import serve

from spendwatch.connectors.azure.inventory import AzureOptions, list_inventory
from spendwatch.connectors.azure.permissions import permissions, role
from spendwatch.report import RunReport

SUB, LOCKED, BUSY = "11111111-aaaa-4aaa-8aaa-111111111111", "22222222-bbbb-4bbb-8bbb-222222222222", \
    "33333333-cccc-4ccc-8ccc-333333333333"


class _Token:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


def test_inventory_pages_retries_and_reports_denied_subscriptions() -> None:
    nic1 = f"/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Network/networkInterfaces/gpu-1-nic"
    pages = {SUB: [[vm(SUB, "gpu-1", "Standard_NC24ads_A100_v4", nic1)],
                   [vm(SUB, "web-1", "Standard_D4s_v5", nic1 + "x")]],
             BUSY: [[vm(BUSY, "nd-1", "Standard_ND96asr_v4", "none")]]}
    base: dict[str, str] = {}
    handler = arm_handler(base, pages, {SUB: [nic(nic1, "10.1.1.4")]}, denied=frozenset({LOCKED}),
                          throttle_once=frozenset({BUSY}))
    report = RunReport()
    with serve(handler) as (url, log):
        base["url"] = url
        inv = list_inventory([SUB, LOCKED, BUSY], report, AzureOptions(credential=_Token(), base_url=url,
                                                                       allow_http=True, retry_backoff_factor=0.01))
    rows = inv.set_index("resource")
    gpu = rows.loc[f"/subscriptions/{SUB}/resourcegroups/rg/providers/microsoft.compute/virtualmachines/gpu-1"]
    assert (gpu["cloud"], gpu["account"], gpu["gpus"], gpu["vcpus"], gpu["spot"], gpu["private_ips"]) == \
        ("azure", SUB, 1, 24, True, "10.1.1.4")
    assert len(inv) == 3 and sorted(inv["gpus"]) == [0, 1, 8]
    assert [q.get("$skiptoken") for _, p, q in log if SUB in p and p.endswith("virtualMachines")] == [None, "1"]
    assert sum(BUSY in p and p.endswith("virtualMachines") for _, p, _ in log) == 2  # 429, then retried
    assert [g.source for g in report.gaps] == [f"azure/{LOCKED}/inventory"]
    assert "access denied" in report.gaps[0].reason


def test_role_definition() -> None:
    body = role()
    assert body["Actions"] == permissions() and "Microsoft.Compute/virtualMachines/read" in body["Actions"]
    assert body["IsCustom"] is True
