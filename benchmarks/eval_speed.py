"""Batched evaluation vs one sample at a time, on the same model and examples, one process.

    python benchmarks/eval_speed.py [--model DIR] [--n 64] [--batch-size 16] [--reps 2]

Without --model it assembles the built-in vision model from the real pretrained parts
(SmolLM2-135M-Instruct + EfficientNet-Lite0; run `commit prepare` first). The two modes
alternate (batched, single, batched, ...) so machine noise hits both alike; the figure is
the ratio of samples/s. Writes the "Batched evaluation" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._report import machine, write_section  # noqa: E402
from commit_train.config import ModelConfig, load_config  # noqa: E402
from commit_train.modeling import load_model, save_model_dir  # noqa: E402
from commit_train.registry import trained_system_prompt  # noqa: E402
from evaluation.benchmarks import load_benchmark  # noqa: E402
from evaluation.runner import generate_answers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", help="saved model dir (default: built-in vision from parts)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    if args.model:
        mlm, proc = load_model(ModelConfig(path=args.model))
        system_prompt = trained_system_prompt(Path(args.model))  # what it was trained with
    else:
        cfg = load_config(REPO / "recipes" / "builtin_vision.yaml")
        mlm, proc = load_model(cfg.model)
        system_prompt = cfg.data.system_prompt
        tmp = Path(tempfile.mkdtemp())
        save_model_dir(mlm, proc, tmp / "model")  # the same export path as training
        mlm, proc = load_model(ModelConfig(path=str(tmp / "model")))
    data = load_benchmark("vision", "test")
    recs = data.records[: args.n]
    rates: dict[str, list[float]] = {"batched": [], "single": []}
    outputs = {}
    for _ in range(args.reps):
        for mode, bs in (("batched", args.batch_size), ("single", 1)):
            t0 = time.perf_counter()
            outputs[mode] = generate_answers(
                mlm, proc, recs, data.root, batch_size=bs,
                max_new_tokens=args.max_new_tokens, system_prompt=system_prompt, progress=False,
            )  # fmt: skip
            rates[mode].append(len(recs) / (time.perf_counter() - t0))
            print(f"{mode:8s} {rates[mode][-1]:7.2f} samples/s", flush=True)
    same = outputs["batched"] == outputs["single"]
    b, s = statistics.median(rates["batched"]), statistics.median(rates["single"])
    print(
        f"speed-up {b / s:.2f}x (batched {b:.2f} vs single {s:.2f} samples/s); identical answers: {same}"
    )
    if args.no_write:
        return
    cmd = "python benchmarks/eval_speed.py " + " ".join(sys.argv[1:])
    write_section(
        "Batched evaluation",
        f"""Greedy generation with a KV cache, prompts left-padded; batch {args.batch_size} vs
one sample at a time on the same {len(recs)} built-in vision test examples
(SmolLM2-135M-Instruct + EfficientNet-Lite0, max {args.max_new_tokens} new tokens),
alternating modes, {args.reps} repetitions, median reported.

Command: `{cmd.strip()}`
Machine: {machine()}

| mode | samples/s (median) | runs |
|---|---|---|
| batched (bs={args.batch_size}) | {b:.2f} | {", ".join(f"{r:.2f}" for r in rates["batched"])} |
| one at a time | {s:.2f} | {", ".join(f"{r:.2f}" for r in rates["single"])} |

**Speed-up: {b / s:.2f}×** (target ≥ 4×). Batched and single answers identical: {same}.
""",
    )


if __name__ == "__main__":
    main()
