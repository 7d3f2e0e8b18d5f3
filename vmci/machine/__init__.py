"""What a virtual machine looks like, independent of the container that saved it.

:mod:`.x86_pc` is QEMU's x86 ``pc`` (i440fx) and ``q35`` RAM layout, :mod:`.aarch64_virt` the Arm
``virt`` machine's; :mod:`.qemu_devices` the
state QEMU's vmcoreinfo and vmgenid devices keep outside guest RAM.  :data:`MACHINES` maps a
machine family to the architecture of its guests: a reader that knows the family (a migration
stream names its machine type) knows the architecture without asking the guest.
"""

from __future__ import annotations

from collections.abc import Iterable

#: machine family -> guest architecture (``Dump.arch``)
MACHINES: dict[str, str] = {"pc": "x86_64", "q35": "x86_64", "virt": "aarch64"}


def arch_of(family: str | None) -> str:
    """The guest architecture of machine ``family``; ``"unknown"`` for none or another family."""
    return MACHINES.get(family or "", "unknown")


def machine_family(machine: str | None, device_names: Iterable[str] = ()) -> tuple[str | None, bool]:
    """``(family, guessed)`` of any machine vmci knows (``q35``, ``pc``, ``virt``) from the machine
    type, or guessed from the machine's device names when the type is unknown (None: no family)."""
    from vmci.machine import aarch64_virt, x86_pc

    names = list(device_names)
    family, guessed = x86_pc.machine_family(machine, names)
    if family is None:
        family, guessed = aarch64_virt.machine_family(machine, names)
    return family, guessed
