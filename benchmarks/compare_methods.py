"""CoMMIT vs Constant LR vs the coordinate-descent baselines, on the built-in benchmarks.

Issue 6 / METHOD.md §5 and §8. For each benchmark (vision, audio) and seed, it trains

* every method of §5 at the recipe's (tuned) encoder/LLM LR ratio, and
* ``constant``, ``commit_sched`` and ``commit`` with the encoder LR (``train.lr_encoder``;
  the projector keeps ``train.lr_projector``) at ×0.1 and ×10 of it (a mis-set ratio: users
  rarely know the right one),

all from the same real pretrained parts (SmolLM2-135M-Instruct, EfficientNet-Lite0 or the
Whisper tiny.en encoder, a new projector; LoRA on the LLM, encoder trained), with the same
data order (the seed fixes the sampler) and the same step budget. Each run then answers the
benchmark's test split. Per run it records the validation-loss curve, κ and the normalised
encoder gradient norm, test accuracy, wall time and peak RSS.

Every run executes in its own subprocess (peak memory per run is then honest) and caches its
result as ``<cache>/<benchmark>/<key>/result.json``, written atomically: the comparison can
be run in pieces (``--benchmarks vision --seeds 0`` today, more seeds tomorrow) and a killed
run costs only the run in flight. Runs are also in MLflow (``<cache>/mlflow.db``, experiment
``compare-<benchmark>``) to browse with ``mlflow ui``.

    .venv/bin/commit prepare                                 # once
    .venv/bin/python benchmarks/compare_methods.py --quick   # smoke: 4 runs of 40 steps
    .venv/bin/python benchmarks/compare_methods.py           # full grid (hours on a CPU)
    .venv/bin/python benchmarks/compare_methods.py --benchmarks vision --seeds 0 \\
        --methods constant,commit                            # one piece of it
    .venv/bin/python benchmarks/compare_methods.py --report-only   # tables from the cache
    .venv/bin/python benchmarks/compare_methods.py --benchmarks vision --ratios 10 \\
        --methods constant,commit,commit@balance.gain=0.25   # a variant: its own row

The report (tables + ``benchmarks/results/*.png``) goes to the "Method comparison" and
"Balance findings" sections of BENCHMARKS.md, from whatever results the cache holds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commit_train.config import METHODS  # noqa: E402
from commit_train.storage import write_text  # noqa: E402  (every method of METHOD.md §5)

RATIO_METHODS = ("constant", "commit_sched", "commit")  # also run at mis-set ratios
RATIOS = (0.1, 1.0, 10.0)
RECIPES = {
    "vision": ROOT / "recipes/builtin_vision.yaml",
    "audio": ROOT / "recipes/builtin_audio.yaml",
}
HISTORIES = (
    "loss/val",
    "loss/train",
    "balance/kappa",
    "balance/share_encoder",
    "balance/lr_ratio",
    "grad_norm/encoder_normalized",
    "grad_norm/llm_normalized",
    "lr/encoder",
    "lr/llm",
    "time/probe_fraction",
)
DEFAULT_CACHE = ROOT / "benchmarks/results/compare_cache"


@dataclass(frozen=True)
class RunSpec:
    benchmark: str
    method: str
    ratio: float
    seed: int
    steps: int
    eval_points: int
    test_limit: int | None
    threads: int
    extra: tuple[str, ...] = ()
    recipe: str = ""  # "" = RECIPES[benchmark]
    eval_benchmark: str = ""  # what `commit evaluate` scores; "" = benchmark
    label: str = ""  # a method variant's name in the report (``commit@balance.gain=0.25``)
    test_size: int = 0  # score on a test split of this many questions; 0 = the benchmark's own

    @property
    def name(self) -> str:
        """The row this run belongs to in the report: the variant label, else the method."""
        return self.label or self.method

    @property
    def recipe_path(self) -> Path:
        return Path(self.recipe) if self.recipe else RECIPES[self.benchmark]

    @property
    def key(self) -> str:
        lim = f"-n{self.test_limit}" if self.test_limit else ""
        # --set overrides change the run, so they are part of its cache key
        extra = (
            "-" + hashlib.sha256("\0".join(self.extra).encode()).hexdigest()[:8]
            if self.extra
            else ""
        )
        # a larger test split and another thread count are other measurements, so they
        # get their own key (absent at the defaults, so older caches still match)
        size = f"-T{self.test_size}" if self.test_size else ""
        threads = f"-j{self.threads}" if self.threads != 1 else ""
        return (
            f"{self.method}-x{self.ratio:g}-s{self.seed}-t{self.steps}{lim}{size}{threads}{extra}"
        )

    def eval_target(self, cache: Path) -> str:
        """What the run's model is scored on: a benchmark name or a test JSONL."""
        if self.eval_benchmark:
            return self.eval_benchmark
        if self.test_size:
            return str(test_set_dir(self.benchmark, self.test_size, cache) / "test.jsonl")
        return self.benchmark

    def base_config(self):
        from commit_train.config import load_config

        return load_config(self.recipe_path, list(self.extra))

    def learning_rates(self) -> dict[str, float | None]:
        """The LRs this run trains with under today's recipe (as ``result.json`` records)."""
        t = self.base_config().train
        return {
            "lr_encoder": float(f"{t.lr_encoder * self.ratio:.6g}"),
            "lr_projector": t.lr_projector,
            "lr_llm": t.lr_llm,
        }

    def overrides(self, out: Path, cache: Path) -> list[str]:
        return [
            f"method={self.method}",
            f"seed={self.seed}",
            f"train.steps={self.steps}",
            f"train.eval_every={max(1, self.steps // self.eval_points)}",
            "train.save_every=0",
            "train.keep_checkpoints=1",
            f"train.output_dir={out}",
            f"train.lr_encoder={self.learning_rates()['lr_encoder']:.6g}",
            f"tracking.uri=sqlite:///{cache / 'mlflow.db'}",
            f"tracking.experiment=compare-{self.benchmark}",
            f"tracking.run_name={self.key}",
            *self.extra,
        ]


