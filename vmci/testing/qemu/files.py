"""The harness's fixed facts and the host files it boots: the kernels (x86_64 from /boot, arm64
unpacked under ``VMCI_ARM64_ROOT``), static busybox, kernel modules and their load order."""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

READY_MARKER = "VMCI-READY"
#: The crashkernel= reservation of the kdump scenario: room for the capture kernel (Debian's 6.1
#: image and the harness initramfs, booted with nr_cpus=1).
CRASHKERNEL = "160M"
#: What the kdump capture kernel's /init prints once it has reported its facts.
CAPTURE_READY_MARKER = "VMCI-CAPTURE-READY"
#: How the kernel starts its panic line on the console (kernel/panic.c panic()).
PANIC_MARKER = "Kernel panic - not syncing: "
FACT_PREFIX = "VMCI-FACT "
QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/ovmf/OVMF.fd")
#: The arm64 guests: ``qemu-system-aarch64 -machine virt -cpu cortex-a57`` (Debian: qemu-system-arm)
QEMU_AARCH64 = "qemu-system-aarch64"
AARCH64_CPU = "cortex-a57"
#: Debian's qemu-efi-aarch64: edk2's ArmVirtQemu firmware, booted with ``-bios`` (ACPI through UEFI)
QEMU_EFI_AARCH64 = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
#: Where Debian's arm64 kernel and busybox are extracted (``.ci/run`` prepares it; see
#: :func:`find_arm64_kernel`); ``VMCI_ARM64_ROOT`` overrides it.
ARM64_ROOT_ENV = "VMCI_ARM64_ROOT"
DEFAULT_ARM64_ROOT = Path("/var/lib/vmci/arm64-root")
KERNEL_MODULE = "qemu_fw_cfg"
# Bump when the initramfs contents or the real_dumps artefacts change, to invalidate caches.
HARNESS_VERSION = 2


class QemuError(RuntimeError):
    """QEMU could not be started, the guest did not boot, or a QMP command failed."""


# -- the kernel and the initramfs ------------------------------------------------------------


@dataclass(frozen=True)
class KernelFiles:
    """A distribution kernel: image, release string, modules directory and System.map."""

    vmlinuz: Path
    version: str
    modules_dir: Path
    system_map: Path | None = None


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.-]", version)]


def _locate_kernel(boot: Path, modules_root: Path) -> KernelFiles | str:
    images = sorted(boot.glob("vmlinuz-*"), key=lambda p: _version_key(p.name[8:]), reverse=True)
    if not images:
        return f"no kernel image {boot}/vmlinuz-* (apt-get install linux-image-amd64)"
    reasons = []
    for image in images:
        version = image.name[len("vmlinuz-") :]
        mods = modules_root / version
        if not os.access(image, os.R_OK):
            reasons.append(f"{image} is not readable by this user")
        elif not (mods / "modules.dep").is_file():
            reasons.append(f"{mods}/modules.dep is missing")
        elif _module_path(mods, KERNEL_MODULE) is None:
            reasons.append(f"{version} has no {KERNEL_MODULE} module")
        else:
            smap = boot / f"System.map-{version}"
            return KernelFiles(image, version, mods, smap if smap.is_file() else None)
    return "; ".join(reasons)


def find_kernel(boot: Path = Path("/boot"), modules_root: Path = Path("/lib/modules")) -> KernelFiles | None:
    """The newest usable kernel, or ``None`` (:func:`missing_requirements` says why)."""
    found = _locate_kernel(boot, modules_root)
    return found if isinstance(found, KernelFiles) else None


def arm64_root() -> Path:
    """The directory holding an extracted arm64 ``boot/``, ``lib/modules/`` and ``bin/busybox``."""
    return Path(os.environ.get(ARM64_ROOT_ENV) or DEFAULT_ARM64_ROOT)


