"""vmci.formats.migration.reader."""
