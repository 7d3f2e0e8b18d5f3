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

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vmci.arch.x86_64.consts import START_KERNEL_MAP  # the image is mapped at it + PA - phys_base

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


def _find_busybox() -> Path | None:
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
    if _find_busybox() is None:
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


def _module_bytes(path: Path) -> bytes:
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


INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
{insmods}
# Keep late kernel messages from splitting the fact lines on the shared console.
echo 1 > /proc/sys/kernel/printk
fact() {{ while IFS= read -r line; do echo "VMCI-FACT $1=$line"; done; }}
if grep -q 'vmci\\.role=capture' /proc/cmdline; then
  # The kdump capture kernel, booted by kexec after the first kernel panicked.
  uname -r | fact capture_release
  cat /sys/kernel/vmcoreinfo | fact capture_vmcoreinfo
  grep -E ' (_text|_stext)$' /proc/kallsyms | fact capture_kallsyms
  grep -E '^ *[0-9a-f]+-[0-9a-f]+ : (System RAM|Kernel code|Kernel data)$' /proc/iomem | fact capture_iomem
  ls -l /proc/vmcore | fact capture_vmcore
  echo {capture_ready}
  while true; do sleep 3600; done
fi
uname -r | fact release
cat /sys/kernel/vmcoreinfo | fact vmcoreinfo
grep -E ' (_text|_stext)$' /proc/kallsyms | fact kallsyms
grep -E '^ *[0-9a-f]+-[0-9a-f]+ : (System RAM|Kernel code|Kernel data)$' /proc/iomem | fact iomem
grep MemTotal /proc/meminfo | fact meminfo
cat /proc/cmdline | fact cmdline
ls /sys/firmware/qemu_fw_cfg/by_name/etc 2>/dev/null | fact fw_cfg
echo "VMCI-FACT cpus=$(grep -c ^processor /proc/cpuinfo)"
if grep -q 'vmci\\.kdump=1' /proc/cmdline; then
  # Load the same kernel as the crash (capture) kernel, into the crashkernel= reservation.
  capture="console=ttyS0 nr_cpus=1 irqpoll reset_devices panic=0 vmci.role=capture"
  /sbin/kexec -p /boot/vmlinuz --initrd=/boot/capture.cpio.gz --append="$capture" 2>&1 | fact kexec_output
  cat /sys/kernel/kexec_crash_loaded | fact kexec_crash_loaded
