"""The emulated guest kernel: VMCOREINFO text formats, version profiles, note buffers in RAM."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmci.core.memory import Range, SparseMemory
from vmci.errors import UsageError
from vmci.kernel.vmcoreinfo import KERNEL_LINE_BYTES, VmcoreInfo, parse_note
from vmci.producer.linux import (
    PROFILES,
    KernelLayout,
    capture_kernel,
    new_utsname,
    place_vmcoreinfo,
    vmcoreinfo_text,
)


def lines(layout: KernelLayout, **kw: int) -> list[str]:
    return vmcoreinfo_text(layout, **kw).decode().splitlines()


def keys(layout: KernelLayout) -> list[str]:
    return [ln.split("=", 1)[0] for ln in lines(layout)]


# -- value formats ----------------------------------------------------------------------------------


def test_values_are_in_kernel_formats() -> None:
    text = lines(KernelLayout(profile=PROFILES["6.9"]))
    assert "NUMBER(phys_base)=-346030080" in text  # %ld, signed decimal
    assert "KERNELOFFSET=2a000000" in text  # %lx, no 0x
    assert "SYMBOL(init_uts_ns)=ffffffffaca13de0" in text  # link + KERNELOFFSET, %lx
    assert "NUMBER(VMALLOC_START)=0xffffc90000000000" in text  # the 0x%lx exception
    assert "PAGESIZE=4096" in text
    assert "NUMBER(pgtable_l5_enabled)=0" in text
    symbols = [ln.split("=", 1)[1] for ln in text if ln.startswith("SYMBOL(")]
    assert symbols and not any(v.startswith("0x") for v in symbols)


def test_five_level_paging_changes_bases() -> None:
    text = lines(KernelLayout(profile="6.9", pgtable_l5=True))
    assert "NUMBER(pgtable_l5_enabled)=1" in text
    assert "NUMBER(VMALLOC_START)=0xffa0000000000000" in text
    assert "NUMBER(MAX_PHYSMEM_BITS)=52" in text


def test_emission_order() -> None:
    k = keys(KernelLayout(profile="6.1"))
    assert k[:5] == ["OSRELEASE", "BUILD-ID", "PAGESIZE", "SYMBOL(init_uts_ns)", "OFFSET(uts_namespace.name)"]
    # printk keys sit between LENGTH(zone.free_area) and LENGTH(free_area.free_list)
    assert k.index("LENGTH(zone.free_area)") < k.index("SYMBOL(prb)") < k.index("LENGTH(free_area.free_list)")
    # the arch keys come last, KERNELOFFSET after phys_base and the top page table
    arch = k[k.index("NUMBER(phys_base)"):]
    assert arch == ["NUMBER(phys_base)", "SYMBOL(init_top_pgt)", "NUMBER(pgtable_l5_enabled)",
                    "SYMBOL(node_data)", "LENGTH(node_data)", "KERNELOFFSET", "NUMBER(KERNEL_IMAGE_SIZE)",
                    "NUMBER(sme_mask)"]


def test_crashtime_only_on_panic() -> None:
    layout = KernelLayout()
    assert "CRASHTIME" not in keys(layout)
    assert lines(layout, crashtime=1700000000)[-1] == "CRASHTIME=1700000000"


# -- version profiles --------------------------------------------------------------------------------


def test_profile_4_9() -> None:
    k = keys(KernelLayout(profile="4.9"))
    assert "SYMBOL(phys_base)" in k and "NUMBER(phys_base)" not in k
    assert "SYMBOL(init_level4_pgt)" in k and "SYMBOL(init_top_pgt)" not in k
    assert "SYMBOL(log_buf)" in k and "SYMBOL(prb)" not in k
    assert "BUILD-ID" not in k and "NUMBER(pgtable_l5_enabled)" not in k
    assert VmcoreInfo.parse(vmcoreinfo_text(KernelLayout(profile="4.9"))).phys_base.legacy_symbol


def test_profile_4_19() -> None:
    k = keys(KernelLayout(profile="4.19"))
    assert "NUMBER(phys_base)" in k and "SYMBOL(phys_base)" not in k
    assert "SYMBOL(init_top_pgt)" in k and "SYMBOL(init_level4_pgt)" not in k
    assert "BUILD-ID" not in k and "SYMBOL(log_buf)" in k and "SYMBOL(prb)" not in k
    assert "NUMBER(pgtable_l5_enabled)" in k


@pytest.mark.parametrize("name", ["5.10", "6.1"])
def test_profiles_with_build_id_and_prb(name: str) -> None:
    k = keys(KernelLayout(profile=name))
    assert k[1] == "BUILD-ID"
    prb = {"SYMBOL(prb)", "SYMBOL(printk_rb_static)", "SYMBOL(clear_seq)", "SIZE(printk_ringbuffer)"}
    assert prb <= set(k)
    assert "SYMBOL(log_buf)" not in k
    assert "SYMBOL(vmap_area_list)" in k and "NUMBER(VMALLOC_START)" not in k


def test_profile_6_9_and_later() -> None:
    for name in ("6.9", "6.12"):
        k = keys(KernelLayout(profile=name))
        assert "NUMBER(VMALLOC_START)" in k and "SYMBOL(vmap_area_list)" not in k
        assert "OFFSET(vmap_area.va_start)" not in k
    assert "NUMBER(PG_slab)" in keys(KernelLayout(profile="6.9"))
    k12 = lines(KernelLayout(profile="6.12"))
    assert "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-268435456" in k12 and not any("PG_slab" in ln for ln in k12)


def test_unknown_profile() -> None:
    with pytest.raises(UsageError):
        KernelLayout(profile="2.6")


# -- kernel buffer limits ---------------------------------------------------------------------------


def test_long_line_is_cut_like_the_80_byte_buffer() -> None:
    long = "SYMBOL(" + "x" * 100 + ")=ffffffff81000000\n"
    text = vmcoreinfo_text(KernelLayout(extra_lines=[long, "NUMBER(after)=1\n"]))
    cut = long.encode()[:KERNEL_LINE_BYTES]
    assert cut + b"NUMBER(after)=1\n" in text  # the newline was lost: the next line is glued on
    info = VmcoreInfo.parse(text)
    assert [w.code for w in info.warnings] == ["line-too-long"]


@pytest.mark.parametrize(("name", "page", "cap"), [("6.1", 4096, 4096), ("6.1", 16384, 16384),
                                                   ("4.9", 16384, 4096)])
def test_total_is_capped_at_vmcoreinfo_bytes(name: str, page: int, cap: int) -> None:
    extra = [f"NUMBER(filler_{i})={i}\n" for i in range(1200)]
    layout = KernelLayout(profile=name, page_size=page, extra_lines=extra)
    assert len(vmcoreinfo_text(layout, crashtime=1)) == cap == layout.vmcoreinfo_bytes


def test_deterministic_build_id_from_seed() -> None:
    a, b, c = (vmcoreinfo_text(KernelLayout(seed=s)) for s in (7, 7, 8))
    assert a == b != c
    bid = VmcoreInfo.parse(a).build_id
    assert bid is not None and len(bid) == 40 and bid == bid.lower()
    assert VmcoreInfo.parse(vmcoreinfo_text(KernelLayout(build_id="AB" * 20))).build_id == "ab" * 20
    with pytest.raises(UsageError):
        KernelLayout(build_id="xyz")


# -- round trip through the model, and drgn ---------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(PROFILES)),
    st.integers(0, 0x3F) .map(lambda n: n << 24),
    st.integers(-(1 << 31), 1 << 31).map(lambda n: n & ~0xFFF),
    st.booleans(),
    st.sampled_from([4096, 16384, 65536]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64),
    st.one_of(st.none(), st.integers(0, 2**40)),
)
def test_generated_text_reparses_to_the_layout(name: str, kaslr: int, phys_base: int, l5: bool,
                                               page: int, release: str, crashtime: int | None) -> None:
    layout = KernelLayout(profile=name, kaslr_offset=kaslr, phys_base=phys_base, pgtable_l5=l5,
                          page_size=page, osrelease=release)
    info = VmcoreInfo.parse(vmcoreinfo_text(layout, crashtime=crashtime))
    assert info.osrelease == release and info.pagesize == page and info.kerneloffset == kaslr
    if layout.profile.since(4, 10):
        assert info.phys_base == (phys_base, False)
    else:
        assert info.phys_base is not None and info.phys_base.legacy_symbol
    assert info.symbol("swapper_pg_dir") == layout.runtime("swapper_pg_dir")
    assert info.symbol("_stext") == 0xFFFFFFFF81000000 + kaslr
    assert info.crashtime == crashtime
    if layout.profile.since(4, 17):
        assert info.pgtable_l5_enabled is l5
    legacy = [] if layout.profile.since(4, 10) else ["missing-kaslr-key"]
    assert [w.code for w in info.warnings] == legacy


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_drgn_accepts_every_profile(name: str) -> None:
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (pip install drgn)")
    text = vmcoreinfo_text(KernelLayout(profile=name), crashtime=1700000000)
    drgn.Program(drgn.host_platform, vmcoreinfo=text)  # parses at construction; raises if invalid


# -- buffers in guest RAM ---------------------------------------------------------------------------


def ram(size: int = 1 << 30) -> SparseMemory:
    return SparseMemory([Range(0, size)])


def test_place_writes_note_buffer_and_data_page() -> None:
    mem = ram()
    layout = KernelLayout()
    placed = place_vmcoreinfo(mem, layout, 0x3FF00000, 0x3FF02000)
    assert placed.note_size == 4132
    buf = mem.read(0x3FF00000, 4132)
    name, ntype, desc, total = parse_note(buf)
    assert (name, ntype, desc) == ("VMCOREINFO", 0, placed.text)
    assert buf[total:total + 12] == bytes(12)  # final_note()
    assert buf[total:] == bytes(4132 - total)  # __GFP_ZERO
    page = mem.read(0x3FF02000, 4096)
    n = len(placed.text)
    assert page[:n] == placed.text and page[n:] == bytes(4096 - n)
    assert mem.read(placed.desc_paddr, len(placed.text)) == placed.text
    uts = mem.read(placed.uts_paddr, 390)
    assert uts == new_utsname(layout) and uts[130:145] == b"6.1.0-18-amd64\0"
    # init_uts_ns sits where the text says: SYMBOL - __START_KERNEL_map + phys_base
    info = VmcoreInfo.parse(placed.text)
    assert placed.uts_paddr == info.symbol("init_uts_ns") - 0xFFFFFFFF80000000 + info.phys_base.value


def test_place_enforces_kernel_alignment() -> None:
    with pytest.raises(UsageError, match="aligned"):
        place_vmcoreinfo(ram(), KernelLayout(), 0x3FF00010, 0x3FF02000)
    with pytest.raises(UsageError, match="overlap"):
        place_vmcoreinfo(ram(), KernelLayout(), 0x3FF00000, 0x3FF01000)
    # before 4.13 the buffers were .bss arrays: 4-byte alignment is enough
    placed = place_vmcoreinfo(ram(), KernelLayout(profile="4.9"), 0x3FF00014, 0x3FF02000, write_uts=False)
    assert placed.uts_paddr is None


def test_place_refuses_uts_outside_ram() -> None:
    with pytest.raises(UsageError, match="init_uts_ns"):
        place_vmcoreinfo(ram(64 << 20), KernelLayout(), 0x100000, 0x102000)


def test_capture_kernel_copy() -> None:
    layout = KernelLayout(seed=3)
    cap = capture_kernel(layout, 0x30000000)
    info = VmcoreInfo.parse(vmcoreinfo_text(cap))
    assert info.kerneloffset == 0 and info.phys_base.value == 0x30000000 - 0x1000000
    assert info.build_id == layout.build_id_hex  # the same kernel binary
    other = capture_kernel(layout, 0x30000000, osrelease="6.1.0-99-amd64")
    assert other.osrelease == "6.1.0-99-amd64" and other.build_id_hex != layout.build_id_hex
