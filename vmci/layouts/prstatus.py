"""``elf_prstatus`` descriptors of ``CORE``/``NT_PRSTATUS`` notes as QEMU writes them for x86.

QEMU fills only ``pr_pid`` (the CPU index + 1) and the general registers; every other byte is
zero.  The register block is copied from host memory, so a big-endian host would produce a
big-endian descriptor: both byte orders are declared.
"""

from __future__ import annotations

import construct as cs

X86_64_USER_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
    "ds", "es", "fs", "gs",
)

# i386 user_regs_struct: 17 slots of 4 bytes; segment selectors are 16-bit with a 16-bit pad.
I386_USER_REGS = (
    "ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs", "orig_eax",
    "eip", "cs", "eflags", "esp", "ss",
)
I386_SELECTORS = frozenset({"ds", "es", "fs", "gs", "cs", "ss"})

X86_64_PRSTATUS_SIZE = 336
I386_PRSTATUS_SIZE = 144


def x86_64_prstatus(order: str = "little") -> cs.Struct:
    """x86_64 ``elf_prstatus``: pid at 32, 27 u64 registers at 112, 336 bytes."""
    u32 = cs.Int32ul if order == "little" else cs.Int32ub
    u64 = cs.Int64ul if order == "little" else cs.Int64ub
    return cs.Struct(
        "pad1" / cs.Padding(32),
        "pid" / u32,
        "pad2" / cs.Padding(76),
        *[name / u64 for name in X86_64_USER_REGS],
        "pad3" / cs.Padding(8),
    )


def i386_prstatus(order: str = "little") -> cs.Struct:
    """i386 ``elf_prstatus``: pid at 24, 17 four-byte register slots at 72, 144 bytes."""
    u16 = cs.Int16ul if order == "little" else cs.Int16ub
    u32 = cs.Int32ul if order == "little" else cs.Int32ub
    regs: list[cs.Construct] = []
    for name in I386_USER_REGS:
        if name in I386_SELECTORS:
            regs += [name / u16, f"_{name}_pad" / cs.Padding(2)]
        else:
            regs.append(name / u32)
    return cs.Struct(
        "pad1" / cs.Padding(24),
        "pid" / u32,
        "pad2" / cs.Padding(44),
        *regs,
        "pad3" / cs.Padding(4),
    )


PRSTATUS = {
    ("x86_64", "little"): x86_64_prstatus("little"),
    ("x86_64", "big"): x86_64_prstatus("big"),
    ("i386", "little"): i386_prstatus("little"),
    ("i386", "big"): i386_prstatus("big"),
}

assert PRSTATUS["x86_64", "little"].sizeof() == X86_64_PRSTATUS_SIZE
assert PRSTATUS["i386", "little"].sizeof() == I386_PRSTATUS_SIZE
