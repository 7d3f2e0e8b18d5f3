"""The initramfs the guests boot: busybox, ``qemu_fw_cfg`` and its dependencies, and an ``/init``
that reports the guest's facts on the console; the kdump capture kernel's initramfs with kexec."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vmci.testing.qemu.files import (
    CAPTURE_READY_MARKER,
    HARNESS_VERSION,
    KERNEL_MODULE,
    READY_MARKER,
    KernelFiles,
    QemuError,
    find_busybox,
    module_bytes,
    module_load_order,
)

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
    busybox = busybox or find_busybox()
    if busybox is None:
        raise QemuError("static busybox not installed (apt-get install busybox-static)")
    modules = module_load_order(kernel.modules_dir, KERNEL_MODULE)
    blobs = {f"lib/modules/{Path(m.name.split('.ko')[0]).name}.ko": module_bytes(m) for m in modules}
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


