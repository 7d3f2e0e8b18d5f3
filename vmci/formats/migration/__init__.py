"""QEMU migration streams: reader (:mod:`.reader`) and writer (:mod:`.writer`)."""
