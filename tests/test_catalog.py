"""The instance catalogue across clouds: the tables agree with the connectors' GPU catalogues, lookups find
each cloud's names, and a GCP or Azure finding is priced from the list when no billing has landed."""

from __future__ import annotations

import shutil
from pathlib import Path

from spendwatch import catalog
from spendwatch.connectors.azure import catalog as azure
from spendwatch.connectors.gcp import catalog as gcp
from spendwatch.pipeline import scan_directory
from spendwatch.simulate.azure import COST, simulate_azure
from spendwatch.simulate.gcp import BILLING, simulate_gcp


def test_tables_agree_with_the_connectors_gpu_catalogues() -> None:
    assert catalog.gcp_machine_types() and catalog.azure_vm_sizes()
    for name, row in catalog.gcp_machine_types().items():
        known = gcp.lookup(name)
        assert known is not None and (known.vcpus, known.gpus) == (row.vcpus, row.gpus), name
        assert row.on_demand_usd_hour > 0
    for row in catalog.azure_vm_sizes().values():
        known = azure.lookup(row.name)
        assert known is not None and (known.vcpus, known.gpus) == (row.vcpus, row.gpus), row.name
        assert row.on_demand_usd_hour > 0


def test_lookup_and_accelerated_for_every_cloud() -> None:
    assert catalog.lookup("g5.xlarge") is not None and catalog.lookup("a2-highgpu-1g") is not None
    sized = catalog.lookup("standard_nd96asr_v4")
    assert sized is not None and sized.name == "Standard_ND96asr_v4" and sized.gpus == 8
    assert catalog.lookup("n2-standard-4") is None and catalog.lookup(None) is None
    assert catalog.is_accelerated("a3-highgpu-8g") and catalog.is_accelerated("g2-standard-4")
    assert catalog.is_accelerated("Standard_NV6ads_A10_v5") and not catalog.is_accelerated("Standard_D4s_v5")
    assert not catalog.is_accelerated("n2-standard-8") and not catalog.is_accelerated("e2-micro")


def test_findings_are_priced_from_the_list_before_billing_lands(tmp_path: Path) -> None:
    gcp_truth = simulate_gcp(tmp_path, seed=7, days=1.0, instances=12, write_truth=False)
    simulate_azure(tmp_path, seed=7, days=1.0, instances=12, write_truth=False)
    shutil.rmtree(tmp_path / BILLING)
    shutil.rmtree(tmp_path / COST)
    result = scan_directory(tmp_path, store=None, keep_tables=True)
    assert result.tables is not None
    inventory = result.tables.inventory.set_index("resource")
    priced = 0
    for f in result.findings:
        itype = inventory["instance_type"].get(f.resource) if f.resource in inventory.index else None
        known = catalog.lookup(itype if isinstance(itype, str) else None)
        if f.cloud in ("gcp", "azure") and known is not None:
            assert f.hourly_cost_usd == known.on_demand_usd_hour, (f.resource, itype)
            priced += 1
    miners = {r for i in gcp_truth.incidents for r in i.resources}
    assert miners and all(f.hourly_cost_usd for f in result.findings if f.resource in miners)
    assert priced >= len(miners)