def plan(args: argparse.Namespace) -> list[RunSpec]:
    specs = []
    for bench in args.benchmarks:
        for seed in args.seeds:
            for ratio in args.ratios:
                for label in args.methods:
                    method, variant = args.variants[label]
                    if ratio != 1.0 and method not in RATIO_METHODS:
                        continue
                    specs.append(
                        RunSpec(
                            bench,
                            method,
                            ratio,
                            seed,
                            args.steps[bench],
                            args.eval_points,
                            args.test_limit,
                            args.threads,
                            (*args.set, *variant),
                            args.recipe.get(bench, ""),
                            args.eval_set.get(bench, ""),
                            label if variant else "",
                            args.test_size,
                        )
                    )
    return specs


# ---- one run, in a child process ------------------------------------------------------------
def run_one(spec: RunSpec, cache: Path) -> dict:
    """Train + evaluate one spec; returns the result dict (the child writes it)."""
    import torch
    from mlflow.tracking import MlflowClient

    from benchmarks._report import machine
    from commit_train.config import load_config
    from commit_train.trainer import train
    from evaluation.runner import evaluate_model

    torch.set_num_threads(spec.threads)
    # recorded per run: the float path differs between machines, and one seed's accuracy
    # with it (BENCHMARKS.md, issue 15), so a cached run must say where it ran
    host = machine()
    work = run_dir(spec, cache) / "work"
    shutil.rmtree(work, ignore_errors=True)
    cfg = load_config(spec.recipe_path, spec.overrides(work, cache))
    t0 = time.perf_counter()
    res = train(cfg)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = evaluate_model(
        res.model_dir,
        spec.eval_target(cache),
        "test",
        output_dir=work / "eval",
        limit=spec.test_limit,
        system_prompt=cfg.data.system_prompt,
        progress=False,
    )
    eval_s = time.perf_counter() - t1
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    hist = {
        name: [[m.step, m.value] for m in client.get_metric_history(res.run_id, name)]
        for name in HISTORIES
    }
    for h in hist.values():
        h.sort()
    result = {
        "spec": asdict(spec),
        "key": spec.key,
        "run_id": res.run_id,
        "lr_encoder": cfg.train.lr_encoder,
        "lr_projector": cfg.train.lr_projector,
        "lr_llm": cfg.train.lr_llm,
        "final_val_loss": res.final_val_loss,
        "accuracy": ev.metrics.get("accuracy"),
        "metrics": ev.metrics,
        "by_qtype": ev.by_qtype,
        "n_test": ev.n,
        "eval_target": _relative(spec.eval_target(cache)),
        "train_s": train_s,
        "eval_s": eval_s,
        "step_time_s": res.step_time_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": host,
        "history": hist,
    }
    shutil.rmtree(work, ignore_errors=True)  # the model is not needed once it is scored
    return result


