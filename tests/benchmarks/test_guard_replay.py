"""The guard replay on synthetic cached histories: the same guard the trainer runs."""

import json

from benchmarks import guard_replay as gr
from commit_train.config import load_config


def _history(late_ratio: float, steps: int = 300) -> dict:
    # encoder/LLM normalised grad norm 1.0 through the reference period, then late_ratio
    enc = [[s, 1.0 if s <= 70 else late_ratio] for s in range(1, steps + 1)]
    return {
        "grad_norm/encoder_normalized": enc,
        "grad_norm/llm_normalized": [[s, 1.0] for s in range(1, steps + 1)],
    }


def _cfg():
    return load_config(gr.RECIPE, [])


def test_replay_reads_the_guard_value_at_each_update():
    cfg = _cfg()
    assert cfg.train.warmup_steps == 20 and cfg.balance.update_every == 50
    values = gr.replay(_history(0.3), cfg)
    assert [s for s, _ in values] == [50, 100, 150, 200, 250, 300]
    assert values[0][1] is None  # the reference (steps 21-70) is not complete at step 50
    assert all(abs(g - 0.3) < 1e-9 for _, g in values[1:])
    assert gr.first_fire(values, cfg.balance.guard_ratio) == 100
    assert gr.first_fire(gr.replay(_history(0.9), cfg), cfg.balance.guard_ratio) is None


def test_report_marks_firing_runs_and_skips_results_without_histories(tmp_path):
    for key, late, acc in (("degraded", 0.2, 0.40), ("healthy", 1.5, 0.55)):
        d = tmp_path / "vision" / key
        d.mkdir(parents=True)
        res = {"key": key, "spec": {"ratio": 10.0}, "accuracy": acc, "history": _history(late)}
        (d / "result.json").write_text(json.dumps(res))
    (tmp_path / "vision" / "old").mkdir()
    (tmp_path / "vision" / "old" / "result.json").write_text(
        json.dumps({"key": "old", "spec": {"ratio": 1.0}, "accuracy": 0.5, "history": {}})
    )
    runs = gr.load_runs(tmp_path)
    assert sorted(r["key"] for r in runs) == ["degraded", "healthy"]
    table = gr.report(runs, _cfg())
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if "×10" in line}
    assert "100:0.20*" in rows["degraded"] and rows["degraded"].endswith("| 100 |")
    assert "*" not in rows["healthy"] and rows["healthy"].endswith("| - |")


def test_early_ratios_are_window_medians_of_the_raw_ratio():
    hist = _history(0.3)
    # encoder 2.0 at steps 1-5, 1.0 after: the first window's median sits between them
    hist["grad_norm/encoder_normalized"][:5] = [[s, 2.0] for s in range(1, 6)]
    hist["grad_norm/llm_normalized"][10] = [11, 0.0]  # a step without an LLM grad norm: skipped
    assert gr.early_ratios(hist) == [1.5, 1.0, 1.0]
    assert gr.early_ratios({**hist, "grad_norm/encoder_normalized": [[1, 0.5]]}) == [
        0.5,
        None,
        None,
    ]


def test_load_runs_reads_one_benchmark(tmp_path):
    for bench in ("vision", "audio"):
        d = tmp_path / bench / f"{bench}-run"
        d.mkdir(parents=True)
        res = {"key": d.name, "spec": {"ratio": 10.0}, "accuracy": 0.5, "history": _history(1.0)}
        (d / "result.json").write_text(json.dumps(res))
    assert [r["key"] for r in gr.load_runs(tmp_path)] == ["vision-run"]
    assert [r["key"] for r in gr.load_runs(tmp_path, "audio")] == ["audio-run"]
