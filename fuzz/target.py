"""Run one fuzz target under atheris (libFuzzer): ``python fuzz/fuzz_<target>.py [libFuzzer args]``.

Without a corpus directory among the arguments, the target's seeds are generated
(:mod:`seeds`) into a fresh directory and fuzzing starts from them.  libFuzzer's own options
apply: ``-max_total_time=S``, ``-runs=N``, ``-timeout=5`` (an input running longer is a hang,
a defect), ``-rss_limit_mb=``, ``-artifact_prefix=DIR/`` (where failing inputs are saved).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import MODULES, TARGETS, make_target, plug_compare_leak


def main(name: str) -> None:
    import atheris

    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    with atheris.instrument_imports(include=["vmci"]):
        for module in MODULES[name]:
            importlib.import_module(module)
    args = list(sys.argv)
    if not any(Path(a).is_dir() for a in args[1:] if not a.startswith("-")):
        from seeds import make_seeds

        root = Path(tempfile.mkdtemp(prefix=f"vmci-seeds-{name}-"))
        make_seeds(root)
        args.append(str(root / name))
    one = make_target(name)

    def test_one(data: bytes) -> None:
        plug_compare_leak(atheris)
        one(data)

    atheris.Setup(args, test_one)
    atheris.Fuzz()
