"""vmci.analysis."""
