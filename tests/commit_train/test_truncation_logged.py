"""Issue 16.7: questions cut to fit data.max_length are counted in MLflow, not only warned."""

from mlflow.tracking import MlflowClient

from commit_train.config import validate
from commit_train.trainer import train
from tests.conftest import tiny_recipe_dict


def _run(parts, out, max_length):
    raw = tiny_recipe_dict(parts, out, steps=2, eval_every=0, save_every=0)
    raw["data"]["max_length"] = max_length
    raw["data"]["val"] = None
    uri = f"sqlite:///{out}/mlflow.db"
    raw["tracking"] = {"uri": uri, "experiment": "trunc", "log_model": False}
    run_id = train(validate(raw)).run_id
    return [
        m.value for m in MlflowClient(uri).get_metric_history(run_id, "data/truncated_examples")
    ]


def test_truncated_questions_are_counted_in_mlflow(tiny_parts, tmp_path):
    cut = _run(tiny_parts, tmp_path / "short", 24)
    assert cut and cut[-1] >= 1 and cut == sorted(cut)
    assert _run(tiny_parts, tmp_path / "long", 256) == []
