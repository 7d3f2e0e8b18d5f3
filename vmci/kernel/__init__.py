"""vmci.kernel."""
