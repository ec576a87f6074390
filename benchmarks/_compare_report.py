"""Tables, goal checks and plots for ``compare_methods.py``, from the cached run results.

Kept apart from the runner so ``--report-only`` can rebuild BENCHMARKS.md from a cache that
was filled in pieces, and so the arithmetic (steps-to-target, paired differences) can be
tested on synthetic results without training anything.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

from commit_train.methods import SCHEDULED  # the methods whose LRs the κ scheduler moves

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
BASELINES = ("constant", "feature_cd", "language_cd", "alternating_cd")


def row_name(result: dict) -> str:
    """A run's report row: its variant label (``commit@balance.gain=0.25``), else its method."""
    return result["spec"].get("label") or result["spec"]["method"]


def load_results(args) -> list[dict]:
    """The cached runs that belong to this comparison.

    A run matches on benchmark, row name, seed, ratio and steps, on its test questions
    (``--test-limit``, ``--test-size``) and thread count, and on its recipe overrides: a
    run made with other ``--set`` overrides (or another variant) is another experiment and
    must not be averaged into these rows.
    """
    common = tuple(getattr(args, "set", ()))
    variants = getattr(args, "variants", {})
    want = {m: (*common, *variants.get(m, (m, ()))[1]) for m in args.methods}
    out = []
    for bench in args.benchmarks:
        for path in sorted((args.cache / bench).glob("*/result.json")):
            r = json.loads(path.read_text())
            s = r["spec"]
            name = row_name(r)
            if (
                name in want
                and tuple(s.get("extra", ())) == want[name]
                and s["seed"] in args.seeds
                and s["ratio"] in args.ratios
                and s["steps"] == args.steps[bench]
                # scored on other questions, or timed on other threads: another measurement
                and s.get("test_limit") == getattr(args, "test_limit", None)
                and s.get("test_size", 0) == getattr(args, "test_size", 0)
                and s.get("threads", 1) == getattr(args, "threads", 1)
            ):
                out.append(r)
    return out


def first_step_at_or_below(curve: list[list[float]], target: float) -> int | None:
    """First logged step whose validation loss is ≤ ``target`` (None: never reached)."""
    for step, value in curve:
        if value <= target + 1e-12:
            return int(step)
    return None


def steps_ratio(method_curve, constant_curve) -> float | None:
    """Steps the method needs to reach Constant-LR's final validation loss, over Constant's own.

    Constant's own count is the first step at which it reached its final value (usually the
    last step). ``None`` when the method never gets there within the budget.
    """
    if not constant_curve or not method_curve:
        return None
    target = constant_curve[-1][1]
    c = first_step_at_or_below(constant_curve, target)
    m = first_step_at_or_below(method_curve, target)
    return None if m is None or not c else m / c


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def fmt(ms: tuple[float, float], scale: float = 1.0, digits: int = 1, n: int = 1) -> str:
    m, s = ms
    if math.isnan(m):
        return "–"
    return (
        f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}" if n > 1 else f"{m * scale:.{digits}f}"
    )


