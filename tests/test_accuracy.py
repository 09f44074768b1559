"""The accuracy metrics and the input generators."""

import math

import pytest
import torch

from comfy_sage.accuracy import InputKind, errors, make_inputs, rope_3d, video_grid


def test_metrics_known_values():
    ref = torch.tensor([1.0, -2.0, 3.0, 4.0])
    out = ref + torch.tensor([0.1, 0.0, -0.1, 0.2])
    e = errors(out, ref)
    assert e.rel_l1 == pytest.approx(0.4 / 10.0)
    assert e.max_abs == pytest.approx(0.2)
    assert e.rmse == pytest.approx(math.sqrt((0.01 + 0.01 + 0.04) / 4))
    assert e.cos == pytest.approx(float(out @ ref / (out.norm() * ref.norm())))
    assert errors(ref, ref).cos == pytest.approx(1.0) and errors(ref, ref).rel_l1 == 0.0


def test_nan_is_never_hidden():
    ref = torch.ones(4)
    e = errors(torch.tensor([1.0, float("nan"), 1.0, 1.0]), ref)
    assert all(math.isnan(x) for x in e.as_dict().values())


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        errors(torch.ones(3), torch.ones(4))


def test_generators_have_the_advertised_statistics():
    q, k, v = make_inputs(InputKind.K_BIAS, 1, 4, 256, 64)
    # A per-channel bias shared by all tokens: the token mean dominates the spread.
    assert k.mean(2).abs().mean() > 3 * k.std(2).mean()
    q, _, _ = make_inputs(InputKind.Q_OUTLIERS, 1, 4, 256, 64)
    channel_amax = q.abs().amax(dim=(0, 1, 2))
    assert channel_amax.max() > 5 * channel_amax.median()
    q, _, _ = make_inputs(InputKind.TOKEN_SCALE, 1, 4, 256, 64)
    token_norm = q.norm(dim=-1)
    assert token_norm.max() / token_norm.min() > 20
    q, k, v = make_inputs("gaussian", 2, 3, 100, 64, kv_tokens=77, kv_heads=1, dtype=torch.float16)
    assert q.shape == (2, 3, 100, 64) and k.shape == v.shape == (2, 1, 77, 64) and q.dtype == torch.float16


def test_rope_is_a_rotation():
    x = torch.randn(1, 2, 60, 64)
    y = rope_3d(x, video_grid(60))
    assert torch.allclose(x.norm(dim=-1), y.norm(dim=-1), rtol=1e-5)
    assert not torch.allclose(x[:, :, 1:], y[:, :, 1:])
    assert torch.allclose(x[:, :, 0], y[:, :, 0])  # position (0, 0, 0) is not rotated


@pytest.mark.parametrize("n", [1, 64, 1560, 32760, 75600])
def test_video_grid_covers_the_tokens(n):
    t, h, w = video_grid(n)
    assert t * h * w >= n
    assert video_grid(32760) == (21, 30, 52)  # Wan 2.1 480p x 81 frames