fi
echo {ready}
# Panic scenarios (vmci.kmsg=N on the command line): N known lines into the kernel log through
# /dev/kmsg (enough to wrap the ring), a few records that need escaping, then a crash.
n=$(sed -n 's/.*vmci\\.kmsg=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$n" ]; then
  i=0
  while [ $i -lt $n ]; do
    printf '<6>{line_format}\\n' $i > /dev/kmsg
    i=$((i+1))
  done
  printf '<4>vmci-special tab\\there bell\\007end\\n' > /dev/kmsg
  printf '<6>vmci-multi first\\nsecond\\n' > /dev/kmsg
  echo "VMCI-FACT kmsg_written=$n"
  echo c > /proc/sysrq-trigger
fi
while true; do sleep 3600; done
"""
#: What the panic scenarios' guests write to /dev/kmsg, line ``i`` (printf format, one %04d).
KMSG_LINE_FORMAT = "vmci-kmsg %04d the quick brown fox jumps over the lazy dog"


def kmsg_line(i: int) -> str:
    """Line ``i`` as the guest wrote it into its kernel log (the test oracle)."""
    return KMSG_LINE_FORMAT % i


def init_script(modules: Sequence[str]) -> str:
    """The ``/init`` text, loading ``modules`` (paths inside the initramfs) in order."""
    insmods = "\n".join(f"insmod {m}" for m in modules)
    return INIT_SCRIPT.format(insmods=insmods, ready=READY_MARKER, line_format=KMSG_LINE_FORMAT,
                              capture_ready=CAPTURE_READY_MARKER)


def build_initramfs(
    kernel: KernelFiles,
    dest_dir: Path,
    *,
    busybox: Path | None = None,
    extra: dict[str, bytes] | None = None,
    executables: Sequence[str] = (),
) -> Path:
    """Build (or reuse) ``dest_dir/initramfs-<key>.cpio.gz`` for ``kernel``.

    ``extra`` adds files (path inside the archive -> bytes), ``executables`` names those of them
    that get mode 0755.  The key hashes everything that goes in, so a persistent ``dest_dir`` acts
    as a cache.
    """
    extra = extra or {}
    if shutil.which("cpio") is None:
        raise QemuError("cpio not installed (apt-get install cpio)")
    busybox = busybox or _find_busybox()
    if busybox is None:
        raise QemuError("static busybox not installed (apt-get install busybox-static)")
    modules = module_load_order(kernel.modules_dir, KERNEL_MODULE)
    blobs = {f"lib/modules/{Path(m.name.split('.ko')[0]).name}.ko": _module_bytes(m) for m in modules}
    init = init_script(["/" + name for name in blobs])
    bb = busybox.read_bytes()
    key = hashlib.sha256()
    for part in (str(HARNESS_VERSION).encode(), kernel.version.encode(), init.encode(), bb, *blobs.values(),
                 *(name.encode() + b"\0" + data for name, data in sorted(extra.items()))):
        key.update(hashlib.sha256(part).digest())
    dest_dir = Path(dest_dir)
    dest = dest_dir / f"initramfs-{kernel.version}-{key.hexdigest()[:16]}.cpio.gz"
    if dest.is_file():
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vmci-initramfs-", dir=dest_dir) as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "lib/modules"):
            (root / d).mkdir(parents=True)
        (root / "bin/busybox").write_bytes(bb)
        (root / "bin/busybox").chmod(0o755)
        for name, data in [*blobs.items(), *extra.items()]:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
            if name in executables:
                (root / name).chmod(0o755)
        (root / "init").write_text(init)
        (root / "init").chmod(0o755)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        for p in [root, *root.rglob("*")]:
            os.utime(p, (0, 0))  # reproducible archive
        proc = subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"],
            input="\n".join(names).encode() + b"\n",
            cwd=root,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise QemuError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}")
        partial = Path(tmp) / "initramfs.cpio.gz"
        with gzip.GzipFile(partial, "wb", compresslevel=6, mtime=0) as gz:
            gz.write(proc.stdout)
        os.replace(partial, dest)
    return dest


def _shared_libraries(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads (its ELF interpreter included), as ``ldd`` lists them."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def find_kexec() -> Path | None:
    for cand in (Path("/usr/sbin/kexec"), Path("/sbin/kexec")):
        if cand.is_file():
            return cand
    return None


def build_kdump_initramfs(kernel: KernelFiles, dest_dir: Path) -> Path:
    """The harness initramfs plus what ``kexec -p`` needs to load a capture kernel.

    Adds Debian's ``kexec`` (kexec-tools) with its shared libraries, the kernel image as
    ``/boot/vmlinuz`` and the plain harness initramfs as ``/boot/capture.cpio.gz``: the capture
    kernel is the same kernel with the same ``/init``, which takes the capture role from
    ``vmci.role=capture`` on its command line.
    """
    kexec = find_kexec()
    if kexec is None:
        raise QemuError("kexec not installed (apt-get install kexec-tools)")
    capture = build_initramfs(kernel, dest_dir)
    extra = {"sbin/kexec": kexec.read_bytes(), "boot/vmlinuz": kernel.vmlinuz.read_bytes(),
             "boot/capture.cpio.gz": capture.read_bytes()}
    for lib in _shared_libraries(kexec):
        extra[str(lib).lstrip("/")] = lib.resolve().read_bytes()
    executables = ["sbin/kexec", *(name for name in extra if "/ld-linux" in name)]
    return build_initramfs(kernel, dest_dir, extra=extra, executables=executables)


# -- QMP ---------------------------------------------------------------------------------------


class Qmp:
    """A minimal QMP client: JSON lines over a unix socket, events kept in :attr:`events`."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._buf = b""
        self._next_id = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        greeting = self._read_message(timeout)
        if "QMP" not in greeting:
            raise QemuError(f"unexpected QMP greeting: {greeting}")
        self.greeting = greeting["QMP"]
        self.execute("qmp_capabilities")

    def close(self) -> None:
        self._sock.close()

    def _read_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QemuError(f"QMP: no message within {timeout:.0f} s")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise QemuError("QMP: connection closed by QEMU")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise QemuError(f"QMP: unexpected message {line!r}")
        return msg

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 60.0) -> Any:
        """Run ``command`` and return its ``return`` value; :class:`QemuError` on a QMP error."""
        self._next_id += 1
        req: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            req["arguments"] = arguments
        self._sock.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_message(max(deadline - time.monotonic(), 0.001))
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == self._next_id:
                if "error" in msg:
                    err = msg["error"]
                    raise QemuError(f"QMP {command}: {err.get('class')}: {err.get('desc')}")
                return msg.get("return")

    def wait_event(self, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Return (and consume) the first event called ``name``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            msg = self._read_message(max(deadline - time.monotonic(), 0.001))
            if "event" in msg:
                self.events.append(msg)


# -- the guest ---------------------------------------------------------------------------------


@dataclass
class GuestFacts:
    """What the guest's ``/init`` reported (``raw``: every ``VMCI-FACT`` value by key)."""

    raw: dict[str, list[str]]

    def one(self, key: str) -> str:
        values = self.raw.get(key)
        if not values:
            raise QemuError(f"the guest did not report {key!r}")
        return values[0]

    @property
    def release(self) -> str:
        return self.one("release")

    @property
    def vmcoreinfo_paddr(self) -> int:
        """Physical address of the VMCOREINFO note (``/sys/kernel/vmcoreinfo``)."""
        return int(self.one("vmcoreinfo").split()[0], 16)

    @property
    def vmcoreinfo_size(self) -> int:
        """Size of the note buffer, header and trailing null note included (4132 on 6.1)."""
        return int(self.one("vmcoreinfo").split()[1], 16)

    @property
    def kallsyms(self) -> dict[str, int]:
        out = {}
        for line in self.raw.get("kallsyms", []):
            addr, _, name = line.split()
            out[name] = int(addr, 16)
        return out

    def iomem(self, what: str) -> list[tuple[int, int]]:
        """``[start, end)`` ranges of ``/proc/iomem`` lines named ``what`` ("System RAM", ...)."""
        out = []
        for line in self.raw.get("iomem", []):
            span, _, name = line.strip().partition(" : ")
            if name == what:
                lo, hi = span.split("-")
                out.append((int(lo, 16), int(hi, 16) + 1))
        return out

    @property
    def phys_base(self) -> int:
        """The kernel's ``phys_base`` (signed), from the kernel code's physical and virtual start."""
        return self.iomem("Kernel code")[0][0] - (self.kallsyms["_text"] - START_KERNEL_MAP)

    @property
    def capture_kallsyms(self) -> dict[str, int]:
        """``_text``/``_stext`` of the kdump capture kernel (kdump scenario), from its /proc/kallsyms."""
        out = {}
        for line in self.raw.get("capture_kallsyms", []):
            addr, _, name = line.split()
            out[name] = int(addr, 16)
        return out

    @property
    def cmdline(self) -> str:
        return self.one("cmdline")

    @property
    def cpus(self) -> int:
        return int(self.one("cpus"))


def parse_facts(serial: str) -> GuestFacts:
    raw: dict[str, list[str]] = {}
    for line in serial.splitlines():
        if line.startswith(FACT_PREFIX):
            key, _, value = line[len(FACT_PREFIX) :].partition("=")
            raw.setdefault(key, []).append(value.rstrip("\r"))
    return GuestFacts(raw)


def _short_tmpdir() -> Path:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp dirs can be longer.
    return Path(tempfile.mkdtemp(prefix="vmci-qmp-", dir="/tmp" if Path("/tmp").is_dir() else None))


class Guest:
    """A running QEMU guest booted from a distribution kernel and the harness initramfs.

    Use as a context manager; QEMU is always killed on exit.  ``workdir`` (default: a new
    temporary directory, removed on exit) holds the serial log and QEMU's stderr.
    """

    def __init__(
        self,
        kernel: KernelFiles | None = None,
        *,
        initramfs: Path | None = None,
        workdir: Path | None = None,
        vmcoreinfo: bool = False,
        vmgenid_guid: str | None = None,
        firmware: str = "seabios",
        kaslr: bool = True,
        smp: int = 2,
        memory: str = "256M",
        machine: str = "q35",
        append: str = "",
        extra_args: Sequence[str] = (),
        boot_timeout: float = 180.0,
        kmsg_lines: int = 0,
        kdump: bool = False,
        arch: str = "x86_64",
        busybox: Path | None = None,
        cpu: str = AARCH64_CPU,
    ) -> None:
        allowed = ("seabios", "ovmf") if arch == "x86_64" else ("none", "uefi")
        if arch not in ("x86_64", "aarch64"):
            raise ValueError(f"arch must be 'x86_64' or 'aarch64', not {arch!r}")
        if firmware not in allowed:
            raise ValueError(f"firmware must be one of {allowed}, not {firmware!r}")
        kernel = kernel or find_kernel()
        if kernel is None:
            raise QemuError("no usable kernel: " + "; ".join(missing_requirements()))
        self.kernel = kernel
        self.initramfs = initramfs
        self.vmcoreinfo = vmcoreinfo
        self.vmgenid_guid = vmgenid_guid
        self.firmware = firmware
        self.kaslr = kaslr
        self.smp = smp
        self.memory = memory
        self.machine = machine
        self.append = append
        self.extra_args = list(extra_args)
        self.boot_timeout = boot_timeout
        self.kmsg_lines = kmsg_lines
        self.kdump = kdump
        self.arch = arch
        self.busybox = busybox
        self.cpu = cpu
        self.panic_line: str | None = None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="vmci-guest-"))
        self._sockdir = _short_tmpdir()
        self.serial_log = self.workdir / "serial.log"
        self.qemu_log = self.workdir / "qemu.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: Qmp | None = None
        self.facts = GuestFacts({})
        self.boot_seconds = 0.0

    # -- lifecycle

    def command_line(self) -> list[str]:
        assert self.initramfs is not None
        # A panic scenario stays up after the panic (panic=0) so that it can be dumped.
        panic = f"panic=0 printk.devkmsg=on vmci.kmsg={self.kmsg_lines}" if self.kmsg_lines else "panic=-1"
        if self.kdump:  # reserve room for the capture kernel and load it (kexec -p) before the panic
            panic += f" crashkernel={CRASHKERNEL} vmci.kdump=1"
        console = "ttyAMA0" if self.arch == "aarch64" else "ttyS0"  # virt's PL011, the PC's 16550
        append = f"console={console} {panic} oops=panic" + ("" if self.kaslr else " nokaslr")
        if self.append:
            append += " " + self.append
        machine: tuple[str, ...] = ("-machine", self.machine)
        if self.arch == "aarch64":
            machine += ("-cpu", self.cpu)
        args = [
            QEMU_AARCH64 if self.arch == "aarch64" else QEMU,
            *machine, *("-accel", "tcg", "-m", self.memory, "-smp", str(self.smp)),
            *("-nodefaults", "-display", "none", "-no-reboot", "-nic", "none"),
            *("-serial", f"file:{self.serial_log}"),
            *("-qmp", f"unix:{self._sockdir / 'qmp.sock'},server=on,wait=off"),
            *("-kernel", str(self.kernel.vmlinuz), "-initrd", str(self.initramfs), "-append", append),
        ]
        if self.firmware == "ovmf":
            args += ["-bios", str(OVMF_CODE)]
        elif self.firmware == "uefi":
            args += ["-bios", str(QEMU_EFI_AARCH64)]
        if self.vmcoreinfo:
            args += ["-device", "vmcoreinfo"]
        if self.vmgenid_guid is not None:
            args += ["-device", f"vmgenid,guid={self.vmgenid_guid}"]
        return args + self.extra_args

    def start(self) -> None:
        if self.initramfs is None:
            if self.kdump:
                self.initramfs = build_kdump_initramfs(self.kernel, self.workdir)
            else:
                self.initramfs = build_initramfs(self.kernel, self.workdir, busybox=self.busybox)
        if self.firmware == "ovmf" and not OVMF_CODE.is_file():
            raise QemuError(f"{OVMF_CODE} missing (apt-get install ovmf)")
        if self.firmware == "uefi" and not QEMU_EFI_AARCH64.is_file():
            raise QemuError(f"{QEMU_EFI_AARCH64} missing (apt-get install qemu-efi-aarch64)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial_log.write_bytes(b"")
        started = time.monotonic()
        with self.qemu_log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command_line(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.qmp = self._connect(started + 30)
        self._wait_ready(started + self.boot_timeout)
        self.boot_seconds = time.monotonic() - started

    def _connect(self, deadline: float) -> Qmp:
        sock = self._sockdir / "qmp.sock"
        while True:
            self._check_alive()
            if sock.exists():
                with contextlib.suppress(ConnectionRefusedError, FileNotFoundError):
                    return Qmp(sock)
            if time.monotonic() > deadline:
                raise QemuError(f"QMP socket {sock} never accepted a connection")
            time.sleep(0.05)

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise QemuError(f"QEMU exited with status {self.proc.returncode}: {self._tail()}")

    def _tail(self, n: int = 15) -> str:
        parts = []
        for p in (self.qemu_log, self.serial_log):
            with contextlib.suppress(OSError):
                lines = p.read_text(errors="replace").splitlines()[-n:]
                if lines:
                    parts.append(f"[{p.name}] " + " | ".join(lines))
        return " ".join(parts) or "(no output)"

    def _wait_ready(self, deadline: float) -> None:
        while True:
            text = self.serial_log.read_text(errors="replace")
            lines = text.splitlines()
            if any(line.strip() == READY_MARKER for line in lines):
                self.facts = parse_facts(text)
                if not self.kmsg_lines:
                    return
                panic = next((ln.strip() for ln in lines if PANIC_MARKER in ln), None)
                captured = not self.kdump or any(ln.strip() == CAPTURE_READY_MARKER for ln in lines)
                if panic is not None and captured:
                    self.panic_line = panic[panic.index(PANIC_MARKER):]
                    time.sleep(1.0)  # let the panic path finish (CPUs stopped, console flushed)
                    self.facts = parse_facts(self.serial_log.read_text(errors="replace"))
                    return
            elif "Kernel panic" in text:
                raise QemuError(f"guest kernel panicked: {self._tail(30)}")
            self._check_alive()
            if time.monotonic() > deadline:
                raise QemuError(f"no {READY_MARKER} within {self.boot_timeout:.0f} s: {self._tail()}")
            time.sleep(0.1)

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(Exception):
                    if self.qmp is not None:
                        self.qmp.execute("quit", timeout=5)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            if self.qmp is not None:
                self.qmp.close()
                self.qmp = None
            shutil.rmtree(self._sockdir, ignore_errors=True)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Guest:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- QMP commands

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 60.0) -> Any:
        if self.qmp is None:
            raise QemuError("the guest is not running")
        return self.qmp.execute(command, arguments, timeout=timeout)

    def stop(self) -> None:
        self.execute("stop")

    def cont(self) -> None:
        self.execute("cont")

    def hmp(self, command: str) -> str:
        """Run a human-monitor command (e.g. ``xp /4xb 0x1000``) and return its output."""
        return str(self.execute("human-monitor-command", {"command-line": command}))

    def query_dump_capability(self) -> list[str]:
        return list(self.execute("query-dump-guest-memory-capability")["formats"])

    def query_vm_generation_id(self) -> str:
        return str(self.execute("query-vm-generation-id")["guid"])

    def dump(self, path: Path, format: str = "elf", *, paging: bool = False, timeout: float = 600.0) -> Path:
        """``dump-guest-memory`` to ``path`` (synchronous); raises if QEMU reports a failure."""
        path = Path(path).resolve()
        args: dict[str, Any] = {"paging": paging, "protocol": f"file:{path}", "detach": False}
        if format != "elf":
            args["format"] = format
        self.execute("dump-guest-memory", args, timeout=timeout)
        assert self.qmp is not None
        event = self.qmp.wait_event("DUMP_COMPLETED", timeout=timeout)
        result = event.get("data", {}).get("result", {})
        if result.get("status") != "completed" or "error" in event.get("data", {}):
            raise QemuError(f"dump to {path} failed: {event}")
        return path

    def migrate_to_file(self, path: Path, *, timeout: float = 600.0) -> Path:
        """Stop the guest and write its migration stream to ``path`` through ``exec:cat``."""
        path = Path(path).resolve()
        self.stop()
        self.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(path))}"})
        deadline = time.monotonic() + timeout
        while True:
            info = self.execute("query-migrate")
            status = info.get("status")
            if status == "completed":
                return path
            if status in ("failed", "cancelled"):
                raise QemuError(f"migration to {path} {status}: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise QemuError(f"migration to {path} did not finish within {timeout:.0f} s")
            time.sleep(0.1)

    def pmemsave(self, paddr: int, size: int, path: Path) -> Path:
        """Save guest-physical ``[paddr, paddr+size)`` to ``path`` (QEMU's own view of RAM)."""
        path = Path(path).resolve()
        self.execute("pmemsave", {"val": paddr, "size": size, "filename": str(path)})
        return path

    def read_phys(self, paddr: int, size: int) -> bytes:
        """Guest-physical bytes, read by QEMU through ``pmemsave``."""
        tmp = self._sockdir / "pmem.bin"
        try:
            return self.pmemsave(paddr, size, tmp).read_bytes()
        finally:
            tmp.unlink(missing_ok=True)


# -- scenarios and the session cache -----------------------------------------------------------


#: Lines the panic scenarios write: about 2.5 times the 128 KiB text ring of Debian's kernel
#: (CONFIG_LOG_BUF_SHIFT=17), so the ring wraps more than once.
KMSG_LINES = 5000


@dataclass(frozen=True)
class Scenario:
    """One guest configuration of :func:`real_dumps`."""

    name: str
    vmcoreinfo: bool
    vmgenid_guid: str | None
    firmware: str = "seabios"
    kaslr: bool = True
    smp: int = 2
    memory: str = "256M"
    machine: str = "q35"
    kmsg_lines: int = 0  #: > 0: write this many known lines to /dev/kmsg, then panic
    kdump: bool = False  #: load a kdump capture kernel first; dump while it runs


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("with_device", True, "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"),
        Scenario("without_device", False, None),
        Scenario("nokaslr", True, None, kaslr=False),
        Scenario("ovmf", True, "8f2a5c1e-6b7d-4e3f-9a10-2b3c4d5e6f70", firmware="ovmf"),
        Scenario("panic", True, None, kmsg_lines=KMSG_LINES),
        Scenario("panic_without_device", False, None, kmsg_lines=KMSG_LINES),
        Scenario("kdump_capture", True, None, memory="512M", kmsg_lines=KMSG_LINES, kdump=True),
    )
}

