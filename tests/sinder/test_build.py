"""`sinder build`: the layout it fills, and that a second run reuses every complete step.

The heavy steps (export, repair, analysis) are replaced by stubs that write what the real ones
write; the real ones have their own tests.
"""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sinder.checkpoints
import sinder.export
import sinder.repair
from sinder import build
from contract import layout
from contract.manifest import Architecture, Manifest, Provenance, Variant, defect_block, tensor_specs
from contract.triton_config import config_pbtxt
from sinder.atomic import atomic_dir, write_json
from sinder.errors import SinderError

sys.path.insert(0, str(Path(__file__).resolve().parent / "export"))
from export_helpers import tiny_loaded  # noqa: E402


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((60, 70, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def stubs(monkeypatch):
    calls = {"export": [], "repair": 0, "analysis": [], "load": 0, "registers": 0, "compare": []}

    def export_model(loaded, model_repo, name, version=None, repair_summary=None, overwrite=False,
                     variant=None, registers_summary=None, **kw):
        out = Path(model_repo) / name / str(version)
        calls["export"].append(name)
        inputs, outputs = tensor_specs(4, 0, "fp32")
        manifest = Manifest(
            name=name, version=version, precision="fp32", max_batch_size=1, inputs=inputs, outputs=outputs,
            architecture=Architecture(arch="stub", patch_size=14, embed_dim=4, depth=1, num_heads=1),
            defect=defect_block([1.0, 0, 0, 0], 0), variant=variant or Variant(), repair=repair_summary,
            registers=registers_summary,
            provenance=Provenance(sha256=loaded.sha256, tool_version="test"))
        with atomic_dir(out, overwrite=overwrite) as tmp:
            (tmp / "model.onnx").write_bytes(b"onnx")
            (tmp / "manifest.json").write_text(manifest.to_json())
        (out.parent / "config.pbtxt").write_text(config_pbtxt(name, inputs, outputs, 1))
        return out

    def run_repair(loaded, train, held, out, options=None, progress=True, **kw):
        calls["repair"] += 1
        assert not set(train) & set(held) and options.resolution == build.DEMO_RESOLUTION
        torch.save(loaded.model.state_dict(), out)
        report = {"model": {"sha256": loaded.sha256}, "output": {"sha256": "f" * 64}, "before": {}, "after": {}}
        write_json(Path(out).parent / "repair_report.json", report)
        repaired = tiny_loaded(seed=1)
        repaired.sha256 = "f" * 64
        return repaired, report

    def run_analysis(loaded, paths, out_dir, resolution=224, repaired=None, progress=True, **kw):
        calls["analysis"].append(repaired is not None)
        write_json(Path(out_dir) / "analysis.json", {"images": len(paths)})
        return {}

    def load_model(*a, **k):
        calls["load"] += 1
        return tiny_loaded(seed=1)

    def run_registers(loaded, train, held, out, search=None, resolution=224, figures_dir=None, progress=True):
        from sinder.registers.report import registers_model

        calls["registers"] += 1
        assert not set(train) & set(held) and resolution == build.DEMO_RESOLUTION
        report = {"model": {"sha256": loaded.sha256}, "neurons": {"0": [1, 2]}, "neuron_count": 2,
                  "cpu_seconds": 0.5}
        write_json(out, report)
        return registers_model(loaded, {0: [1, 2]}), report

    def compare_variants(original, variants, held_out, resolution, loss_layers=None, progress=False):
        calls["compare"].append(sorted(variants))
        return {"variants": {name: v["method"] for name, v in variants.items()}}

    def write_comparison(report, images, out_dir, resolution):
        write_json(Path(out_dir) / "comparison.json", report)
        return report

    import sinder.compare
    import sinder.registers.report

    monkeypatch.setattr(sinder.registers.report, "run_registers", run_registers)
    monkeypatch.setattr(sinder.compare, "compare_variants", compare_variants)
    monkeypatch.setattr(sinder.compare, "write_comparison", write_comparison)
    monkeypatch.setattr(sinder.export, "export_model", export_model)
    monkeypatch.setattr(sinder.repair, "run_repair", run_repair)
    monkeypatch.setitem(sys.modules, "sinder.analyze", types.SimpleNamespace(run_analysis=run_analysis))
    monkeypatch.setattr(sinder.checkpoints, "load_model", load_model)
    return calls


def test_build_fills_the_layout_then_reuses_it(tmp_path, images, stubs, capsys):
    repo = tmp_path / "repo"
    plan = build.BuildPlan(repo, "demo", images=images, progress=True)
    summary = build.build(plan, tiny_loaded())
    assert summary["complete"] and all(s["status"] == "built" for s in summary["steps"])
    assert stubs["export"] == ["demo", "demo_sinder", "demo_ttr"] and stubs["repair"] == 1
    assert stubs["analysis"] == [False, True] and stubs["registers"] == 1
    assert stubs["compare"] == [["demo", "demo_sinder", "demo_ttr"]]
    assert (repo / "demo" / "1" / "manifest.json").is_file() and (repo / "demo_sinder" / "1" / "model.onnx").is_file()
    ttr = json.loads((repo / "demo_ttr" / "1" / "manifest.json").read_text())
    assert ttr["registers"]["neurons"] == {"0": [1, 2]} and ttr["variant"] == {"kind": "ttr", "of": "demo"}
    assert (repo / "demo" / "reports" / "registers" / "registers.json").is_file()
    assert json.loads((repo / "demo" / "reports" / "comparison.json").read_text())["variants"] == {
        "demo": "original", "demo_sinder": "SINDER", "demo_ttr": "test-time registers"}
    assert (repo / "demo" / "reports" / "analysis" / "analysis.json").is_file()
    assert (repo / "demo" / "reports" / "repair" / "analysis" / "analysis.json").is_file()
    assert (repo / "demo" / "reports" / "repair" / "repair_report.json").is_file()
    assert not (repo / "demo_sinder" / "reports").exists()
    repaired = json.loads((repo / "demo_sinder" / "1" / "manifest.json").read_text())
    assert repaired["repair"]["before"] == {} and repaired["variant"] == {"kind": "sinder", "of": "demo"}
    assert layout.triton_problems(repo) == []  # only model folders at the top; reports are not versions
    assert "export demo v1" in capsys.readouterr().err

    again = build.build(build.BuildPlan(repo, "demo", images=images), tiny_loaded())
    assert all(s["status"] == "reused" for s in again["steps"])
    assert stubs["export"] == ["demo", "demo_sinder", "demo_ttr"] and stubs["repair"] == 1
    assert len(stubs["analysis"]) == 2 and stubs["registers"] == 1 and len(stubs["compare"]) == 1
    assert stubs["load"] == 0  # nothing needed the repaired model
    assert "reusing" in capsys.readouterr().err
    assert json.loads((repo / "demo" / "reports" / "build.json").read_text())["complete"]


def test_build_redoes_only_what_is_missing(tmp_path, images, stubs):
    repo = tmp_path / "repo"
    build.build(build.BuildPlan(repo, "demo", images=images, progress=False), tiny_loaded())
    import shutil

    shutil.rmtree(repo / "demo_sinder" / "1")
    summary = build.build(build.BuildPlan(repo, "demo", images=images, progress=False), tiny_loaded())
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert status["export demo_sinder v1"] == "built" and status["repair demo (SINDER)"] == "reused"
    assert stubs["load"] == 1 and stubs["repair"] == 1  # the repaired model came from its checkpoint
    assert status["export demo_ttr v1"] == "reused" and stubs["registers"] == 1
    assert status["compare original, SINDER and test-time registers"] == "built"  # one of them changed


def test_build_reexports_registers_when_the_neurons_change(tmp_path, images, stubs):
    repo = tmp_path / "repo"
    build.build(build.BuildPlan(repo, "demo", images=images, progress=False), tiny_loaded())
    path = repo / "demo" / "reports" / "registers" / "registers.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "neurons": {"1": [3]}}))
    summary = build.build(build.BuildPlan(repo, "demo", images=images, progress=False), tiny_loaded())
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert status["export demo_ttr v1"] == "built" and stubs["registers"] == 1
    assert json.loads((repo / "demo_ttr" / "1" / "manifest.json").read_text())["registers"]["neurons"] == {"1": [3]}


def test_force_rebuilds_everything(tmp_path, images, stubs):
    repo = tmp_path / "repo"
    build.build(build.BuildPlan(repo, "demo", images=images, progress=False), tiny_loaded())
    summary = build.build(build.BuildPlan(repo, "demo", images=images, progress=False, force=True), tiny_loaded())
    assert all(s["status"] == "built" for s in summary["steps"]) and stubs["repair"] == 2


def test_build_refuses_a_version_of_another_model(tmp_path, images, stubs):
    repo = tmp_path / "repo"
    build.build(build.BuildPlan(repo, "demo", images=images, progress=False), tiny_loaded())
    other = tiny_loaded(seed=3)
    other.sha256 = "a" * 64
    with pytest.raises(SinderError, match="another model.*--force"):
        build.build(build.BuildPlan(repo, "demo", images=images, progress=False), other)


def test_build_needs_two_images(tmp_path, stubs):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(folder / "a.png")
    with pytest.raises(SinderError, match="at least 2 images"):
        build.build(build.BuildPlan(tmp_path / "repo", "demo", images=folder, progress=False), tiny_loaded())


def test_build_demo_rebuilds_when_the_demo_weights_change(tmp_path, images, stubs, monkeypatch, capsys):
    import sinder.demo
    import sinder.images

    monkeypatch.setattr(sinder.images, "demo_images_dir", lambda *a, **k: images)
    monkeypatch.setattr(sinder.demo, "load_demo", lambda seed=0: tiny_loaded())
    repo = tmp_path / "repo"
    build.build_demo(repo, progress=False)
    assert all((repo / n / "1").is_dir() for n in ("dinov2_demo", "dinov2_demo_sinder", "dinov2_demo_ttr"))
    again = build.build_demo(repo)
    assert all(s["status"] == "reused" for s in again["steps"])
    assert "complete" in capsys.readouterr().err

    newer = tiny_loaded(seed=7)
    newer.sha256 = "b" * 64
    monkeypatch.setattr(sinder.demo, "load_demo", lambda seed=0: newer)
    rebuilt = build.build_demo(repo)
    assert all(s["status"] == "built" for s in rebuilt["steps"])
    assert "differs" in capsys.readouterr().err


def test_build_cli_demo_entangled_builds_its_own_names(tmp_path, images, stubs, monkeypatch):
    import sinder.demo
    import sinder.images
    from sinder.cli import main

    monkeypatch.setattr(sinder.images, "demo_images_dir", lambda *a, **k: images)
    kinds = []
    monkeypatch.setattr(sinder.demo, "load_demo_kind", lambda kind, seed=0: kinds.append(kind) or tiny_loaded())
    repo = tmp_path / "repo"
    assert main(["build", "--demo", "entangled", "--model-repo", str(repo)]) == 0
    assert kinds == ["entangled"]
    assert (repo / "dinov2_demo_entangled" / "1").is_dir() and (repo / "dinov2_demo_entangled_sinder" / "1").is_dir()


def test_build_cli_for_a_checkpoint(tmp_path, images, stubs):
    from sinder.cli import main

    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"unused: load_model is stubbed")
    repo = tmp_path / "repo"
    args = ["build", "--checkpoint", str(ckpt), "--name", "mine", "--images", str(images), "--model-repo", str(repo),
            "--resolution", "224"]
    assert main(args) == 0
    assert (repo / "mine" / "1").is_dir() and (repo / "mine_sinder" / "1").is_dir()
    assert (repo / "mine" / "reports" / "repair" / "repair_report.json").is_file()


@pytest.mark.parametrize("args, needle", [
    (["build", "--demo", "--name", "x"], "--demo builds dinov2_demo"),
    (["build", "--checkpoint", "c.pth"], "--checkpoint needs --name"),
])
def test_build_cli_rejects_bad_combinations(tmp_path, capsys, args, needle):
    from sinder.cli import main

    assert main(args + ["--model-repo", str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_build_computes_the_directions_once_per_model(tmp_path, monkeypatch):
    """Real analysis and repair (on the toy model of the repair tests); export records what it was handed."""
    import sinder.defects.directions as dirs_mod
    from sinder.export.api import default_direction
    from sinder.repair import RepairOptions

    sys.path.insert(0, str(Path(__file__).resolve().parent / "repair"))
    from toy_defect import GRID, toy_loaded, write_images

    computed = []
    real = dirs_mod.cumulative_spectra
    monkeypatch.setattr(dirs_mod, "cumulative_spectra", lambda model, *a, **k: computed.append(1) or real(model, *a, **k))
    exported = {}

    def export_model(loaded, model_repo, name, version=None, overwrite=False, **kw):
        exported[name] = default_direction(loaded)  # what the real export does when no direction is given
        out = Path(model_repo) / name / str(version)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            write_json(tmp / "manifest.json", {"provenance": {"sha256": loaded.sha256}})
            (tmp / "model.onnx").write_bytes(b"onnx")
        return out

    monkeypatch.setattr(sinder.export, "export_model", export_model)
    images = write_images(tmp_path / "images", 6)[0].parent
    opts = RepairOptions(resolution=14 * GRID, window=20, max_iterations=40, held_out_fraction=0.34)
    plan = build.BuildPlan(tmp_path / "repo", "toy", images=images, progress=False, resolution=14 * GRID)
    summary = build.build(plan, toy_loaded(), repair_options=opts)
    assert summary["complete"] and len(computed) == 2  # the original and the repaired model, once each
    assert set(exported) == {"toy", "toy_sinder", "toy_ttr"}
    torch.testing.assert_close(exported["toy_ttr"], exported["toy"])  # registers keep the original's weights


def test_an_import_error_in_a_step_fails_the_build(tmp_path, images, stubs, monkeypatch):
    monkeypatch.setitem(sys.modules, "sinder.analyze", None)  # `from .analyze import ...` raises ImportError
    with pytest.raises(ImportError):
        build.build(build.BuildPlan(tmp_path / "repo", "demo", images=images, progress=False), tiny_loaded())
    assert not (tmp_path / "repo" / "demo" / "reports" / "build.json").exists()
