"""Batched evaluation end to end on a tiny saved model: outputs, metrics, MLflow, errors."""

import json
import shutil

import pytest
from mlflow.tracking import MlflowClient

from commit_train.config import ModelConfig, TrackingConfig, validate
from commit_train.data.records import read_records
from commit_train.errors import DataError
from commit_train.modeling import load_model, save_model_dir
from commit_train.tracking import RunTracker
from evaluation.benchmarks import load_benchmark
from evaluation.runner import evaluate_model, generate_answers
from evaluation.scoring import extract_answer, score
from tests.conftest import tiny_recipe_dict


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_parts, tmp_path_factory):
    raw = tiny_recipe_dict(tiny_parts, tmp_path_factory.mktemp("unused"))
    mlm, proc = load_model(validate(raw).model)
    return save_model_dir(mlm, proc, tmp_path_factory.mktemp("m") / "model")


def test_evaluate_writes_reports_and_logs_metrics(tiny_model_dir, tiny_parts, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = RunTracker(TrackingConfig(uri=uri, experiment="eval-tests"), params={})
    with tracker:
        res = evaluate_model(
            tiny_model_dir,
            str(tiny_parts["val"]),
            split="val",
            output_dir=tmp_path / "out",
            batch_size=4,
            max_new_tokens=4,
            tracking=tracker,
        )
    assert res.n == 16 and len(res.predictions) == 16
    assert 0.0 <= res.metrics["accuracy"] <= 1.0
    out = res.output_dir
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"id", "prediction", "answers", "score"} <= set(rows[0])
    assert (out / "predictions.csv").is_file() and (out / "report.md").is_file()
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n"] == 16 and summary["metrics"]["accuracy"] == res.metrics["accuracy"]
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    name = res.benchmark
    assert run.data.metrics[f"eval/{name}/accuracy"] == pytest.approx(res.metrics["accuracy"])
    arts = [a.path for a in client.list_artifacts(tracker.run_id, f"eval/{name}")]
    assert f"eval/{name}/report.md" in arts


def test_batched_generation_equals_one_at_a_time(tiny_model_dir, tiny_parts):
    recs, _ = read_records(tiny_parts["val"])
    mlm, proc = load_model(ModelConfig(path=str(tiny_model_dir)))
    root = tiny_parts["val"].parent
    batched = generate_answers(
        mlm, proc, recs[:6], root, batch_size=6, max_new_tokens=5, progress=False
    )
    single = generate_answers(
        mlm, proc, recs[:6], root, batch_size=1, max_new_tokens=5, progress=False
    )
    assert batched == single


def test_scoring_mixes_metrics_per_record_shape():
    from commit_train.data.records import Record

    recs = [
        Record("a", "image", "x.png", "q", ["red"], meta={"qtype": "colour"}),
        Record("b", "image", "x.png", "q", ["cat"], choices=["dog", "cat"], meta={"qtype": "mc"}),
        Record("c", "image", "x.png", "q", ["2"] * 10, meta={"qtype": "count"}),
    ]
    metrics, by_qtype, per = score(recs, ["Red", "B", "2"])
    assert per == [1.0, 1.0, 1.0]
    assert metrics["accuracy"] == 1.0 and set(by_qtype) == {"colour", "mc", "count"}
    metrics, _, per = score(recs, ["blue", "A", "3"])
    assert per == [0.0, 0.0, 0.0]
    with pytest.raises(DataError, match="2 predictions for 3 references"):
        score(recs, ["a", "b"])


def test_extract_answer():
    assert extract_answer("  Answer: Sneaker.\nmore text") == "Sneaker"
    assert extract_answer('"seven"') == "seven"
    assert extract_answer("") == ""


def test_unknown_benchmark_lists_known_ones():
    with pytest.raises(DataError) as e:
        load_benchmark("nope")
    assert "vision" in str(e.value) and "textvqa" in str(e.value)


def test_format_benchmark_needs_data_dir():
    with pytest.raises(DataError, match="--data-dir"):
        load_benchmark("textvqa", "val")


