"""The flattened reader serves the rearranged file exactly as `makedumpfile -R` would write it:
records in any order, gaps as zeros, and where records overlap the later one wins."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmci.formats.flattened import FlattenedSource, FlatWriter

records_st = st.lists(
    st.tuples(st.integers(0, 20000), st.binary(min_size=1, max_size=3000)), min_size=1, max_size=25
)


def write_flat(path: Path, records: list[tuple[int, bytes]]) -> None:
    with path.open("wb") as f:
        w = FlatWriter(f, max_record=1 << 30)
        for off, data in records:
            w.write_at(off, data)
            w.flush()  # one record per write, so overlaps stay overlaps
        w.close()


def replay(records: list[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for off, data in records:
        if len(out) < off + len(data):
            out.extend(bytes(off + len(data) - len(out)))
        out[off : off + len(data)] = data
    return bytes(out)


@given(records=records_st)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_reads_equal_a_replay_of_the_records(tmp_path: Path, records: list[tuple[int, bytes]]) -> None:
    path = tmp_path / "flat"
    write_flat(path, records)
    want = replay(records)
    src = FlattenedSource(path)
    try:
        assert src.size == len(want)
        assert src.read(0, src.size) == want
        for off in range(0, len(want), 977):
            n = min(1500, len(want) - off)
            assert bytes(src.view(off, n)) == want[off : off + n]
    finally:
        src.close()


def test_makedumpfile_agrees_on_overlapping_records() -> None:
    mdf = shutil.which("makedumpfile")
    if mdf is None:
        pytest.skip("makedumpfile is not installed (Debian package makedumpfile)")
    records = [(0, b"A" * 5000), (4000, b"B" * 3000), (100, b"C" * 50), (6500, b"D" * 10), (12000, b"E")]
    with tempfile.TemporaryDirectory() as tmp:
        flat, out = Path(tmp) / "flat", Path(tmp) / "out"
        write_flat(flat, records)
        with flat.open("rb") as f:
            r = subprocess.run([mdf, "-R", str(out)], stdin=f, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        src = FlattenedSource(flat)
        try:
            assert out.read_bytes() == src.read(0, src.size) == replay(records)
        finally:
            src.close()
