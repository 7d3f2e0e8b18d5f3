"""Result objects of the library, as plain dicts ready for JSON (``--json``) and rendering.

JSON contract: addresses, sizes and offsets are integers; every top-level object carries
``"schema"`` (bumped on incompatible change).
"""

from __future__ import annotations

from typing import Any

from .dump import Dump

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
        "facts": d.facts,
        "warnings": list(d.warnings),
    }
