"""The live AWS connector: every account and region of an Organization in, canonical tables out.

`scan(config, report, marks=...)` works out the scope (accounts from Organizations or the configuration,
reached through a read role; regions enabled in the account or configured), then reads each source the
cheapest way the user has it:

- export files in S3 (organisation CloudTrail, VPC Flow Logs, Route 53 Resolver query logs, Metric Streams,
  CUR 2.0 driven by its manifests), listed incrementally (`s3.py`) and parsed by the files connector's
  readers (`spendwatch.connectors.files.read_objects`), so S3 and a local copy give the same tables;
- APIs per account and region (`sources.py`): EC2 DescribeInstances + DescribeInstanceTypes for inventory,
  CloudWatch Logs for flow logs (format from DescribeFlowLogs) and Resolver logs not delivered to S3,
  GetMetricData when there is no Metric Streams bucket, Cost Explorer (counted, capped) when there is no CUR;
- Athena, with `[aws.athena]`: the flow log table reduced there instead of the flow_logs bucket (`table`), and
  the CUR 2.0 table aggregated per usage hour instead of the cur bucket's objects (`cur_table`,
  `spendwatch.engine.spend_sql`, read by the same CUR 2.0 reader).

What it could not read is a gap in the run report, named `aws/<account>/<region>/<source>` with the reason
(access denied, not configured, time-out): one account, region or source failing never stops the others,
and never reads as an all clear. It returns the watermarks to save; the caller saves them only after the
run's findings are stored (`spendwatch.pipeline.scan_aws`), so a run killed at any point is read again
whole. boto3 is imported only inside `clients.py`, when a scan starts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from spendwatch.connectors.files import Blob, read_objects
from spendwatch.records import Tables, conform
from spendwatch.report import RunReport, StrictError
from spendwatch.store import Watermark

from . import s3, sources
from .clients import AccountUnreachable, Clients, Hook, describe_error
from .config import AwsConfig, S3Location
from .permissions import CALLS, permission, policy, policy_json

if TYPE_CHECKING:
    from spendwatch.engine.flows import FlowEngine

__all__ = ["CALLS", "AwsConfig", "AwsScan", "S3Location", "policy", "policy_json", "scan"]

CLOUD = "aws"
_ACCOUNT = re.compile(r"^\d{12}/$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d/$")
ANY = "*"
API_WORKERS = 8  # concurrent describe/list calls; botocore's adaptive mode slows them all down on throttling

MarkKey = tuple[str, str, str, str, str]


@dataclass
class AwsScan:
    """What one scan read, and the watermarks to save once its findings are stored."""

    tables: Tables
    marks: list[Watermark]
    accounts: list[str]
    regions: list[str]
    calls: Counter[str] = field(default_factory=Counter)  # IAM action -> calls made


def scan(config: AwsConfig, report: RunReport, *, marks: Mapping[MarkKey, Watermark] | None = None,
         hooks: Sequence[Hook] = (), session: Any = None, now: datetime | None = None,
         progress: Callable[[int], None] | None = None, flows: FlowEngine | None = None) -> AwsScan:
    """Read what is new in every account, region and source of `config`; gaps and problems go to `report`.

    `marks` are the watermarks saved by earlier runs (`spendwatch.store.Watermarks(store).load("aws")`);
    `hooks` are extra botocore event handlers put on every client (tests record or fail calls with them).
    Raises StrictError on the first bad record when `report.strict`; other errors become gaps. With `flows`,
    flow records go to that engine as they are read (`files.read_objects`) and the tables' flows stay empty.
    """
    scan = _Scan(config, report, marks or {}, hooks, session, now or datetime.now(UTC))
    scan.flows = flows
    scan.session = session
    return scan.run(progress)


class _Scan:
    def __init__(self, config: AwsConfig, report: RunReport, marks: Mapping[MarkKey, Watermark],
                 hooks: Sequence[Hook], session: Any, now: datetime) -> None:
        self.config, self.report, self.old, self.now = config, report, marks, now
        self.calls: Counter[str] = Counter()
        self.clients = Clients(config, hooks=[("before-call.*.*", self._count), *hooks], session=session)
        self.blobs: list[Blob] = []
        self.flows: FlowEngine | None = None  # where flow records go as they are read (scan's `flows`)
        self.session: Any = None  # the boto3 session clients are built from (None: a new one from the config)
        self.failed: set[str] = set()  # "bucket/key" of objects whose fetch failed: not marked as read
        self.plans: list[s3.ScopePlan] = []
        self.cur_marks: list[tuple[Watermark, list[str]]] = []  # new mark, the data objects it depends on
        self.marks: list[Watermark] = []
        self.frames: dict[str, list[pd.DataFrame]] = {}
        self.types: dict[str, dict[str, tuple[int | None, int | None]]] = {}

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[permission(model.service_model.service_name, model.name)] += 1

    # -- helpers ---------------------------------------------------------------------------------------

    def gap(self, account: str, region: str, source: str, reason: str) -> None:
        self.report.gap(f"aws/{account}/{region or ANY}/{source}", reason)

    def mark(self, account: str, region: str, source: str, scope: str) -> Watermark:
        key = (CLOUD, account, region, source, scope)
        return self.old.get(key) or Watermark(CLOUD, account, region, source, scope, "")

    def guarded(self, account: str, region: str, source: str, fn: Callable[[], None]) -> bool:
        """Run one source; any failure (after botocore's retries) is a gap for it alone."""
        try:
            fn()
            return True
        except StrictError:
            raise
        except AccountUnreachable as exc:
            self.gap(account, region, source, exc.reason)
        except Exception as exc:
            self.gap(account, region, source, describe_error(exc))
        return False

    def _load(self, bucket: str, key: str) -> Callable[[], bytes]:
        def load() -> bytes:
            try:
                body = self.clients.bucket().get_object(Bucket=bucket, Key=key)["Body"]
                return bytes(body.read())
            except StrictError:
                raise
            except Exception as exc:  # any fetch failure is this object's problem; it is read again next run
                self.failed.add(f"{bucket}/{key}")
                raise OSError(describe_error(exc)) from exc
        return load

    def add_objects(self, objects: Sequence[s3.S3Object]) -> None:
        for o in objects:
            self.blobs.append(Blob(f"s3://{o.bucket}/{o.key}", o.key, o.size, self._load(o.bucket, o.key)))

    # -- scope -----------------------------------------------------------------------------------------

    def accounts(self) -> list[str] | None:
        if self.config.accounts is not None:
            return list(self.config.accounts)
        found: list[str] = []

        def org() -> None:
            for page in self.clients.base("organizations").get_paginator("list_accounts").paginate():
                found.extend(a["Id"] for a in page["Accounts"] if a.get("Status", "ACTIVE") == "ACTIVE")

        return sorted(found) if self.guarded(ANY, ANY, "scope: accounts", org) else None

    def regions(self, accounts: list[str] | None) -> list[str] | None:
        if self.config.regions is not None:
            return list(self.config.regions)
        found: list[str] = []
        for account in accounts or [""]:
            def describe(account: str = account) -> None:
                ec2 = self.clients.account(account, "ec2", self.config.home_region) if account else \
                    self.clients.base("ec2")
                found.extend(r["RegionName"] for r in ec2.describe_regions()["Regions"])
            try:
                describe()
                return sorted(set(found))
            except StrictError:
                raise
            except Exception:  # this account may be the unreachable one: ask the next
                continue
        self.gap(ANY, ANY, "scope: regions", "no account could list its enabled regions (ec2:DescribeRegions)")
        return None

    # -- S3 sources ------------------------------------------------------------------------------------

    def _plan(self, loc: S3Location, prefix: str, source: str, account: str, region: str) -> None:
        scope = f"s3://{loc.bucket}/{prefix}"
        plan = s3.plan(self.clients.bucket(), loc.bucket, prefix, self.mark(account, region, source, scope))
        self.plans.append(plan)
        self.add_objects(plan.new)

    def _account_folders(self, loc: S3Location, service: str, accounts: list[str] | None) -> dict[str, str]:
        """account -> `.../AWSLogs/[o-.../]<account>/<service>/` under an S3 location."""
        bucket = self.clients.bucket()
        bases = [loc.prefix + "AWSLogs/"]
        out: dict[str, str] = {}
        while bases:
            base = bases.pop()
            for child in s3.children(bucket, loc.bucket, base):
                name = child[len(base):]
                if name.startswith("o-"):
                    bases.append(child)  # an organisation trail: AWSLogs/<org-id>/<account>/...
                elif _ACCOUNT.match(name) and (accounts is None or name[:-1] in accounts):
                    out[name[:-1]] = f"{child}{service}/"
        for account in accounts or []:
            if account not in out:
                self.gap(account, ANY, service, f"no {service} files for this account under {loc}")
        return out

    def s3_regional(self, loc: S3Location, service: str, source: str, accounts: list[str] | None,
                    regions: list[str] | None) -> None:
        """CloudTrail, flow logs (`<account>/<service>/<region>/`) and Resolver logs (`.../<vpc-id>/`)."""
        for account, folder in self._account_folders(loc, service, accounts).items():
            def one(account: str = account, folder: str = folder) -> None:
                for child in s3.children(self.clients.bucket(), loc.bucket, folder):
                    name = child[len(folder):]
                    region = name[:-1] if _REGION.match(name) else ""
                    if region and regions is not None and region not in regions:
                        continue
                    self._plan(loc, child, source, account, region)
            self.guarded(account, ANY, source, one)

    def s3_metrics(self, loc: S3Location, regions: list[str] | None) -> None:
        def one() -> None:
            kids = s3.children(self.clients.bucket(), loc.bucket, loc.prefix)
            if any(re.match(r"^\d{4}/$", k[len(loc.prefix):]) for k in kids):
                self._plan(loc, loc.prefix, "metrics", ANY, "")  # Firehose's default: dates right away
                return
            for child in kids:
                name = child[len(loc.prefix):]
                region = name[:-1] if _REGION.match(name) else ""
                if not region or regions is None or region in regions:
                    self._plan(loc, child, "metrics", ANY, region)
        self.guarded(ANY, ANY, "metrics", one)

    def s3_cur(self, loc: S3Location) -> None:
        """CUR 2.0: each billing period's manifest names its data files; a period is read again whole when
        its manifest's execution changes (AWS rewrites the current month's files several times a day)."""
        import json

        def one() -> None:
            bucket = self.clients.bucket()
            manifests = [o for o in s3.list_after(bucket, loc.bucket, loc.prefix + "metadata/")
                         if o.key.endswith("Manifest.json")]
            if not manifests:
                self.gap(ANY, ANY, "billing", f"no CUR 2.0 manifest under {loc}metadata/")
                return
            for m in manifests:
                doc = json.loads(bucket.get_object(Bucket=loc.bucket, Key=m.key)["Body"].read())
                execution = str(doc.get("executionId") or doc.get("assemblyId") or "")
                mark = self.mark(ANY, "", "billing", f"s3://{loc.bucket}/{m.key}")
                if execution and execution == mark.position:
                    continue
                data = []
                for uri in doc.get("dataFiles") or doc.get("reportKeys") or []:
                    if uri.startswith("s3://"):
                        b, _, k = uri[5:].partition("/")
                    else:
                        b, k = loc.bucket, uri
                    data.append(s3.S3Object(b, k, 0))
                self.add_objects(data)
                self.cur_marks.append((Watermark(CLOUD, ANY, "", "billing", mark.scope, execution),
                                       [f"{o.bucket}/{o.key}" for o in data]))
        self.guarded(ANY, ANY, "billing", one)

    # -- API sources per account and region ---------------------------------------------------------------

    def account_region(self, account: str, region: str) -> None:
        cfg = self.config
        inv: list[pd.DataFrame] = []

        def inventory() -> None:
            ec2 = self.clients.account(account, "ec2", region)
            inv.append(sources.inventory(ec2, account, region, self.types.setdefault(region, {})))
            self.frames.setdefault("inventory", []).append(inv[-1])

        if not self.guarded(account, region, "inventory", inventory):
            return  # the account's role or EC2 is unreachable here: the other API sources would fail alike
        frame = inv[0]
        running = sorted(frame.loc[frame["state"].isin(["running", "pending"]), "resource"]) if len(frame) else []
        if cfg.flow_logs is None and not cfg.athena_flows:
            self.guarded(account, region, "flows", lambda: self.logs_flows(account, region, bool(running)))
        if cfg.dns_logs is None and cfg.dns_log_groups:
            self.guarded(account, region, "dns", lambda: self.logs_dns(account, region))
        if cfg.metrics is None and cfg.metrics_api and running:
            self.guarded(account, region, "utilization", lambda: self.metrics_api(account, region, running))

    def _log_blob(self, name: str, key: str, text: str) -> None:
        raw = text.encode()
        self.blobs.append(Blob(name, key, len(raw), lambda: raw))

    def logs_flows(self, account: str, region: str, has_instances: bool) -> None:
        groups = sources.flow_log_groups(self.clients.account(account, "ec2", region))
        if not groups and has_instances:
            self.gap(account, region, "flows", "no VPC flow logs to S3 ([aws] flow_logs) or CloudWatch Logs "
                                               "(DescribeFlowLogs found none) while instances run here")
        logs = self.clients.account(account, "logs", region) if groups else None
        for group, header in groups:
            mark = self.mark(account, region, "flows", f"logs:{group}")
            messages, new = sources.log_events(logs, group, mark, now=self.now,
                                               initial_hours=self.config.initial_hours)
            self.marks.append(new)
            if messages:
                self._log_blob(f"cloudwatch-logs://{account}/{region}{group}",
                               f"AWSLogs/{account}/vpcflowlogs/{region}/{group.strip('/')}.log",
                               header + "\n" + "\n".join(messages) + "\n")

    def logs_dns(self, account: str, region: str) -> None:
        from botocore.exceptions import ClientError

        logs = self.clients.account(account, "logs", region)
        for group in self.config.dns_log_groups:
            mark = self.mark(account, region, "dns", f"logs:{group}")
            try:
                messages, new = sources.log_events(logs, group, mark, now=self.now,
                                                   initial_hours=self.config.initial_hours)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    continue  # this group is not in this region
                raise
            self.marks.append(new)
            if messages:
                self._log_blob(f"cloudwatch-logs://{account}/{region}{group}",
                               f"AWSLogs/{account}/vpcdnsquerylogs/{region}/{group.strip('/')}.log",
                               "\n".join(messages) + "\n")

    def metrics_api(self, account: str, region: str, running: list[str]) -> None:
        mark = self.mark(account, region, "utilization", "GetMetricData")
        start, end = sources.metric_window(mark, self.now, self.config.initial_hours)
        if start >= end:
            return
        frame = sources.utilization(self.clients.account(account, "cloudwatch", region), account, region,
                                    running, start, end)
        self.frames.setdefault("utilization", []).append(frame)
        self.marks.append(Watermark(CLOUD, account, region, "utilization", mark.scope, end.isoformat()))

    def cost_explorer(self) -> None:
        cfg = self.config
        mark = self.mark(ANY, "", "billing", "CostExplorer")

        def one() -> None:
            frame, new, requests, stopped = sources.cost_explorer(
                self.clients.base("ce", "us-east-1"), mark, now=self.now, granularity=cfg.cost_explorer_granularity,
                initial_hours=cfg.initial_hours, max_requests=cfg.cost_explorer_max_requests)
            self.report.notes.append(f"cost explorer: {requests} GetCostAndUsage request(s), "
                                     f"${requests * sources.CE_COST_PER_REQUEST:.2f}")
            if stopped:
                self.gap(ANY, ANY, "billing", stopped)
            self.frames.setdefault("spend", []).append(frame)
            self.marks.append(new)

        self.guarded(ANY, ANY, "billing", one)

    # -- the run -----------------------------------------------------------------------------------------

    def run(self, progress: Callable[[int], None] | None) -> AwsScan:
        cfg, report = self.config, self.report
        with report.timed("read: aws scope"):
            accounts = self.accounts()
            regions = self.regions(accounts)
        with report.timed("read: aws list"):
            with ThreadPoolExecutor(max_workers=API_WORKERS) as pool:
                listing = [pool.submit(self.s3_regional, loc, service, source, accounts, regions)
                           for loc, service, source in ((cfg.trail, "CloudTrail", "cloudtrail"),
                                                        (cfg.flow_logs if not cfg.athena_flows else None,
                                                         "vpcflowlogs", "flows"),
                                                        (cfg.dns_logs, "vpcdnsquerylogs", "dns"))
                           if loc is not None]
                for done in listing:
                    done.result()
            if cfg.trail is None:
                self.gap(ANY, ANY, "cloudtrail", "not configured: set [aws] trail to the organisation trail's "
                                                 "bucket (s3://bucket/prefix/)")
            if cfg.dns_logs is None and not cfg.dns_log_groups:
                self.gap(ANY, ANY, "dns", "not configured: set [aws] dns_logs (S3) or dns_log_groups "
                                          "(CloudWatch Logs) for Route 53 Resolver query logs")
            if cfg.metrics is not None:
                self.s3_metrics(cfg.metrics, regions)
            elif not cfg.metrics_api:
                self.gap(ANY, ANY, "utilization", "not configured: set [aws] metrics or metrics_api = true")
            if cfg.cur is not None and cfg.athena_cur is None:
                self.s3_cur(cfg.cur)
        with report.timed("read: aws api"):
            if accounts is not None and regions is not None:
                # Each account and region is a few slow describe calls: run them side by side. Results go
                # to lists (appends are atomic), gaps to the report (locked).
                with ThreadPoolExecutor(max_workers=API_WORKERS) as pool:
                    for done in [pool.submit(self.account_region, a, r) for a in accounts for r in regions]:
                        done.result()
            else:
                self.gap(ANY, ANY, "inventory, cloudwatch", "scope unknown (see the scope gaps): API sources "
                                                            "per account and region were not read")
            if cfg.athena_cur is not None:
                self.athena_cur(cfg.athena_cur)
            elif cfg.cur is None:
                if cfg.cost_explorer_max_requests > 0:
                    self.cost_explorer()
                else:
                    self.gap(ANY, ANY, "billing", "not configured: set [aws] cur (CUR 2.0 export in S3) or "
                                                  "cost_explorer_max_requests")
        tables = read_objects(self.blobs, report, progress=progress, flows=self.flows)
        tables = self._merge(tables, accounts)
        if cfg.athena_flows:
            with report.timed("read: aws athena"):
                self.athena_flows(tables)
        marks = self._advance()
        report.notes.append("aws api calls: " + ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items())))
        return AwsScan(tables, marks, accounts or [], regions or [], self.calls)

    def athena_flows(self, tables: Tables) -> None:
        """`[aws.athena]`: the window's flows reduced in Athena and added to the scan's FlowEngine, once the
        DNS answers are read (they decide which private peers the query keeps). The query runs with the
        caller's own credentials, in the account that owns the table, through a client built like the others."""
        from spendwatch.engine.remote import WarehouseFlows

        athena = self.config.athena
        assert athena is not None
        self.report.notes.append(
            f"aws flows: [aws.athena] is set: flows are reduced in Athena ({athena.table}, the last "
            f"{athena.window_hours} h); " + (f"the flow_logs bucket {self.config.flow_logs} and " if
                                             self.config.flow_logs else "") +
            "CloudWatch Logs flow log groups are not read")
        if self.flows is None:
            self.gap(ANY, ANY, "flows", "[aws.athena] is set but this scan has no flow engine to add Athena's "
                                        "aggregate rows to (spendwatch.pipeline's scans have one): no flows read")
            return
        flows = self.flows

        def query() -> None:  # query failures are gaps named athena:<table>; this catches the rest (no client)
            WarehouseFlows.from_aws(self.config, self.now, client=self.athena_client(),
                                    s3=self.athena_results_client())(tables, flows, self.report)

        self.guarded(ANY, athena.region or self.config.home_region, "flows", query)

    def athena_client(self) -> Any:
        """An Athena client built like the connector's others (credentials, retries, declared calls), in
        `[aws.athena] region`, at its `endpoint_url` when it has its own, and as its `role_arn` when set."""
        athena = self.config.athena
        assert athena is not None
        region = athena.region or self.config.home_region
        if not athena.endpoint_url or athena.endpoint_url == self.config.endpoint_url:
            return (self.clients.role(athena.role_arn, "athena", region) if athena.role_arn
                    else self.clients.base("athena", region))
        # Athena elsewhere (tests: a local fake beside moto): the role is still assumed through STS here
        session = self.clients.as_role(athena.role_arn) if athena.role_arn else self.session
        return Clients(replace(self.config, endpoint_url=athena.endpoint_url), hooks=self.clients.hooks,
                       session=session).base("athena", region)

    def athena_results_client(self) -> Any:
        """The S3 client Athena's result files are read with: as `[aws.athena] role_arn` when set (the role that
        runs the queries reads their results), in its region, at the connector's own S3 endpoint."""
        athena = self.config.athena
        assert athena is not None
        region = athena.region or self.config.home_region
        return (self.clients.role(athena.role_arn, "s3", region) if athena.role_arn
                else self.clients.base("s3", region))

    def athena_cur(self, table: str) -> None:
        """`[aws.athena] cur_table`: the window's CUR 2.0 line items aggregated in Athena per usage hour and read
        as the bucket's CUR objects are (`spendwatch.engine.spend_sql`). Window and watermark (`aws/*/billing`,
        scope `athena:<table>`, the end of the last window read): see spend_sql. A query that fails, is denied
        or times out is a gap `athena:<table>` and keeps the watermark, so the next run asks again."""
        from spendwatch.engine.remote import Athena, AthenaOptions, WarehouseError
        from spendwatch.engine.spend_sql import read_cur, window

        athena = self.config.athena
        assert athena is not None
        label = f"athena:{table}"
        mark = self.mark(ANY, "", "billing", label)
        start, end = window(mark.position, self.now, self.config.initial_hours)
        self.report.notes.append(
            f"aws billing: [aws.athena] cur_table is set: spend is aggregated in Athena ({table}, usage hours "
            f"{start:%Y-%m-%dT%H:%MZ}..{end:%Y-%m-%dT%H:%MZ})" +
            (f"; the cur bucket {self.config.cur} is not read" if self.config.cur else ""))
        if start >= end:
            return

        def query() -> None:  # query failures are gaps named athena:<table>; this catches the rest (no client)
            options = AthenaOptions.from_aws(self.config)
            where = f"{label} {start:%Y-%m-%dT%H:%MZ}..{end:%Y-%m-%dT%H:%MZ}"
            try:
                got = read_cur(Athena(options, self.athena_client(), self.athena_results_client()), table, start, end,
                               self.report, where)
            except WarehouseError as exc:
                self.report.gap(label, f"spend query failed, no billing was read: {exc}")
                return
            self.report.read(label, "athena-cur", {"spend": got.line_items - got.skipped}, got.skipped)
            scanned = (f"{got.bytes_scanned:,} bytes scanned" if got.bytes_scanned is not None
                       else "bytes scanned not reported")
            via = f" {got.via}" if got.via else ""
            self.report.notes.append(f"{label}: {got.line_items:,} CUR line items reduced in Athena to {got.rows:,} "
                                     f"rows{via}, {scanned} (query {got.query_id})")
            self.frames.setdefault("spend", []).append(conform("spend", got.spend.to_pandas()))
            self.marks.append(Watermark(CLOUD, ANY, "", "billing", label, end.isoformat()))

        self.guarded(ANY, athena.region or self.config.home_region, "billing", query)

    def _merge(self, tables: Tables, accounts: list[str] | None) -> Tables:
        parts: dict[str, list[pd.DataFrame]] = {name: [frame] for name, frame in tables.items()}
        for name, frames in self.frames.items():
            if name == "inventory":
                api = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
                    else None
                if api is not None:
                    parts["inventory"] = [sources.merge_inventory(conform("inventory", api), tables.inventory)]
            else:
                parts[name].extend(frames)
        if accounts is not None:  # spend and metrics span accounts: keep the ones in scope (and unknown ones)
            for name in ("spend", "utilization"):
                parts[name] = [f[f["account"].isna() | f["account"].isin(accounts)] for f in parts[name]]
        return Tables.concat(parts)

    def _advance(self) -> list[Watermark]:
        marks = list(self.marks)
        for plan in self.plans:
            failed = {o.key for o in plan.new if f"{o.bucket}/{o.key}" in self.failed}
            marks.append(plan.advanced(failed, self.config.lookback_days))
        for mark, keys in self.cur_marks:
            if not set(keys) & self.failed:
                marks.append(mark)
        return marks