# name in the returned dict -> (file name, dump format, paging)
DUMPS = {
    "elf": ("dump.elf", "elf", False),
    "elf_paging": ("dump-paging.elf", "elf", True),
    "kdump_zlib": ("dump.kdump-zlib", "kdump-zlib", False),
}


@dataclass(frozen=True)
class Aarch64Scenario:
    """One arm64 guest configuration: ``qemu-system-aarch64 -machine virt -cpu cortex-a57``, Debian's
    arm64 kernel booted directly (``firmware="none"``: a device tree, no ACPI) or through edk2
    (``"uefi"``: ``-bios QEMU_EFI.fd``, the kernel from fw_cfg, ACPI tables installed by the
    firmware).  Its own type, so that the x86 scenarios' cache keys stay as they were."""

    name: str
    vmcoreinfo: bool
    kaslr: bool = True
    firmware: str = "none"
    smp: int = 2
    memory: str = "512M"
    machine: str = "virt"
    cpu: str = AARCH64_CPU
    kmsg_lines: int = 0  #: > 0: write this many known lines to /dev/kmsg, then panic


AARCH64_SCENARIOS: dict[str, Aarch64Scenario] = {
    s.name: s
    for s in (
        Aarch64Scenario("arm64_with_device", True),
        Aarch64Scenario("arm64_without_device", False),
        Aarch64Scenario("arm64_nokaslr", True, kaslr=False),
        Aarch64Scenario("arm64_panic", True, kmsg_lines=KMSG_LINES),
        Aarch64Scenario("arm64_uefi", True, firmware="uefi"),
    )
}

