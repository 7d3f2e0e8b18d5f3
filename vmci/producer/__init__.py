"""The producer: emulates the real actors (guest kernel, firmware, devices, QEMU) to build dumps."""
