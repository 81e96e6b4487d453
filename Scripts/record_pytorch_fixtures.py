#!/usr/bin/env python3
"""Record PyTorch batch-norm results as JSON fixtures for `swift test`.

PyTorch is never a build or test dependency: run this by hand, in a
virtual environment outside the package, and commit the small JSON files.

    python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch
    /tmp/venv-torch/bin/python Scripts/record_pytorch_fixtures.py

Each fixture holds the inputs (x, dy, weight, bias, running statistics
before), what the module computed (y, dx, dweight, dbias, running statistics
after every call) and the settings. Data come from a seeded generator.
"""
import json
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "BatchNormKernelsTests" / "Fixtures"

CASES = [
    # name, shape, dtype, training, affine, momentum, eps, calls
    ("bn2d_training_affine_float", [4, 3, 5, 5], torch.float32, True, True, 0.1, 1e-5, 1),
    ("bn2d_training_no_affine_float", [2, 4, 3, 3], torch.float32, True, False, 0.1, 1e-5, 1),
    ("bn2d_inference_float", [3, 2, 4, 4], torch.float32, False, True, 0.1, 1e-5, 1),
    ("bn1d_rank2_training_float", [16, 5], torch.float32, True, True, 0.3, 1e-3, 1),
    ("bn3d_rank5_training_double", [2, 3, 2, 3, 4], torch.float64, True, True, 0.1, 1e-5, 1),
    ("bn1d_rank3_cumulative_double", [4, 3, 7], torch.float64, True, True, None, 1e-5, 3),
    ("bn1d_rank5_inference_double", [2, 2, 3, 2, 2], torch.float64, False, False, 0.1, 1e-5, 1),
]


def module_for(shape, affine, momentum, eps, dtype):
    rank = len(shape)
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[rank]
    return cls(shape[1], eps=eps, momentum=momentum, affine=affine, dtype=dtype)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def record(name, shape, dtype, training, affine, momentum, eps, calls, generator):
    channels = shape[1]
    bn = module_for(shape, affine, momentum, eps, dtype)
    with torch.no_grad():
        if affine:
            bn.weight.copy_(torch.rand(channels, generator=generator, dtype=dtype) + 0.5)
            bn.bias.copy_(torch.rand(channels, generator=generator, dtype=dtype) - 0.5)
        bn.running_mean.copy_(torch.rand(channels, generator=generator, dtype=dtype) - 0.5)
        bn.running_var.copy_(torch.rand(channels, generator=generator, dtype=dtype) + 0.5)
    bn.train(training)
    fixture = {
        "name": name, "shape": shape, "dtype": "float" if dtype == torch.float32 else "double",
        "training": training, "affine": affine, "momentum": momentum, "epsilon": eps,
        "weight": flat(bn.weight) if affine else None, "bias": flat(bn.bias) if affine else None,
        "running_mean_before": flat(bn.running_mean), "running_var_before": flat(bn.running_var),
        "calls": [],
    }
    for _ in range(calls):
        x = (torch.randn(shape, generator=generator, dtype=dtype) * 2 + 0.7).requires_grad_(True)
        dy = torch.randn(shape, generator=generator, dtype=dtype)
        if affine:
            bn.weight.grad = None
            bn.bias.grad = None
        y = bn(x)
        y.backward(dy)
        fixture["calls"].append({
            "x": flat(x), "dy": flat(dy), "y": flat(y), "dx": flat(x.grad),
            "dweight": flat(bn.weight.grad) if affine else None,
            "dbias": flat(bn.bias.grad) if affine else None,
            "running_mean_after": flat(bn.running_mean), "running_var_after": flat(bn.running_var),
            "batches_tracked_after": int(bn.num_batches_tracked),
        })
    return fixture


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(20261121)
    for case in CASES:
        fixture = record(*case, generator)
        fixture["torch_version"] = torch.__version__.split("+")[0]
        path = OUT / f"{case[0]}.json"
        path.write_text(json.dumps(fixture, indent=None, separators=(",", ":")) + "\n")
        print(f"wrote {path.relative_to(OUT.parent.parent.parent)}")


if __name__ == "__main__":
    main()