#: the arm64 artefacts (QEMU's arm target has no paging hook: a paging ELF equals the plain one)
AARCH64_DUMPS = {
    "elf": ("dump.elf", "elf", False),
    "kdump_zlib": ("dump.kdump-zlib", "kdump-zlib", False),
}


def qemu_version(binary: str = QEMU) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def real_dumps(
    directory: Path,
    scenario: str | Scenario | Aarch64Scenario,
    *,
    kernel: KernelFiles | None = None,
    initramfs_dir: Path | None = None,
) -> dict[str, Path]:
    """Boot ``scenario`` once and write its artefacts to ``directory``; reuse them if present.

    Returns paths by name: ``elf``, ``elf_paging``, ``kdump_zlib`` (flattened), ``migration``,
    ``note`` (``pmemsave`` of the note buffer at the ``/sys/kernel/vmcoreinfo`` address),
    ``serial_log`` and ``facts`` (JSON, see :func:`load_facts`).  All dumps come from one
    stopped moment; the migration stream is taken last, from the same stopped guest.
    """
    if isinstance(scenario, Aarch64Scenario) or scenario in AARCH64_SCENARIOS:
        return real_dumps_aarch64(directory, scenario, kernel=kernel, initramfs_dir=initramfs_dir)
    sc = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    kernel = kernel or find_kernel()
    if kernel is None:
        raise QemuError("no usable kernel: " + "; ".join(missing_requirements()))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / fname for name, (fname, _, _) in DUMPS.items()}
    paths |= {
        "migration": directory / "migration.bin",
        "note": directory / "vmcoreinfo-note.bin",
        "serial_log": directory / "serial.log",
        "facts": directory / "facts.json",
    }
    cache_key = {
        "harness": HARNESS_VERSION,
        "scenario": asdict(sc),
        "kernel": kernel.version,
        "qemu": qemu_version(),
    }
    with contextlib.suppress(OSError, ValueError, KeyError):
        if load_facts(paths)["cache_key"] == cache_key and all(p.is_file() for p in paths.values()):
            return paths
    paths["facts"].unlink(missing_ok=True)  # written last: its presence means "complete"

    initramfs = (build_kdump_initramfs if sc.kdump else build_initramfs)(kernel, initramfs_dir or directory)
    timings: dict[str, float] = {}
    guest = Guest(
        kernel,
        initramfs=initramfs,
        workdir=directory,
        vmcoreinfo=sc.vmcoreinfo,
        vmgenid_guid=sc.vmgenid_guid,
        firmware=sc.firmware,
        kaslr=sc.kaslr,
        smp=sc.smp,
        memory=sc.memory,
        machine=sc.machine,
        kmsg_lines=sc.kmsg_lines,
        kdump=sc.kdump,
    )
    with guest:
        timings["boot"] = guest.boot_seconds
        facts = guest.facts
        qmp_guid = guest.query_vm_generation_id() if sc.vmgenid_guid else None
        formats = guest.query_dump_capability()
        guest.stop()
        guest.pmemsave(facts.vmcoreinfo_paddr, facts.vmcoreinfo_size, paths["note"])
        for name, (_, fmt, paging) in DUMPS.items():
            t0 = time.monotonic()
            guest.dump(paths[name], fmt, paging=paging)
            timings[name] = time.monotonic() - t0
        t0 = time.monotonic()
        guest.migrate_to_file(paths["migration"])
        timings["migration"] = time.monotonic() - t0
        command_line = guest.command_line()
    record = {
        "cache_key": cache_key,
        "scenario": asdict(sc),
        "kernel": asdict(kernel),
        "qemu_version": cache_key["qemu"],
        "command_line": command_line,
        "guest": facts.raw,
        "release": facts.release,
        "vmcoreinfo_paddr": facts.vmcoreinfo_paddr,
        "vmcoreinfo_size": facts.vmcoreinfo_size,
        "phys_base": facts.phys_base,
        "kallsyms": facts.kallsyms,
        "system_ram": facts.iomem("System RAM"),
        "cpus": facts.cpus,
        "qmp_guid": qmp_guid,
        "panic_line": guest.panic_line,
        "kmsg_written": int(facts.one("kmsg_written")) if sc.kmsg_lines else 0,
        "dump_formats": formats,
        "timings": timings,
    }
    paths["facts"].write_text(json.dumps(record, indent=1, default=str) + "\n")
    return paths


