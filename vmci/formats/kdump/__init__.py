"""vmci.formats.kdump.reader."""
