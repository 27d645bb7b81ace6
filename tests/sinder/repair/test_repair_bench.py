import torch

from sinder.repair.bench import iteration_vs_forward_backward

from toy_defect import DEFECT_BLOCK, GRID, make_toy_model


def test_benchmark_reports_both_baselines_without_touching_the_model():
    # Shape of the result only: speed targets belong to the benchmark command, not to unit tests.
    model = make_toy_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    image = torch.randn(3, 14 * GRID, 14 * GRID, generator=torch.Generator().manual_seed(0))
    out = iteration_vs_forward_backward(model, 14 * GRID, image=image, repeats=1, warmup=0)
    assert out["loss_layer"] == DEFECT_BLOCK and out["window_blocks"] == DEFECT_BLOCK + 1
    for key in ("repair_iteration_s", "forward_backward_full_s", "forward_backward_same_blocks_s",
                "ratio", "ratio_same_blocks"):
        assert out[key] > 0
    assert out["tokens"] == GRID * GRID
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
