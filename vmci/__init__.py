"""vmci: find, check and use the Linux VMCOREINFO in virtual-machine memory dumps.

The library is layered (see README.md, "Architecture"): binary layouts (:mod:`vmci.layouts`),
containers (:mod:`vmci.formats`, entry point :func:`vmci.formats.open_dump`), the physical
memory seam (:mod:`vmci.memory`), and above it discovery, checks and the producer.
Importing :mod:`vmci` is cheap; heavy modules load when used.
"""

__version__ = "0.1.0"