def real_dumps_aarch64(
    directory: Path,
    scenario: str | Aarch64Scenario,
    *,
    kernel: KernelFiles | None = None,
    busybox: Path | None = None,
    initramfs_dir: Path | None = None,
) -> dict[str, Path]:
    """:func:`real_dumps` for an arm64 guest: ``elf``, ``kdump_zlib``, ``migration``, ``note``,
    ``serial_log`` and ``facts``, reused when ``directory`` already holds them for the same
    scenario, kernel and QEMU.  The kernel and busybox default to :func:`find_arm64_kernel` and
    :func:`arm64_busybox`.  ``facts.json`` adds ``kimage_voffset`` (the guest's ``_stext`` from
    /proc/kallsyms minus "Kernel code" from /proc/iomem)."""
    sc = AARCH64_SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    kernel = kernel or find_arm64_kernel()
    busybox = busybox or arm64_busybox()
    if kernel is None or busybox is None:
        raise QemuError("no arm64 guest: " + "; ".join(missing_aarch64_requirements()))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / fname for name, (fname, _, _) in AARCH64_DUMPS.items()}
    paths |= {
        "migration": directory / "migration.bin",
        "note": directory / "vmcoreinfo-note.bin",
        "serial_log": directory / "serial.log",
        "facts": directory / "facts.json",
    }
    cache_key = {"harness": HARNESS_VERSION, "arch": "aarch64", "scenario": asdict(sc),
                 "kernel": kernel.version, "qemu": qemu_version(QEMU_AARCH64)}
    with contextlib.suppress(OSError, ValueError, KeyError):
        if load_facts(paths)["cache_key"] == cache_key and all(p.is_file() for p in paths.values()):
            return paths
    paths["facts"].unlink(missing_ok=True)

    initramfs = build_initramfs(kernel, initramfs_dir or directory, busybox=busybox)
    timings: dict[str, float] = {}
    guest = Guest(kernel, initramfs=initramfs, workdir=directory, vmcoreinfo=sc.vmcoreinfo,
                  firmware=sc.firmware, kaslr=sc.kaslr, smp=sc.smp, memory=sc.memory, machine=sc.machine,
                  kmsg_lines=sc.kmsg_lines, arch="aarch64", busybox=busybox, cpu=sc.cpu)
    with guest:
        timings["boot"] = guest.boot_seconds
        facts = guest.facts
        formats = guest.query_dump_capability()
        guest.stop()
        guest.pmemsave(facts.vmcoreinfo_paddr, facts.vmcoreinfo_size, paths["note"])
        for name, (_, fmt, paging) in AARCH64_DUMPS.items():
            t0 = time.monotonic()
            guest.dump(paths[name], fmt, paging=paging)
            timings[name] = time.monotonic() - t0
        t0 = time.monotonic()
        guest.migrate_to_file(paths["migration"])
        timings["migration"] = time.monotonic() - t0
        command_line = guest.command_line()
    stext = facts.kallsyms["_stext"]
    record = {
        "cache_key": cache_key,
        "scenario": asdict(sc),
        "kernel": asdict(kernel),
        "qemu_version": cache_key["qemu"],
        "command_line": command_line,
        "guest": facts.raw,
        "release": facts.release,
        "vmcoreinfo_paddr": facts.vmcoreinfo_paddr,
        "vmcoreinfo_size": facts.vmcoreinfo_size,
        "kimage_voffset": (stext - facts.iomem("Kernel code")[0][0]) & ((1 << 64) - 1),
        "kallsyms": facts.kallsyms,
        "system_ram": facts.iomem("System RAM"),
        "cpus": facts.cpus,
        "panic_line": guest.panic_line,
        "kmsg_written": int(facts.one("kmsg_written")) if sc.kmsg_lines else 0,
        "dump_formats": formats,
        "timings": timings,
    }
    paths["facts"].write_text(json.dumps(record, indent=1, default=str) + "\n")
    return paths