def _series_mean(results: list[dict], name: str) -> list[tuple[int, float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for r in results:
        for step, v in r["history"].get(name, []):
            by_step[int(step)].append(v)
    return sorted((s, statistics.fmean(v)) for s, v in by_step.items())


def summarise(results: list[dict]) -> dict[tuple, dict[str, Any]]:
    """(benchmark, ratio, method) -> aggregated row, with paired steps ratios per seed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        s = r["spec"]
        groups[(s["benchmark"], s["ratio"], row_name(r))].append(r)
    rows = {}
    for (bench, ratio, method), rs in groups.items():
        const = {r["spec"]["seed"]: r for r in groups.get((bench, ratio, "constant"), [])}
        paired = [(r, const[r["spec"]["seed"]]) for r in rs if r["spec"]["seed"] in const]
        srs = [steps_ratio(r["history"]["loss/val"], c["history"]["loss/val"]) for r, c in paired]
        ratios = [x for x in srs if x is not None]  # the seeds that reached the target
        kappa = [
            statistics.fmean(v for _, v in r["history"]["balance/kappa"])
            for r in rs
            if r["history"].get("balance/kappa")
        ]
        rows[(bench, ratio, method)] = {
            "n": len(rs),
            "method": rs[0]["spec"]["method"],  # the base method of a variant row
            "seeds": sorted(r["spec"]["seed"] for r in rs),
            "acc": mean_std([r["accuracy"] for r in rs]),
            "val": mean_std([r["final_val_loss"] for r in rs]),
            "steps_ratio": mean_std(ratios),
            "reached": len(ratios),
            "paired": len(paired),
            "kappa": mean_std(kappa),
            "train_s": mean_std([r["train_s"] for r in rs]),
            # cumulative probe seconds / training seconds: the last value is the run's share
            "probe": mean_std(
                [
                    r["history"]["time/probe_fraction"][-1][1]
                    for r in rs
                    if r["history"].get("time/probe_fraction")
                ]
            ),
            "rss": max(r["peak_rss_mb"] for r in rs),
            "acc_by_seed": {r["spec"]["seed"]: r["accuracy"] for r in rs},
            "results": rs,
        }
    return rows


def paired_diff(rows, bench, ratio, a: str, b: str) -> tuple[float, float, int]:
    """Mean ± std over seeds of acc(a) − acc(b), seeds present in both."""
    ra, rb = rows.get((bench, ratio, a)), rows.get((bench, ratio, b))
    if not ra or not rb:
        return math.nan, math.nan, 0
    seeds = sorted(set(ra["acc_by_seed"]) & set(rb["acc_by_seed"]))
    d = [ra["acc_by_seed"][s] - rb["acc_by_seed"][s] for s in seeds]
    m, s = mean_std(d)
    return m, s, len(d)


def _verdict(diff: float, noise: float) -> str:
    """Commit vs the best baseline at the tuned ratio; ``noise`` is NaN with one seed."""
    if diff > 0 and (math.isnan(noise) or diff > noise):
        return "better"
    if math.isnan(noise):
        return "one seed: noise unknown"
    return "within noise" if abs(diff) <= 2 * noise else "worse"


def resolution(d: float, sd: float, n: int, off_path: int = 0) -> str:
    """Whether a paired difference stands out of its seed noise: a paired t test at 95%.

    Paired by seed because both arms share the float path until the method first acts, so
    the seed's own luck cancels where it can (at vision ×1 the paired spread was half the
    unpaired one; at vision ×10 it was not: BENCHMARKS.md, issue 15's headline). The t
    quantile, not a flat 2 standard errors, because with 2 or 3 seeds the spread itself is
    a guess: 2 standard errors called a 2-seed −3.0 ± 1.6 "resolved" where the 95% half
    width is 14 points. ``off_path`` counts the pairs whose method run left Constant's float
    path before its first probe (another machine or thread count): for those the pairing
    cancels nothing, and the reader is told so. The half width is the smallest difference
    these seeds can detect, which a reader needs before reading a "met" or "better" off a
    noisy cell.
    """
    if n < 2 or math.isnan(sd):
        return "one seed: noise unknown"
    half = t_quantile(n - 1) * sd / math.sqrt(n) * 100
    verdict = "resolved" if abs(d) * 100 > half else "not resolved from seed noise"
    note = (
        f"; {off_path} of {n} pairs left Constant's float path before the first probe, "
        "so the pairing does not cancel their seed luck"
        if off_path
        else ""
    )
    return f"paired t, 95% half width {half:.1f} points: {verdict}{note}"


def t_quantile(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    return float(student_t.ppf(0.975, df))


def constant_by_seed(rows, bench: str, ratio: float) -> dict[int, dict]:
    """Constant's cached runs of one cell, by seed: the reference each method run pairs with."""
    const = rows.get((bench, ratio, "constant"), {"results": []})["results"]
    return {c["spec"]["seed"]: c for c in const}


def off_path_pairs(rows, bench: str, ratio: float, name: str) -> int:
    """How many of ``name``'s runs left Constant's same-seed run on the float path."""
    row, by_seed = rows.get((bench, ratio, name)), constant_by_seed(rows, bench, ratio)
    if not row:
        return 0
    return sum(
        departure_step(r, by_seed[r["spec"]["seed"]]).endswith("(float path)")
        for r in row["results"]
        if r["spec"]["seed"] in by_seed
    )


def goal_lines(rows, bench: str) -> list[str]:
    """The issue's goals, for ``commit`` and each of its variants (``commit@...``)."""
    commits = sorted(
        {k[2] for k, row in rows.items() if k[0] == bench and row["method"] == "commit"}
    )
    lines = []
    for name in commits:
        for ratio in (0.1, 10.0):
            if (bench, ratio, name) not in rows or (bench, ratio, "constant") not in rows:
                continue
            d, sd, n = paired_diff(rows, bench, ratio, name, "constant")
            sr = rows[(bench, ratio, name)]["steps_ratio"][0]
            ok = d * 100 >= 2 and not math.isnan(sr) and sr <= 0.8
            lines.append(
                f"- ×{ratio:g} (mis-set): {name} − constant = **{d * 100:+.1f} ± {sd * 100:.1f} "
                f"points** ({n} seed{'s' if n != 1 else ''}), steps to Constant's final val loss "
                f"**{'not reached' if math.isnan(sr) else f'{sr:.2f}×'}**; goal (≥ +2 points and "
                f"≤ 0.8×): **{'met' if ok else 'not met'}** "
                f"({resolution(d, sd, n, off_path_pairs(rows, bench, ratio, name))})"
            )
        base = [(m, rows[(bench, 1.0, m)]["acc"][0]) for m in BASELINES if (bench, 1.0, m) in rows]
        if (bench, 1.0, name) in rows and base:
            best, _ = max(base, key=lambda t: t[1])
            d, sd, n = paired_diff(rows, bench, 1.0, name, best)
            noise = max(sd, rows[(bench, 1.0, best)]["acc"][1]) if n > 1 else math.nan
            off = off_path_pairs(rows, bench, 1.0, name)
            lines.append(
                f"- ×1 (tuned): {name} − best baseline ({best}) = **{d * 100:+.1f} points** "
                f"({n} seed{'s' if n != 1 else ''}): {_verdict(d, noise)} "
                f"({resolution(d, sd, n, off if best == 'constant' else 0)})"
            )
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write one figure and free it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_curves(
    rows, bench: str, ratios: list[float], steps: int, out: Path, suffix: str = ""
) -> Path | None:
    plt = _pyplot()
    present = [r for r in ratios if any(k[0] == bench and k[1] == r for k in rows)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.6), squeeze=False)
    for ax, ratio in zip(axes[0], present, strict=True):
        for (b, r, method), row in sorted(rows.items()):
            if b == bench and r == ratio:
                curve = _series_mean(row["results"], "loss/val")
                ax.plot([s for s, _ in curve], [v for _, v in curve], marker=".", label=method)
        ax.set_title(f"{bench}: encoder LR ×{ratio:g}")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (mean over seeds)")
        ax.legend(fontsize=7)
    return _save(fig, out / f"compare_{bench}_t{steps}{suffix}_val_loss.png")


def plot_findings(rows, bench: str, steps: int, out: Path, suffix: str = "") -> Path | None:
    plt = _pyplot()
    sweep = sorted((r, row) for (b, r, m), row in rows.items() if b == bench and m == "constant")
    if len(sweep) < 2:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ratio, row in sweep:
        k = _series_mean(row["results"], "balance/kappa")
        g = _series_mean(row["results"], "grad_norm/encoder_normalized")
        a.plot([s for s, _ in k], [v for _, v in k], marker=".", label=f"encoder LR ×{ratio:g}")
        b.plot([s for s, _ in g], [v for _, v in g], label=f"encoder LR ×{ratio:g}")
    a.set_title(f"(a) κ, constant LR ({bench})")
    a.set_xlabel("step")
    a.set_ylabel("κ")
    a.legend(fontsize=7)
    b.set_title("(b) encoder grad norm / param norm")
    b.set_xlabel("step")
    b.set_yscale("log")
    b.legend(fontsize=7)
    return _save(fig, out / f"balance_findings_{bench}_t{steps}{suffix}.png")


def chance_note(result: dict) -> str:
    """Answer-blind accuracy on the same test examples, for scale (built-in sets only)."""
    try:
        from commit_train.data.builtin import chance_levels
        from evaluation.benchmarks import load_benchmark

        spec = result["spec"]
        name = result.get("eval_target") or spec.get("eval_benchmark") or spec["benchmark"]
        if not Path(name).is_absolute() and Path(ROOT, name).is_file():
            name = str(Path(ROOT, name))
        records = load_benchmark(name, "test").records[: result["n_test"]]
        maj, uni = chance_levels(records)["overall"], chance_levels(records, "uniform")["overall"]
    except Exception:  # a custom --eval-set may have no chance model; the table stands alone
        return ""
    return f" Chance on these examples: {maj * 100:.1f}% (majority), {uni * 100:.1f}% (uniform)."


def table(rows, bench: str) -> str:
    head = (
        "| encoder LR | method | seeds | test acc (%) | final val loss | steps to Constant's "
        "final val loss (× Constant's) | mean κ | κ probe time (% of training) | train s/run "
        "| peak RSS (MB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for (b, ratio, method), row in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if b != bench:
            continue
        n = row["n"]
        sr = row["steps_ratio"]
        not_reached = row["paired"] - row["reached"]
        srs = fmt(sr, digits=2, n=row["reached"])
        if not_reached:
            srs += f" ({not_reached} not reached)"
        lines.append(
            f"| ×{ratio:g} | {method} | {','.join(map(str, row['seeds']))} | "
            f"{fmt(row['acc'], 100, 1, n)} | {fmt(row['val'], 1, 4, n)} | {srs} | "
            f"{fmt(row['kappa'], 1, 2, n)} | {fmt(row['probe'], 100, 1, n)} | "
            f"{fmt(row['train_s'], 1, 0, n)} | {row['rss']:.0f} |"
        )
    return "\n".join(lines)


def quarter_means(series: list[tuple[int, float]]) -> list[float]:
    """Mean of each quarter of a series (fewer parts when it is shorter than 4 points)."""
    n = len(series)
    parts = min(4, n)
    return [
        statistics.fmean(v for _, v in series[i * n // parts : (i + 1) * n // parts])
        for i in range(parts)
    ]


def findings_table(rows, bench: str) -> str:
    """§8 (a) and (b) per encoder LR, with κ by quarter of the run: κ drifts a lot within a
    run (the LRs decay, the encoder's features change), so one mean hides where it went."""
    lines = [
        "| encoder LR | mean κ | κ by quarter of the run | mean share_encoder "
        "| normalised encoder grad norm, first → last quarter |",
        "|---|---|---|---|---|",
    ]
    for (b, ratio, method), row in sorted(rows.items()):
        if b != bench or method != "constant":
            continue
        kq = quarter_means(_series_mean(row["results"], "balance/kappa"))
        share = _series_mean(row["results"], "balance/share_encoder")
        g = quarter_means(_series_mean(row["results"], "grad_norm/encoder_normalized"))
        lines.append(
            f"| ×{ratio:g} | {fmt(row['kappa'], 1, 3, row['n'])} | "
            f"{' → '.join(f'{v:.2f}' for v in kq) or '–'} | "
            f"{statistics.fmean(v for _, v in share) if share else math.nan:.3f} | "
            f"{g[0] if g else math.nan:.3g} → {g[-1] if g else math.nan:.3g} |"
        )
    return "\n".join(lines)


def departure_step(run: dict, constant: dict | None) -> str:
    """The first step whose training loss differs from Constant's run of the same seed.

    Nothing a CoMMIT method does can change the loss before its first probe's result is
    used, so a departure at or before that step is the float path (another machine or
    thread count), not the method: on these benchmarks such a rounding difference alone
    moved one run's accuracy by 25-34 points (BENCHMARKS.md, issue 15's headline).
    """
    if constant is None:
        return "–"
    mine = dict(run["history"].get("loss/train", []))
    ref = dict(constant["history"].get("loss/train", []))
    steps = sorted(set(mine) & set(ref))
    if not steps:
        return "–"
    step = next((s for s in steps if abs(mine[s] - ref[s]) > 1e-6 * max(1.0, abs(ref[s]))), None)
    if step is None:
        return "never"
    probes = run["history"].get("balance/share_encoder", [])
    first_probe = probes[0][0] if probes else math.inf
    return f"{step:g} (float path)" if step <= first_probe else f"{step:g}"


def scheduler_table(rows, bench: str) -> str:
    """What the κ scheduler saw and did in each scheduled run (METHOD.md §3).

    The per-probe ``share_encoder`` spread says how noisy the signal is at this probe size;
    the range of the encoder/LLM LR ratio r says how far the scheduler moved the LRs from
    the recipe's. Together they explain a scheduled run's result better than its mean κ.
    """
    lines = [
        "| encoder LR | method | seed | per-probe share_encoder: mean ± std (min – max) "
        "| LR ratio r: min – max, final | leaves Constant's training loss at step |",
        "|---|---|---|---|---|---|",
    ]
    for (b, ratio, method), row in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if b != bench or row["method"] not in SCHEDULED:
            continue
        const_by_seed = constant_by_seed(rows, b, ratio)
        for r in sorted(row["results"], key=lambda r: r["spec"]["seed"]):
            share = [v for _, v in r["history"].get("balance/share_encoder", [])]
            lr_r = [v for _, v in r["history"].get("balance/lr_ratio", [])]
            if not share or not lr_r:
                continue
            m, sd = mean_std(share)
            lines.append(
                f"| ×{ratio:g} | {method} | {r['spec']['seed']} | {m:.2f} ± {sd:.2f} "
                f"({min(share):.2f} – {max(share):.2f}) | {min(lr_r):.3g} – {max(lr_r):.3g}, "
                f"{lr_r[-1]:.3g} | {departure_step(r, const_by_seed.get(r['spec']['seed']))} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def machines_line(results: list[dict], here: str) -> str:
    """Where the reported runs ran, from what each cached result recorded.

    A report is often made from a cache filled on other machines; labelling it with the
    machine that merely formatted it would misstate timings and float paths alike.
    """
    counts = Counter(r.get("machine") for r in results)
    unrecorded = counts.pop(None, 0)
    if not unrecorded and len(counts) == 1:
        return f"Machine: {next(iter(counts))}"
    parts = [f"{m} ({n} run{'s' if n != 1 else ''})" for m, n in sorted(counts.items())]
    if unrecorded:
        parts.append(
            f"{unrecorded} run{'s' if unrecorded != 1 else ''} cached before runs recorded "
            f"their machine (the text around this section says where; report made on {here})"
        )
    return "Machines: " + "; ".join(parts)


def report(args, write: bool, plots_dir: Path | None = None) -> str:
    """Tables and plots from the cache; BENCHMARKS.md sections when ``write``.

    Plots go to ``plots_dir`` (default benchmarks/results/, where BENCHMARKS.md links them).
    """
    from benchmarks._report import machine, write_section

    plots_dir = plots_dir or RESULTS
    # a tagged comparison (another instrument or budget) keeps its own figures: the
    # untagged sections of BENCHMARKS.md still link theirs
    tag = getattr(args, "tag", "")
    suffix = "_" + re.sub(r"[^A-Za-z0-9]+", "_", tag).strip("_").lower() if tag else ""

    results = load_results(args)
    rows = summarise(results)
    if not rows:
        print("no cached results match; nothing to report")
        return ""
    parts, findings = [], []
    for bench in args.benchmarks:
        if not any(k[0] == bench for k in rows):
            continue
        any_r = next(r for r in results if r["spec"]["benchmark"] == bench)
        spec = any_r["spec"]
        n_test = any_r["n_test"]
        curve = plot_curves(rows, bench, args.ratios, spec["steps"], plots_dir, suffix)
        sched = scheduler_table(rows, bench)
        parts.append(
            f"### {bench}\n\n{spec['steps']} steps per run, validation loss every "
            f"{max(1, spec['steps'] // spec['eval_points'])} steps, test accuracy on {n_test} "
            f"test examples; tuned LRs: encoder {any_r['lr_encoder'] / spec['ratio']:.2g}, "
            f"projector {any_r['lr_projector'] or '= encoder'}"
            f", LLM (LoRA) {any_r['lr_llm']:.2g}.{chance_note(any_r)}\n\n{table(rows, bench)}\n\n"
            + "\n".join(goal_lines(rows, bench))
            + (f"\n\nThe scheduler in the scheduled runs:\n\n{sched}" if sched else "")
            + (f"\n\n![{bench} validation loss](benchmarks/results/{curve.name})" if curve else "")
        )
        fpath = plot_findings(rows, bench, spec["steps"], plots_dir, suffix)
        if fpath:
            findings.append(
                f"### {bench}\n\n{findings_table(rows, bench)}\n\n"
                f"![{bench} balance findings](benchmarks/results/{fpath.name})"
            )
    cmd = "python benchmarks/compare_methods.py " + shlex.join(args.argv)
    head = f"Command: `{cmd.strip()}` (cached runs: `--report-only`)\n\n{machines_line(results, machine())}\n\n"
    body = head + "\n\n".join(parts)
    print(body)
    if findings:
        fbody = (
            head + "Constant LR at encoder LR ×0.1 / ×1 / ×10 (METHOD.md §8 (a) κ, (b) "
            "normalised encoder gradient norm), from the same runs.\n\n" + "\n\n".join(findings)
        )
        print(fbody)
    if write:
        title = f", {tag}" if tag else ""
        write_section(f"Method comparison{title}", body)
        if findings:
            write_section(f"Balance findings (METHOD.md §8){title}", fbody)
    return body
