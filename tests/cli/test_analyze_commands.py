"""`vmci analyze`, `vmci vmcoreinfo`, `vmci vmgenid` as whole processes: output, JSON contract, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_KERNEL as SMALL
from conftest import run_vmci as vmci
from conftest import schema_errors

from vmci.core.memory import Range, SparseMemory
from vmci.formats.elf import write_elf
from vmci.formats.notes import encode_notes
from vmci.kernel.vmcoreinfo import build_note
from vmci.producer.devices import RfcGuestDriver, RfcVmcoreinfoDevice, VmgenidDevice
from vmci.producer.firmware import boot
from vmci.producer.linux import place_vmcoreinfo

GUID = "00112233-4455-6677-8899-aabbccddeeff"


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("cli")
    mem = SparseMemory([Range(0, 64 << 20)])
    dev, gen = RfcVmcoreinfoDevice(), VmgenidDevice(GUID)
    _, _, fw = boot(mem, [dev, gen])
    placed = place_vmcoreinfo(mem, SMALL, 0x2345000, 0x2347000)
    RfcGuestDriver(mem).run(placed.note_paddr, placed.note_size, fw.acpi)
    out: dict[str, object] = {"text": placed.text, "blob": bytes(dev.addr_le), "vgen": bytes(gen.addr_le)}
    for name, notes in (("note", [("VMCOREINFO", 0, placed.text)]), ("bare", [])):
        path = tmp / f"{name}.elf"
        with path.open("wb") as f:
            write_elf(f, mem, encode_notes(notes))
        out[name] = path
    mem.write(dev.address, (9).to_bytes(4, "little"))
    path = tmp / "broken.elf"
    with path.open("wb") as f:
        write_elf(f, mem, encode_notes([("VMCOREINFO", 0, placed.text)]))
    out["broken"] = path
    (tmp / "blob.bin").write_bytes(bytes(dev.addr_le))
    out["blobfile"] = tmp / "blob.bin"
    return out


def test_analyze_json_contract_and_exit_0(dumps: dict) -> None:
    p = vmci("analyze", dumps["note"], "--addr-blob", dumps["blob"].hex(), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert schema_errors(r) == []
    assert r["vmcoreinfo"]["source"] == "elf-note" and r["vmgenid"]["guid"] == GUID
    assert r["vmcoreinfo"]["text"].encode() == dumps["text"]


def test_analyze_human_output(dumps: dict) -> None:
    p = vmci("analyze", dumps["note"], "--addr-blob", dumps["blobfile"])
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for words in ("Provenance", "address-blob", "blob alignment", "suppressor", "Checks",
                  "PASS sources-agree", "OSRELEASE", "BUILD-ID", "PAGESIZE", "KERNELOFFSET  0x1000000",
                  "phys_base", "CRASHTIME", GUID, "Result: PASS"):
        assert words in out, words


def test_analyze_exit_1_on_a_failed_check(dumps: dict) -> None:
    p = vmci("analyze", dumps["broken"], "--addr-blob", "0x" + int.from_bytes(dumps["blob"], "little")
             .to_bytes(8, "big").hex())
    assert p.returncode == 1
    assert "FAIL strategy:address-blob" in p.stdout and "unknown vmcoreinfo memory version 9" in p.stdout


def test_analyze_exit_1_when_not_found(tmp_path: Path) -> None:
    path = tmp_path / "empty.elf"
    with path.open("wb") as f:
        write_elf(f, SparseMemory([Range(0, 1 << 20)]), b"")
    p = vmci("analyze", path, "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["vmcoreinfo"]["found"] is False


def test_strategy_and_rfc_offset_options(dumps: dict) -> None:
    p = vmci("analyze", dumps["bare"], "--strategy", "acpi", "--strategy", "memory-scan", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["vmcoreinfo"]["source"] == "acpi"
    assert {c["source"] for c in r["candidates"]} == {"acpi", "memory-scan"}
    p = vmci("analyze", dumps["bare"], "--strategy", "acpi", "--rfc-offset", "36", "--json")
    assert p.returncode == 1 and "strategy:acpi" in {c["name"] for c in json.loads(p.stdout)["checks"]}


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--addr-blob", "12zz"], 2, "--addr-blob is neither a file nor hex digits"),
    (["--addr-blob", "2800"], 2, "2 bytes given, the blob is 8"),
    (["--rfc-offset", "44"], 2, "--rfc-offset is 40 or 36"),
    (["--strategy", "guess"], 2, "unknown strategy 'guess'"),
    (["--strategy", "fw-cfg-record"], 2, "--fw-cfg-record"),
])
def test_usage_errors_are_one_line(dumps: dict, args: list[str], code: int, words: str) -> None:
    p = vmci("analyze", dumps["note"], *args)
    assert p.returncode == code and words in p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("vmci: error: ")


def test_bad_dump_is_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"not a dump at all" * 10)
    p = vmci("analyze", path)
    assert p.returncode == 3 and p.stderr.startswith("vmci: error: ") and p.stderr.count("\n") == 1


def test_vmcoreinfo_command(dumps: dict, tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "vmci.cli", "vmcoreinfo", str(dumps["bare"])],
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == dumps["text"]
    out = tmp_path / "note.bin"
    assert vmci("vmcoreinfo", dumps["note"], "--note", "-o", out).returncode == 0
    assert out.read_bytes() == build_note(dumps["text"])


def test_vmcoreinfo_not_found(tmp_path: Path) -> None:
    path = tmp_path / "empty.elf"
    with path.open("wb") as f:
        write_elf(f, SparseMemory([Range(0, 1 << 20)]), b"")
    p = vmci("vmcoreinfo", path)
    assert p.returncode == 1 and p.stderr.startswith("vmci: error: no VMCOREINFO")


def test_vmgenid_command(dumps: dict) -> None:
    p = vmci("vmgenid", dumps["bare"])
    assert p.returncode == 0 and p.stdout == GUID + "\n"
    p = vmci("vmgenid", dumps["bare"], "--addr-blob", dumps["vgen"].hex())
    assert p.returncode == 0 and p.stdout == GUID + "\n"
    p = vmci("vmgenid", dumps["bare"], "--addr-blob", "0x1008")
    assert p.returncode == 1 and "blob alignment" in p.stderr
