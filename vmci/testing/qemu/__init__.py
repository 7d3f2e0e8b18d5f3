"""Boot a real Linux guest under QEMU (TCG) and take real dumps and migration streams of it.

The module is a small, reusable harness (of vmci it imports only the architecture constants).
It needs, from Debian bookworm (or any distribution with the same parts)::

    apt-get install qemu-system-x86 linux-image-amd64 busybox-static cpio ovmf seabios
    # the tests also use: binutils (readelf), makedumpfile, crash

What it does:

* :func:`find_kernel` picks the newest kernel under ``/boot`` that has its modules in
  ``/lib/modules/<version>`` and a ``qemu_fw_cfg`` module (the module that writes the guest's
  VMCOREINFO address into QEMU's ``etc/vmcoreinfo`` fw_cfg file).
* :func:`build_initramfs` writes a gzip'd newc cpio with the static busybox, ``qemu_fw_cfg`` and
  its dependencies, and an ``/init`` that loads the module, prints ``VMCI-FACT key=value`` lines
  and then ``VMCI-READY`` on the serial console, and idles forever.  The file name is a content
  key, so a cache directory is filled once.
* :class:`Guest` runs ``qemu-system-x86_64 -accel tcg`` with that kernel and initramfs, talks QMP
  over a unix socket (:class:`Qmp`, written here), waits for the ready marker and offers
  ``stop``/``dump``/``migrate_to_file``/``pmemsave``/``hmp``/... .
* :func:`real_dumps` boots one guest per scenario and, from one stopped moment, writes an ELF
  dump, a paging ELF dump, a kdump-zlib (flattened) dump, a migration stream, the raw bytes of
  the VMCOREINFO note range (``pmemsave``) and ``facts.json`` (ground truth).  A directory that
  already holds a complete set for the same scenario, kernel and QEMU is reused as is.

Scenarios (all: q35, 256 MiB, 2 vCPUs, ``-nic none``, Debian 6.1 kernel, TCG):

====================  =======================================================================
``with_device``       SeaBIOS, KASLR on, ``-device vmcoreinfo``, ``-device vmgenid,guid=…``
``without_device``    SeaBIOS, KASLR on, no vmcoreinfo or vmgenid device (the note is still in RAM)
``nokaslr``           SeaBIOS, ``nokaslr`` (``phys_base`` 0), ``-device vmcoreinfo``
``ovmf``              OVMF (``-bios OVMF.fd``, direct kernel boot), KASLR on, ``-device vmcoreinfo``,
                      ``-device vmgenid,guid=…``
``panic``             SeaBIOS, KASLR on, ``-device vmcoreinfo``; after the facts the guest writes
                      :data:`KMSG_LINES` known lines (:func:`kmsg_line`) and two records that need
                      escaping to ``/dev/kmsg``, then crashes (``echo c > /proc/sysrq-trigger``,
                      ``panic=0``: it stays up and is dumped after the panic)
``panic_without_device``  the same without the vmcoreinfo device
``kdump_capture``     as ``panic`` with 512 MiB, ``crashkernel=160M`` and a capture kernel loaded
                      with Debian's ``kexec -p`` (the same kernel, ``nr_cpus=1``); dumped while the
                      capture kernel runs, so RAM holds both kernels' VMCOREINFO notes
====================  =======================================================================

Timings measured on 2 host cores (TCG, QEMU 7.2.22, kernel 6.1.0-56): a SeaBIOS boot to the
ready marker takes 6-8 s, an OVMF boot about 9 s; of 256 MiB, the ELF dump takes about 1 s, the
paging ELF 7-8 s (it walks the page tables; 65 743 program headers), kdump-zlib about 1 s and
the migration stream under 1 s.  One scenario (boot and every artefact) takes 17-21 s; the four
together with the harness tests about 100 s.  Each scenario leaves about 630 MiB of files
(ELF 256 MiB, paging ELF 260 MiB, kdump-zlib 34 MiB, migration stream 80 MiB).

Observed on these guests: the note buffer is 4132 bytes at a page-aligned address in the page
allocator's memory (not in the kernel image), so it moves from boot to boot; Linux's 16-byte
``etc/vmcoreinfo`` write sets ``host_format`` to 0, which the migration stream then shows.

arm64 guests (:data:`AARCH64_SCENARIOS`, :func:`real_dumps_aarch64`): ``qemu-system-aarch64
-machine virt -cpu cortex-a57 -accel tcg -m 512M -smp 2``, console ``ttyAMA0``, Debian's arm64
kernel and static busybox unpacked under ``VMCI_ARM64_ROOT`` (``dpkg --add-architecture arm64``,
``apt-get download linux-image-*-arm64:arm64 busybox-static:arm64``, ``dpkg-deb -x``,
``depmod -b``; see ``.ci/run``).  The same ``/init`` runs there (busybox is the arm64 one).

=========================  =================================================================
``arm64_with_device``      direct kernel boot (device tree), KASLR, ``-device vmcoreinfo``
``arm64_without_device``   the same without the device
``arm64_nokaslr``          ``nokaslr``: its ``_stext`` in /proc/kallsyms is the link address
``arm64_panic``            :data:`KMSG_LINES` known lines to /dev/kmsg, then a crash
``arm64_uefi``             edk2 (``-bios QEMU_EFI.fd`` from qemu-efi-aarch64): ACPI, the EFI stub
                           places the image (no EFI_RNG in QEMU: no KASLR, a 64 KiB-aligned spot)
=========================  =================================================================

Artefacts: ELF and kdump-zlib dumps (QEMU's arm target has no paging hook, so a paging ELF equals
the plain one), the migration stream, the note (``pmemsave``), the serial log and ``facts.json``.
Measured on 2 shared host cores (QEMU 7.2.22, 6.1.0-57-arm64): boot to the ready marker 3.7-9 s
(about 2.5 s on an idle host), the 512 MiB ELF 0.4-1.7 s, kdump-zlib 0.8-2.6 s, the migration
stream 0.5-1.1 s; a scenario 6-12 s.  Linux on ``virt`` under TCG runs with KPTI (a vCPU at EL0
holds ``tramp_pg_dir`` in ``TTBR1_EL1``) and with the linear map randomised: ``PHYS_OFFSET`` is far
below the RAM at 1 GiB.
"""

