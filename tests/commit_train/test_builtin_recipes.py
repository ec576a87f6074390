"""The shipped built-in recipes run for real on the offline pretrained parts.

Needs `commit prepare` (the `make test` target runs it first); a few steps each, so the
recipe, the real model assembly, the real data and the export are all exercised.
"""

from pathlib import Path

import pytest

from commit_train.config import load_config
from commit_train.modeling import load_model
from commit_train.modeling.pretrained import PARTS, cache_dir
from commit_train.trainer import train

REPO = Path(__file__).parents[2]
pytestmark = [pytest.mark.pretrained, pytest.mark.slow]


def _prepared() -> bool:
    return all((cache_dir() / name).is_dir() for name in PARTS.values())


@pytest.mark.skipif(not _prepared(), reason="run `commit prepare` first (make test does)")
@pytest.mark.parametrize(
    "recipe,media_tokens", [("builtin_vision.yaml", 16), ("builtin_audio.yaml", 50)]
)
def test_builtin_recipe_trains_and_exports(recipe, media_tokens, tmp_path):
    cfg = load_config(
        REPO / "recipes" / recipe,
        [
            "train.steps=2",
            "train.eval_every=0",
            "train.save_every=0",
            "train.warmup_steps=1",
            "data.max_train_records=32",
            "data.max_val_records=8",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        ],
    )
    result = train(cfg, output_dir=tmp_path / "run")
    assert result.final_val_loss is not None and result.final_val_loss < 20
    mlm, proc = load_model(
        cfg.model.model_copy(update={"path": str(result.model_dir), "encoder": None, "llm": None})
    )
    assert proc.num_media_tokens() == media_tokens
    assert mlm.family == "composite"