def test_empty_split_is_an_error(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError):
        evaluate_model(tiny_model_dir, str(empty), output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_model_modality_mismatch(tiny_model_dir, tmp_path):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    line = {"id": "1", "modality": "audio", "media": "a.wav", "question": "q", "answers": ["x"]}
    (tmp_path / "a.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(DataError, match="takes image input"):
        evaluate_model(tiny_model_dir, str(tmp_path / "a.jsonl"), output_dir=tmp_path / "o")


def test_length_sorted_batches_return_answers_in_record_order(tiny_model_dir, tiny_parts):
    """Batches are formed from prompts of similar length; each answer must still land on
    its own record. A spy model answers with its prompt's length (as a token id), so a
    misplaced answer shows up as a mismatch with the one-at-a-time run."""
    import dataclasses

    recs, _ = read_records(tiny_parts["val"])
    words = ["what colour", "what colour is it", "colour", "what colour is the shape here"]
    recs = [
        dataclasses.replace(r, question=words[i % len(words)] + " now" * (i % 3))
        for i, r in enumerate(recs[:9])
    ]
    mlm, proc = load_model(ModelConfig(path=str(tiny_model_dir)))

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def generate(self, input_ids, attention_mask, media, **kw):
            return attention_mask.sum(-1, keepdim=True)

    root = tiny_parts["val"].parent
    spy = Spy(mlm)
    one_by_one = [generate_answers(spy, proc, [r], root, progress=False)[0] for r in recs]
    assert len(set(one_by_one)) >= 3  # the prompts really differ in length
    for bs in (1, 4):
        assert generate_answers(spy, proc, recs, root, batch_size=bs, progress=False) == one_by_one


def test_media_outside_the_benchmark_root_are_rejected(tiny_model_dir, tiny_parts, tmp_path):
    """Issue 16.1: evaluation checks confinement too (before loading the model)."""
    rec = json.loads(tiny_parts["val"].read_text().splitlines()[0])
    rec["media"] = str(tiny_parts["val"].parent / rec["media"])
    (tmp_path / "b.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=r"b\.jsonl:1: field 'media'.*outside the dataset root"):
        evaluate_model(tiny_model_dir, str(tmp_path / "b.jsonl"), output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_format_benchmark_records_are_confined_to_the_data_dir(tiny_model_dir, tmp_path):
    """A TextVQA ``image_id`` of ``../../x`` points the loader's path outside --data-dir;
    format records never went through read_records, so the runner checks them."""
    from tests.evaluation.test_formats import write_textvqa

    root = tmp_path / "textvqa"
    root.mkdir()
    write_textvqa(root)
    doc = json.loads((root / "TextVQA_0.5.1_val.json").read_text())
    doc["data"][0]["image_id"] = "../../secret"
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps(doc))
    shutil.copyfile(next((root / "train_images").glob("*.jpg")), tmp_path / "secret.jpg")
    with pytest.raises(DataError, match="outside the dataset root"):
        evaluate_model(
            tiny_model_dir, "textvqa", split="val", data_dir=root, output_dir=tmp_path / "o"
        )
    assert not (tmp_path / "o").exists()


def test_every_record_is_checked_before_the_model_loads(tiny_parts, tmp_path, monkeypatch):
    """Issue 16.6: a record of the other modality crashed after loading the model (only the
    first record was looked at)."""
    import numpy as np
    import soundfile as sf

    lines = tiny_parts["val"].read_text().splitlines()[:2]
    recs = [json.loads(line) for line in lines]
    for r in recs:
        r["media"] = str(tiny_parts["val"].parent / r["media"])
    (tmp_path / "images").mkdir()
    for i, r in enumerate(recs):
        shutil.copyfile(r["media"], tmp_path / "images" / f"{i}.png")
        r["media"] = f"images/{i}.png"
    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    recs[1].update(modality="audio", media="a.wav")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    loads = []
    monkeypatch.setattr("evaluation.runner.load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(DataError, match=r"b:test:2: field 'modality'") as e:
        evaluate_model("unused-model", str(tmp_path / "b.jsonl"), output_dir=tmp_path / "o")
    assert loads == [] and "skip_bad" not in str(e.value)


def test_bad_benchmark_leaves_no_mlflow_run(tiny_parts, tmp_path):
    """Issue 16.6: a failed evaluate on bad input must not leave an empty FAILED run: the
    records are validated before `evaluate_tracked` opens its MLflow run."""
    from mlflow.tracking import MlflowClient

    from evaluation.tracked import evaluate_tracked

    rec = json.loads(tiny_parts["val"].read_text().splitlines()[0])
    rec["media"] = "missing.png"
    (tmp_path / "bad.jsonl").write_text(json.dumps(rec) + "\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(DataError, match=r"bad.jsonl:1: field .media."):
        evaluate_tracked("unused-model", str(tmp_path / "bad.jsonl"), tracking_uri=uri)
    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs == []
