"""The training loop end to end on tiny models: outputs, tracking, divergence, bad input."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from commit_train.config import load_config, validate
from commit_train.errors import DataError, ModelLoadError, TrainingDiverged
from commit_train.modeling import load_model
from commit_train.trainer import StepHooks, train
from tests.conftest import tiny_recipe_dict

STEP_METRICS = (
    "loss/train",
    "loss/ce",
    "lr/encoder",
    "lr/llm",
    "grad_norm/encoder",
    "grad_norm/llm",
    "throughput/samples_per_s",
    "throughput/tokens_per_s",
)


def test_train_end_to_end(tiny_recipe):
    cfg = load_config(tiny_recipe)
    result = train(cfg)
    out = result.output_dir
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "model" / "commit_processor.json").is_file()
    assert (out / "recipe.yaml").is_file() and (out / "training.png").is_file()
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-0000003", "step-0000006"]
    assert math.isfinite(result.final_train_loss) and result.final_val_loss is not None

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr_llm"] == str(cfg.train.lr_llm)
    for name in STEP_METRICS:
        hist = client.get_metric_history(result.run_id, name)
        assert [m.step for m in hist] == list(range(1, 7)), name
    val = client.get_metric_history(result.run_id, "loss/val")
    assert [m.step for m in val] == [3, 6]
    # warm-up is linear over 2 steps, then cosine: the logged LR follows the schedule
    lrs = [m.value for m in client.get_metric_history(result.run_id, "lr/llm")]
    assert lrs[0] == pytest.approx(cfg.train.lr_llm / 2) and lrs[1] == pytest.approx(
        cfg.train.lr_llm
    )
    assert lrs[-1] < lrs[2]
    arts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"model", "training.png", "recipe.yaml"} <= arts


def test_saved_model_reloads_to_identical_outputs(tiny_recipe):
    cfg = load_config(tiny_recipe)
    result = train(cfg, hooks=None)
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["model"] = {"path": str(result.model_dir), "modality": "image"}
    mlm, proc = load_model(validate(raw).model)
    mlm2, _ = load_model(validate(raw).model)
    from commit_train.data.collate import Collator
    from commit_train.data.records import read_records

    recs, _ = read_records(cfg.data.val)
    batch = Collator(proc, 64)(recs[:3], root=Path(cfg.data.val).parent)
    args = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "media")}
    with torch.no_grad():
        a = mlm.eval()(**args)["logits"]
        b = mlm2.eval()(**args)["logits"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the trained LoRA was merged: weights differ from the untrained LLM
    trained = load_file(str(result.model_dir / "model.safetensors"))
    assert not any("lora_" in k for k in trained)


class _NanAt(StepHooks):
    def __init__(self, step):
        self.step = step

    def extra_loss(self, step, out):
        if step == self.step:
            return {"loss/aux": torch.tensor(float("nan"))}
        return {}


def test_nan_loss_stops_with_checkpoint(tiny_recipe):
    cfg = load_config(tiny_recipe, ["train.save_every=0"])
    with pytest.raises(TrainingDiverged, match="at step 5") as e:
        train(cfg, hooks=_NanAt(4))
    assert "step-0000004" in str(e.value)
    ckpt = Path(cfg.train.output_dir) / "checkpoints" / "step-0000004" / "state.json"
    assert json.loads(ckpt.read_text())["step"] == 4
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert runs[0].info.status == "FAILED"


def test_missing_model_path_is_a_clear_error(tiny_parts, tmp_path):
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "run")
    raw["model"]["llm"] = str(tmp_path / "no-such-llm")
    with pytest.raises(ModelLoadError, match="no-such-llm"):
        train(validate(raw))
    assert not (tmp_path / "run" / "model").exists()


def test_bad_records_fail_before_training(tiny_parts, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = tiny_parts["train"].read_text().splitlines()
    rec = json.loads(lines[2])
    rec["media"] = "images/missing.png"
    lines[2] = json.dumps(rec)
    lines[5] = lines[5].replace('"question"', '"questoin"')
    bad.write_text("\n".join(lines) + "\n")
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "run")
    raw["data"]["train"] = str(bad)
    raw["data"]["root"] = str(tiny_parts["train"].parent)
    with pytest.raises(DataError) as e:
        train(validate(raw))
    msg = str(e.value)
    assert "bad.jsonl" in msg and ":3" in msg and ":6" in msg and "question" in msg
    assert not (tmp_path / "run").exists()
    raw["data"]["skip_bad"] = True
    raw["train"]["steps"] = 1
    result = train(validate(raw))
    assert (result.model_dir / "model.safetensors").is_file()
    # Issue 16.7: the skipped records are listed in the run dir and in MLflow.
    rows = [
        json.loads(x)
        for x in (result.output_dir / "skipped_records.jsonl").read_text().splitlines()
    ]
    assert [(r["line"], r["reason"]) for r in rows] == [(3, "media_missing"), (6, "missing_field")]
    assert all(r["file"] == str(bad) and r["split"] == "train" for r in rows)
    client = MlflowClient(tracking_uri=raw["tracking"]["uri"])
    assert "skipped_records.jsonl" in {a.path for a in client.list_artifacts(result.run_id)}


def test_projector_lr_is_its_own_group_and_follows_the_schedule(tiny_parts, tmp_path):
    """train.lr_projector (LLaVA's mm_projector_lr): the projector trains at its own base LR,
    warmed up and decayed like its side, and logged as lr/projector."""
    recipe = tiny_recipe_dict(tiny_parts, tmp_path / "run", lr_projector=2e-2, save_every=0)
    cfg = validate(recipe, "<test>")
    from commit_train.trainer import Trainer

    trainer = Trainer(cfg)
    trainer.setup()
    enc_opt = trainer.optimizers["encoder"]
    bases = sorted(g["base_lr"] for g in enc_opt.param_groups)
    assert bases == [cfg.train.lr_encoder, 2e-2]
    proj_group = next(g for g in enc_opt.param_groups if g["base_lr"] == 2e-2)
    proj_ids = {id(p) for p in proj_group["params"]}
    names = {n for n, p in trainer.mlm.model.named_parameters() if id(p) in proj_ids}
    assert names and names == trainer.groups.projector_names
    # the LLM side has no projector: one group at lr_llm
    assert [g["base_lr"] for g in trainer.optimizers["llm"].param_groups] == [cfg.train.lr_llm]

    result = train(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    proj = [m.value for m in client.get_metric_history(result.run_id, "lr/projector")]
    enc = [m.value for m in client.get_metric_history(result.run_id, "lr/encoder")]
    assert len(proj) == 6
    for p, e in zip(proj, enc, strict=True):
        assert p == pytest.approx(e * 2e-2 / cfg.train.lr_encoder)


def test_media_outside_the_data_root_fail_before_training(tiny_parts, tmp_path):
    """Issue 16.1: a valid image outside the dataset root is not trained on."""
    lines = tiny_parts["train"].read_text().splitlines()
    rec = json.loads(lines[0])
    rec["media"] = str(tiny_parts["train"].parent / rec["media"])  # absolute, valid image
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps(rec) + "\n")
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "run")
    raw["data"]["train"] = str(data / "train.jsonl")
    with pytest.raises(DataError, match=r"train\.jsonl:1: field 'media'.*outside the dataset root"):
        train(validate(raw))
    assert not (tmp_path / "run").exists()


class _CorruptAfter(StepHooks):
    """Sets every trainable weight to NaN after optimizer step ``step`` (0-based)."""

    def __init__(self, step):
        self.step = step
        self.trainer = None

    def after_step(self, step, stepped):
        if step == self.step:
            with torch.no_grad():
                for p in self.trainer.mlm.parameters():
                    if p.requires_grad:
                        p.fill_(float("nan"))
        return {}


def test_non_finite_weights_are_never_called_a_good_checkpoint(tiny_parts, tmp_path):
    """Issue 16.5: the loss turns NaN because the weights did; the checkpoint of that step
    would hold NaN, so none is written and the message names the last finite one."""
    from commit_train.trainer import Trainer

    cfg = validate(tiny_recipe_dict(tiny_parts, tmp_path / "run", eval_every=0))
    hooks = _CorruptAfter(3)  # after the 4th step; step-0000003 was saved before it
    trainer = Trainer(cfg, hooks=hooks)
    hooks.trainer = trainer
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert "at step 5" in msg and "no checkpoint was written" in msg
    assert "step-0000003" in msg and "--resume" in msg
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-0000003"]
    tensors = load_file(str(root / "step-0000003" / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_save_checkpoint_refuses_non_finite_state(tmp_path):
    from commit_train.checkpoint import NonFiniteState, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    with torch.no_grad():
        model.bias[0] = float("inf")
    with pytest.raises(NonFiniteState, match=r"1 of 8 tensors hold NaN or inf \(bias\)"):
        save_checkpoint(tmp_path, 7, model, {"llm": opt}, {})
    assert not (tmp_path / "checkpoints").exists()
