"""The kernel log of a generated arm64 guest (every granule; the log in the data segment and in
linear-map buffers, as the lockless printk keeps it) read back through ``KernelMemory`` from its
ELF, kdump and migration stream: the producer's log writer's record is the oracle."""

from __future__ import annotations

import pytest

from vmci.analysis.kaslr import vmcoreinfo_for_kaslr
from vmci.formats import open_dump
from vmci.kernel.printk import get_printk_records
from vmci.kernel.vmem import KernelMemory
from vmci.producer import printk as pw
from vmci.producer.build import build
from vmci.producer.config import Scenario
from vmci.producer.scenario import write_dump


@pytest.mark.parametrize(("page_size", "va_bits"), [(4096, 48), (16384, 47), (65536, 52)])
@pytest.mark.parametrize("fmt", ["elf", "kdump", "migration"])
def test_the_log_round_trips(tmp_path, page_size: int, va_bits: int, fmt: str) -> None:
    g = build(Scenario(arch="aarch64", ram="64M", seed=page_size, page_size=page_size, va_bits=va_bits))
    assert g.kernel is not None and g.alloc is not None
    records = pw.boot_log(300, seed=1, osrelease=g.kernel.osrelease)
    truth = pw.write_printk_log(g.mem, g.kernel, records, alloc=g.alloc.take, faults=["wrap"])
    assert truth.overwritten > 0  # the ring wrapped
    path = tmp_path / f"log.{fmt}"
    with path.open("wb") as f:
        write_dump(g, f, fmt)
    with open_dump(path) as d:
        text, _ = vmcoreinfo_for_kaslr(d)
        assert text is not None
        log = get_printk_records(KernelMemory.from_dump(d, text))
    assert log.variant == "lockless" and log.warnings == ()
    assert list(log.records) == truth.records
