"""The JSON Schema generated from the result dataclasses: real output validates (jsonschema, not vmci),
contract breaks do not, and every field is documented."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import schema_errors

from vmci.analysis import result
from vmci.analysis.analyze import analyze
from vmci.analysis.schema import ANALYZE_SCHEMA, schema_of
from vmci.discover import NAMES
from vmci.formats import open_dump

GOLDEN = Path(__file__).parent / "golden"
DATA = Path(__file__).resolve().parents[2] / "testdata"


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("*.analyze.json")))
def test_stored_contract_outputs_validate(golden: str) -> None:
    assert schema_errors(json.loads((GOLDEN / golden).read_text())) == []


def test_live_output_validates_not_found_and_named_strategies(tmp_path: Path) -> None:
    raw = tmp_path / "zeros.raw"
    raw.write_bytes(bytes(1 << 20))
    with open_dump(raw, format="raw") as d:
        r = analyze(d, strategies=list(NAMES[:2]) + ["acpi", "memory-scan"]).to_dict()
    assert not r["vmcoreinfo"]["found"] and schema_errors(r) == []


def test_contract_breaks_are_caught() -> None:
    good = json.loads((GOLDEN / "rfc-seabios.analyze.json").read_text())
    for path, value in [(("vmcoreinfo", "source"), "guess"), (("candidates", 0, "paddr"), "0x1000"),
                        (("status",), "OK"), (("provenance", 0, "verdict"), "fine"), (("schema",), 2),
                        (("vmcoreinfo", "key_values", "KERNELOFFSET"), "0x0")]:
        bad = copy.deepcopy(good)
        node = bad
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
        assert schema_errors(bad), path
    extra = copy.deepcopy(good)
    extra["checks"][0]["hint"] = "a key the contract does not have"
    assert any("hint" in e for e in schema_errors(extra))
    missing = copy.deepcopy(good)
    del missing["vmcoreinfo"]["reason"]
    assert schema_errors(missing)


def test_schema_follows_the_registry_and_the_fields() -> None:
    props = ANALYZE_SCHEMA["properties"]
    assert props["vmcoreinfo"]["properties"]["source"]["enum"] == [*NAMES, None]
    assert props["candidates"]["items"]["properties"]["source"]["enum"] == list(NAMES)
    assert list(props) == ["schema", *result.AnalyzeResult._fields]
    kv = props["vmcoreinfo"]["properties"]["key_values"]["anyOf"][0]
    assert list(kv["properties"]) == ["OSRELEASE", "BUILD-ID", "PAGESIZE", "KERNELOFFSET", "phys_base",
                                      "CRASHTIME"]
    assert "code" not in props["provenance"]["items"]["properties"]


@pytest.mark.parametrize("cls", result.RECORDS, ids=lambda c: c.__name__)
def test_every_field_is_documented(cls: type) -> None:
    schema = schema_of(cls)
    assert schema["description"]
    assert all(p.get("description") for p in schema["properties"].values()), cls


def test_info_output_validates(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "vmci.cli", "info", str(DATA / "upstream.kdump"), "--json"],
                       capture_output=True, timeout=120, check=True)
    assert schema_errors(json.loads(p.stdout), schema_of(result.DumpInfo)) == []
