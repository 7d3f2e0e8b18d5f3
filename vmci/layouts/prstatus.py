"""``elf_prstatus`` descriptors of ``CORE``/``NT_PRSTATUS`` notes as QEMU writes them.

QEMU fills only ``pr_pid`` (the CPU index + 1) and the general registers (arm: also
``pr_fpvalid``); every other byte is zero.  On x86 the register block is copied from host memory,
so a big-endian host would produce a big-endian descriptor; on arm the byte order is the guest's
(``SCTLR_EL1.EE``, QEMU target/arm/arch_dump.c).  Both byte orders are declared.
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

# arm64 user_pt_regs: x0..x30, sp, pc, pstate (QEMU aarch64_write_elf64_note)
AARCH64_USER_REGS = (*(f"x{i}" for i in range(31)), "sp", "pc", "pstate")
# arm (32-bit) elf_gregset_t: r0..r15, cpsr, ORIG_r0 (QEMU arm_write_elf32_note)
ARM_USER_REGS = (*(f"r{i}" for i in range(16)), "cpsr", "orig_r0")

X86_64_PRSTATUS_SIZE = 336
I386_PRSTATUS_SIZE = 144
AARCH64_PRSTATUS_SIZE = 392
ARM_PRSTATUS_SIZE = 148


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


def aarch64_prstatus(order: str = "little") -> cs.Struct:
    """arm64 ``elf_prstatus``: pid at 32, 34 u64 registers at 112 (sp at 360, pc at 368, pstate at
    376), ``pr_fpvalid`` at 384, 392 bytes."""
    u32 = cs.Int32ul if order == "little" else cs.Int32ub
    u64 = cs.Int64ul if order == "little" else cs.Int64ub
    return cs.Struct(
        "pad1" / cs.Padding(32),
        "pid" / u32,
        "pad2" / cs.Padding(76),
        *[name / u64 for name in AARCH64_USER_REGS],
        "fpvalid" / u32,
        "pad3" / cs.Padding(4),
    )


def arm_prstatus(order: str = "little") -> cs.Struct:
    """32-bit arm ``elf_prstatus``: pid at 24, 18 u32 registers at 72, ``pr_fpvalid`` at 144, 148 bytes."""
    u32 = cs.Int32ul if order == "little" else cs.Int32ub
    return cs.Struct(
        "pad1" / cs.Padding(24),
        "pid" / u32,
        "pad2" / cs.Padding(44),
        *[name / u32 for name in ARM_USER_REGS],
        "fpvalid" / u32,
    )


PRSTATUS = {
    ("x86_64", "little"): x86_64_prstatus("little"),
    ("x86_64", "big"): x86_64_prstatus("big"),
    ("i386", "little"): i386_prstatus("little"),
    ("i386", "big"): i386_prstatus("big"),
    ("aarch64", "little"): aarch64_prstatus("little"),
    ("aarch64", "big"): aarch64_prstatus("big"),
    ("arm", "little"): arm_prstatus("little"),
    ("arm", "big"): arm_prstatus("big"),
}
#: descriptor size -> the architecture whose layout has it
PRSTATUS_SIZES = {X86_64_PRSTATUS_SIZE: "x86_64", I386_PRSTATUS_SIZE: "i386",
                  AARCH64_PRSTATUS_SIZE: "aarch64", ARM_PRSTATUS_SIZE: "arm"}

assert PRSTATUS["x86_64", "little"].sizeof() == X86_64_PRSTATUS_SIZE
assert PRSTATUS["i386", "little"].sizeof() == I386_PRSTATUS_SIZE
assert PRSTATUS["aarch64", "little"].sizeof() == AARCH64_PRSTATUS_SIZE
assert PRSTATUS["arm", "little"].sizeof() == ARM_PRSTATUS_SIZE

NT_PRFPREG = 2
AARCH64_FPREGSET_SIZE = 528


def aarch64_fpregset(order: str = "little") -> cs.Struct:
    """arm64 ``user_fpsimd_state`` of a ``CORE``/``NT_PRFPREG`` note: 32 128-bit V registers as
    (low, high) u64 pairs (QEMU swaps the pair in big-endian dumps), fpsr, fpcr, 8 bytes of pad."""
    u32 = cs.Int32ul if order == "little" else cs.Int32ub
    u64 = cs.Int64ul if order == "little" else cs.Int64ub
    return cs.Struct(
        "vregs" / cs.Array(64, u64),
        "fpsr" / u32,
        "fpcr" / u32,
        "pad" / cs.Padding(8),
    )


FPREGSET = {"little": aarch64_fpregset("little"), "big": aarch64_fpregset("big")}
assert FPREGSET["little"].sizeof() == AARCH64_FPREGSET_SIZE
