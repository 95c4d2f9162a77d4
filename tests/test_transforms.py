"""Tests of gaussdiff.transforms' pixel map and registry (Standardize has its own in test_data.py): every level survives
data -> model -> data exactly, the per-sample log-Jacobian is autograd's, and to_dict / transform_from_dict round-trip
and refuse what they cannot read; t reaches a network in float32 even when the data are bf16."""

import json
import math

import numpy as np
import pytest
import torch

from gaussdiff.errors import InputError
from gaussdiff.param import as_denoiser, time_dtype
from gaussdiff.schedule import make_schedule
from gaussdiff.transforms import TRANSFORMS, Pixels, Standardize, transform_from_dict


@pytest.mark.parametrize("levels, shape", [(256, (3, 4, 5)), (17, (1, 8, 8)), (2, (1, 2, 2))])
def test_every_level_round_trips_exactly(levels, shape):
    p, D = Pixels(shape, levels), math.prod(shape)
    n = math.ceil(levels / D)  # samples enough to hold every level at least once
    x = torch.arange(levels).repeat(math.ceil(n * D / levels))[:n * D].reshape(n, *shape).to(torch.uint8)
    y = p.forward(x)
    assert y.dtype == torch.float32 and y.min() >= -1 and y.max() <= 1
    assert y.min() == -1 and y.max() == 1  # level 0 and the top level are the ends of [-1, 1]
    back = p.quantize(p.inverse(y))
    assert back.dtype == torch.uint8 and torch.equal(back, x)


def test_quantize_rounds_to_the_nearest_level_and_clips():
    p = Pixels((1, 1, 3), 17)
    x = torch.tensor([[[[-3.0, 7.49, 20.0]]]])
    assert p.quantize(x).flatten().tolist() == [0, 7, 16]


def test_log_abs_det_jacobian_is_autograds_per_sample():
    p = Pixels((1, 2, 3), 17)
    x = torch.rand(4, 1, 2, 3, dtype=torch.float64) * 16
    jac = torch.autograd.functional.jacobian(lambda v: p.forward(v.reshape(1, 1, 2, 3)).flatten(), x[0].flatten())
    expected = torch.linalg.slogdet(jac).logabsdet.item()  # 6 log(2 / 16)
    got = p.log_abs_det_jacobian(x)
    assert got.shape == (4,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_pixels_to_dict_round_trips_through_json_and_the_registry():
    p = Pixels((3, 8, 8), 256)
    d = json.loads(json.dumps(p.to_dict()))
    assert d == {"kind": "pixels", "sample_shape": [3, 8, 8], "levels": 256}
    q = transform_from_dict(d)
    assert isinstance(q, Pixels) and q.sample_shape == (3, 8, 8) and q.levels == 256
    assert set(TRANSFORMS) == {"standardize", "pixels", "table"} and TRANSFORMS["standardize"] is Standardize


@pytest.mark.parametrize("d, needle", [
    ({"kind": "fourier"}, "unknown transform kind 'fourier'"),
    ([1, 2], "must be a JSON object"),
    ({"kind": "pixels", "sample_shape": [8, 8], "levels": 256}, "(channels, height, width)"),
    ({"kind": "pixels", "sample_shape": [1, 8, 8], "levels": 1}, "levels"),
    ({"kind": "pixels", "sample_shape": [1, 8, 8]}, "fields kind, sample_shape and levels"),
])
def test_bad_transform_dicts_are_one_line(d, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        transform_from_dict(d)


def test_pixels_refuse_batches_of_another_shape():
    with pytest.raises(InputError, match=r"expected samples of shape \(1, 8, 8\)"):
        Pixels((1, 8, 8), 17).forward(torch.zeros(2, 3, 8, 8))


def test_t_reaches_the_network_in_float32_when_the_data_are_bf16():
    """bf16 has 8 significant bits: t = 999 would become 1000. The denoiser hands the network float32 t."""
    seen = []

    def net(x, t, cond=None):
        seen.append(t)
        return torch.zeros_like(x)

    x = torch.zeros(3, 2, dtype=torch.bfloat16)
    as_denoiser(net, make_schedule("linear", 1000), "v_prediction")(x, torch.tensor([999.0, 998.0, 1.0]))
    assert seen[0].dtype == torch.float32 and seen[0].tolist() == [999.0, 998.0, 1.0]
    assert torch.tensor(999.0).to(torch.bfloat16).item() == 1000.0  # what the old cast did
    assert time_dtype(torch.zeros(1, dtype=torch.float64)) == torch.float64
