"""probe_noise.py end to end on the tiny test models: it measures, times and writes its table."""

from benchmarks import probe_noise


def test_probe_noise_measures_the_share_and_writes_its_section(tiny_recipe, tmp_path, capsys):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    rc = probe_noise.main(
        [
            "--recipe", str(tiny_recipe),
            "--steps", "6", "--measure-from", "2", "--measure-every", "1",
            "--sizes", "1,2", "--cost-reps", "1", "--threads", "1",
            "--set", "train.lr_encoder=1e-4",
            "--benchmarks-md", str(md),
        ]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "| 1 |" in out and "| 2 |" in out and "probe-free step" in out
    text = md.read_text()
    assert "## Probe noise vs cost" in text and "--set train.lr_encoder=1e-4" in text
    assert "4 measured steps" in text
