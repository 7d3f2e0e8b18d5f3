"""Test support for vmci and for other projects that need real or synthetic VM memory dumps."""
