"""The live Azure scan: diagnostic-settings and cost-export blobs in storage accounts, and ARM's inventory.

`scan(config, report, marks=...)` lists, for each `logs` storage account and each subscription, the
subscription's folder of the Activity Log, VNet flow log and VM metrics containers; and each `cost` export
folder. Blob names put the resource before the date, so scopes are listed by modification time
(`spendwatch.connectors.live.plan_by_time`): an hour's `PT1H.json` that diagnostic settings appended to since
the last run has a new ETag and is read again. New blobs are fetched and parsed by the files connector's readers
(`read_objects`), so a storage account and a local copy of it give the same tables. VMs and NICs come from ARM
(`inventory.py`): sizes, state, and the private addresses that VNet flow logs are joined on. With
`metrics_api = true` utilisation comes from Azure Monitor for those VMs (`metrics.py`), and the
`insights-metrics-pt1m` container is not read. With `cost_api = true` spend comes from the Cost Management
query API (`costs.py`) and the cost exports are not read.

Gaps are named `azure/<subscription or *>/<source>`. A 403 names the account, the container and the data
action; a source for which no configured account holds a single blob of the subscription is a gap that lists
where it looked (a missing container means the diagnostic setting or flow log does not write there).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from spendwatch.connectors.files import Blob, read_objects
from spendwatch.connectors.live import Listed, LiveScan, ScopePlan, merge_api_sources, plan_by_time
from spendwatch.report import RunReport, StrictError
from spendwatch.store import Watermark

from . import blobs, costs, metrics
from .config import AzureConfig, BlobLocation
from .inventory import AzureOptions, list_inventory
from .permissions import permission

if TYPE_CHECKING:
    from spendwatch.engine.flows import FlowEngine

CLOUD = "azure"
ANY = "*"
# Containers diagnostic settings write to: (container, the key before the subscription in blob names, source).
CONTAINERS = (("insights-activity-logs", "resourceId", "activity"),
              ("insights-logs-flowlogflowevent", "flowLogResourceID", "flows"),
              ("insights-metrics-pt1m", "resourceId", "utilization"))
READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"

MarkKey = tuple[str, str, str, str, str]


def scan(config: AzureConfig, report: RunReport, *, marks: Mapping[MarkKey, Watermark] | None = None,
         now: datetime | None = None, credential: Any = None,
         progress: Callable[[int], None] | None = None, flows: FlowEngine | None = None) -> LiveScan:
    """Read what is new in every configured storage account for every subscription, and their inventory.

    `credential` is an azure-core token credential (default: DefaultAzureCredential). Raises StrictError on
    the first bad record when `report.strict`; any other failure of a source is a gap for that source.
    `now` ends the window of the metrics API (default: the clock). With `flows`, flow records go to that
    engine as they are read (`files.read_objects`) and the tables' flows stay empty.
    """
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    scan = _Scan(config, report, marks or {}, credential, now or datetime.now(UTC))
    scan.flows = flows
    return scan.run(progress)


class _Scan:
    def __init__(self, config: AzureConfig, report: RunReport, marks: Mapping[MarkKey, Watermark],
                 credential: Any, now: datetime) -> None:
        self.config, self.report, self.old, self.credential, self.now = config, report, marks, credential, now
        self.services: dict[str, Any] = {}
        self.blobs: list[Blob] = []
        self.flows: FlowEngine | None = None  # where flow records go as they are read (scan's `flows`)
        self.plans: list[tuple[str, ScopePlan]] = []  # (container URL, plan)
        self.failed: set[str] = set()  # full URLs of blobs whose fetch failed
        self.fetched: dict[str, str] = {}  # full URL -> ETag of the content read
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def call(self, name: str) -> None:
        permission(name)  # raises UndeclaredCall for a call the role would not cover
        with self._lock:
            self.calls[name] += 1

    def gap(self, account: str, source: str, reason: str) -> None:
        self.report.gap(f"{CLOUD}/{account}/{source}", reason)

    def container(self, loc: BlobLocation, name: str) -> Any:
        if loc.account_url not in self.services:
            self.services[loc.account_url] = blobs.service(loc, self.credential, self.config)
        return self.services[loc.account_url].get_container_client(name)

    # -- listing ---------------------------------------------------------------------------------------

    def plan(self, loc: BlobLocation, container_name: str, prefix: str, account: str, source: str) -> ScopePlan:
        """List one scope; raises the SDK's error (the caller decides what it means)."""
        url = f"{loc.account_url}/{container_name}"
        key = (CLOUD, account, "", source, f"{url}/{prefix}")
        mark = self.old.get(key) or Watermark(*key, "")
        container = self.container(loc, container_name)
        self.call("ContainerClient.list_blobs")
        plan = plan_by_time(blobs.list_prefix(container, prefix), prefix, mark)
        self.plans.append((url, plan))
        for obj in plan.new:
            full = f"{url}/{obj.name}"
            self.blobs.append(Blob(full, f"{container_name}/{obj.name}", obj.size, self._load(container, full, obj)))
        return plan

    def _load(self, container: Any, full: str, obj: Listed) -> Callable[[], bytes]:
        def load() -> bytes:
            self.call("ContainerClient.download_blob")
            try:
                data, etag = blobs.download(container, obj.name)
            except StrictError:
                raise
            except Exception as exc:  # this blob is a problem of the run and is read again next run
                self.failed.add(full)
                raise OSError(blobs.describe(exc, full, READ)) from exc
            self.fetched[full] = etag
            return data
        return load

    def diagnostics(self) -> None:
        """The insights-* containers of every `logs` account, one scope per subscription."""
        cfg = self.config
        found: set[tuple[str, str]] = set()
        denied: set[tuple[str, str]] = set()
        looked: dict[tuple[str, str], list[str]] = {}
        containers = [c for c in CONTAINERS if not (cfg.metrics_api and c[2] == "utilization")]
        if cfg.metrics_api and cfg.logs:
            self.report.notes.append("azure: utilisation from the Azure Monitor metrics API (metrics_api = true); "
                                     "the insights-metrics-pt1m containers are not read")
        for loc in cfg.logs:
            for container, marker, source in containers:
                for sub in cfg.subscriptions:
                    prefix = f"{marker}=/SUBSCRIPTIONS/{sub.upper()}/"
                    where = f"{loc.account_url}/{container}/{prefix}"
                    try:
                        plan = self.plan(loc, container, prefix, sub, source)
                    except StrictError:
                        raise
                    except Exception as exc:
                        code, name = blobs.status(exc)
                        if code == 404 and name in ("ContainerNotFound", "ResourceNotFound"):
                            for s in cfg.subscriptions:  # the same answer for every subscription: ask once
                                looked.setdefault((s, source), []).append(
                                    f"{loc.account_url} has no container {container}")
                            break
                        self.gap(sub, source, blobs.describe(exc, where, READ))
                        denied.add((sub, source))
                        continue
                    if plan.listed or plan.mark.position or plan.mark.seen:
                        found.add((sub, source))
                    else:
                        looked.setdefault((sub, source), []).append(f"no blobs under {where}")
        for sub in cfg.subscriptions:
            for container, _, source in containers:
                if (sub, source) in found or (sub, source) in denied:
                    continue
                if not cfg.logs:
                    self.gap(sub, source, f"not configured: set [azure] logs to the storage accounts diagnostic "
                                          f"settings write to (container {container})"
                                          + (" or metrics_api = true" if source == "utilization" else ""))
                else:
                    self.gap(sub, source, "; ".join(looked.get((sub, source), [])))

    def cost(self) -> None:
        if self.config.cost_api:
            if self.config.cost:
                self.report.notes.append("azure: spend from the Cost Management query API (cost_api = true); "
                                         "[azure] cost exports are not read")
            return
        for loc in self.config.cost:
            where = f"{loc.account_url}/{loc.container}/{loc.prefix}"
            try:
                plan = self.plan(loc, loc.container, loc.prefix, ANY, "billing")
            except StrictError:
                raise
            except Exception as exc:
                self.gap(ANY, "billing", blobs.describe(exc, where, READ))
                continue
            if not (plan.listed or plan.mark.position or plan.mark.seen):
                self.gap(ANY, "billing", f"no blobs under {where}: is the cost export writing there?")
        if not self.config.cost:
            self.gap(ANY, "billing", "not configured: set [azure] cost to a Cost Management export's container "
                                     "and folder, or cost_api = true")

    def metrics(self, inventory: pd.DataFrame | None) -> metrics.MetricsRead:
        """Percentage CPU of every VM ARM listed, from Azure Monitor. A subscription whose VM list could not be
        read has no VMs to ask about: a gap of its own, so its utilisation is not taken for "nothing ran"."""
        cfg = self.config
        vms = metrics.vms_of(inventory) if inventory is not None and len(inventory) else []
        unlisted = {g.source.split("/")[1] for g in self.report.gaps if g.source.endswith("/inventory")}
        subs = [s for s in cfg.subscriptions if s not in unlisted]
        for sub in sorted(unlisted & set(cfg.subscriptions)):
            self.gap(sub, "utilization", "no VM list (the inventory could not be read), so no VM's metrics were "
                                         "asked for")
        options = metrics.MetricsOptions(
            self.credential, cfg.metrics_endpoint, cfg.metrics_max_calls, cfg.initial_hours, cfg.retry_total,
            cfg.backoff_s, connection_verify=cfg.ca_bundle, allow_http=cfg.allow_http)
        read = metrics.read_utilization(vms, subs, self.report, options, marks=self.old, now=self.now)
        self.report.notes.append(metrics.summary(read))
        return read

    def spend(self) -> costs.CostRead:
        """Daily cost per resource of every subscription from the Cost Management query API."""
        cfg = self.config
        options = AzureOptions(self.credential, cfg.arm_endpoint, cfg.allow_http, cfg.retry_total, cfg.backoff_s,
                               connection_verify=cfg.ca_bundle)
        read = costs.read_spend(cfg.subscriptions, self.report, options, marks=self.old, now=self.now,
                                initial_hours=cfg.initial_hours)
        self.report.notes.append(costs.summary(read))
        return read

    # -- the run ---------------------------------------------------------------------------------------

    def run(self, progress: Callable[[int], None] | None) -> LiveScan:
        cfg, report = self.config, self.report
        with report.timed("read: azure list"):
            self.diagnostics()
            self.cost()
        api = None
        with report.timed("read: azure api"):
            if cfg.inventory and cfg.subscriptions:
                api = list_inventory(cfg.subscriptions, report, AzureOptions(
                    self.credential, cfg.arm_endpoint, cfg.allow_http, cfg.retry_total, cfg.backoff_s,
                    connection_verify=cfg.ca_bundle))
            util = self.metrics(api) if cfg.metrics_api else None
            spent = self.spend() if cfg.cost_api else None
        tables = read_objects(self.blobs, report, progress=progress, flows=self.flows)
        tables, api_marks = merge_api_sources(tables, inventory=api, utilization=util, spend=spent)
        marks = list(api_marks)
        for url, plan in self.plans:
            plan.new = [replace(o, version=self.fetched.get(f"{url}/{o.name}", o.version)) for o in plan.new]
            failed = {f[len(url) + 1:] for f in self.failed if f.startswith(url + "/")}
            marks.append(plan.advanced(failed, cfg.lookback_days))
        report.notes.append("azure storage calls: " + ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items())))
        return LiveScan(tables, marks, list(cfg.subscriptions))
