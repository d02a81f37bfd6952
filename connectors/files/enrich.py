"""Joins across files: `inventory` from CloudTrail launches, and the instance behind a flow or a DNS query.

A flow log without `instance-id` names only the network interface; a Resolver log line without
`srcids.instance` names only the private source address. The RunInstances responses in CloudTrail carry both
(networkInterfaceSet, privateIpAddress), so the connector maps interface -> instance for flows and
(account, private IP, time) -> instance for DNS: private IPs are reused after an instance ends, so a query
goes to the instance that held the address most recently before it. Nothing is guessed beyond that: a flow
whose interface no launch names keeps a null resource. This module reads no files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from spendwatch import catalog

from ._common import CLOUD, Launch, schema, to_pandas

INVENTORY_SCHEMA = schema("inventory")
# When one instance has several state changes at the same instant, the later lifecycle stage wins.
_STAGE = {"start": 0, "stop": 1, "terminate": 2}
_STATE = {"start": "running", "stop": "stopped", "terminate": "terminated"}


def attach_addresses(launches: list[Launch], addresses: dict[str, list[str]]) -> None:
    """Give each launch the private addresses of the interfaces it names, where its own record had none
    (an Azure VM write names its NICs; the NIC writes carry the addresses). Ids compare case-insensitively."""
    if not addresses:
        return
    lower = {k.lower(): v for k, v in addresses.items()}
    for launch in launches:
        if launch.private_ips:
            continue
        ips = [ip for eni in launch.interfaces for ip in lower.get(eni.lower(), [])]
        launch.private_ips.extend(dict.fromkeys(ips))


def first_launches(launches: Iterable[Launch]) -> dict[str, Launch]:
    """One launch per instance (the earliest): the same event can arrive in an account and an org trail."""
    out: dict[str, Launch] = {}
    for launch in launches:
        seen = out.get(launch.resource)
        if seen is None or launch.launched_at < seen.launched_at:
            out[launch.resource] = launch
    return out


def inventory(launches: dict[str, Launch], changes: list[tuple[datetime, str, str]]) -> pd.DataFrame:
    """Instances launched in the data, with their last known state (running unless a later event says)."""
    state: dict[str, tuple[datetime, int, str]] = {}
    for when, instance, action in changes:
        launch = launches.get(instance)
        if launch is not None and when < launch.launched_at:
            continue
        candidate = (when, _STAGE[action], _STATE[action])
        if instance not in state or candidate[:2] > state[instance][:2]:
            state[instance] = candidate
    rows = []
    for resource, launch in sorted(launches.items()):
        known = catalog.lookup(launch.instance_type) if launch.cloud == CLOUD else None
        rows.append({
            "resource": resource, "cloud": launch.cloud, "account": launch.account, "region": launch.region,
            "instance_type": launch.instance_type,
            "gpus": launch.gpus if launch.gpus is not None else (known.gpus if known else None),
            "vcpus": launch.vcpus if launch.vcpus is not None else (known.vcpus if known else None),
            "spot": launch.spot,
            "state": state[resource][2] if resource in state else "running",
            "launched_at": launch.launched_at, "launched_by": launch.launched_by,
            "launched_by_type": launch.launched_by_type,
            "tags": json.dumps(launch.tags, sort_keys=True),
            "interfaces": " ".join(launch.interfaces) or None,
            "private_ips": " ".join(launch.private_ips) or None,
            "protected": None,
        })
    return to_pandas(pa.Table.from_pylist(rows, schema=INVENTORY_SCHEMA))


def fill_flow_resources(flows: pa.Table, launches: dict[str, Launch]) -> pa.Table:
    """Null `resource` filled with the instance that owns the flow's interface, in one vectorised lookup."""
    pairs = {eni: launch.resource for launch in launches.values() for eni in launch.interfaces}
    if not pairs or flows.num_rows == 0:
        return flows
    enis = pa.array(list(pairs), flows.schema.field("interface").type)
    instances = pa.array(list(pairs.values()), flows.schema.field("resource").type)
    mapped = pc.take(instances, pc.index_in(flows["interface"], value_set=enis))
    resource = pc.coalesce(flows["resource"], mapped)
    return flows.set_column(flows.schema.get_field_index("resource"), "resource", resource)


def fill_dns_resources(dns: pd.DataFrame, launches: dict[str, Launch]) -> pd.DataFrame:
    """Null `resource` filled from (account, source address): the instance that held the address last
    before the query, or failing that the first one to hold it after."""
    held = pd.DataFrame(
        [(launch.account, ip, launch.launched_at, launch.resource)
         for launch in launches.values() for ip in launch.private_ips],
        columns=["account", "src", "held_from", "holder"],
    )
    need = dns["resource"].isna() & dns["src"].notna()
    if held.empty or not need.any():
        return dns
    held["held_from"] = pd.to_datetime(held["held_from"], utc=True).astype("datetime64[ns, UTC]")
    held = held.astype({"account": "str", "src": "str", "holder": "str"}).sort_values("held_from")
    want = dns.loc[need, ["time", "account", "src"]].reset_index().sort_values("time")
    found: pd.Series | None = None
    for direction in ("backward", "forward"):
        matched = pd.merge_asof(want, held, left_on="time", right_on="held_from", by=["account", "src"],
                                direction=direction)
        holder = matched.set_index("index")["holder"]
        found = holder if found is None else found.fillna(holder)
    assert found is not None
    out = dns.copy()
    out.loc[found.index, "resource"] = found
    return out
