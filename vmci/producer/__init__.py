"""The producer: emulates the real actors (guest kernel, firmware, devices, QEMU) to build dumps.

The entry point is :mod:`vmci.producer.scenario`.  This package module stays light (the command
line's help reads :data:`FORMATS` at start-up); nothing heavy is imported here.
"""

#: The dump formats :func:`vmci.producer.scenario.generate` writes.
FORMATS = ("elf", "elf-paging", "kdump", "kdump-flat", "kexec", "migration", "raw")
