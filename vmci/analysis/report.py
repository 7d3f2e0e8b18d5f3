"""Result objects of the library, as plain dicts ready for JSON (``--json``) and rendering.

JSON contract: addresses, sizes and offsets are integers; every top-level object carries
``"schema"`` (bumped on incompatible change).
"""

from __future__ import annotations

from typing import Any

from vmci.core.dump import Dump

SCHEMA = 1


def dump_summary(d: Dump) -> dict[str, Any]:
    """What ``vmci info`` shows: everything the container says, nothing inferred."""
    return {
        "schema": SCHEMA,
        "path": str(d.path),
        "format": d.format,
        "description": d.description,
        "arch": d.arch,
        "byte_order": d.byte_order,
        "memory_size": d.memory.size,
        "ranges": [{"start": r.start, "size": r.size} for r in d.memory.ranges],
        "notes": [
            {"name": n.name, "type": n.type, "size": len(n.desc), "offset": n.offset, "where": n.where}
            for n in d.notes
        ],
        "cpus": [c.to_dict() for c in d.cpus],
        "facts": d.header.to_dict(),
        "warnings": list(d.warnings),
    }


# -- the ``vmci analyze --json`` contract, schema 1 ---------------------------------------------

_INT = {"type": "integer"}
_OPT_INT = {"type": ["integer", "null"]}
_OPT_STR = {"type": ["string", "null"]}
_VERDICT = {"enum": ["ok", "warn", "fail", "info"]}
#: Where a text came from (``vmci.discover.finding.SOURCES``).
SOURCE_NAMES = ["elf-note", "kdump-header", "address-blob", "acpi", "fw-cfg-record", "memory-scan"]

ANALYZE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vmci analyze result",
    "type": "object",
    "required": ["schema", "dump", "vmcoreinfo", "kaslr", "vmgenid", "checks", "provenance", "candidates"],
    "properties": {
        "schema": {"const": SCHEMA},
        "dump": {
            "type": "object",
            "required": ["format", "arch", "ranges"],
            "properties": {
                "path": {"type": "string"},
                "format": {"type": "string"},
                "description": {"type": "string"},
                "arch": {"type": "string"},
                "byte_order": {"enum": ["little", "big"]},
                "memory_size": _INT,
                "ranges": {"type": "array", "items": {
                    "type": "object", "required": ["start", "size"],
                    "properties": {"start": _INT, "size": _INT}, "additionalProperties": False}},
                "warnings": {"type": "array", "items": {"type": "string"}},
            },
        },
        "vmcoreinfo": {
            "type": "object",
            "required": ["found", "source", "paddr", "text", "values"],
            "properties": {
                "found": {"type": "boolean"},
                "source": {"enum": [*SOURCE_NAMES, None]},
                "paddr": _OPT_INT,
                "note_size": _OPT_INT,
                "text": _OPT_STR,
                "values": {"type": "object", "additionalProperties": _OPT_STR},
                "key_values": {"type": "object", "properties": {
                    "OSRELEASE": _OPT_STR, "BUILD-ID": _OPT_STR, "PAGESIZE": _OPT_INT,
                    "KERNELOFFSET": _OPT_INT, "phys_base": _OPT_INT, "CRASHTIME": _OPT_INT}},
                "warnings": {"type": "array", "items": {"type": "object", "required": ["code", "message"]}},
                "reason": {"type": "string"},
            },
        },
        "kaslr": {
            "type": "object",
            "required": ["kerneloffset", "phys_base", "method"],
            "properties": {
                "kerneloffset": _OPT_INT, "phys_base": _OPT_INT, "method": _OPT_STR,
                # present when a vCPU had paging on (vmci.analysis.kaslr.KaslrResult)
                "verdict": {"enum": ["agree", "conflict", "vmcoreinfo-only", "page-tables-only", "none"]},
                "vmcoreinfo": {"type": ["object", "null"], "properties": {
                    "kerneloffset": _OPT_INT, "phys_base": _OPT_INT, "synthesized": {"type": "boolean"}}},
                "page_tables": {
                    "type": ["object", "null"], "required": ["kerneloffset", "phys_base", "method"],
                    "properties": {"kerneloffset": _INT, "phys_base": _INT, "method": _OPT_STR,
                                   "text_va": _INT, "text_pa": _INT, "la57": {"type": "boolean"}}},
                "page_tables_error": _OPT_STR,
                "symbols": {"type": ["object", "null"]},
                "corroboration": {"type": "object"},
                "evidence": {"type": "array", "items": {
                    "type": "object", "required": ["action", "detail", "verdict"],
                    "properties": {"action": {"type": "string"}, "paddr": _OPT_INT,
                                   "detail": {"type": "string"}, "verdict": _VERDICT}}},
                "warnings": {"type": "array", "items": {"type": "string"}},
            },
        },
        "vmgenid": {
            "type": ["object", "null"],
            "required": ["guid", "paddr"],
            "properties": {
                "guid": {"type": "string",
                         "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"},
                "paddr": _INT,
                "source": {"enum": ["acpi", "address-blob"]},
            },
        },
        "checks": {"type": "array", "items": {
            "type": "object", "required": ["name", "status", "detail"],
            "properties": {"name": {"type": "string"}, "status": {"enum": ["PASS", "WARN", "FAIL"]},
                           "detail": {"type": "string"}},
            "additionalProperties": False}},
        "status": {"enum": ["PASS", "WARN", "FAIL"]},
        "provenance": {"type": "array", "items": {
            "type": "object", "required": ["strategy", "action", "paddr", "detail", "verdict"],
            "properties": {"strategy": {"type": "string"}, "action": {"type": "string"}, "paddr": _OPT_INT,
                           "detail": {"type": "string"}, "verdict": _VERDICT}}},
        "candidates": {"type": "array", "items": {
            "type": "object", "required": ["source", "paddr", "valid", "chosen"],
            "properties": {"source": {"enum": SOURCE_NAMES}, "paddr": _OPT_INT, "note_size": _OPT_INT,
                           "data_paddr": _OPT_INT, "valid": {"type": "boolean"},
                           "chosen": {"type": "boolean"}}}},
    },
}

_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}


def _is(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against ``schema``: the JSON Schema subset :data:`ANALYZE_SCHEMA` uses
    (type, const, enum, pattern, required, properties, additionalProperties, items)."""
    import re

    errs: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in names):
            return [f"{path}: {type(value).__name__} is not {'/'.join(names)}"]
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        errs.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        errs += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errs += validate(v, props[k], f"{path}.{k}")
            elif extra is False:
                errs.append(f"{path}: unexpected {k!r}")
            elif isinstance(extra, dict):
                errs += validate(v, extra, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += validate(v, schema["items"], f"{path}[{i}]")
    return errs
