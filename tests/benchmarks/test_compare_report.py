"""The comparison's arithmetic on synthetic cached results: no training involved."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import _compare_report as rep
from benchmarks.compare_methods import RunSpec, parse_args, plan


def _result(method, ratio, seed, val, acc, kappa=(0.5,), bench="vision", steps=40):
    spec = RunSpec(bench, method, ratio, seed, steps, 4, None, 1)
    return {
        "spec": {**spec.__dict__, "extra": []},
        "key": spec.key,
        "accuracy": acc,
        "final_val_loss": val[-1],
        "n_test": 10,
        "train_s": 1.0,
        "peak_rss_mb": 100.0,
        "lr_encoder": 1e-4 * ratio,
        "lr_projector": None,
        "lr_llm": 3e-4,
        "history": {
            "loss/val": [[10 * (i + 1), v] for i, v in enumerate(val)],
            "balance/kappa": [[10, k] for k in kappa],
            "balance/share_encoder": [[10, 0.5]],
            "balance/lr_ratio": [[50, 1.0]],
            "grad_norm/encoder_normalized": [[i, 1.0 / (i + 1)] for i in range(8)],
        },
    }


def test_steps_ratio_counts_steps_to_constants_final_loss():
    const = [[10, 2.0], [20, 1.5], [30, 1.2], [40, 1.0]]
    assert rep.steps_ratio([[10, 1.8], [20, 1.0], [30, 0.9], [40, 0.8]], const) == 0.5
    assert rep.steps_ratio([[10, 1.8], [20, 1.4], [30, 1.1], [40, 1.05]], const) is None
    # Constant reaching its final value early counts from there, not from its last step
    assert rep.steps_ratio([[10, 1.0]], [[10, 2.0], [20, 1.0], [30, 1.0]]) == 0.5


def test_summary_pairs_seeds_and_goal_lines_judge_the_targets():
    results = []
    for seed, (c_acc, m_acc) in enumerate([(0.40, 0.45), (0.42, 0.46), (0.38, 0.44)]):
        results.append(_result("constant", 10.0, seed, [2.0, 1.6, 1.3, 1.0], c_acc))
        results.append(_result("commit", 10.0, seed, [1.9, 1.2, 1.0, 0.9], m_acc))
        results.append(_result("constant", 1.0, seed, [2.0, 1.5, 1.1, 0.9], 0.5))
        results.append(_result("commit", 1.0, seed, [2.0, 1.5, 1.1, 0.9], 0.5 + 0.001 * seed))
    rows = rep.summarise(results)
    row = rows[("vision", 10.0, "commit")]
    assert row["n"] == 3 and row["steps_ratio"][0] == pytest.approx(0.75)
    assert row["acc"][0] == pytest.approx(0.45)
    d, sd, n = rep.paired_diff(rows, "vision", 10.0, "commit", "constant")
    assert n == 3 and d == pytest.approx(0.05) and sd == pytest.approx(0.01)
    lines = rep.goal_lines(rows, "vision")
    assert len(lines) == 2  # one line per goal, however many ratios the rows hold
    assert "**met**" in lines[0] and "+5.0" in lines[0]
    # paired sd 1 point over 3 seeds: t(2) 4.30 · 1 / √3 = 2.5 points, so +5 stands out
    assert "paired t, 95% half width 2.5 points: resolved" in lines[0]
    assert "float path" not in lines[0]  # synthetic runs have no training loss to compare
    assert "not resolved from seed noise" in lines[1]  # +0.1 against the same spread
    assert "within noise" in lines[1] or "better" in lines[1]
    table = rep.table(rows, "vision")
    assert "| ×10 | commit | 0,1,2 | 45.0 ± 1.0 |" in table


def test_two_seeds_do_not_resolve_what_two_standard_errors_would():
    # issue 15's vision ×0.1 old-rule cell: −3.0 ± 1.6 points over 2 seeds was printed as
    # "resolved" (2 · 1.6 / √2 = 2.3); the 95% half width with 1 df is 14 points
    assert "not resolved" in rep.resolution(-0.030, 0.016, 2)
    assert "half width 14.4 points" in rep.resolution(-0.030, 0.016, 2)
    assert rep.resolution(-0.050, 0.016, 3).endswith(": resolved")  # 4.0 points with 2 df
    assert rep.resolution(0.05, math.nan, 1) == "one seed: noise unknown"


def test_goal_lines_say_when_the_pairing_cancels_nothing():
    results = []
    for seed, (c_acc, m_acc) in enumerate([(0.40, 0.45), (0.42, 0.46), (0.38, 0.44)]):
        const = _result("constant", 10.0, seed, [2.0, 1.6, 1.3, 1.0], c_acc)
        run = _result("commit", 10.0, seed, [1.9, 1.2, 1.0, 0.9], m_acc)
        loss = [[s, 5.0 / s] for s in range(1, 30)]
        const["history"]["loss/train"] = [list(p) for p in loss]
        run["history"]["loss/train"] = [list(p) for p in loss]
        if seed == 2:  # another machine: the loss parts at step 2, before the probe at 10
            run["history"]["loss/train"][1][1] += 1e-3
        results += [const, run]
    rows = rep.summarise(results)
    assert rep.off_path_pairs(rows, "vision", 10.0, "commit") == 1
    (line,) = rep.goal_lines(rows, "vision")
    assert "1 of 3 pairs left Constant's float path before the first probe" in line


def test_goal_not_met_when_commit_never_reaches_constant_loss():
    results = [
        _result("constant", 0.1, 0, [2.0, 1.0], 0.40),
        _result("commit", 0.1, 0, [2.0, 1.2], 0.50),
    ]
    rows = rep.summarise(results)
    assert math.isnan(rows[("vision", 0.1, "commit")]["steps_ratio"][0])
    (line,) = rep.goal_lines(rows, "vision")
    assert "not reached" in line and "**not met**" in line
    assert "one seed: noise unknown" in line


def test_scheduler_table_shows_signal_noise_and_how_far_r_moved():
    noisy = _result("commit", 10.0, 0, [2.0, 1.0], 0.4)
    noisy["history"]["balance/share_encoder"] = [[10, 0.1], [20, 0.9], [30, 0.2]]
    noisy["history"]["balance/lr_ratio"] = [[50, 1.0], [100, 9.0], [150, 2.5]]
    noisy["history"]["loss/train"] = [[s, 3.0 - 0.1 * s] for s in range(1, 20)]
    const = _result("constant", 10.0, 0, [2.0, 1.0], 0.4)
    const["history"]["loss/train"] = [[s, 3.0 - 0.1 * s] for s in range(1, 20)]
    const["history"]["loss/train"][11][1] += 0.01  # step 12: after the first probe (step 10)
    rows = rep.summarise([noisy, const])
    table = rep.scheduler_table(rows, "vision")
    assert "| ×10 | commit | 0 | 0.40 ± 0.44 (0.10 – 0.90) | 1 – 9, 2.5 | 12 |" in table
    assert "constant" not in table  # constant LR is not scheduled: nothing to show
    assert (
        rep.scheduler_table(rep.summarise([_result("constant", 1.0, 0, [1.0], 0.4)]), "vision")
        == ""
    )


def test_departure_step_tells_the_float_path_from_the_method():
    run = _result("commit_sched", 10.0, 0, [1.0], 0.4)
    const = _result("constant", 10.0, 0, [1.0], 0.4)
    loss = [[s, 5.0 / s] for s in range(1, 30)]
    run["history"]["loss/train"] = [list(p) for p in loss]
    const["history"]["loss/train"] = [list(p) for p in loss]
    assert rep.departure_step(run, const) == "never"  # r never moved: Constant's run exactly
    run["history"]["loss/train"][2][1] += 1e-4  # step 3, before the first probe (step 10)
    assert rep.departure_step(run, const) == "3 (float path)"
    assert rep.departure_step(run, None) == "–"  # no Constant run of this seed


def test_findings_show_kappa_by_quarter_and_the_grad_norm_decay():
    assert rep.quarter_means([(i, float(i)) for i in range(8)]) == [0.5, 2.5, 4.5, 6.5]
    assert rep.quarter_means([(0, 1.0), (1, 3.0)]) == [1.0, 3.0]  # short: one part per point
    r = _result("constant", 10.0, 0, [2.0, 1.0], 0.4)
    r["history"]["balance/kappa"] = [[10, 0.8], [20, 0.6], [30, 0.1], [40, 0.02]]
    table = rep.findings_table(rep.summarise([r]), "vision")
    # grad norm 1/(i+1) over 8 points: first quarter (1 + 1/2)/2, last (1/7 + 1/8)/2
    assert "| ×10 | 0.380 | 0.80 → 0.60 → 0.10 → 0.02 | 0.500 | 0.75 → 0.134 |" in table


def test_report_only_reads_the_cache_and_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(rep, "RESULTS", tmp_path / "results")
    for r in [
        _result("constant", 0.1, 0, [2.0, 1.0], 0.4, kappa=(0.1, 0.2)),
        _result("constant", 1.0, 0, [2.0, 1.0], 0.4, kappa=(0.5,)),
        _result("constant", 10.0, 0, [2.0, 1.0], 0.4, kappa=(0.9,)),
        _result("commit", 1.0, 0, [2.0, 0.9], 0.45),
    ]:
        d = tmp_path / "cache" / "vision" / r["key"]
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))
    args = SimpleNamespace(
        cache=tmp_path / "cache",
        benchmarks=["vision"],
        methods=["constant", "commit"],
        seeds=[0],
        steps={"vision": 40},
        ratios=[0.1, 1.0, 10.0],
        argv=["--seeds", "0"],
    )
    body = rep.report(args, write=False)
    assert "| ×1 | commit | 0 | 45.0 |" in body
    assert (tmp_path / "results" / "compare_vision_t40_val_loss.png").stat().st_size > 0
    assert (tmp_path / "results" / "balance_findings_vision_t40.png").stat().st_size > 0


def test_plan_runs_mis_set_ratios_only_for_the_ratio_methods():
    args = parse_args(["--benchmarks", "vision", "--seeds", "0,1"])
    specs = plan(args)
    assert len(specs) == 2 * (7 + 2 * 3)
    assert {s.method for s in specs if s.ratio != 1.0} == {"constant", "commit_sched", "commit"}
    with pytest.raises(SystemExit):
        parse_args(["--benchmarks", "imagenet"])


def test_a_method_variant_is_its_own_run_and_its_own_row(tmp_path):
    argv = ["--benchmarks", "vision", "--seeds", "0", "--ratios", "10", "--steps", "40"]
    args = parse_args([*argv, "--methods", "constant,commit,commit@balance.gain=0.25"])
    args.cache = tmp_path
    by_name = {s.name: s for s in plan(args)}
    variant = by_name["commit@balance.gain=0.25"]
    assert variant.method == "commit" and variant.extra == ("balance.gain=0.25",)
    assert variant.key != by_name["commit"].key  # cached apart from plain commit
    assert "balance.gain=0.25" in variant.overrides(tmp_path / "w", tmp_path)

    def cached(spec, acc, val):
        r = _result(spec.method, spec.ratio, spec.seed, val, acc)
        r["spec"] = {**spec.__dict__, "extra": list(spec.extra)}
        (tmp_path / "vision" / spec.key).mkdir(parents=True)
        (tmp_path / "vision" / spec.key / "result.json").write_text(json.dumps(r))

    cached(by_name["constant"], 0.40, [2.0, 1.0])
    cached(by_name["commit"], 0.38, [2.0, 1.1])
    cached(variant, 0.45, [2.0, 0.9])
    # a run of the same method made with other --set overrides is another experiment
    other = parse_args([*argv, "--methods", "commit", "--set", "train.lr_llm=1"])
    cached(plan(other)[0], 0.99, [2.0, 0.1])

    rows = rep.summarise(rep.load_results(args))
    assert set(rows) == {("vision", 10.0, m) for m in ("constant", "commit", variant.name)}
    assert rows[("vision", 10.0, "commit")]["acc"][0] == pytest.approx(0.38)
    lines = rep.goal_lines(rows, "vision")
    assert any(
        line.startswith("- ×10 (mis-set): commit@balance.gain=0.25 − constant = **+5.0")
        for line in lines
    )
    with pytest.raises(SystemExit):
        parse_args(["--methods", "commit@gain"])  # not KEY=VALUE
    with pytest.raises(SystemExit):
        parse_args(["--methods", "comit@balance.gain=1"])  # unknown method


@pytest.mark.slow
def test_compare_runs_end_to_end_on_a_tiny_recipe_and_caches(
    tiny_parts, tmp_path, monkeypatch, capsys
):
    """The real script: subprocess runs of two methods at two ratios, cached results,
    then a second call that trains nothing and reports from the cache."""
    import yaml

    from benchmarks import compare_methods
    from tests.conftest import tiny_recipe_dict

    monkeypatch.setattr(rep, "RESULTS", tmp_path / "results")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_parts, tmp_path / "unused")))
    argv = [
        "--benchmarks", "tiny", "--recipe", f"tiny={recipe}",
        "--eval-set", f"tiny={tiny_parts['val']}",
        "--methods", "constant,commit", "--ratios", "1,10", "--seeds", "0",
        "--steps", "4", "--eval-points", "2", "--jobs", "2",
        "--cache", str(tmp_path / "cache"), "--no-write",
        "--set", "balance.probe_every=2",
    ]  # fmt: skip
    assert compare_methods.main(argv) == 0
    results = sorted((tmp_path / "cache" / "tiny").glob("*/result.json"))
    assert len(results) == 4
    r = json.loads(next(p for p in results if "commit-x10" in str(p)).read_text())
    assert r["lr_encoder"] == pytest.approx(10 * 1e-3) and r["n_test"] == 16
    assert [s for s, _ in r["history"]["loss/val"]] == [2, 4]
    assert r["history"]["balance/kappa"] and r["peak_rss_mb"] > 0
    assert "cores" in r["machine"]  # where it ran travels with the cached result
    assert not (results[0].parent / "work").exists()  # the model is deleted once scored
    mtimes = [p.stat().st_mtime for p in results]
    assert compare_methods.main(argv) == 0  # everything cached: nothing retrained
    assert [p.stat().st_mtime for p in results] == mtimes
    # a re-tuned recipe makes the cached runs other measurements: refused, each one named
    retuned = tiny_recipe_dict(tiny_parts, tmp_path / "unused")
    retuned["train"]["lr_encoder"] *= 10
    recipe.write_text(yaml.safe_dump(retuned))
    assert compare_methods.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("lr_encoder") == 4 and "commit-x10-s0-t4" in err and "tiny.yaml" in err
    assert [p.stat().st_mtime for p in results] == mtimes  # nothing rerun or overwritten
    # --no-write: the figures go to the cache, never over the ones BENCHMARKS.md links
    assert (tmp_path / "cache" / "plots" / "compare_tiny_t4_val_loss.png").is_file()
    assert not (tmp_path / "results").exists()


def test_a_larger_test_split_and_another_thread_count_are_cached_apart(tmp_path, monkeypatch):
    argv = ["--benchmarks", "vision", "--methods", "constant", "--ratios", "1", "--seeds", "0"]
    (default,) = plan(parse_args(argv))
    (bigger,) = plan(parse_args([*argv, "--test-size", "12"]))
    (threads,) = plan(parse_args([*argv, "--threads", "2"]))
    assert default.key == "constant-x1-s0-t300"  # older caches keep matching
    assert len({default.key, bigger.key, threads.key}) == 3
    assert default.eval_target(tmp_path) == "vision"
    target = bigger.eval_target(tmp_path)
    assert target.endswith("test.jsonl") and str(tmp_path) in target

    from benchmarks import compare_methods

    made = []
    monkeypatch.setattr(
        "commit_train.data.builtin.make_builtin", lambda *a, **kw: made.append((a, kw))
    )
    compare_methods.ensure_test_sets([default, bigger, bigger], tmp_path)
    assert len(made) == 1  # once per (benchmark, size), never for the default split
    (name, out), kw = made[0]
    assert name == "vision" and Path(target).parent == out
    assert kw == {"n_train": 0, "n_val": 0, "n_test": 12}


def test_the_report_averages_only_runs_scored_on_the_same_questions(tmp_path):
    argv = ["--benchmarks", "vision", "--methods", "constant", "--ratios", "10", "--seeds", "0"]
    for extra, acc in (([], 0.40), (["--test-size", "30"], 0.50), (["--threads", "2"], 0.60)):
        (spec,) = plan(parse_args([*argv, *extra]))
        r = _result(spec.method, spec.ratio, spec.seed, [2.0, 1.0], acc, steps=spec.steps)
        r["spec"] = {**spec.__dict__, "extra": []}
        (tmp_path / "vision" / spec.key).mkdir(parents=True)
        (tmp_path / "vision" / spec.key / "result.json").write_text(json.dumps(r))
    for extra, acc in (([], 0.40), (["--test-size", "30"], 0.50), (["--threads", "2"], 0.60)):
        args = parse_args([*argv, *extra, "--cache", str(tmp_path)])
        assert [r["accuracy"] for r in rep.load_results(args)] == [acc], extra
    other_ratio = parse_args(
        [*argv[:-4], "--ratios", "1", "--seeds", "0", "--cache", str(tmp_path)]
    )
    assert rep.load_results(other_ratio) == []


def test_machines_line_says_where_the_cached_runs_ran():
    a, b = _result("constant", 1.0, 0, [1.0], 0.5), _result("commit", 1.0, 0, [1.0], 0.5)
    a["machine"] = b["machine"] = "Xeon (AVX512)"
    assert rep.machines_line([a, b], "EPYC (AVX2)") == "Machine: Xeon (AVX512)"
    b["machine"] = "EPYC (AVX2)"
    old = _result("constant", 1.0, 1, [1.0], 0.5)  # cached before runs recorded it
    line = rep.machines_line([a, b, old], "EPYC (AVX2)")
    assert line.startswith("Machines: EPYC (AVX2) (1 run); Xeon (AVX512) (1 run); 1 run cached")
    assert "report made on EPYC (AVX2)" in line
