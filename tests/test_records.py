from __future__ import annotations

import pandas as pd
import pytest

from spendwatch.records import TABLES, TableError, Tables, conform, empty


def test_every_table_has_the_design_columns() -> None:
    design = {
        "spend": "hour cloud account region service usage_type resource cost_usd usage_amount pricing",
        "activity": "time cloud account region principal principal_type action resource instance_type gpus "
        "vcpus spot source_ip user_agent",
        "flows": "start end cloud account region resource interface src dst src_port dst_port protocol packets "
        "bytes action direction",
        "dns": "time cloud account resource query qtype answers resolver",
        "utilization": "time cloud account resource metric device value",
        "inventory": "resource cloud account region instance_type gpus state launched_at launched_by tags "
        "interfaces protected",
    }
    for name, cols in design.items():
        assert set(cols.split()) <= set(TABLES[name].names), name


@pytest.mark.parametrize("name", sorted(TABLES))
def test_empty_tables_have_their_types(name: str) -> None:
    frame = empty(name)
    assert list(frame.columns) == TABLES[name].names
    assert {c: str(t) for c, t in frame.dtypes.items()} == TABLES[name].dtypes()


def test_conform_types_and_keeps_account_ids_as_strings() -> None:
    frame = pd.DataFrame(
        {
            "time": ["2026-11-20T10:00:00Z", "2026-11-20T10:05:00+01:00"],
            "cloud": ["aws", "aws"],
            "account": ["012345678901", "012345678901"],
            "resource": ["i-1", "i-2"],
            "metric": ["gpu_util", "cpu_util"],
            "value": ["99.5", 12],
            "extra": [1, 2],
        }
    )
    out = conform("utilization", frame)
    assert out["account"].tolist() == ["012345678901", "012345678901"]
    assert str(out["time"].dtype) == "datetime64[ns, UTC]"
    assert out["time"][1] == pd.Timestamp("2026-11-20T09:05:00Z")
    assert out["value"].tolist() == [99.5, 12.0]
    assert out["device"].isna().all()
    assert out["extra"].tolist() == [1, 2]


def test_conform_names_the_missing_column() -> None:
    with pytest.raises(TableError, match=r"'flows'.*dst"):
        conform("flows", pd.DataFrame({"start": [], "end": [], "cloud": [], "account": [], "src": []}))


def test_conform_names_the_bad_column() -> None:
    frame = pd.DataFrame({"hour": ["2026-11-20T10:00Z"], "cloud": ["aws"], "account": ["1"], "service": ["x"],
                          "cost_usd": ["twelve"]})
    with pytest.raises(TableError, match=r"'spend'.*cost_usd"):
        conform("spend", frame)


def test_tables_concat() -> None:
    a = conform("dns", pd.DataFrame({"time": ["2026-11-20T10:00Z"], "cloud": ["aws"], "account": ["1"],
                                     "query": ["a.example"]}))
    tables = Tables.concat({"dns": [a, a]})
    assert tables.counts() == {"spend": 0, "activity": 0, "flows": 0, "dns": 2, "utilization": 0, "inventory": 0}
