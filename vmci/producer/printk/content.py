"""What the emulated kernel logs: a boot log and the lines of a panic, by cause."""

from __future__ import annotations

import random

from vmci.errors import UsageError
from vmci.layouts.printk import (
    CALLER_CPU,
    LOG_CONT,
    LOG_NEWLINE,
)
from vmci.producer.config import PANIC_CAUSES
from vmci.producer.printk.records import LogRecord

_DEVICES = [("pci", "+pci:0000:00:01.0"), ("virtio", "+virtio:virtio0"), ("block", "b8:0"),
            ("net", "n2"), ("usb", "+usb:1-1")]


def boot_log(n: int = 200, *, seed: int = 0, osrelease: str = "6.1.0-18-amd64", cpus: int = 2,
             start_ns: int = 0) -> list[LogRecord]:
    """``n`` messages a booting guest might log: the banner, e820 lines, device messages with
    ``dev_info``, interrupt-context (CPU) callers, an empty line, a continuation, a multi-line
    record, tabs, control and non-ASCII bytes; timestamps increasing from ``start_ns``."""
    rng = random.Random(seed)
    ts = start_ns
    fixed = [
        (b"Linux version " + osrelease.encode() + b" (debian-kernel@lists.debian.org) (gcc-12 (Debian "
         b"12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian", 5, 0),
        (b"Command line: BOOT_IMAGE=/boot/vmlinuz-" + osrelease.encode()
         + b" root=/dev/vda1 ro console=ttyS0", 6, 0),
        (b"BIOS-provided physical RAM map:", 6, 0),
        (b"BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable", 6, 0),
        (b"", 6, 0),
        (b"x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'", 6, 0),
        (b"smpboot: CPU0: AMD EPYC\tProcessor (family: 0x17, model: 0x31)", 6, 0),
        (b"clocksource: tsc-early: mask: 0xffffffffffffffff max_cycles: 0x2b3e459bf4c", 6, 0),
        (b"ACPI: RSDP 0x00000000000F58D0 000014 (v00 BOCHS )\nACPI: RSDT 0x000000003FFE1F4B 000034", 6, 0),
        (b"weird bytes: \x01\x7f\xe9t\xc3\xa9 (UTF-8 \xc3\xa9)", 4, 0),
        (b"audit: initializing netlink subsys (disabled)", 5, 4 << 0),
        (b"systemd[1]: Started Journal Service.", 6, 3),
    ]
    out: list[LogRecord] = []
    for i in range(n):
        ts += rng.randrange(1000, 40_000_000)
        if i < len(fixed):
            text, level, facility = fixed[i]
        else:
            kind = rng.randrange(6)
            if kind == 0:
                text = b"pci 0000:00:%02x.0: [1af4:1000] type 00 class 0x020000" % rng.randrange(32)
                level, facility = 6, 0
            elif kind == 1:
                text = b"EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none."
                level, facility = 6, 0
            elif kind == 2:
                noise = bytes(rng.choice(b"abcdefghij") for _ in range(rng.randrange(0, 200)))
                text, level, facility = b"random: crng init done (message %d, %s)" % (i, noise), 5, 0
            elif kind == 3:
                text = b"usb 1-1: new high-speed USB device number %d using xhci_hcd" % i
                level, facility = 6, 0
            elif kind == 4:
                text, level, facility = b"virtio_net virtio0 enp1s0: renamed from eth0", 6, 0
            else:
                text, level, facility = b"workqueue: message %d from a kworker" % i, 4, 0
        caller = rng.choice([1, 1, rng.randrange(2, 30000), CALLER_CPU | rng.randrange(cpus)])
        sub, dev = rng.choice(_DEVICES) if rng.random() < 0.25 else ("", "")
        flags = LOG_NEWLINE if rng.random() < 0.9 else LOG_CONT
        out.append(LogRecord(text, ts, level, facility, caller, sub, dev, flags))
    return out




