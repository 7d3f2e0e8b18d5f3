"""vmci's drgn plugin (entry point ``vmci`` in the ``drgn.plugins`` group).

- ``%vmci kaslr|provenance|checks|release`` commands (``drgn.commands``), on the program's core
  dump (``prog.core_dump_path``, or the dump :func:`vmci.integrations.drgn.program_from_dump` recorded);
- a ``drgn_prog_set`` hook that warns when a kernel program's VMCOREINFO lacks ``KERNELOFFSET`` or
  ``NUMBER(phys_base)``, when the text is synthesized, when vmci's page-table answer disagrees with
  what drgn loaded, and when a dump drgn took for a userspace core holds a kernel.  Set
  ``VMCI_DRGN_CHECK=0`` to skip the page-table comparison.  Failures only warn.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import drgn
from drgn.commands import argument, command

log = logging.getLogger("drgn.plugins.vmci")
ACTIONS = ("kaslr", "provenance", "checks", "release")


def _text(prog: drgn.Program) -> bytes | None:
    try:
        return prog["VMCOREINFO"].string_()
    except (LookupError, drgn.FaultError, ValueError):
        return None


def dump_path(prog: drgn.Program) -> str | None:
    """The dump behind ``prog``: drgn's core dump path, else what vmci recorded."""
    rec = prog.cache.get("vmci") if hasattr(prog, "cache") else None
    if isinstance(rec, dict) and rec.get("dump"):
        return str(rec["dump"])
    path = getattr(prog, "core_dump_path", None)
    return str(path) if path and os.path.isfile(path) else None


def kaslr_dict(prog: drgn.Program) -> dict[str, Any]:
    """vmci's KASLR report for the program's dump, compared with the program's own VMCOREINFO."""
    from vmci.formats import open_dump
    from vmci.kernel.kaslr import kaslr_report
    from vmci.kernel.vmcoreinfo import VmcoreInfo

    path = dump_path(prog)
    if path is None:
        raise ValueError("the program has no core dump file vmci can open")
    raw = _text(prog)
    vi = VmcoreInfo.parse(raw) if raw is not None else None
    with open_dump(path) as d:
        rep = kaslr_report(d, vmcoreinfo=vi, vmcoreinfo_source="drgn's VMCOREINFO")
    return rep.to_dict()


def _print_kaslr(k: dict[str, Any]) -> None:
    from vmci.core.numbers import signed_hex

    def sx(v: int | None) -> str:
        return signed_hex(v, decimal=True)

    print(f"KERNELOFFSET {sx(k['kerneloffset'])}  phys_base {sx(k['phys_base'])}  method {k['method']}  "
          f"verdict {k['verdict']}")
    pt = k.get("page_tables")
    if pt:
        print(f"page tables: KERNELOFFSET {sx(pt['kerneloffset'])} phys_base {sx(pt['phys_base'])} "
              f"(_text {pt['text_va']:#x} -> {pt['text_pa']:#x})")
    for e in k["evidence"]:
        print(f"  [{e['verdict']}] {e['action']}: {e['detail']}")


@command(
    description="vmci: KASLR, provenance and checks of the VMCOREINFO",
    arguments=(
        argument("action", nargs="?", default="kaslr", choices=ACTIONS,
                 help="kaslr (default), provenance, checks, or release"),
        argument("--json", action="store_true", help="print JSON"),
    ),
)
def _cmd_vmci(prog: drgn.Program, name: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    if args.action == "release":
        from vmci.kernel.synthesize import release_via
        from vmci.kernel.vmcoreinfo import VmcoreInfo

        raw = _text(prog)
        rel = release_via(VmcoreInfo.parse(raw), prog.read) if raw is not None else None
        print(rel)
        return rel
    if args.action == "kaslr":
        k = kaslr_dict(prog)
        if args.json:
            print(json.dumps(k, indent=2))
        else:
            _print_kaslr(k)
        return k
    from vmci.analysis.analyze import analyze
    from vmci.formats import open_dump

    path = dump_path(prog)
    if path is None:
        raise ValueError("the program has no core dump file vmci can open")
    with open_dump(path) as d:
        result = analyze(d, vmgenid=False)
    rec = prog.cache.get("vmci", {})
    from vmci.kernel.vmcoreinfo import is_synthesized

    synthesized = is_synthesized(_text(prog) or b"")
    if args.action == "provenance":
        found = {k: result["vmcoreinfo"][k] for k in ("found", "source", "paddr", "reason")}
        out: Any = {"loaded_from": rec or {"source": "drgn"}, "synthesized": synthesized,
                    "vmcoreinfo": found, "provenance": result["provenance"]}
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"drgn's VMCOREINFO: {rec.get('source', 'from the dump (drgn)')}"
                  + (" -- SYNTHESIZED by vmci from the page tables" if synthesized else ""))
            v = out["vmcoreinfo"]
            print(f"vmci: found={v['found']} source={v['source']} paddr={v['paddr']}: {v['reason']}")
            for s in result["provenance"]:
                print(f"  [{s['verdict']}] {s['strategy']}: {s['action']}: {s['detail']}")
        return out
    checks = result["checks"]
    if args.json:
        print(json.dumps(checks, indent=2))
    else:
        for c in checks:
            print(f"{c['status']:4s} {c['name']}: {c['detail']}")
        print(f"Result: {result['status']}")
    return checks


def _check(prog: drgn.Program) -> list[str]:
    """The warnings the hook prints (also used by tests)."""
    from vmci.kernel.vmcoreinfo import VmcoreInfo, is_synthesized

    out: list[str] = []
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        path = dump_path(prog)
        if path is None:
            return out
        from vmci.discover.run import find_vmcoreinfo
        from vmci.formats import open_dump

        with open_dump(path) as d:
            from vmci.arch import lookup

            if lookup(d.arch) is None:
                return out
            found = find_vmcoreinfo(d).chosen
        if found is not None:
            out.append(f"{path} holds a Linux kernel (VMCOREINFO found by {found.source}) but drgn loaded it "
                       f"as a userspace core; run `vmci drgn {path}` or "
                       f"`vmci vmcoreinfo {path} -o F && drgn --vmcoreinfo F -c {path}`")
        return out
    raw = _text(prog)
    if raw is None:
        return out
    vi = VmcoreInfo.parse(raw)
    if is_synthesized(vi):
        out.append("this VMCOREINFO was SYNTHESIZED by vmci from the page tables (no kernel note survived)")
    missing = [k for k in ("KERNELOFFSET", "NUMBER(phys_base)") if k not in vi]
    if missing and not any(k in vi for k in ("NUMBER(kimage_voffset)", "NUMBER(VA_BITS)")):
        out.append(f"VMCOREINFO lacks {' and '.join(missing)}: kernel addresses may be wrong under KASLR; "
                   "`%vmci kaslr` shows what the page tables say")
    if os.environ.get("VMCI_DRGN_CHECK", "1") != "0" and dump_path(prog) is not None:
        k = kaslr_dict(prog)
        if k["verdict"] == "conflict":
            out += [f"vmci disagrees with the VMCOREINFO drgn loaded: {w}" for w in k["warnings"]
                    if "disagree" in w]
    return out


def drgn_prog_set(prog: drgn.Program) -> None:
    try:
        for w in _check(prog):
            log.warning("vmci: %s", w)
    except Exception as e:  # a plugin must never break drgn
        log.warning("vmci: check failed: %s: %s", type(e).__name__, e)


drgn_prog_set.drgn_priority = 60  # type: ignore[attr-defined]
