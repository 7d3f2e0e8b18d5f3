"""vmci.core."""
