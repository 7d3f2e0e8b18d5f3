"""Tests of vmci.fleet (a package, so that its conftest is not imported as the top-level
``conftest`` that other test directories import helpers from)."""
