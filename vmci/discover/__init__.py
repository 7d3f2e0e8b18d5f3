"""Discovery strategies: each looks for the VMCOREINFO text in one place and returns a
:class:`~vmci.discover.finding.Finding` with the evidence trail behind its answer."""