def load_facts(paths: dict[str, Path]) -> dict[str, Any]:
    """The ground truth :func:`real_dumps` recorded (``facts.json``)."""
    data = json.loads(paths["facts"].read_text())
    if not isinstance(data, dict):
        raise ValueError("facts.json does not hold an object")
    return data


@dataclass
class RealGuest:
    """The artefacts of one :func:`real_dumps` scenario: its ``paths`` and recorded ``facts``."""

    name: str
    paths: dict[str, Path]
    facts: dict[str, Any]

    @classmethod
    def load(cls, name: str, paths: dict[str, Path]) -> RealGuest:
        return cls(name, paths, load_facts(paths))

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]

    @property
    def note(self) -> bytes:
        """The note buffer as QEMU read it from guest RAM (``pmemsave``), 4132 bytes on 6.1."""
        return self.paths["note"].read_bytes()

    @property
    def note_desc(self) -> bytes:
        """The VMCOREINFO descriptor: ``descsz`` bytes after the 24-byte note header."""
        data = self.note
        descsz = int.from_bytes(data[4:8], "little")
        return data[24 : 24 + descsz]

    @property
    def vmcoreinfo_paddr(self) -> int:
        return int(self.facts["vmcoreinfo_paddr"])

    @property
    def guest(self) -> GuestFacts:
        """The guest's own report, parsed (``iomem("Kernel code")``, ``kallsyms``, ...)."""
        return GuestFacts(self.facts["guest"])
