"""vmci.integrations."""