def _child_main(spec_json: str, cache: str) -> None:
    fields = json.loads(spec_json)
    spec = RunSpec(**{**fields, "extra": tuple(fields["extra"])})
    result = run_one(spec, Path(cache))
    write_text(result_path(spec, Path(cache)), json.dumps(result, indent=1))  # atomic


def test_set_dir(benchmark: str, size: int, cache: Path) -> Path:
    """A built-in benchmark generated with a ``size``-question test split (and no train
    or val split: training keeps reading the recipe's own data). The default split is
    sized for a quick ``commit evaluate``; a method comparison needs a smaller standard
    error (issue 15)."""
    return cache / "data" / f"{benchmark}-test{size}"


def ensure_test_sets(specs: list[RunSpec], cache: Path) -> None:
    """Generate each larger test split once, before the runs that read it start."""
    from commit_train.data.builtin import BUILTIN_NAMES, make_builtin

    for bench, size in sorted({(s.benchmark, s.test_size) for s in specs if s.test_size}):
        if bench not in BUILTIN_NAMES:
            raise SystemExit(f"--test-size needs a built-in benchmark, not {bench!r}")
        make_builtin(bench, test_set_dir(bench, size, cache), n_train=0, n_val=0, n_test=size)


def _relative(target: str) -> str:
    path = Path(target)
    if not path.is_absolute():
        return target
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return target


def stale_results(specs: list[RunSpec], cache: Path) -> list[str]:
    """Cached runs that trained with other LRs than their spec gives under today's recipe.

    A key holds the ratio to the recipe's LR, not the LR: after a recipe's LR is re-tuned, a
    cached ``x1`` run is a measurement at another ratio, and reporting it under the new
    one would be silently wrong (issue 15: the audio recipe's encoder LR moved).
    """
    problems = []
    for spec in specs:
        path = result_path(spec, cache)
        if not path.is_file():
            continue
        cached = json.loads(path.read_text())
        for field, want in spec.learning_rates().items():
            got = cached.get(field)
            same = got == want or (
                got is not None and want is not None and abs(got - want) <= 1e-6 * abs(want)
            )
            if not same:
                problems.append(
                    f"{path}: {field} {got} was trained, but {spec.recipe_path.name} now "
                    f"gives {want} at ratio ×{spec.ratio:g}"
                )
    return problems


def run_dir(spec: RunSpec, cache: Path) -> Path:
    return cache / spec.benchmark / spec.key


def result_path(spec: RunSpec, cache: Path) -> Path:
    return run_dir(spec, cache) / "result.json"


