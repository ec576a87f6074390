"""The guard/rule replay on synthetic and on the committed cached histories.

The replay must be the trainer's scheduler: on the cached scheduled runs it reproduces the
LR ratio each run logged, and on synthetic histories it makes the rule's documented moves.
"""

import json
from pathlib import Path

from benchmarks import guard_replay as gr
from commit_train.config import load_config
from commit_train.methods import SCHEDULED


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
    assert [u.step for u in values] == [50, 100, 150, 200, 250, 300]
    assert values[0].guard is None  # the reference (steps 21-70) is not complete at step 50
    assert all(abs(u.guard - 0.3) < 1e-9 for u in values[1:])
    # no probes in the history: no update happens, so even the firing guard leaves r alone
    assert all(u.ratio == 1.0 for u in values)
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
    table = gr.report(runs, gr.RECIPE, [])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if "×10" in line}
    cols = {k: [c.strip() for c in v.strip("|").split("|")] for k, v in rows.items()}
    assert "100:0.20*" in cols["degraded"][4] and cols["degraded"][5] == "100"
    assert "*" not in cols["healthy"][4] and cols["healthy"][5] == "-"
    assert cols["healthy"][6:] == ["no probes", "-", "-"]


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


def _with_probes(hist: dict, shares: list[float]) -> dict:
    """Probes every 10 steps with the given per-probe share_encoder, cycled."""
    steps = range(10, 301, 10)
    return {
        **hist,
        "balance/share_encoder": [[s, shares[i % len(shares)]] for i, s in enumerate(steps)],
        "balance/kappa": [[s, 0.5] for s in steps],
    }


def test_rule_replay_keeps_r_on_noise_and_raises_a_starved_encoder():
    cfg = _cfg()
    noisy = gr.replay(_with_probes(_history(1.5), [0.2, 0.8, 0.35, 0.65, 0.5]), cfg, 300)
    assert all(u.ratio == 1.0 for u in noisy) and gr.first_move(noisy) is None
    starved = gr.replay(_with_probes(_history(1.5), [0.1, 0.2, 0.15]), cfg, 300)
    # no raise before the guard's reference exists (step 70), then up until the LR tail
    assert starved[0].ratio == 1.0 and gr.first_move(starved) == 100
    assert starved[1].ratio > 1.0 and starved[-1].ratio == starved[-2].ratio
    # the same starved signal on a degrading encoder never raises it
    degraded = gr.replay(_with_probes(_history(0.2), [0.1, 0.2, 0.15]), cfg, 300)
    assert max(u.ratio for u in degraded) == 1.0


def test_replay_says_when_excess_weighted_aux_would_act():
    cfg = _cfg()
    noisy = gr.replay(_with_probes(_history(1.5), [0.2, 0.8, 0.35, 0.65, 0.5]), cfg, 300)
    assert all(u.aux == 0.0 for u in noisy) and gr.first_aux(noisy, 300) is None
    # a significant imbalance weights L_aux from the first update on, guard or not
    starved = gr.replay(_with_probes(_history(0.2), [0.1, 0.2, 0.15]), cfg, 300)
    assert gr.first_aux(starved, 300) == 50 and all(u.aux > 0 for u in starved)
    assert gr.first_aux(starved, 50) is None  # a weight set after the last step acts on none


CACHE = Path(__file__).resolve().parents[2] / "benchmarks/results/compare_cache_v3"


def test_replay_reproduces_the_lr_ratio_the_cached_scheduled_runs_logged():
    checked = 0
    for bench, recipe in gr.RECIPES.items():
        for res in gr.load_runs(CACHE, bench):
            spec = res["spec"]
            # commit_clr logs r too, but keeps it at 1: its LRs are Constant's
            if spec["method"] not in SCHEDULED or "balance/lr_ratio" not in res["history"]:
                continue
            cfg = gr.run_config(recipe, res, [])  # variants replay with their own settings
            logged = {int(s): v for s, v in res["history"]["balance/lr_ratio"]}
            for u in gr.replay(res["history"], cfg, spec["steps"]):
                assert abs(logged[u.step] - u.ratio) < 1e-9, (res["key"], u)
            checked += 1
    assert checked >= 10  # the committed cache holds vision and audio scheduled runs
