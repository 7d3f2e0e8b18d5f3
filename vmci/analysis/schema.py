"""The JSON Schema of the results, generated from the records of :mod:`vmci.analysis.result`.

:data:`ANALYZE_SCHEMA` is the contract of ``vmci analyze --json`` (schema 1); :func:`schema_of`
makes one for any result record.  Field types give the JSON types (``int | None`` is an integer
or null, a ``Literal`` an enum, a tuple an array, a record an object with every field required
and no other), ``Annotated`` metadata the JSON key, and field docstrings the descriptions.  A strategy
name is one of the registered strategies.  The ``kaslr`` section is still described by hand
(:data:`KASLR_SCHEMA`) until its result is typed.

The runtime does not validate: tests check real output against these schemas with jsonschema.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
import types
import typing
import uuid
from functools import cache
from typing import Any

from vmci.analysis import result
from vmci.core.evidence import Evidence
from vmci.core.record import Record, field_meta
from vmci.discover import NAMES
from vmci.kernel.vmcoreinfo import LintWarning

DIALECT = "https://json-schema.org/draft/2020-12/schema"
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

_INT = {"type": "integer"}
_OPT_INT = {"type": ["integer", "null"]}
_OPT_STR = {"type": ["string", "null"]}
_VERDICT = {"enum": ["ok", "warn", "fail", "info"]}
_STEP = {"type": "object", "required": ["action", "paddr", "detail", "verdict"],
         "properties": {"action": {"type": "string"}, "paddr": _OPT_INT, "detail": {"type": "string"},
                        "verdict": _VERDICT},
         "additionalProperties": False}

#: The ``kaslr`` section (:class:`vmci.kernel.kaslr.KaslrReport` or its short form without a paging vCPU).
KASLR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["kerneloffset", "phys_base", "method"],
    "properties": {
        "kerneloffset": _OPT_INT, "phys_base": _OPT_INT, "method": _OPT_STR,
        "verdict": {"enum": ["agree", "conflict", "vmcoreinfo-only", "page-tables-only", "none",
                             "kdump-capture"]},
        "kernels": {"type": "array", "items": {
            "type": "object",
            "required": ["role", "source", "paddr", "osrelease", "kerneloffset", "phys_base", "crashtime",
                         "chosen", "page_tables"],
            "properties": {"role": {"enum": ["crashed", "capture", "running"]}, "source": {"type": "string"},
                           "paddr": _OPT_INT, "osrelease": _OPT_STR, "kerneloffset": _OPT_INT,
                           "phys_base": _OPT_INT, "crashtime": _OPT_INT, "chosen": {"type": "boolean"},
                           "page_tables": {"type": "boolean"}},
            "additionalProperties": False}},
        "vmcoreinfo": {"type": ["object", "null"], "properties": {
            "kerneloffset": _OPT_INT, "phys_base": _OPT_INT, "synthesized": {"type": "boolean"}}},
        "page_tables": {
            "type": ["object", "null"], "required": ["kerneloffset", "phys_base", "method"],
            "properties": {"kerneloffset": _INT, "phys_base": _INT, "method": _OPT_STR,
                           "text_va": _INT, "text_pa": _INT, "la57": {"type": "boolean"}}},
        "page_tables_error": _OPT_STR,
        "symbols": {"type": ["object", "null"]},
        "corroboration": {"type": "object"},
        "evidence": {"type": "array", "items": _STEP},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}

#: Types that are not result records, described by hand.
_FOREIGN: dict[Any, dict[str, Any]] = {
    uuid.UUID: {"type": "string", "pattern": UUID_PATTERN},
    Evidence: {"type": "array", "items": _STEP},
    LintWarning: {"type": "object", "required": ["code", "message", "line"],
                  "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "line": _OPT_INT},
                  "additionalProperties": False},
    result.KaslrSection: KASLR_SCHEMA,
    result.StrategyName: {"enum": list(NAMES)},
    Any: {},
}
_SCALARS = {int: "integer", str: "string", bool: "boolean", float: "number", type(None): "null"}


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of ``cls`` (attribute docstrings, read from the source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for stmt, after in itertools.pairwise(body):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and \
                isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and \
                isinstance(after.value.value, str):
            docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    kind = schema.get("type")
    if isinstance(kind, str) and len(schema) == 1:
        return {"type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _schema(tp: Any) -> dict[str, Any]:
    if tp in _FOREIGN:
        return dict(_FOREIGN[tp])
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if tp in result.RECORDS:
        return schema_of(tp, top=False)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _schema(rest[0]) if len(rest) == 1 else {"anyOf": [_schema(a) for a in rest]}
        return _nullable(inner) if len(rest) < len(args) else inner
    if origin in (tuple, list):
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(args[1]) if args else {}}
    raise TypeError(f"no JSON schema for {tp!r}")


def schema_of(cls: type[Record], *, top: bool = True) -> dict[str, Any]:
    """The JSON Schema of a result record class: every serialized field, required, nothing else."""
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    props: dict[str, Any] = {}
    optional: set[str] = set()
    if cls.SCHEMA_VERSION is not None:
        props["schema"] = {"const": cls.SCHEMA_VERSION, "description": "The JSON contract version."}
    for name, md in field_meta(cls).items():
        if md.get("json", True) is False:
            continue
        hint = hints[name]
        prop: dict[str, Any]
        if "empty" in md:  # None is written as this value, never as null
            rest = [a for a in typing.get_args(hint) if a is not type(None)]
            prop = {"anyOf": [_schema(rest[0] if len(rest) == 1 else hint), {"const": md["empty"]}]}
        else:
            prop = _schema(hint)
        if name in docs:
            prop["description"] = docs[name]
        props[md.get("key", name)] = prop
        if md.get("optional"):
            optional.add(md.get("key", name))
    out: dict[str, Any] = {"$schema": DIALECT} if top else {}
    out.update(title=cls.__name__, type="object", required=[k for k in props if k not in optional],
               properties=props,
               additionalProperties=False)
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    return out


@cache
def analyze_schema() -> dict[str, Any]:
    """The contract of ``vmci analyze --json``."""
    return schema_of(result.AnalyzeResult)


ANALYZE_SCHEMA = analyze_schema()
