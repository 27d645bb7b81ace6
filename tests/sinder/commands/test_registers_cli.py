"""`sinder registers` and `sinder export --registers` from the command line."""

import json

import pytest

from sinder.cli import main


def _error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sinder "), err
    for needle in needles:
        assert needle in err, err


def test_demo_report_names_neurons_and_held_out_result(tmp_path, capsys, demo_photos_dir):
    out = tmp_path / "ttr.json"
    args = ["registers", "--demo", "--images", str(demo_photos_dir), "--out", str(out), "--resolution", "112",
            "--no-figures", "--no-progress"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["synthetic"] and report["neuron_count"] == report["k"] > 0
    assert set(report["train_images"]).isdisjoint(report["measured_on"]["images"])
    assert report["verdict"] in ("removed", "reduced", "not removed")
    assert report["cpu_seconds"] > 0 and report["threshold"]["kind"] == "relative"
    assert f"{report['neuron_count']} neurons" in capsys.readouterr().out
    assert not (tmp_path / "ttr_analysis").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--top-k", "0"], "top k"),
    (["--norm-factor", "0.5"], "norm factor"),
])
def test_bad_settings_fail_on_one_line(tmp_path, capsys, extra, needle):
    assert main(["registers", "--demo", "--out", str(tmp_path / "r.json")] + extra) == 2
    _error(capsys, needle)


def test_out_must_be_json(tmp_path, capsys, demo_photos_dir):
    assert main(["registers", "--demo", "--images", str(demo_photos_dir), "--out", str(tmp_path / "r.txt")]) == 2
    _error(capsys, ".json")


def test_export_refuses_a_report_without_usable_neurons(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"neurons": {"0": [99999]}}))
    args = ["export", "--demo", "--name", "x_ttr", "--model-repo", str(tmp_path / "repo"), "--registers", str(bad)]
    assert main(args) == 2
    _error(capsys, "register neurons", "99999")
    bad.write_text("[]")
    assert main(args) == 2
    _error(capsys, "not a JSON object")
    assert not (tmp_path / "repo" / "x_ttr").exists()
