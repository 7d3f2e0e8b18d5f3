"""vmci.kernel.printk.probe: the few reads ``analyze`` makes before loading the log readers.  The
oracle is what the producer wrote (records, or no log at all), never the reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from printk_guest import boot

from vmci.core.memory import Range
from vmci.discover.run import find_vmcoreinfo
from vmci.formats import open_dump
from vmci.kernel.printk import get_printk_records
from vmci.kernel.printk.probe import certainly_empty
from vmci.kernel.vmem import KernelMemory
from vmci.producer.printk import boot_log

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"


@pytest.mark.parametrize("prof", ["5.10", "6.1", "6.12", "4.19", "3.2"])
def test_a_written_log_is_never_called_empty(prof: str) -> None:
    g = boot(prof, boot_log(30, seed=3))
    assert g.truth.records  # the producer wrote records
    assert not certainly_empty(g.kernel())


def test_an_unreadable_prb_pointer_is_not_called_empty() -> None:
    g = boot("6.1", boot_log(10))
    g.extra_holes.append(Range(g.layout.kernel_paddr(g.layout.runtime("prb")) & ~0xFFF, 0x1000))
    assert not certainly_empty(g.kernel())  # the reader falls back to printk_rb_static


@pytest.mark.parametrize("name", ["upstream", "rfc-seabios", "vmgenid-ovmf"])
def test_a_guest_that_logged_nothing_is_called_empty(name: str) -> None:
    # testdata/ was generated without a log: prb is NULL in the guest (the scenario has no "log")
    with open_dump(TESTDATA / f"{name}.kdump") as d:
        chosen = find_vmcoreinfo(d).chosen
        assert chosen is not None and chosen.text is not None
        kmem = KernelMemory.from_dump(d, chosen.text)
        assert certainly_empty(kmem)
        assert get_printk_records(kmem).records == ()
