"""vmci.firmware."""
