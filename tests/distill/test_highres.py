import pytest
import torch

from cgspn.distill.highres import UpsampledTeacher, curriculum, upsample_tokens


def test_upsample_tokens_keeps_prefix_and_resizes_grid():
    x = torch.randn(2, 1 + 3 * 4, 8)
    assert upsample_tokens(x, (3, 4), (3, 4), 1) is x
    y = upsample_tokens(x, (3, 4), (6, 8), 1)
    assert y.shape == (2, 1 + 48, 8)
    assert torch.equal(y[:, 0], x[:, 0])
    const = torch.ones(1, 9, 4)
    torch.testing.assert_close(upsample_tokens(const, (3, 3), (7, 5), 0), torch.ones(1, 35, 4))


def test_upsampled_teacher_matches_student_grid(tiny_teacher):
    t = UpsampledTeacher(tiny_teacher, 32)
    x = torch.randn(1, 3, 64, 48)
    taps = t(x, ("pp", "pb"))
    assert taps.grid == (8, 6) and taps.final.shape == (1, 1 + 48, 64)
    assert all(v.shape == (1, 49, 64) for v in taps.mixer_outputs + taps.block_outputs)


def test_curriculum_validates_resolutions():
    assert curriculum(378, [518, 756, 1036], 14) == [(378, 518), (518, 756), (756, 1036)]
    with pytest.raises(ValueError, match="multiple of the patch"):
        curriculum(378, [500], 14)
    with pytest.raises(ValueError, match="must increase"):
        curriculum(518, [378], 14)
