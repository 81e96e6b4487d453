#!/usr/bin/env python3
"""Record PyTorch batch-norm results as JSON fixtures for `swift test`.

PyTorch is never a build or test dependency: run this by hand, in a
virtual environment outside the package, and commit the small JSON files.

    python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch
    /tmp/venv-torch/bin/python Scripts/record_pytorch_fixtures.py

Each fixture holds the inputs (x, dy, weight, bias, running statistics
before), what the module computed (y, dx, dweight, dbias, running statistics
after every call) and the settings. Data come from a seeded generator.

Channels-last fixtures ("layout": "channels-last") run the module on tensors
in PyTorch's channels_last (rank 4) or channels_last_3d (rank 5) memory
format, or, for rank 3, on the NCL view of an NLC tensor; their "shape" is
[N, spatial..., C] and every tensor is listed in that memory order.

Epilogue fixtures ("epilogue": "relu" or "add-relu") record
y = relu(batch_norm(x)) or relu(batch_norm(x) + z), with z per call, and the
gradients of both (dz included) through autograd.

Half-precision fixtures (dtype "bfloat16" or "float16") feed tensors in that
format to a float32 module (PyTorch's mixed convention: float parameters and
running statistics); "shifted" ones draw x near 100 ± 1 instead.

With --new-only, fixtures whose file exists are recomputed (so that the
generator reaches the new cases in the same state) but not rewritten.
"""
import argparse
import json
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "BatchNormKernelsTests" / "Fixtures"

CASES = [
    # name, shape (NCHW), dtype, training, affine, momentum, eps, calls[, "channels-last"]
    ("bn2d_training_affine_float", [4, 3, 5, 5], torch.float32, True, True, 0.1, 1e-5, 1),
    ("bn2d_training_no_affine_float", [2, 4, 3, 3], torch.float32, True, False, 0.1, 1e-5, 1),
    ("bn2d_inference_float", [3, 2, 4, 4], torch.float32, False, True, 0.1, 1e-5, 1),
    ("bn1d_rank2_training_float", [16, 5], torch.float32, True, True, 0.3, 1e-3, 1),
    ("bn3d_rank5_training_double", [2, 3, 2, 3, 4], torch.float64, True, True, 0.1, 1e-5, 1),
    ("bn1d_rank3_cumulative_double", [4, 3, 7], torch.float64, True, True, None, 1e-5, 3),
    ("bn1d_rank5_inference_double", [2, 2, 3, 2, 2], torch.float64, False, False, 0.1, 1e-5, 1),
    ("bn2d_channels_last_training_float", [4, 3, 5, 5], torch.float32, True, True, 0.1, 1e-5, 1, "channels-last"),
    ("bn2d_channels_last_lanes_training_float", [2, 70, 9, 9], torch.float32, True, True, 0.1, 1e-5, 2,
     "channels-last"),
    ("bn2d_channels_last_inference_float", [3, 20, 7, 7], torch.float32, False, True, 0.1, 1e-5, 1, "channels-last"),
    ("bn3d_channels_last_training_double", [2, 3, 2, 3, 4], torch.float64, True, True, 0.1, 1e-5, 1,
     "channels-last"),
    ("bn1d_channels_last_rank3_training_float", [4, 3, 17], torch.float32, True, False, 0.2, 1e-4, 1,
     "channels-last"),
    ("bn2d_relu_training_float", [4, 5, 6, 6], torch.float32, True, True, 0.1, 1e-5, 1, "relu"),
    ("bn2d_add_relu_training_float", [3, 4, 7, 7], torch.float32, True, True, 0.1, 1e-5, 2, "add-relu"),
    ("bn2d_channels_last_add_relu_training_double", [2, 20, 5, 5], torch.float64, True, True, 0.1, 1e-5, 1,
     "channels-last", "add-relu"),
    ("bn2d_add_relu_inference_float", [3, 6, 4, 4], torch.float32, False, True, 0.1, 1e-5, 1, "add-relu"),
    ("bn2d_training_bfloat16", [4, 6, 7, 7], torch.bfloat16, True, True, 0.1, 1e-5, 2),
    ("bn2d_training_float16", [4, 6, 7, 7], torch.float16, True, True, 0.1, 1e-5, 2),
    ("bn2d_shifted_training_float16", [4, 3, 8, 8], torch.float16, True, True, 0.1, 1e-5, 1, "shifted"),
    ("bn2d_channels_last_training_bfloat16", [2, 20, 5, 5], torch.bfloat16, True, True, 0.1, 1e-5, 1,
     "channels-last"),
    ("bn2d_inference_float16", [3, 5, 4, 4], torch.float16, False, True, 0.1, 1e-5, 1),
]