def find_arm64_kernel(root: Path | None = None) -> KernelFiles | None:
    """The newest arm64 kernel under ``root`` (:func:`arm64_root`) with its modules and
    ``qemu_fw_cfg``: Debian's ``linux-image-*-arm64`` package unpacked there (``dpkg-deb -x``, then
    ``depmod -b ROOT VERSION``), not installed."""
    root = root or arm64_root()
    found = _locate_kernel(root / "boot", root / "lib" / "modules")
    return found if isinstance(found, KernelFiles) else None


def arm64_busybox(root: Path | None = None) -> Path | None:
    """The static arm64 busybox under ``root`` (Debian's busybox-static:arm64 unpacked)."""
    bb = (root or arm64_root()) / "bin" / "busybox"
    return bb if bb.is_file() and _is_static(bb) else None


def missing_aarch64_requirements(root: Path | None = None) -> list[str]:
    """Why an arm64 guest cannot be booted here (empty when everything is in place)."""
    root = root or arm64_root()
    out = []
    if shutil.which(QEMU_AARCH64) is None:
        out.append(f"{QEMU_AARCH64} not installed (apt-get install qemu-system-arm)")
    if shutil.which("cpio") is None:
        out.append("cpio not installed (apt-get install cpio)")
    found = _locate_kernel(root / "boot", root / "lib" / "modules")
    if isinstance(found, str):
        out.append(f"no arm64 kernel under {root} ({ARM64_ROOT_ENV}): {found}")
    if arm64_busybox(root) is None:
        out.append(f"no static arm64 busybox at {root}/bin/busybox")
    return out


def find_busybox() -> Path | None:
    for cand in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if cand.is_file() and _is_static(cand):
            return cand
    return None


def _is_static(path: Path) -> bool:
    # A dynamically linked ELF names its interpreter in a PT_INTERP segment.
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:  # pragma: no cover - pyelftools is a vmci dependency
        return True
    try:
        with path.open("rb") as f:
            return not any(seg["p_type"] == "PT_INTERP" for seg in ELFFile(f).iter_segments())
    except Exception:
        return False


def missing_requirements() -> list[str]:
    """Why a real guest cannot be booted here (empty when everything is in place)."""
    out = []
    if shutil.which(QEMU) is None:
        out.append(f"{QEMU} not installed (apt-get install qemu-system-x86)")
    if shutil.which("cpio") is None:
        out.append("cpio not installed (apt-get install cpio)")
    if find_busybox() is None:
        out.append("static busybox not installed (apt-get install busybox-static)")
    found = _locate_kernel(Path("/boot"), Path("/lib/modules"))
    if isinstance(found, str):
        out.append(found)
    return out


def _module_path(modules_dir: Path, name: str) -> Path | None:
    for rel in _modules_dep(modules_dir):
        base = Path(rel).name.split(".ko")[0]
        if base.replace("-", "_") == name:
            return modules_dir / rel
    return None


def _modules_dep(modules_dir: Path) -> dict[str, list[str]]:
    try:
        text = (modules_dir / "modules.dep").read_text()
    except OSError:
        return {}
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        mod, sep, rest = line.partition(":")
        if sep:
            deps[mod.strip()] = rest.split()
    return deps


def module_load_order(modules_dir: Path, name: str) -> list[Path]:
    """``name`` and every module it needs, dependencies first."""
    deps = _modules_dep(modules_dir)
    target = _module_path(modules_dir, name)
    if target is None:
        raise QemuError(f"module {name} not found in {modules_dir}/modules.dep")
    order: list[str] = []

    def visit(rel: str, stack: tuple[str, ...]) -> None:
        if rel in order or rel in stack:
            return
        for dep in deps.get(rel, []):
            visit(dep, (*stack, rel))
        order.append(rel)

    visit(str(target.relative_to(modules_dir)), ())
    return [modules_dir / rel for rel in order]


def module_bytes(path: Path) -> bytes:
    # busybox insmod hands the raw buffer to init_module(), so decompress on the host.
    data = path.read_bytes()
    if path.name.endswith(".ko"):
        return data
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        if shutil.which("zstd") is None:
            raise QemuError(f"{path} is zstd-compressed and the zstd tool is not installed")
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    raise QemuError(f"unknown module compression: {path}")


