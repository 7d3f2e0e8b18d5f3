"""vmci.arch.x86_64.paging."""
