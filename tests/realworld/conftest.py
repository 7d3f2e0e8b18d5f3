"""Fixtures for the real-QEMU tier: one booted guest per scenario, shared by the whole session.

Each scenario fixture boots its guest the first time a test asks for it (about 15-25 s under
TCG) and yields a :class:`RealGuest`.  Set ``VMCI_REALWORLD_DIR=/some/dir`` to keep the dumps
between sessions: a complete directory for the same scenario, kernel and QEMU is reused without
booting.  Otherwise the large files are deleted at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmci.testing.qemu import (
    AARCH64_SCENARIOS,
    OVMF_CODE,
    QEMU_EFI_AARCH64,
    SCENARIOS,
    KernelFiles,
    RealGuest,
    arm64_busybox,
    find_arm64_kernel,
    find_kernel,
    missing_aarch64_requirements,
    missing_requirements,
    real_dumps,
    real_dumps_aarch64,
)

BULKY = ("elf", "elf_paging", "kdump_zlib", "migration")


@pytest.fixture(scope="session")
def kernel_files() -> KernelFiles:
    missing = missing_requirements()
    if missing:
        pytest.skip("real-QEMU tier unavailable: " + "; ".join(missing))
    kernel = find_kernel()
    assert kernel is not None
    return kernel


@pytest.fixture(scope="session")
def realworld_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """(directory, persistent?) for the scenario artefacts."""
    env = os.environ.get("VMCI_REALWORLD_DIR")
    if env:
        return Path(env), True
    return tmp_path_factory.mktemp("realworld"), False


@pytest.fixture(scope="session")
def initramfs_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("vmci-initramfs"))
    return tmp_path_factory.mktemp("initramfs")


def _boot(name: str, kernel: KernelFiles, root: tuple[Path, bool], initramfs: Path) -> Iterator[RealGuest]:
    directory, persistent = root
    paths = real_dumps(directory / name, name, kernel=kernel, initramfs_dir=initramfs)
    yield RealGuest.load(name, paths)
    if not persistent:
        for key in BULKY:
            paths[key].unlink(missing_ok=True)


@pytest.fixture(scope="session")
def with_device(
    kernel_files: KernelFiles, realworld_root: tuple[Path, bool], initramfs_dir: Path
) -> Iterator[RealGuest]:
    """SeaBIOS, KASLR, ``-device vmcoreinfo`` and ``-device vmgenid``."""
    yield from _boot("with_device", kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def without_device(
    kernel_files: KernelFiles, realworld_root: tuple[Path, bool], initramfs_dir: Path
) -> Iterator[RealGuest]:
    """SeaBIOS, KASLR, no vmcoreinfo (nor vmgenid) device."""
    yield from _boot("without_device", kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def nokaslr(
    kernel_files: KernelFiles, realworld_root: tuple[Path, bool], initramfs_dir: Path
) -> Iterator[RealGuest]:
    """SeaBIOS, ``nokaslr`` (phys_base 0), ``-device vmcoreinfo``."""
    yield from _boot("nokaslr", kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def ovmf(
    kernel_files: KernelFiles, realworld_root: tuple[Path, bool], initramfs_dir: Path
) -> Iterator[RealGuest]:
    """OVMF, KASLR, ``-device vmcoreinfo`` and ``-device vmgenid``."""
    if not OVMF_CODE.is_file():
        pytest.skip(f"{OVMF_CODE} not installed (apt-get install ovmf)")
    yield from _boot("ovmf", kernel_files, realworld_root, initramfs_dir)


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> RealGuest:
    """Indirect parametrisation: ``@pytest.mark.parametrize("scenario", [...], indirect=True)``."""
    name = request.param
    assert name in SCENARIOS, name
    guest: RealGuest = request.getfixturevalue(name)
    return guest


@pytest.fixture(scope="session")
def reassembled_kdump(with_device: RealGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``makedumpfile -R`` applied to the with_device kdump-zlib (flattened) dump."""
    tool = shutil.which("makedumpfile")
    if tool is None:
        pytest.skip("makedumpfile not installed (apt-get install makedumpfile)")
    out = tmp_path_factory.mktemp("reassembled") / "dump.kdump"
    with with_device["kdump_zlib"].open("rb") as src:
        proc = subprocess.run([tool, "-R", str(out)], stdin=src, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield out
    out.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def panic(
    kernel_files: KernelFiles, realworld_root: tuple[Path, bool], initramfs_dir: Path
) -> Iterator[RealGuest]:
    """SeaBIOS, KASLR, ``-device vmcoreinfo``; known kernel-log lines, then a crash (dumped after it)."""
    yield from _boot("panic", kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def panic_without_device(
    kernel_files: KernelFiles, realworld_root: tuple[Path, bool], initramfs_dir: Path
) -> Iterator[RealGuest]:
    """As ``panic``, without the vmcoreinfo device."""
    yield from _boot("panic_without_device", kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def kdump_capture(
    kernel_files: KernelFiles, realworld_root: tuple[Path, bool], initramfs_dir: Path
) -> Iterator[RealGuest]:
    """A guest that panics into a kdump capture kernel (kexec -p), dumped while that kernel runs."""
    yield from _boot("kdump_capture", kernel_files, realworld_root, initramfs_dir)


# -- arm64 guests (qemu-system-aarch64 -machine virt -cpu cortex-a57, Debian's arm64 kernel) ---------


@pytest.fixture(scope="session")
def arm64_kernel_files() -> tuple[KernelFiles, Path]:
    """Debian's arm64 kernel and static busybox, unpacked under ``VMCI_ARM64_ROOT`` (``.ci/run``)."""
    missing = missing_aarch64_requirements()
    if missing:
        pytest.skip("arm64 real-QEMU tier unavailable: " + "; ".join(missing))
    kernel, busybox = find_arm64_kernel(), arm64_busybox()
    assert kernel is not None and busybox is not None
    return kernel, busybox


def _boot_arm64(name: str, files: tuple[KernelFiles, Path], root: tuple[Path, bool],
                initramfs: Path) -> Iterator[RealGuest]:
    directory, persistent = root
    kernel, busybox = files
    paths = real_dumps_aarch64(directory / name, AARCH64_SCENARIOS[name], kernel=kernel, busybox=busybox,
                               initramfs_dir=initramfs)
    yield RealGuest.load(name, paths)
    if not persistent:
        for key in ("elf", "kdump_zlib", "migration"):
            paths[key].unlink(missing_ok=True)


@pytest.fixture(scope="session")
def arm64_with_device(arm64_kernel_files: tuple[KernelFiles, Path], realworld_root: tuple[Path, bool],
                      initramfs_dir: Path) -> Iterator[RealGuest]:
    """arm64 virt, direct kernel boot, KASLR, ``-device vmcoreinfo``."""
    yield from _boot_arm64("arm64_with_device", arm64_kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def arm64_without_device(arm64_kernel_files: tuple[KernelFiles, Path], realworld_root: tuple[Path, bool],
                         initramfs_dir: Path) -> Iterator[RealGuest]:
    """arm64 virt, KASLR, no vmcoreinfo device (the note is still in RAM)."""
    yield from _boot_arm64("arm64_without_device", arm64_kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def arm64_nokaslr(arm64_kernel_files: tuple[KernelFiles, Path], realworld_root: tuple[Path, bool],
                  initramfs_dir: Path) -> Iterator[RealGuest]:
    """arm64 virt, ``nokaslr``, ``-device vmcoreinfo``: its /proc/kallsyms gives the link addresses."""
    yield from _boot_arm64("arm64_nokaslr", arm64_kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def arm64_panic(arm64_kernel_files: tuple[KernelFiles, Path], realworld_root: tuple[Path, bool],
                initramfs_dir: Path) -> Iterator[RealGuest]:
    """arm64 virt, KASLR, ``-device vmcoreinfo``; known kernel-log lines, then a crash."""
    yield from _boot_arm64("arm64_panic", arm64_kernel_files, realworld_root, initramfs_dir)


@pytest.fixture(scope="session")
def arm64_uefi(arm64_kernel_files: tuple[KernelFiles, Path], realworld_root: tuple[Path, bool],
               initramfs_dir: Path) -> Iterator[RealGuest]:
    """arm64 virt under edk2 (qemu-efi-aarch64), KASLR, ``-device vmcoreinfo``: ACPI, a random
    physical placement by the EFI stub."""
    if not QEMU_EFI_AARCH64.is_file():
        pytest.skip(f"{QEMU_EFI_AARCH64} not installed (apt-get install qemu-efi-aarch64)")
    yield from _boot_arm64("arm64_uefi", arm64_kernel_files, realworld_root, initramfs_dir)


@pytest.fixture
def arm64_scenario(request: pytest.FixtureRequest) -> RealGuest:
    """Indirect parametrisation over the arm64 guests."""
    name = request.param
    assert name in AARCH64_SCENARIOS, name
    guest: RealGuest = request.getfixturevalue(name)
    return guest
