"""The benchmark's report writer and statistics (no benchmark is run here)."""

from __future__ import annotations

import json

import pytest

from bench import report
from bench.stats import percentile, ratio_summary, summary

MACHINE = {"cpu": "Test CPU", "cores": 2, "usable_cores": 2, "memory_gib": 8.0, "gpus": [], "python": "3.11",
           "platform": "Linux", "load_avg_1m_at_start": 0.1, "libraries": {"onnxruntime": "1.0", "numpy": "2.0"}}


def test_summary_median_and_spread():
    s = summary([3.0, 1.0, 2.0, 10.0])
    assert s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == 10.0 and s["n"] == 4
    assert s["spread"] == pytest.approx(9.0 / 2.5)
    with pytest.raises(ValueError):
        summary([])


def test_ratio_summary_pairs_repeats():
    r = ratio_summary([10, 20, 30], [10, 10, 10])
    assert r["median"] == 2.0 and r["values"] == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="measured together"):
        ratio_summary([1, 2], [1])


def test_percentile_interpolates():
    vals = list(range(1, 101))
    assert percentile(vals, 50) == pytest.approx(50.5)
    assert percentile(vals, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def _fig(**kw):
    base = {"section": "Service", "name": "throughput", "model": "ViT-S/14 shape, synthetic", "resolution": "224x224",
            "a_label": "service", "b_label": "raw", "unit": "images/s", "a": summary([90, 95]), "b": summary([100, 100]),
            "ratio": ratio_summary([90, 95], [100, 100]), "ratio_label": "service / raw", "target": {"op": ">=", "value": 0.9}}
    return {**base, **kw}


@pytest.mark.parametrize("a, expected", [([95, 96], "pass"), ([80, 85], "FAIL")])
def test_verdict_compares_the_median_ratio_with_the_target(a, expected):
    assert report.verdict(_fig(ratio=ratio_summary(a, [100, 100]))) == expected


def test_verdict_without_target_or_with_error():
    assert report.verdict(_fig(target=None)) == "—"
    assert report.verdict({"section": "x", "name": "y", "error": "boom"}) == "error"
    assert report.verdict(_fig(ratio=summary([2.0]), target={"op": "<=", "value": 1.3})) == "FAIL"


def test_render_names_machine_command_models_and_synthetic_weights():
    figs = [_fig(), {"section": "Offline tool", "name": "repair", "error": "sinder.repair.bench unavailable: no module"},
            _fig(name="encodings", target=None, table=[{"encoding": "base64", "bytes/image": 1000}, {"encoding": "json", "bytes/image": 2500}])]
    text = report.render(MACHINE, "python -m bench --quick", figs, "2026-01-01 00:00 UTC", 90.0, ["busy machine"])
    assert "Test CPU" in text and "onnxruntime 1.0" in text and "python -m bench --quick" in text
    assert "synthetic" in text.lower()
    assert "| Service | throughput | ViT-S/14 shape, synthetic, 224x224 |" in text
    assert "224x224, batch 8 |" in report.render(MACHINE, "cmd", [_fig(batch=8)], "t", 1.0)
    assert "0.925" in text and "pass" in text  # median of 0.9 and 0.95
    assert "Not measured: sinder.repair.bench unavailable" in text
    assert "| json | 2,500 |" in text
    assert "busy machine" in text
    assert "|" not in text.split("## Machine")[0].split("# Benchmarks")[0]


def test_pipes_in_text_do_not_break_the_table():
    text = report.render(MACHINE, "cmd", [_fig(name="a | b")], "t", 1.0)
    assert "a \\| b" in text


def test_write_is_atomic_and_json_roundtrips(tmp_path):
    out = tmp_path / "docs" / "benchmarks.md"
    report.write(out, "hello\n")
    report.write_json(out.with_suffix(".json"), {"figures": [_fig()]})
    assert out.read_text() == "hello\n"
    assert json.loads(out.with_suffix(".json").read_text())["figures"][0]["name"] == "throughput"
    assert sorted(p.name for p in out.parent.iterdir()) == ["benchmarks.json", "benchmarks.md"]


def _gpu_result(**kw):
    base = {
        "started": "2026-01-01T00:00:00Z", "seconds": 100.0, "smoke": False, "onnxruntime": "1.31.1",
        "machine": {"gpus": ["NVIDIA H100 80GB HBM3, 81559 MiB, 580.1"]},
        "provider": {"session_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda_active": True},
        "parity": {"model": "vits14", "resolution": 224, "batch": 4, "fp32_max_abs_tf32_off": {"cls_token": 2e-5},
                   "fp32_max_abs_tf32_on": {"cls_token": 3e-3}, "fp16_patch_cosine_mean": 0.99995,
                   "pass_fp32": True, "pass_fp16": True},
        "throughput": [{"arch": "vits14", "precision": "fp16", "batch": 128, "resolution": 224, "images_per_s": 6000.0,
                        "ms_per_batch_median": 21.3, "target_images_per_s": 5000.0, "pass": True}],
        "service": {"raw_batch": 128, "worker_counts": [1, 8], "pass": True, "rows": [
            {"arch": "vits14", "workers": 8, "path": "v2 binary, raw pixels", "images_per_s": 5000.0,
             "raw_b128_images_per_s": 6000.0, "ratio_vs_raw": 0.833, "mean_batch_size_since_start": 97.5,
             "statuses": {"200": 100}},
            {"arch": "vits14", "workers": 1, "error": "skipped: over the time budget"}]},
        "errors": {"throughput vitb14 fp32 batch 128": "skipped: over the 280 s budget"},
    }
    return {**base, **kw}


def test_gpu_section_names_the_card_and_verdicts():
    text = report.render_gpu_section(_gpu_result())
    assert "NVIDIA H100" in text and "CUDA active: **True**" in text
    assert "| vits14 224x224 | fp16 | 128 | 6,000 |" in text and ">= 5,000: pass" in text
    assert "2.00e-05 with TF32 off" in text and "| vits14 | 8 | v2 binary, raw pixels | 5,000 | 6,000 | 0.83 | 97.5 |" in text
    assert "raw pixels with the better worker count: pass" in text and "skipped: over the time budget" in text
    assert "not measured: throughput vitb14 fp32 batch 128" in text
    assert "CPU smoke" in report.render_gpu_section(_gpu_result(smoke=True))
    assert "Not run yet" in report.render_gpu_section(None)


def test_gpu_section_is_replaced_in_place_and_kept_once():
    first = report.replace_gpu_section("# Benchmarks\n\nbody\n", report.render_gpu_section(None))
    assert first.count(report.GPU_BEGIN) == 1 and "Not run yet" in first
    second = report.replace_gpu_section(first + "\n## After\n", report.render_gpu_section(_gpu_result()))
    assert second.count(report.GPU_BEGIN) == 1 and second.count(report.GPU_END) == 1
    assert "Not run yet" not in second and "NVIDIA H100" in second
    assert second.startswith("# Benchmarks\n\nbody\n") and second.rstrip().endswith("## After")


@pytest.mark.parametrize("target, ratio, expected", [
    (">= 1.1", 1.2, "pass"), (">= 1.1", 1.0, "FAIL"), ("<= 1.3", 1.31, "FAIL"),
    (">= 1.5 with mean cosine >= 0.99", 1.6, "pass"), ("faster than before", 2.0, "—"),
])
def test_targets_given_as_text(target, ratio, expected):
    fig = _fig(target=target, ratio=summary([ratio]))
    assert report.verdict(fig) == expected
    text = report.render(MACHINE, "cmd", [fig], "t", 1.0)
    assert expected in text


def test_target_note_is_shown():
    text = report.render(MACHINE, "cmd", [_fig(target=">= 1.5 with mean cosine >= 0.99", ratio=summary([2.0]))], "t", 1.0)
    assert ">= 1.500 (with mean cosine >= 0.99)" in text


def test_kept_figures_carry_the_run_they_came_from(tmp_path):
    earlier = {"command": "python -m bench", "started": "2026-11-30 10:00 UTC", "figures": [
        {"section": "Offline tool", "name": "repair iteration vs forward+backward", "ratio": summary([1.3])},
        {"section": "Offline tool", "name": "defect directions of every layer, vits14", "note": "weights only"},
        {"section": "Front end", "name": "service CPU per image", "bench_section": "frontend"},
    ]}
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(earlier))
    kept, note = report.kept_figures(path, {"repair", "analysis"})
    assert [f["bench_section"] for f in kept] == ["repair", "analysis"]
    assert all(f["run"]["started"] == "2026-11-30 10:00 UTC" for f in kept)
    assert kept[1]["note"].startswith("weights only") and "earlier run" in kept[1]["note"]
    assert "python -m bench" in note
    # kept again by a later run: the note is not repeated and the original run stays
    path.write_text(json.dumps({"command": "python -m bench --only frontend --keep", "started": "later", "figures": kept}))
    again, _ = report.kept_figures(path, {"repair", "analysis"})
    assert again[0]["run"]["started"] == "2026-11-30 10:00 UTC" and again[0]["note"].count("earlier run") == 1
    assert again[1]["note"] == kept[1]["note"]
    assert report.kept_figures(tmp_path / "missing.json", {"repair"}) == ([], None)
