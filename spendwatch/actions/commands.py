"""The `quarantine`, `release` and `audit` commands.

`add_commands(sub)` adds them to the `spendwatch` parser. Nothing heavy is imported at module level: boto3
loads only when a command builds its clients. Exit codes as for every spendwatch command: 0 done (or planned,
in a dry run), 1 refused or failed (nothing changed when refused; a failed step says how to undo what ran),
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import Store
    from .base import Outcome

FROM_FINDING = "@finding"


def add_commands(sub: Any) -> None:
    """Add `quarantine`, `release` and `audit` to the subparsers `sub` of the spendwatch parser."""
    from ..cli import STATE_HELP

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("resource", metavar="RESOURCE",
                       help="EC2 instance id (i-...) or an IAM user/role ARN to contain or release a principal; "
                            "GCP: projects/P/zones/Z/instances/N; Azure: the VM's resource id")
        p.add_argument("--cloud", choices=("aws", "gcp", "azure"), default="aws", help="cloud (default aws)")
        p.add_argument("--account", metavar="ID",
                       help="refuse unless the credentials are for this account (default: theirs)")
        p.add_argument("--region", metavar="REGION",
                       help="region (default: the stored finding's, else the AWS configuration's)")
        p.add_argument("--apply", action="store_true", help="make the changes (default: dry run, print the plan)")
        p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
        p.add_argument("--state", metavar="PATH|URL", help=STATE_HELP)
        p.add_argument("--endpoint-url", help=argparse.SUPPRESS)  # tests: a moto server on 127.0.0.1

    q = sub.add_parser(
        "quarantine", help="isolate a resource (and optionally its launching principal); dry run unless --apply",
        description="Isolate an EC2 instance reversibly (network, credentials, snapshots, ASG standby, tags); "
                    "never terminates. Prints the plan unless --apply.",
    )
    common(q)
    q.add_argument("--stop", action="store_true", help="also stop the instance (refused for spot instances)")
    q.add_argument("--principal", nargs="?", const=FROM_FINDING, metavar="ARN",
                   help="also contain the identity that launched it (default: the stored finding's principal)")
    q.add_argument("--finding", metavar="ID", help="finding id to record (default: the stored finding's)")
    q.set_defaults(func=cmd_quarantine)

    r = sub.add_parser("release", help="undo a quarantine exactly; dry run unless --apply",
                       description="Undo what `spendwatch quarantine` did to RESOURCE; refuses anything it did not "
                                   "quarantine. Snapshots are kept.")
    common(r)
    r.add_argument("--principal", nargs="?", const=FROM_FINDING, metavar="ARN",
                   help="also release the principal contained with it (default: the one recorded with it)")
    r.set_defaults(func=cmd_release)

    a = sub.add_parser("audit", help="show the audit log of quarantine and release actions")
    a.add_argument("--resource", metavar="RESOURCE", help="only lines about this resource")
    a.add_argument("--limit", type=int, default=200, metavar="N", help="the last N lines (default 200)")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.add_argument("--state", metavar="PATH|URL", help=STATE_HELP)
    a.set_defaults(func=cmd_audit)


# -- helpers -----------------------------------------------------------------------------------------------

def _open_store(arg: str | None) -> Store:
    """The state (a file or a postgresql:// URL, resolved as every command does), or a Fatal naming it."""
    from ..cli import _open_store as open_state

    store: Store = open_state(arg)
    return store


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli:unknown"


def _settings() -> Any:
    from ..cli import Fatal
    from .base import ActionSettings

    try:
        return ActionSettings.from_env()
    except ValueError as exc:
        raise Fatal(str(exc)) from exc


def _clients(region: str | None, endpoint_url: str | None) -> Any:
    from ..cli import Fatal

    try:
        from .aws import AwsClients

        clients = AwsClients.build(region=region, endpoint_url=endpoint_url)
    except ImportError as exc:
        raise Fatal(f"the AWS actions need boto3: pip install 'spendwatch[aws]' ({exc})") from exc
    except ValueError as exc:
        raise Fatal(str(exc)) from exc
    return clients


def _run(action: Any, target: Any, *, apply: bool) -> Outcome:
    """`execute`, with SDK errors (no credentials, access denied while planning, ...) as a one-line Fatal."""
    from ..cli import Fatal
    from .base import execute

    try:
        return execute(action, target, apply=apply)
    except Fatal:
        raise
    except Exception as exc:
        module = type(exc).__module__
        if module.startswith(("botocore", "boto3", "urllib3")):
            raise Fatal(f"{action.name} {target.resource}: {exc}") from exc
        raise


def _print(outcomes: list[Outcome], as_json: bool) -> int:
    from ..cli import EXIT_FATAL, EXIT_OK

    ok = all(o.ok for o in outcomes)
    if as_json:
        print(json.dumps({"ok": ok, "outcomes": [o.to_json() for o in outcomes]}, indent=2))
    else:
        for o in outcomes:
            t = o.target
            mode = "DRY RUN" if o.dry_run else "APPLY"
            where = ", ".join(x for x in (f"account {t.account}" if t.account else "", t.region or "",
                                          f"finding {t.finding_id}" if t.finding_id else "") if x)
            print(f"{mode} {o.action} {t.resource}" + (f" ({where})" if where else ""))
            for i, s in enumerate(o.steps, 1):
                print(f"  {i}. [{s.outcome}] {s.name}: {s.description}")
                if s.permissions:
                    print(f"     needs: {', '.join(s.permissions)}")
                if s.detail.get("error"):
                    print(f"     error: {s.detail['error']}")
            print(f"  => {o.status}: {o.message}\n")
    for o in outcomes:
        if not o.ok:
            print(f"spendwatch: {o.status}: {o.message}", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FATAL


def _usage(message: str) -> int:
    from ..cli import EXIT_USAGE

    print(f"spendwatch: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _is_principal(resource: str) -> bool:
    return resource.startswith("arn:")


# -- commands ----------------------------------------------------------------------------------------------

def _id_part(resource: str, name: str) -> str | None:
    """The value after `name` in a slash-separated resource name (projects/P/..., /subscriptions/S/...)."""
    parts = resource.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index(name) + 1] if name in lowered and lowered.index(name) + 1 < len(parts) else None


def _other_cloud(args: argparse.Namespace, *, release: bool) -> int:
    """quarantine / release on GCP or Azure: the same execute() path, clients built for the resource's project
    or subscription. Principal containment exists on AWS only."""
    from ..cli import Fatal
    from .base import Target

    if args.principal:
        return _usage("--principal is supported on AWS only")
    settings, actor = _settings(), _actor()
    try:
        if args.cloud == "gcp":
            from .gcp import GcpClients, GcpQuarantine, GcpRelease

            project = args.account or _id_part(args.resource, "projects")
            if not project:
                return _usage("RESOURCE must be projects/P/zones/Z/instances/N (or pass --account PROJECT)")
            credentials = None
            if args.endpoint_url:  # tests: a local fake takes no Google credentials
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()
            clients: Any = GcpClients.build(project, endpoint=args.endpoint_url, credentials=credentials)
            quarantine_cls: Any = GcpQuarantine
            release_cls: Any = GcpRelease
        else:
            from .azure import AzureClients, AzureQuarantine, AzureRelease

            subscription = args.account or _id_part(args.resource, "subscriptions")
            if not subscription:
                return _usage("RESOURCE must be the VM's resource id /subscriptions/S/... (or pass --account)")
            clients = AzureClients.build(subscription, base_url=args.endpoint_url)
            quarantine_cls, release_cls = AzureQuarantine, AzureRelease
    except ImportError as exc:
        raise Fatal(f"the {args.cloud} actions need the SDK: pip install 'spendwatch[{args.cloud}]' ({exc})") from exc
    with _open_store(args.state) as store:
        common = {"clients": clients, "store": store, "actor": actor, "settings": settings}
        if release:
            action: Any = release_cls(**common)
            target = Target(args.cloud, args.resource, args.account, args.region)
        else:
            finding = store.finding_for_resource(cloud=args.cloud, resource=args.resource, account=args.account)
            finding_id = args.finding or (finding.id if finding else None)
            action = quarantine_cls(**common, stop=args.stop)
            target = Target(args.cloud, args.resource, args.account, args.region, finding_id)
        return _print([_run(action, target, apply=args.apply)], args.json)


def cmd_quarantine(args: argparse.Namespace) -> int:
    from .aws import AwsContainPrincipal, AwsQuarantine
    from .base import Outcome, Target

    if args.cloud != "aws":
        return _other_cloud(args, release=False)

    if _is_principal(args.resource) and (args.stop or args.principal):
        return _usage("--stop and --principal apply to an instance; RESOURCE is already a principal")
    settings, actor = _settings(), _actor()
    with _open_store(args.state) as store:
        finding = store.finding_for_resource(cloud=args.cloud, resource=args.resource, account=args.account)
        finding_id = args.finding or (finding.id if finding else None)
        region = args.region or (finding.region if finding else None)
        clients = _clients(region, args.endpoint_url)
        region = clients.ec2.meta.region_name
        target = Target(args.cloud, args.resource, args.account, region, finding_id)
        common = {"clients": clients, "store": store, "actor": actor, "settings": settings}
        principal = None
        if args.principal:  # resolved before anything changes, so a usage error leaves the cloud untouched
            principal = args.principal if args.principal != FROM_FINDING else (finding.principal if finding else None)
            if not principal:
                return _usage(f"no stored finding names the principal behind {args.resource}; pass --principal ARN")
        if _is_principal(args.resource):
            outcomes = [_run(AwsContainPrincipal(**common), target, apply=args.apply)]
        else:
            outcomes = [_run(AwsQuarantine(**common, stop=args.stop), target, apply=args.apply)]
            if principal and outcomes[0].ok:
                action = AwsContainPrincipal(**common, linked_to=args.resource)
                outcomes.append(_run(action, Target(args.cloud, principal, args.account, region, finding_id),
                                     apply=args.apply))
            elif principal:
                outcomes.append(Outcome("aws.contain-principal", target, not args.apply, "refused",
                                        "principal not contained because the instance quarantine did not go ahead"))
    return _print(outcomes, args.json)


def cmd_release(args: argparse.Namespace) -> int:
    from .aws import AwsRelease, AwsReleasePrincipal
    from .base import Target

    if args.cloud != "aws":
        return _other_cloud(args, release=True)

    if _is_principal(args.resource) and args.principal:
        return _usage("--principal applies to an instance; RESOURCE is already a principal")
    settings, actor = _settings(), _actor()
    with _open_store(args.state) as store:
        region = args.region
        if region is None:
            stored = [q for q in store.quarantines(active_only=True) if q.resource == args.resource]
            region = stored[0].region if stored else None
        clients = _clients(region, args.endpoint_url)
        region = clients.ec2.meta.region_name
        common = {"clients": clients, "store": store, "actor": actor, "settings": settings}
        target = Target(args.cloud, args.resource, args.account, region)
        if _is_principal(args.resource):
            return _print([_run(AwsReleasePrincipal(**common), target, apply=args.apply)], args.json)
        outcomes = [_run(AwsRelease(**common), target, apply=args.apply)]
        if args.principal:
            if args.principal != FROM_FINDING:
                principals = [args.principal]
            else:
                principals = [q.resource for q in store.quarantines(active_only=True)
                              if q.action == "aws.contain-principal" and q.record.get("linked_to") == args.resource]
                if not principals:
                    return _usage(f"no principal was contained with {args.resource}; pass --principal ARN")
            for arn in principals:
                outcomes.append(_run(AwsReleasePrincipal(**common), Target(args.cloud, arn, args.account, region),
                                     apply=args.apply))
    return _print(outcomes, args.json)


def cmd_audit(args: argparse.Namespace) -> int:
    from ..cli import EXIT_OK

    with _open_store(args.state) as store:
        entries = store.audit_log(resource=args.resource, limit=args.limit)
    for e in entries:
        if args.json:
            print(json.dumps(e.to_json(), separators=(",", ":")))
        else:
            mode = "dry-run" if e.dry_run else "applied"
            print(f"{e.at}  {e.actor}  {e.action}  {e.resource}  {e.step or '-'}  {e.outcome} ({mode})  "
                  f"{e.description}")
    if not entries and not args.json:
        print("audit log is empty")
    return EXIT_OK
