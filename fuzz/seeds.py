"""Seed corpora for the fuzz targets, generated (never downloaded): small dumps of every format
written by vmci's writers and the generator (:mod:`vmci.producer.scenario`), deterministic for a
given vmci version.  ``python fuzz/seeds.py DIR`` writes ``DIR/<target>/*``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path


def _tiny_memory(seed: int, size: int = 0x8000) -> object:
    """Two ranges of ``size // 2`` with a hole between: a random page (stored as is by a
    compressing writer), a compressible page (text), the RSDP signature and zero pages.  Small on
    purpose: libFuzzer's mutations then land in headers, descriptors and page streams rather
    than in page data, and one execution costs a fraction of a millisecond more per page."""
    import random

    from vmci.core.memory import Range, SparseMemory

    rnd = random.Random(seed)
    mem = SparseMemory([Range(0, size // 2), Range(size, size // 2)])
    mem.write(rnd.randrange(2, size // 0x2000) * 0x1000, rnd.randbytes(4096))
    mem.write(size, (b"OSRELEASE=6.1.0-fuzz\n" * 200)[:4096])
    mem.write(0x1000, b"RSD PTR " + bytes(12))
    return mem


def _notes() -> bytes:
    from vmci.formats.notes import encode_notes

    text = (b"OSRELEASE=6.1.0-fuzz\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff82a13a00\n"
            b"OFFSET(uts_namespace.name)=4\nKERNELOFFSET=0\nNUMBER(phys_base)=0\n")
    return encode_notes([("CORE", 1, bytes(336)), ("VMCOREINFO", 0, text)])


def _scenario_dumps(out: Path) -> list[Path]:
    """A few generated guests (16 MiB) as kdump files: the analysis target's seeds."""
    from vmci.producer.scenario import Scenario, generate

    paths = []
    for name, s in (
        ("rfc", Scenario(seed=1, ram=16 << 20)),
        ("upstream", Scenario(seed=2, ram=16 << 20, device="upstream")),
        ("ovmf-vmgenid", Scenario(seed=3, ram=16 << 20, firmware="ovmf", vmgenid=True)),
        ("noteless", Scenario(seed=4, ram=16 << 20, faults=("vmcoreinfo-lost",))),
    ):
        p = out / f"{name}.kdump"
        generate(s, p, "kdump", compression="none" if name == "noteless" else "zlib")
        for extra in p.parent.glob(p.name + ".*"):
            extra.unlink()
        paths.append(p)
    return paths


def make_seeds(root: Path) -> dict[str, list[Path]]:
    """Write every target's seeds under ``root``; return them by target."""
    from vmci.formats.elf import write_elf
    from vmci.formats.kdump import write_kdump
    from vmci.formats.libvirt import write_libvirt
    from vmci.formats.migration.writer import VmcoreinfoRecord, standard_devices, write_migration
    from vmci.formats.raw import write_raw

    seeds: dict[str, list[Path]] = {}

    def put(target: str, name: str, data: bytes) -> None:
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
        seeds.setdefault(target, []).append(d / name)

    notes = _notes()
    mappings = [(0xFFFFFFFF81000000, 0x1000, 0x2000), (0xFFFF888000000000, 0, 0x1000)]
    elf_kinds: tuple[dict[str, object], ...] = (
        {}, {"style": "kexec"}, {"bits": 32, "machine": 3}, {"section_headers_first": False},
        {"mappings": mappings})
    for i, kw in enumerate(elf_kinds):
        buf = io.BytesIO()
        write_elf(buf, _tiny_memory(i), notes, **kw)  # type: ignore[arg-type]
        put("elf", f"elf-{i}", buf.getvalue())
    kdumps = [({}, "zlib"), ({"header_version": 3}, "none"), ({"abi": "i386"}, "lzo"),
              ({"little": False}, "snappy"), ({"header_version": 5}, "zstd"), ({"split": (0, 0xA)}, "zlib")]
    for i, (kw, comp) in enumerate(kdumps):
        for flat in (False, True):
            buf = io.BytesIO()
            write_kdump(buf, _tiny_memory(10 + i), notes, compression=comp, flattened=flat, **kw)  # type: ignore[arg-type]
            put("flattened" if flat else "kdump", f"kdump-{i}", buf.getvalue())
    from vmci.core.memory import Range, SparseMemory

    for i, devices in enumerate((standard_devices(vmgenid_addr=0x7000 + 40),
                                 standard_devices(vmcoreinfo_record=VmcoreinfoRecord(
                                     host_format=1, guest_format=1, size=0x1000, paddr=0x5000)))):
        mem = SparseMemory([Range(0, 1 << 20)])
        mem.write(0x5000, b"\x11" * 4096)
        mem.write(0x9000, b"\x22" * 64)
        buf = io.BytesIO()
        write_migration(buf, mem, devices=devices)
        put("migration", f"migration-{i}", buf.getvalue())
        for comp in ("raw", "gzip"):
            out = io.BytesIO()
            buf.seek(0)
            write_libvirt(out, buf, xml="<domain type='kvm'><name>fuzz</name></domain>", compression=comp)
            put("libvirt", f"libvirt-{i}-{comp}", out.getvalue())
    for i in range(2):
        buf = io.BytesIO()
        write_raw(buf, _tiny_memory(20 + i))
        put("raw", f"raw-{i}", buf.getvalue())
    scen = root / "_scenarios"
    scen.mkdir(parents=True, exist_ok=True)
    for p in _scenario_dumps(scen):
        data = p.read_bytes()
        put("analysis", p.name, data)
    for name in ("elf-0", "kdump-0"):
        put("analysis", name, (root / name.split("-")[0] / name).read_bytes())
    return seeds


if __name__ == "__main__":
    made = make_seeds(Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz-seeds"))
    for target, paths in sorted(made.items()):
        print(f"{target:10} {len(paths):3} seeds, {sum(p.stat().st_size for p in paths):9} bytes")
