import math

import pytest
import torch

from cgspn.distill.losses import (
    channel_kl,
    clip_distill_loss,
    clip_loss,
    cosine_smooth_l1,
    feature_mse,
    siglip_loss,
    tap_loss,
)
from cgspn.distill.optim import lr_factor


def test_feature_mse_normalised_by_target_mean_square():
    t = torch.randn(2, 5, 8) * 10
    p = t + torch.randn_like(t)
    raw = feature_mse(p, t, normalize=False)
    norm = feature_mse(p, t, normalize=True)
    assert torch.allclose(norm, raw / t.pow(2).mean(), rtol=1e-4)
    assert feature_mse(t, t).item() == 0.0


def test_channel_kl_is_zero_for_equal_inputs_and_positive_otherwise():
    a = torch.randn(2, 7, 16)
    assert abs(channel_kl(a, a).item()) < 1e-6
    b = torch.randn(2, 7, 16)
    assert channel_kl(a, b, 2.0).item() > 0
    # direction: KL(softmax(student) || softmax(target))
    p, q = a.softmax(-1), b.softmax(-1)
    ref = (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(channel_kl(a, b, 1.0), ref, atol=1e-5)


def test_tap_loss_combines_mse_and_kl():
    a, b = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    assert torch.allclose(tap_loss(a, b, 0.5, 2.0), feature_mse(a, b) + 0.5 * channel_kl(a, b, 2.0))


def test_cosine_smooth_l1_zero_at_equality():
    a = torch.randn(4, 9)
    assert cosine_smooth_l1(a, a).abs().item() < 1e-6
    assert cosine_smooth_l1(a, -a).item() > 1.5


def test_image_text_losses_prefer_matched_pairs():
    x = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    y = x.clone()
    shuffled = y[torch.roll(torch.arange(6), 1)]
    assert clip_loss(x, y, 50.0) < clip_loss(x, shuffled, 50.0)
    assert siglip_loss(x, y, 10.0, -5.0) < siglip_loss(x, shuffled, 10.0, -5.0)
    assert clip_distill_loss(x, x, y, 10.0) <= clip_distill_loss(x, shuffled, y, 10.0)


@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_schedule_warmup_then_cosine(warmup):
    total, floor = 20, 0.1
    f = [lr_factor(s, total, warmup, floor) for s in range(total)]
    if warmup:
        assert f[0] == pytest.approx(1 / warmup) and f[warmup - 1] == pytest.approx(1.0)
    assert f[warmup] == pytest.approx(1.0)
    assert f[-1] == pytest.approx(floor)
    assert all(a >= b - 1e-12 for a, b in zip(f[warmup:], f[warmup + 1:]))
    assert not any(math.isnan(v) for v in f)
