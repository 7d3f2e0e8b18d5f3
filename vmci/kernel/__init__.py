"""Linux knowledge over (physical memory, architecture, VMCOREINFO), one module per subject.

- :mod:`vmci.kernel.vmcoreinfo`: the VMCOREINFO text model, lint, the note helpers.
- :mod:`vmci.kernel.vmem`: :class:`~vmci.kernel.vmem.KernelMemory`, virtual reads through the
  kernel's own page tables plus ``symbol()``/``offset()``/``size()``/``number()`` from the text.
- :mod:`vmci.kernel.symbols`: System.map / vmlinux / bzImage symbols.
- :mod:`vmci.kernel.image`: searches of the kernel image (banner, ``new_utsname``, build ID,
  ``swapper_pg_dir``).
- :mod:`vmci.kernel.kaslr`: the KASLR verdict (VMCOREINFO vs page tables) and its corroboration.
- :mod:`vmci.kernel.synthesize`: a VMCOREINFO made from the page tables when none survives.

Nothing here runs discovery (:mod:`vmci.discover`) or names an architecture: architecture
questions go to :mod:`vmci.arch`.
"""