def _panic_lines(cause: str, task: bytes, tail: bytes) -> list[tuple[bytes, int]]:
    """(text, level) of the messages before the call trace's frames, the frames, and the panic
    message, for ``cause``; ``task`` is the ``CPU: .. PID: .. Comm: ..`` line's start, ``tail``
    its ``Not tainted <release> ...`` end."""
    hw = (b"Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014", 4)
    if cause == "sysrq":  # drivers/tty/sysrq.c sysrq_handle_crash(): panic() directly
        head = [(b"sysrq: Trigger a crash", 6), (b"Kernel panic - not syncing: sysrq triggered crash", 0)]
        frames = [b"dump_stack_lvl+0x44/0x5c", b"panic+0x118/0x2f6", b"sysrq_handle_crash+0x16/0x20",
                  b"__handle_sysrq.cold+0x43/0x11b", b"write_sysrq_trigger+0x24/0x40",
                  b"proc_reg_write+0x56/0xa0", b"vfs_write+0xcb/0x3f0", b"ksys_write+0x6f/0xf0",
                  b"do_syscall_64+0x5b/0xc0", b"entry_SYSCALL_64_after_hwframe+0x64/0xce"]
        return [*head, (task + b" " + tail, 4), hw, (b"Call Trace:", 4), (b" <TASK>", 4),
                *((b" " + f, 4) for f in frames), (b" </TASK>", 4)]
    if cause == "null-deref":  # arch/x86/mm/fault.c show_fault_oops(), then oops_end() -> panic
        frames = [b"ext4_file_write_iter+0x3a5/0x790 [ext4]", b"vfs_write+0x236/0x3f0",
                  b"ksys_write+0x6f/0xf0", b"do_syscall_64+0x5b/0xc0",
                  b"entry_SYSCALL_64_after_hwframe+0x64/0xce"]
        return [(b"BUG: kernel NULL pointer dereference, address: 0000000000000008", 1),
                (b"#PF: supervisor read access in kernel mode", 1),
                (b"Oops: 0000 [#1] PREEMPT SMP NOPTI", 4), (task + b" " + tail, 4), hw,
                (b"RIP: 0010:ext4_file_write_iter+0x3a5/0x790 [ext4]", 4), (b"Call Trace:", 4),
                (b" <TASK>", 4),
                *((b" " + f, 4) for f in frames), (b" </TASK>", 4),
                (b"Kernel panic - not syncing: Fatal exception", 0)]
    if cause == "oom":  # mm/oom_kill.c out_of_memory() with nothing to kill
        frames = [b"dump_stack_lvl+0x44/0x5c", b"panic+0x118/0x2f6", b"out_of_memory.cold+0x2f/0x7e",
                  b"__alloc_pages_slowpath.constprop.0+0xc6c/0xe50", b"__alloc_pages+0x305/0x330",
                  b"folio_alloc+0x17/0x50", b"__filemap_get_folio+0x155/0x340"]
        return [(b"Out of memory and no killable processes...", 3),
                (b"Kernel panic - not syncing: System is deadlocked on memory", 0),
                (task + b" " + tail, 4), hw,
                (b"Call Trace:", 4), (b" <TASK>", 4), *((b" " + f, 4) for f in frames), (b" </TASK>", 4)]
    if cause == "hung-task":  # kernel/hung_task.c check_hung_uninterruptible_tasks()
        frames = [b"dump_stack_lvl+0x44/0x5c", b"panic+0x118/0x2f6", b"watchdog.cold+0xb/0xb",
                  b"kthread+0xd7/0x100", b"ret_from_fork+0x1f/0x30"]
        return [(b"INFO: task jbd2/vda1-8:233 blocked for more than 120 seconds.", 3),
                (b"Kernel panic - not syncing: hung_task: blocked tasks", 0), (task + b" " + tail, 4), hw,
                (b"Call Trace:", 4), (b" <TASK>", 4), *((b" " + f, 4) for f in frames), (b" </TASK>", 4)]
    if cause == "soft-lockup":  # kernel/watchdog.c watchdog_timer_fn() with softlockup_panic
        frames = [b"dump_stack_lvl+0x44/0x5c", b"panic+0x118/0x2f6", b"watchdog_timer_fn.cold+0x3d/0x3d",
                  b"__hrtimer_run_queues+0x112/0x2b0", b"hrtimer_interrupt+0xfc/0x210"]
        return [(b"watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:2:87]", 0),
                (task + b" " + tail.replace(b"Not tainted", b"Tainted: G             L"), 4), hw,
                (b"Kernel panic - not syncing: softlockup: hung tasks", 0),
                (b"Call Trace:", 4), (b" <IRQ>", 4), *((b" " + f, 4) for f in frames), (b" </IRQ>", 4)]
    raise UsageError(f"panic cause is one of {', '.join(PANIC_CAUSES)}, not {cause!r}")


def panic_log(*, start_ns: int, osrelease: str = "6.1.0-18-amd64", kaslr_offset: int = 0,
              pid: int = 1234, cpu: int = 0, comm: str = "bash", cause: str = "sysrq") -> list[LogRecord]:
    """What a 6.1 kernel logs before it stops, for ``cause`` (:data:`PANIC_CAUSES`; ``sysrq`` is
    ``echo c > /proc/sysrq-trigger``)."""
    ts = start_ns
    task = b"CPU: %d PID: %d Comm: %s" % (cpu, pid, comm.encode())
    tail = b"Not tainted %s #1  Debian 6.1.76-1" % osrelease.encode()
    message = {"sysrq": b"sysrq triggered crash", "null-deref": b"Fatal exception",
               "oom": b"System is deadlocked on memory", "hung-task": b"hung_task: blocked tasks",
               "soft-lockup": b"softlockup: hung tasks"}
    lines = _panic_lines(cause, task, tail)
    lines += [(b"Kernel Offset: 0x%x from 0xffffffff81000000 (relocation range: "
               b"0xffffffff80000000-0xffffffffbfffffff)" % kaslr_offset, 0),
              (b"---[ end Kernel panic - not syncing: " + message[cause] + b" ]---", 0)]
    out = []
    for text, level in lines:
        ts += 4_000
        out.append(LogRecord(text, ts, level, 0, pid))
    return out
