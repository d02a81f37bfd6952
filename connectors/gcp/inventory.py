"""Live GCP inventory: every instance of the given projects, with its GPUs, as the canonical `inventory`.

One `InstancesClient.aggregated_list` per project (the client pages through `nextPageToken`); the GPUs of
an accelerator-optimised machine type come from `MachineTypesClient.get` (its `accelerators`), cached per
(project, zone, type), with the catalogue as the fallback when that call is denied; attached
`guestAccelerators` add to them. Conventions are the files connector's: account = project id, resource =
`projects/<p>/zones/<z>/instances/<name>`.

Throttling (429) and 503 are retried with exponential back-off by google-api-core's `Retry` (it does not read
Retry-After; the back-off starts at `backoff_s`). A project that answers 403 (API disabled or permission
missing) or 404 is a gap in the run report; the other projects are still scanned.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from spendwatch.records import conform, empty
from spendwatch.report import RunReport

from . import catalog
from .permissions import permission


@dataclass(frozen=True)
class GcpOptions:
    """How to reach the Compute API. `endpoint` is for tests and private endpoints (http://127.0.0.1:PORT)."""

    endpoint: str | None = None
    anonymous: bool = False  # AnonymousCredentials (local fakes only)
    backoff_s: float = 1.0
    retry_deadline_s: float = 60.0


def _clients(options: GcpOptions) -> tuple[Any, Any, Any]:
    from google.api_core import retry as retries
    from google.api_core.client_options import ClientOptions
    from google.api_core.exceptions import ServiceUnavailable, TooManyRequests
    from google.cloud import compute_v1

    kwargs: dict[str, Any] = {"transport": "rest"}
    if options.endpoint:
        kwargs["client_options"] = ClientOptions(api_endpoint=options.endpoint)
    if options.anonymous:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
    retry = retries.Retry(predicate=retries.if_exception_type(TooManyRequests, ServiceUnavailable),
                          initial=options.backoff_s, maximum=max(options.backoff_s, 30.0), multiplier=2.0,
                          timeout=options.retry_deadline_s)
    return compute_v1.InstancesClient(**kwargs), compute_v1.MachineTypesClient(**kwargs), retry


def _denied(exc: Exception) -> str | None:
    """A gap reason for an error that means "this project cannot be read", else None (re-raised)."""
    from google.api_core.exceptions import Forbidden, NotFound, PermissionDenied

    if isinstance(exc, Forbidden | PermissionDenied):
        return f"access denied: {exc.message}"
    if isinstance(exc, NotFound):
        return f"not found: {exc.message}"
    return None


def list_inventory(projects: Iterable[str], report: RunReport, options: GcpOptions | None = None) -> pd.DataFrame:
    """The canonical inventory of `projects`; unreadable projects become gaps named `gcp/<project>/inventory`."""
    from google.api_core.exceptions import GoogleAPICallError, RetryError

    options = options or GcpOptions()
    instances_client, types_client, retry = _clients(options)
    rows: list[dict[str, Any]] = []
    type_cache: dict[tuple[str, str, str], tuple[int | None, int]] = {}
    for project in projects:
        permission("InstancesClient.aggregated_list")
        try:
            pages = instances_client.aggregated_list(request={"project": project}, retry=retry)
            for zone_key, scoped in pages:
                for inst in scoped.instances:
                    rows.append(_row(project, zone_key, inst, types_client, retry, type_cache, report))
        except (GoogleAPICallError, RetryError) as exc:
            reason = _denied(exc) if isinstance(exc, GoogleAPICallError) else f"gave up retrying: {exc}"
            if reason is None:
                raise
            report.gap(f"gcp/{project}/inventory", reason)
    if not rows:
        return empty("inventory")
    return conform("inventory", pd.DataFrame(rows))


def _row(project: str, zone_key: str, inst: Any, types_client: Any, retry: Any,
         cache: dict[tuple[str, str, str], tuple[int | None, int]], report: RunReport) -> dict[str, Any]:
    zone = catalog.short_name(inst.zone) or zone_key.rsplit("/", 1)[-1]
    machine = catalog.short_name(inst.machine_type) or ""
    vcpus, gpus = _machine(project, zone, machine, types_client, retry, cache, report)
    extra, _ = catalog.accelerators([{"acceleratorType": a.accelerator_type, "acceleratorCount": a.accelerator_count}
                                     for a in inst.guest_accelerators])
    scheduling = inst.scheduling
    spot = bool(scheduling.preemptible) or scheduling.provisioning_model == "SPOT"
    return {
        "resource": catalog.instance_resource(project, zone, inst.name), "cloud": "gcp", "account": project,
        "region": catalog.zone_region(zone), "instance_type": machine, "gpus": gpus + extra, "vcpus": vcpus,
        "spot": spot, "state": inst.status.lower() if inst.status else None,
        "launched_at": pd.Timestamp(inst.creation_timestamp) if inst.creation_timestamp else None,
        "tags": json.dumps(dict(inst.labels), sort_keys=True),
        "interfaces": " ".join(n.name for n in inst.network_interfaces) or None,
        "private_ips": " ".join(n.network_i_p for n in inst.network_interfaces if n.network_i_p) or None,
        "protected": bool(inst.deletion_protection),
    }


def _machine(project: str, zone: str, machine: str, client: Any, retry: Any,
             cache: dict[tuple[str, str, str], tuple[int | None, int]], report: RunReport) -> tuple[int | None, int]:
    """(vCPUs, GPUs) of a machine type: the API's answer, or the catalogue's when the call is denied."""
    from google.api_core.exceptions import GoogleAPICallError

    key = (project, zone, machine)
    if key not in cache:
        permission("MachineTypesClient.get")
        try:
            mt = client.get(project=project, zone=zone, machine_type=machine, retry=retry)
            cache[key] = (mt.guest_cpus or None, sum(a.guest_accelerator_count for a in mt.accelerators))
        except GoogleAPICallError as exc:
            reason = _denied(exc)
            if reason is None:
                raise
            known = catalog.lookup(machine)
            cache[key] = (known.vcpus, known.gpus) if known else (None, 0)
            report.notes.append(f"gcp/{project}: machine type {machine} from the built-in catalogue ({reason})")
    return cache[key]
