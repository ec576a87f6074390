"""Evaluation outputs: predictions table (JSONL + CSV), metrics JSON, Markdown report with
a per-question-type chart. Everything is written into a temp dir and renamed, so a crash
never leaves a results folder that looks complete."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from commit_train.data.records import Record
from commit_train.fsutil import atomic_dir


def _chart(by_qtype: dict[str, dict[str, float]], chance: dict[str, float] | None, path: Path):
    names = sorted(by_qtype)
    fig = Figure(figsize=(max(4, 1.1 * len(names) + 2), 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), [by_qtype[n]["accuracy"] for n in names], color="#4472c4")
    if chance:
        for i, n in enumerate(names):
            if n in chance:
                ax.hlines(chance[n], i - 0.4, i + 0.4, colors="#c00000", linestyles="--")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy per question type (dashed: chance)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(
    out_dir: Path,
    benchmark: str,
    split: str,
    records: list[Record],
    raw: list[str],
    preds: list[str],
    per_example: list[float],
    metrics: dict[str, float],
    by_qtype: dict[str, dict[str, float]],
    chance: dict[str, float] | None = None,
    model: str = "",
) -> Path:
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        rows = [
            {
                "id": r.id,
                "qtype": (r.meta or {}).get("qtype", ""),
                "question": r.question,
                "answers": r.answers,
                "choices": r.choices,
                "prediction": p,
                "raw": g,
                "score": s,
            }
            for r, g, p, s in zip(records, raw, preds, per_example, strict=True)
        ]
        with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        with open(tmp / "predictions.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for row in rows:
                w.writerow(
                    {
                        **row,
                        "answers": " | ".join(row["answers"]),
                        "choices": " | ".join(row["choices"] or []),
                    }
                )
        summary = {
            "benchmark": benchmark,
            "split": split,
            "model": model,
            "n": len(records),
            "metrics": metrics,
            "by_qtype": by_qtype,
            "chance": chance,
        }
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=2))
        lines = [
            f"# Evaluation: {benchmark} ({split})",
            "",
            f"Model: `{model}` — {len(records)} examples.",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {v:.4f} |" for k, v in metrics.items()],
        ]
        if by_qtype:
            _chart(by_qtype, chance, tmp / "by_qtype.png")
            lines += [
                "",
                "| question type | n | accuracy | chance |",
                "|---|---|---|---|",
                *[
                    f"| {qt} | {int(m['n'])} | {m['accuracy']:.4f} | "
                    + (f"{chance[qt]:.4f}" if chance and qt in chance else "–")
                    + " |"
                    for qt, m in sorted(by_qtype.items())
                ],
                "",
                "![accuracy per question type](by_qtype.png)",
            ]
        wrong = [row for row in rows if row["score"] == 0.0][:10]
        if wrong:
            lines += [
                "",
                "## Some wrong answers",
                "",
                "| question | expected | predicted |",
                "|---|---|---|",
            ]
            lines += [f"| {w['question']} | {w['answers'][0]} | {w['prediction']} |" for w in wrong]
        (tmp / "report.md").write_text("\n".join(lines) + "\n")
    return out_dir