from __future__ import annotations

from vmci.testing.qemu.files import (
    AARCH64_CPU,
    ARM64_ROOT_ENV,
    CAPTURE_READY_MARKER,
    CRASHKERNEL,
    DEFAULT_ARM64_ROOT,
    FACT_PREFIX,
    HARNESS_VERSION,
    KERNEL_MODULE,
    OVMF_CODE,
    PANIC_MARKER,
    QEMU,
    QEMU_AARCH64,
    QEMU_EFI_AARCH64,
    READY_MARKER,
    KernelFiles,
    QemuError,
    arm64_busybox,
    arm64_root,
    find_arm64_kernel,
    find_busybox,
    find_kernel,
    missing_aarch64_requirements,
    missing_requirements,
    module_bytes,
    module_load_order,
)
from vmci.testing.qemu.guest import (
    Guest,
    GuestFacts,
    parse_facts,
)
from vmci.testing.qemu.initramfs import (
    INIT_SCRIPT,
    KMSG_LINE_FORMAT,
    build_initramfs,
    build_kdump_initramfs,
    find_kexec,
    init_script,
    kmsg_line,
)
from vmci.testing.qemu.qmp import (
    Qmp,
)
from vmci.testing.qemu.scenarios import (
    AARCH64_DUMPS,
    AARCH64_SCENARIOS,
    DUMPS,
    KMSG_LINES,
    SCENARIOS,
    Aarch64Scenario,
    RealGuest,
    Scenario,
    load_facts,
    qemu_version,
    real_dumps,
    real_dumps_aarch64,
)

__all__ = [
    "AARCH64_CPU",
    "AARCH64_DUMPS",
    "AARCH64_SCENARIOS",
    "ARM64_ROOT_ENV",
    "CAPTURE_READY_MARKER",
    "CRASHKERNEL",
    "DEFAULT_ARM64_ROOT",
    "DUMPS",
    "FACT_PREFIX",
    "HARNESS_VERSION",
    "INIT_SCRIPT",
    "KERNEL_MODULE",
    "KMSG_LINES",
    "KMSG_LINE_FORMAT",
    "OVMF_CODE",
    "PANIC_MARKER",
    "QEMU",
    "QEMU_AARCH64",
    "QEMU_EFI_AARCH64",
    "READY_MARKER",
    "SCENARIOS",
    "Aarch64Scenario",
    "Guest",
    "GuestFacts",
    "KernelFiles",
    "QemuError",
    "Qmp",
    "RealGuest",
    "Scenario",
    "arm64_busybox",
    "arm64_root",
    "build_initramfs",
    "build_kdump_initramfs",
    "find_arm64_kernel",
    "find_busybox",
    "find_kernel",
    "find_kexec",
    "init_script",
    "kmsg_line",
    "load_facts",
    "missing_aarch64_requirements",
    "missing_requirements",
    "module_bytes",
    "module_load_order",
    "parse_facts",
    "qemu_version",
    "real_dumps",
    "real_dumps_aarch64",
]
