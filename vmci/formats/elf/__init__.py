"""vmci.formats.elf.reader."""