def launch(spec: RunSpec, cache: Path) -> tuple[RunSpec, int, float]:
    log = run_dir(spec, cache) / "run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads)}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call(
            [sys.executable, __file__, "--child", json.dumps(asdict(spec)), "--cache", str(cache)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return spec, rc, time.perf_counter() - t0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--benchmarks", default="vision,audio")
    ap.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated; METHOD@KEY=VALUE[@...] adds a variant of METHOD with those "
        "recipe overrides (its own report row), e.g. commit@balance.gain=0.25",
    )
    ap.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", default="vision=300,audio=300", help="per benchmark, or one int")
    ap.add_argument("--eval-points", type=int, default=10, help="validation losses per run")
    ap.add_argument("--test-limit", type=int, default=None, help="first N test examples")
    ap.add_argument(
        "--test-size",
        type=int,
        default=0,
        help="score built-in benchmarks on a generated test split of N questions "
        "(kept in <cache>/data; 0 = the benchmark's own test split)",
    )
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--set", action="append", default=[], help="extra recipe override")
    ap.add_argument(
        "--recipe", action="append", default=[], help="NAME=PATH: compare on your own recipe"
    )
    ap.add_argument(
        "--eval-set",
        action="append",
        default=[],
        help="NAME=BENCH: what NAME's runs are scored on (a benchmark name or a .jsonl)",
    )
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--quick", action="store_true", help="vision, constant vs commit, 1 seed")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--no-write",
        action="store_true",
        help="don't touch BENCHMARKS.md or its figures (plots go to <cache>/plots)",
    )
    ap.add_argument(
        "--tag", default="", help="suffix of the BENCHMARKS.md section titles (one per budget)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
    if args.quick:
        args.benchmarks, args.methods, args.seeds = "vision", "constant,commit", "0"
        args.ratios, args.steps, args.test_limit = "1,10", "40", args.test_limit or 60
        args.eval_points = 4
        args.cache = args.cache.with_name(args.cache.name + "_quick")
    args.recipe = _pairs(ap, "--recipe", args.recipe)
    args.eval_set = _pairs(ap, "--eval-set", args.eval_set)
    args.benchmarks = [b for b in args.benchmarks.split(",") if b]
    unknown = [b for b in args.benchmarks if b not in RECIPES and b not in args.recipe]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {sorted(RECIPES)} or --recipe NAME=PATH")
    for name, path in args.recipe.items():
        if not Path(path).is_file():
            ap.error(f"--recipe {name}={path}: no such file")
    args.methods = [m for m in args.methods.split(",") if m]
    args.variants = {}
    for label in args.methods:
        method, *variant = label.split("@")
        if method not in METHODS:
            ap.error(f"unknown method {method!r} in --methods {label!r}; known: {list(METHODS)}")
        bad = [v for v in variant if "=" not in v]
        if bad:
            ap.error(f"--methods {label!r}: {bad} is not a KEY=VALUE recipe override")
        args.variants[label] = (method, tuple(variant))
    args.ratios = [float(r) for r in args.ratios.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if "=" in args.steps:
        args.steps = {k: int(v) for k, v in (kv.split("=") for kv in args.steps.split(","))}
    else:
        args.steps = dict.fromkeys([*RECIPES, *args.benchmarks], int(args.steps))
    missing = [b for b in args.benchmarks if b not in args.steps]
    if missing:
        ap.error(f"--steps gives no step count for {missing}")
    return args


def _pairs(ap: argparse.ArgumentParser, flag: str, items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            ap.error(f"{flag} expects NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        _child_main(args.child, str(args.cache))
        return 0
    from benchmarks._compare_report import report

    specs = plan(args)
    stale = stale_results(specs, args.cache)
    if stale:
        print("Cached results that no longer match their recipe (move them to the key of "
              "the ratio they ran at, or delete them to rerun):", *stale, sep="\n  ",
              file=sys.stderr)  # fmt: skip
        return 2
    todo = [s for s in specs if not result_path(s, args.cache).is_file()]
    print(f"{len(specs)} runs planned, {len(todo)} not cached yet (cache: {args.cache})")
    failed = []
    if todo and not args.report_only:
        ensure_test_sets(todo, args.cache)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for spec, rc, secs in pool.map(lambda s: launch(s, args.cache), todo):
                status = "ok" if rc == 0 else f"FAILED rc={rc}, see run.log"
                print(f"  {spec.benchmark:6s} {spec.key:40s} {secs:7.0f} s  {status}", flush=True)
                if rc:
                    failed.append(spec)
    # a smoke run, or one told not to write, leaves the repo's figures alone: BENCHMARKS.md
    # links them, and a batch's partial report would overwrite the published plot
    plots = args.cache / "plots" if args.quick or args.no_write else None
    report(args, write=not args.no_write and not args.quick, plots_dir=plots)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
