"""Worker-subprocess helpers shared by the benchmark scripts."""

import sys
from types import SimpleNamespace

import pytest

from benchmarks._report import BENCHMARKS_MD, run_worker, worker_cmd

ROOT = BENCHMARKS_MD.parent


def test_worker_cmd_passes_the_shared_run_options(tmp_path):
    args = SimpleNamespace(
        recipe=tmp_path / "r.yaml", steps=5, warmup=1, batch_size=2, max_records=None, threads=1
    )
    cmd = worker_cmd(tmp_path / "bench.py", "on", args, "--uri", "http://x")
    assert cmd[0] == sys.executable and cmd[2:6] == ["--worker", "on", "--uri", "http://x"]
    assert cmd[cmd.index("--batch-size") + 1] == "2" and "--max-records" not in cmd


def test_run_worker_returns_the_result_line_and_reports_failures(tmp_path, monkeypatch):
    ok = tmp_path / "ok.py"
    ok.write_text(
        f"import os, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from benchmarks._report import emit_result\nprint('noise')\n"
        "emit_result({'a': 1, 'hub': os.environ['HF_HUB_OFFLINE'],"
        " 'uri': os.environ.get('MLFLOW_TRACKING_URI')})\n"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://secret")
    res = run_worker([sys.executable, str(ok)], "on", ROOT, drop_env=("MLFLOW_TRACKING_URI",))
    assert res == {"a": 1, "hub": "1", "uri": None}
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nsys.stderr.write('boom: no recipe')\nsys.exit(3)\n")
    with pytest.raises(RuntimeError, match=r"(?s)off run failed \(3\).*boom: no recipe"):
        run_worker([sys.executable, str(bad)], "off", ROOT)
