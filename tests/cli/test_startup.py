"""Start-up of ``vmci analyze --json`` on a dump with a note (issue #14: not slower than the first
wave; ``bench/bench_startup.py`` measures it): the command loads only what its answer needs."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

# run the console entry point, then list the modules it loaded (on stderr)
CODE = ("import sys; sys.argv[0] = 'vmci'\nfrom vmci.cli import main\ntry:\n    main()\nfinally:\n"
        "    sys.stderr.write('\\n'.join(sorted(sys.modules)))\n")


def test_analyze_loads_neither_numpy_nor_the_log_readers_nor_other_commands() -> None:
    p = subprocess.run([sys.executable, "-c", CODE, "analyze", "upstream.kdump", "--json"],
                       cwd=ROOT / "testdata", capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == (ROOT / "tests" / "analysis" / "golden" / "upstream.analyze.json").read_bytes()
    loaded = set(p.stderr.decode().split())
    assert "numpy" not in loaded  # a kdump's firmware areas are read page by page
    assert "vmci.kernel.printk.probe" in loaded
    assert not {"vmci.kernel.printk.lockless", "vmci.analysis.kernel_log"} & loaded  # no log: probed
    assert "vmci.cli.analyze" in loaded
    assert not {"vmci.cli.convert", "vmci.cli.triage", "vmci.cli.dmesg", "vmci.cli.generate"} & loaded
