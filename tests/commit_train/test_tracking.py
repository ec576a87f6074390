"""RunTracker against a real sqlite MLflow store, plus the plot and URI resolution.

Backend failures and slowness are simulated by wrapping ``MlflowClient.log_batch``; the
rest of MLflow is real, so what the tests read back is what a user would see in the UI.
"""

from __future__ import annotations

import logging
import math
import threading

import pytest
from mlflow.tracking import MlflowClient

from commit_train.config import TrackingConfig
from commit_train.errors import CommitError
from commit_train.plots import plot_training
from commit_train.tracking import (
    MASK,
    RunTracker,
    redact_params,
    redact_text,
    resolve_tracking_uri,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store per module: creating and migrating a database costs ~1 s."""
    d = tmp_path_factory.mktemp("mlflow")
    return d, f"sqlite:///{d}/mlflow.db"


@pytest.fixture
def cfg(store, monkeypatch):
    d, uri = store
    monkeypatch.chdir(d)  # default artifact root ./mlruns lands in the temp dir
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return TrackingConfig(uri=uri, experiment="test", flush_every_s=0.05)


def tracker(cfg, params=None, **kw):
    kw.setdefault("retry_initial_s", 0.01)
    kw.setdefault("close_timeout_s", 20.0)
    return RunTracker(cfg, params or {"train.steps": 10}, kw.pop("tags", None), **kw)


def history(cfg, run_id, key):
    return MlflowClient(cfg.uri).get_metric_history(run_id, key)


def wrap_log_batch(monkeypatch, before):
    """Replace MlflowClient.log_batch by ``before(metrics)`` followed by the real call."""
    real = MlflowClient.log_batch
    calls = []

    def fake(self, run_id, metrics=(), params=(), tags=(), **kw):
        if metrics:
            calls.append(len(metrics))
            before(metrics)
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", fake)
    return calls


def test_params_are_redacted_in_mlflow_and_in_logs(cfg, caplog):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    params = {
        "train.lr_llm": 2e-4,
        "tracking.aws_secret_access_key": secret,
        "tracking.uri": "http://alice:hunter2@mlflow.example:5000",
        "data.train": "x" * 7000,
        "model.tokenizer": "tok-dir",
        "model.lora.target_modules.llm": ["q_proj", "v_proj"],
    }
    params.update({f"extra.p{i}": i for i in range(150)})  # > one 100-param batch
    tags = {"source": "s3://AKIAKEY:s3cr3t@bucket/data", "hf_token": "hf_abcdef"}
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="commit_train")  # whatever ran before set it
    with tracker(cfg, params, tags=tags) as t:
        run_id = t.run_id
    run = MlflowClient(cfg.uri).get_run(run_id)
    p = run.data.params
    assert len(p) == len(params)
    assert p["tracking.aws_secret_access_key"] == MASK
    assert p["tracking.uri"] == "http://***@mlflow.example:5000"
    assert p["model.tokenizer"] == "tok-dir"  # "token" inside a word is not a secret
    assert p["model.lora.target_modules.llm"] == "['q_proj', 'v_proj']"
    assert p["train.lr_llm"] == "0.0002"
    assert len(p["data.train"]) == 6000 and p["data.train"].endswith("[truncated]")
    assert run.data.tags["source"] == "s3://***@bucket/data"
    assert run.data.tags["hf_token"] == MASK
    assert run.info.status == "FINISHED"
    everything = str(run.data.params) + str(run.data.tags) + caplog.text
    assert "MLflow params" in caplog.text  # the debug dump ran, and it was redacted
    for leaked in (secret, "hunter2", "s3cr3t", "hf_abcdef"):
        assert leaked not in everything


def test_redaction_rules():
    out = redact_params(
        {
            "a.password": "pw",
            "b.api_key": "k",
            "c.token": "t",
            "d.credentials": "c",
            "e.secret": None,  # nothing to hide: left as is
            "tokenizer": "gpt2",
            "author": "me",
            "url": "https://h/x?X-Amz-Signature=abc&region=eu",
        }
    )
    assert [out[k] for k in ("a.password", "b.api_key", "c.token", "d.credentials")] == [MASK] * 4
    assert out["e.secret"] == "None"
    assert out["tokenizer"] == "gpt2" and out["author"] == "me"
    assert out["url"] == "https://h/x?X-Amz-Signature=***&region=eu"
    assert redact_text("postgresql://u:p@db:5432/x and mysql://root@h") == (
        "postgresql://***@db:5432/x and mysql://***@h"
    )


def test_500_metrics_over_250_steps_all_arrive(cfg):
    with tracker(cfg) as t:
        for step in range(250):
            t.log_metrics({"loss/train": 1.0 / (step + 1), "lr/llm": step * 1e-6}, step=step)
        run_id = t.run_id
    assert t.pending == 0
    loss = history(cfg, run_id, "loss/train")
    lr = history(cfg, run_id, "lr/llm")
    assert len(loss) + len(lr) == 500
    assert sorted(m.step for m in loss) == list(range(250))
    assert sorted(m.step for m in lr) == list(range(250))
    assert {m.step: m.value for m in loss}[9] == pytest.approx(0.1)
    assert t.history["lr/llm"][3] == (3, 3e-6)


def test_log_metrics_does_not_wait_on_a_blocked_backend(cfg, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    stuck = []

    def block(metrics):
        entered.set()
        if not release.wait(10):  # the test would deadlock here if log_metrics waited
            stuck.append(True)

    calls = wrap_log_batch(monkeypatch, block)
    t = tracker(cfg)
    t.log_metrics({"loss/train": 0.5, "lr/llm": 1e-4}, step=0)
    assert entered.wait(10), "flush thread never called log_batch"
    # The backend call is now in flight and will not return until release is set, yet
    # the training loop keeps logging: every call returns and lands in the buffer.
    for step in range(1, 101):
        t.log_metrics({"loss/train": 0.5, "lr/llm": 1e-4}, step=step)
    assert t.pending == 200 and not release.is_set()
    release.set()
    assert t.close() == 0
    assert not stuck and sum(calls) == 202
    assert len(history(cfg, t.run_id, "loss/train")) == 101


def test_flush_failures_are_retried_without_loss(cfg, monkeypatch, caplog):
    failures = iter([ConnectionError("http://bob:pw123@mlflow:5000 refused")] * 2)

    def flaky(metrics):
        err = next(failures, None)
        if err is not None:
            raise err

    calls = wrap_log_batch(monkeypatch, flaky)
    caplog.set_level(logging.WARNING, logger="commit_train.tracking")
    t = tracker(cfg)
    for step in range(150):
        t.log_metrics({"loss/train": float(step), "loss/ce": 2.0}, step=step)
    assert t.close() == 0
    assert len(calls) >= 3
    assert sorted(m.step for m in history(cfg, t.run_id, "loss/train")) == list(range(150))
    assert len(history(cfg, t.run_id, "loss/ce")) == 150
    assert "MLflow flush failed" in caplog.text
    assert "pw123" not in caplog.text and "mlflow:5000" in caplog.text


def test_close_gives_up_after_timeout_on_a_dead_backend(cfg, monkeypatch):
    def dead(metrics):
        raise ConnectionError("down")

    wrap_log_batch(monkeypatch, dead)
    t = tracker(cfg, close_timeout_s=0.5)
    t.log_metrics({"loss/train": 1.0}, step=0)
    assert t.close("FAILED") == 1  # reported, not raised; still in local history
    assert t.history["loss/train"] == [(0, 1.0)]
    assert MlflowClient(cfg.uri).get_run(t.run_id).info.status == "FAILED"


def test_resume_appends_to_the_same_run(cfg):
    t1 = tracker(cfg, {"train.steps": 10, "seed": 0})
    for step in range(5):
        t1.log_metrics({"loss/train": 1.0}, step=step)
    t1.close("KILLED")
    client = MlflowClient(cfg.uri)
    assert client.get_run(t1.run_id).info.status == "KILLED"

    with tracker(cfg, {"train.steps": 20, "seed": 0}, run_id=t1.run_id) as t2:
        assert t2.run_id == t1.run_id
        assert client.get_run(t1.run_id).info.status == "RUNNING"
        for step in range(5, 10):
            t2.log_metrics({"loss/train": 0.5}, step=step)
    run = client.get_run(t1.run_id)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in history(cfg, t1.run_id, "loss/train")) == list(range(10))
    assert run.data.params["train.steps"] == "10"  # params are immutable in MLflow
    assert run.data.tags["resume.param.train.steps"] == "20"


def test_resume_unknown_run_is_a_user_error(cfg):
    with pytest.raises(CommitError, match="could not resume"):
        tracker(cfg, run_id="0123456789abcdef0123456789abcdef")


def test_start_failure_is_a_user_error_and_leaves_no_running_run(cfg, monkeypatch):
    def refuse(self, run_id, **kw):
        raise ConnectionError("https://carol:letmein@mlflow.internal refused")

    monkeypatch.setattr(MlflowClient, "log_batch", refuse)
    with pytest.raises(CommitError, match="could not start") as e:
        tracker(cfg, {"a": 1})
    assert "letmein" not in str(e.value) and "mlflow.internal" in str(e.value)
    client = MlflowClient(cfg.uri)
    exp = client.get_experiment_by_name("test")
    statuses = {r.info.status for r in client.search_runs([exp.experiment_id])}
    assert "RUNNING" not in statuses


def test_non_finite_and_invalid_metrics_are_skipped(cfg, caplog):
    caplog.set_level(logging.WARNING, logger="commit_train.tracking")
    with tracker(cfg) as t:
        for step in range(3):
            t.log_metrics(
                {"loss/train": math.nan, "loss/aux": math.inf, "bad name!": 1.0, "ok": 2.0},
                step=step,
            )
    assert dict(t.skipped) == {"loss/train": 3, "loss/aux": 3, "bad name!": 3}
    assert caplog.text.count("'loss/train' at step") == 1  # warned once, then counted
    assert len(history(cfg, t.run_id, "ok")) == 3
    assert history(cfg, t.run_id, "loss/train") == []


def test_artifacts_and_failed_status(cfg, tmp_path):
    f = tmp_path / "plot.png"
    plot_training({"loss/train": [(0, 1.0), (1, 0.5)]}, f)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    with pytest.raises(RuntimeError), tracker(cfg) as t:
        assert t.log_artifact(f, "plots")
        assert t.log_artifacts(tmp_path / "d", "files")
        with pytest.raises(FileNotFoundError):
            t.log_artifact(tmp_path / "missing.png")
        raise RuntimeError("training crashed")
    client = MlflowClient(cfg.uri)
    assert client.get_run(t.run_id).info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(t.run_id, "plots")] == ["plots/plot.png"]
    assert [a.path for a in client.list_artifacts(t.run_id, "files")] == ["files/a.txt"]


def test_disabled_and_non_main_trackers_never_touch_mlflow(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("MLflow must not be used")

    monkeypatch.setattr(MlflowClient, "__init__", boom)
    uri = f"sqlite:///{tmp_path}/never.db"
    off = RunTracker(TrackingConfig(uri=uri, enabled=False), {"a": 1}, None)
    rank1 = RunTracker(TrackingConfig(uri=uri), {"a": 1}, None, is_main_process=False)
    for t in (off, rank1):
        assert t.run_id is None
        t.log_metrics({"loss/train": 1.0}, step=0)
        assert t.log_artifact(tmp_path / "does-not-matter") is False
        t.set_tags({"x": "y"})
        assert t.flush() is True
        assert t.close() == 0
    assert off.history["loss/train"] == [(0, 1.0)]  # still available for the plot
    assert dict(rank1.history) == {}
    assert not (tmp_path / "never.db").exists()


def test_plot_training_writes_a_png_atomically(tmp_path):
    steps = range(0, 100, 5)
    hist = {
        "loss/train": [(s, 2.0 / (s + 1)) for s in steps],
        "loss/val": [(50, 0.3), (0, 2.5), (99, 0.2)],  # unsorted: drawn by step
        "loss/aux": [(s, 0.1) for s in steps],
        "lr/encoder": [(s, 1e-4) for s in steps],
        "lr/llm": [(s, 2e-4) for s in steps],
        "balance/kappa": [(s, 0.5 + s / 100) for s in steps],
        "balance/kappa_avg": [(s, 0.6) for s in steps],
        "balance/share_encoder": [(s, 0.4) for s in steps],
        "throughput/samples_per_s": [(0, 10.0)],  # not a plotted group: ignored
    }
    out = plot_training(hist, tmp_path / "sub" / "training.png", title="run x")
    assert out.read_bytes()[:8] == PNG_MAGIC
    from PIL import Image

    with Image.open(out) as im:
        im.verify()
    empty = plot_training({}, tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "empty.png",
        "training.png",
    ]


def test_resolve_tracking_uri_precedence_and_typos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    for ok in ("postgresql+psycopg2://u:p@db/mlflow", "file:///tmp/mlruns", "databricks"):
        assert resolve_tracking_uri(ok) == ok
    for bad, why in (
        ("sqllite:///x.db", "unknown scheme"),
        ("htp://host:5000", "unknown scheme"),
        ("mlruns", "scheme://"),
        ("http:/host", "scheme://"),
        ("sqlite://x.db", "not a sqlite file URI"),
        ("http://", "no host"),
        ("htps://admin:topsecret@host", "unknown scheme"),
    ):
        with pytest.raises(CommitError, match=why) as e:
            resolve_tracking_uri(bad)
        assert "topsecret" not in str(e.value)


_START_ONE = """
import sys, time
from commit_train.config import TrackingConfig
from commit_train.tracking import RunTracker
while time.time() < float(sys.argv[2]):  # start together
    time.sleep(0.001)
t = RunTracker(TrackingConfig(uri=sys.argv[1], experiment="race"), {"i": sys.argv[3]})
t.close()
print(t.run_id)
"""


def test_runs_started_at_once_on_a_fresh_sqlite_store_both_succeed(tmp_path):
    """Two runs (e.g. a method comparison run in parallel) creating the same new sqlite
    store must not race MLflow's schema migration ("duplicate column name")."""
    import subprocess
    import sys
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = str(time.time() + 4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _START_ONE, uri, go, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert len({o.strip() for o, _ in outs}) == 3
