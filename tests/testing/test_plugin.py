"""The pytest plugin (entry point pytest11 = vmci.testing) and its fixtures."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]


def test_entry_point_is_registered() -> None:
    eps = [e for e in entry_points(group="pytest11") if e.value == "vmci.testing"]
    if not eps:
        pytest.skip("vmci is not installed (pip install -e .): no pytest11 entry point")
    assert eps[0].name == "vmci"


def test_fixtures_used_directly(vmci_dump, vmci_scenario) -> None:
    s = vmci_scenario(seed=4, device="upstream")
    assert s.ram == 32 << 20 and s.device == "upstream"
    path, truth = vmci_dump("kdump", scenario=s)
    assert path.exists() and truth.path == path and truth.fw_cfg_record is not None
    path2, truth2 = vmci_dump("elf", seed=4, faults=["no-device"])
    assert path2 != path and not truth2["dump"]["guest_note"]["appended"]
    with pytest.raises(TypeError):
        vmci_dump("elf", scenario=s, seed=1)


def test_fixtures_in_another_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from vmci.formats import open_dump

        def test_reader(vmci_dump):
            path, truth = vmci_dump("kdump-flat", seed=3, vmgenid=True)
            with open_dump(path) as d:
                assert d.notes[-1].name == "VMCOREINFO"
                assert d.memory.read(truth["vmcoreinfo"]["note_paddr"] + 12, 10) == b"VMCOREINFO"
            assert truth.expected("acpi")["found"]
            assert int.from_bytes(truth.addr_blob, "little") == truth["device"]["blob"]
        """
    )
    # the plugin is already loaded in this process; loading it again by name makes the test
    # independent of how vmci was installed
    installed = any(e.value == "vmci.testing" for e in entry_points(group="pytest11"))
    args = [] if installed else ["-p", "vmci.testing"]
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=1)
