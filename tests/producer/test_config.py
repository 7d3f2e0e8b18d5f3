"""The scenario configuration: keys, TOML, command-line flags over a file, the fault vocabulary."""

from __future__ import annotations

import pytest

from vmci.errors import UsageError
from vmci.producer import FORMATS
from vmci.producer.config import FAULT_SPECS, STAGES, Scenario, check_faults, merge_flags
from vmci.producer.faults import FAULTS

MIB, GIB = 1 << 20, 1 << 30


def test_toml_scenario(tmp_path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('[scenario]\nseed = 4\nram = "64M"\nfirmware = "ovmf"\nfaults = ["nonzero-suppressor"]\n')
    s = Scenario.from_toml(p)
    assert (s.seed, s.ram, s.firmware, s.faults) == (4, 64 * MIB, "ovmf", ("nonzero-suppressor",))
    assert Scenario.from_dict(s.to_dict()) == s
    p.write_text("seed = 1\nmemory = 5\n")
    with pytest.raises(UsageError, match="unknown scenario key 'memory'"):
        Scenario.from_toml(p)
    p.write_text("seed = [")
    with pytest.raises(UsageError, match="not valid TOML"):
        Scenario.from_toml(p)
    for bad in ({"device": "x"}, {"rfc_offset": 32}, {"faults": ["nope"]}, {"ram": "lots"}):
        with pytest.raises(UsageError):
            Scenario(**bad)


def test_sizes_use_the_shared_parser() -> None:
    assert Scenario(ram="16GiB").ram == 16 * GIB and Scenario(ram=0x2000000).ram == 32 * MIB
    assert Scenario(ram="0x4000000").ram == 64 * MIB
    with pytest.raises(UsageError, match=r"not a size: 'lots' \(use e\.g\."):
        Scenario(ram="lots")


def test_choices_and_image_kind() -> None:
    with pytest.raises(UsageError, match="machine is one of q35, pc, not 'isapc'"):
        Scenario(machine="isapc")
    with pytest.raises(UsageError, match=r"cpus must be 1\.\.64"):
        Scenario(cpus=0)
    assert Scenario(ram="64M").image_kind == "compact" and Scenario(ram="128M").image_kind == "full"
    assert Scenario(ram="64M", image="full").image_kind == "full"
    assert Scenario().qemu_version_info == (7, 2) and Scenario(qemu_version="7").qemu_version_info == (7, 0)
    assert Scenario(qemu_version="6.2.1").qemu_version_info == (6, 2)
    with pytest.raises(UsageError, match="qemu_version is a version"):
        Scenario(qemu_version="seven")


def test_merge_flags_over_a_scenario_file(tmp_path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('seed = 3\nram = "32M"\ndevice = "upstream"\nfaults = ["size-undersize"]\n')
    base = Scenario.from_toml(p)
    s = merge_flags(base, {"seed": 9, "ram": None, "kaslr": False, "cpus": None}, ["stale-note"])
    assert (s.seed, s.ram, s.device, s.kaslr, s.cpus) == (9, 32 * MIB, "upstream", False, 2)
    assert s.faults == ("size-undersize", "stale-note")  # the file's first, then the flags'
    assert merge_flags(base, {}) == base
    assert merge_flags(None, {"ram": "64M"}) == Scenario(ram=64 * MIB)
    assert merge_flags(None, {}, ["no-device"]).faults == ("no-device",)
    with pytest.raises(UsageError, match="unknown scenario key 'colour'"):
        merge_flags(None, {"colour": "red"})
    with pytest.raises(UsageError, match="unknown fault 'nope'"):
        merge_flags(base, {}, ["nope"])


def test_fault_vocabulary_and_implementations_agree() -> None:
    assert list(FAULTS) == list(FAULT_SPECS)
    for name, spec in FAULT_SPECS.items():
        assert spec.stage in STAGES
        fault = FAULTS[name]
        assert (fault.name, fault.stage, fault.description) == (spec.name, spec.stage, spec.description)
        assert callable(fault.apply)
    check_faults(list(FAULT_SPECS))
    with pytest.raises(UsageError, match="unknown fault 'nope'; known: no-device, rfc-offset-36, "):
        check_faults(["stale-note", "nope"])


def test_formats_written_once() -> None:
    import vmci.cli.generate as cli
    import vmci.producer.config as config
    import vmci.producer.scenario as scenario

    assert FORMATS == ("elf", "elf-paging", "kdump", "kdump-flat", "kexec", "migration", "raw")
    assert config.FORMATS is FORMATS and scenario.FORMATS is FORMATS and cli.FORMATS is FORMATS
