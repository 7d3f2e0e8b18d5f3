"""One QEMU guest under TCG: start, wait for the ready marker, QMP commands, the facts it reports."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmci.arch.x86_64.consts import START_KERNEL_MAP  # the image is mapped at it + PA - phys_base
from vmci.testing.qemu.files import (
    AARCH64_CPU,
    CAPTURE_READY_MARKER,
    CRASHKERNEL,
    FACT_PREFIX,
    OVMF_CODE,
    PANIC_MARKER,
    QEMU,
    QEMU_AARCH64,
    QEMU_EFI_AARCH64,
    READY_MARKER,
    KernelFiles,
    QemuError,
    find_kernel,
    missing_requirements,
)
from vmci.testing.qemu.initramfs import build_initramfs, build_kdump_initramfs
from vmci.testing.qemu.qmp import Qmp

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

    def _symbols(self, key: str) -> dict[str, int]:
        """``name -> address`` of the ``/proc/kallsyms`` lines reported under ``key``."""
        out = {}
        for line in self.raw.get(key, []):
            addr, _, name = line.split()
            out[name] = int(addr, 16)
        return out

    @property
    def kallsyms(self) -> dict[str, int]:
        return self._symbols("kallsyms")

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
        return self._symbols("capture_kallsyms")

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