HALF = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def module_for(shape, affine, momentum, eps, dtype):
    rank = len(shape)
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[rank]
    return cls(shape[1], eps=eps, momentum=momentum, affine=affine, dtype=dtype)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def to_layout(t, channels_last):
    """t (NC...) in the memory format the fixture asks for; values unchanged."""
    if not channels_last:
        return t
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.contiguous(memory_format=torch.channels_last_3d)
    return t.transpose(1, 2).contiguous().transpose(1, 2)    # an NCL view of NLC memory


def flat_in_layout(t, channels_last):
    """t's values in the layout's memory order: N, spatial..., C for channels last."""
    if not channels_last or t.dim() == 2:
        return flat(t)
    return flat(t.movedim(1, -1))


def record(name, shape, dtype, training, affine, momentum, eps, calls, layout, epilogue, generator, shifted=False):
    channels = shape[1]
    channels_last = layout == "channels-last"
    # the half formats: tensors in the format, the module (parameters, statistics) in float32
    tensor_dtype, dtype = dtype, torch.float32 if dtype in HALF else dtype
    bn = module_for(shape, affine, momentum, eps, dtype)
    with torch.no_grad():
        if affine:
            bn.weight.copy_(torch.rand(channels, generator=generator, dtype=dtype) + 0.5)
            bn.bias.copy_(torch.rand(channels, generator=generator, dtype=dtype) - 0.5)
        bn.running_mean.copy_(torch.rand(channels, generator=generator, dtype=dtype) - 0.5)
        bn.running_var.copy_(torch.rand(channels, generator=generator, dtype=dtype) + 0.5)
    bn.train(training)
    fixture = {
        "name": name, "shape": [shape[0]] + shape[2:] + [shape[1]] if channels_last else shape,
        "layout": layout, "epilogue": epilogue,
        "dtype": HALF.get(tensor_dtype) or ("float" if dtype == torch.float32 else "double"),
        "training": training, "affine": affine, "momentum": momentum, "epsilon": eps,
        "weight": flat(bn.weight) if affine else None, "bias": flat(bn.bias) if affine else None,
        "running_mean_before": flat(bn.running_mean), "running_var_before": flat(bn.running_var),
        "calls": [],
    }
    for _ in range(calls):
        x = torch.randn(shape, generator=generator, dtype=dtype) * 2 + 0.7
        if shifted:
            x = x / 2 + 99.3
        x = to_layout(x.to(tensor_dtype), channels_last)
        x.requires_grad_(True)
        dy = to_layout(torch.randn(shape, generator=generator, dtype=dtype).to(tensor_dtype), channels_last)
        z = None
        if epilogue == "add-relu":
            z = to_layout(torch.randn(shape, generator=generator, dtype=dtype), channels_last).requires_grad_(True)
        if affine:
            bn.weight.grad = None
            bn.bias.grad = None
        y = bn(x)
        if z is not None:
            y = y + z
        if epilogue in ("relu", "add-relu"):
            y = torch.relu(y)
        y.backward(dy)
        extra = {}
        if z is not None:
            extra = {"z": flat_in_layout(z, channels_last), "dz": flat_in_layout(z.grad, channels_last)}
        fixture["calls"].append({**extra,
            "x": flat_in_layout(x, channels_last), "dy": flat_in_layout(dy, channels_last),
            "y": flat_in_layout(y, channels_last), "dx": flat_in_layout(x.grad, channels_last),
            "dweight": flat(bn.weight.grad) if affine else None,
            "dbias": flat(bn.bias.grad) if affine else None,
            "running_mean_after": flat(bn.running_mean), "running_var_after": flat(bn.running_var),
            "batches_tracked_after": int(bn.num_batches_tracked),
        })
    return fixture


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-only", action="store_true", help="write only fixtures whose file is missing")
    arguments = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(20261121)
    for case in CASES:
        name, *settings = case
        shifted = settings[-1] == "shifted"
        if shifted:
            settings.pop()
        epilogue = settings.pop() if settings[-1] in ("relu", "add-relu") else None
        layout = settings.pop() if settings[-1] == "channels-last" else "channels-first"
        fixture = record(name, *settings, layout, epilogue, generator, shifted)
        fixture["torch_version"] = torch.__version__.split("+")[0]
        path = OUT / f"{name}.json"
        if arguments.new_only and path.exists():
            continue
        path.write_text(json.dumps(fixture, indent=None, separators=(",", ":")) + "\n")
        print(f"wrote {path.relative_to(OUT.parent.parent.parent)}")


if __name__ == "__main__":
    main()
