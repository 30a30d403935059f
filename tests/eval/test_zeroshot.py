import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from cgspn.eval.zeroshot import IMAGENET_TEMPLATES, build_zero_shot_classifier, has_text_tower, zero_shot_predict  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=16, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval()
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    return model, tok


def test_build_zero_shot_classifier(tiny_clip):
    model, tok = tiny_clip
    classes = ["cat", "dog", "car"]
    w = build_zero_shot_classifier(model, tok, classes, IMAGENET_TEMPLATES[:4], batch_size=5)
    assert w.shape == (16, 3)
    assert torch.allclose(w.norm(dim=0), torch.ones(3), atol=1e-5)
    # one template, by hand
    w1 = build_zero_shot_classifier(model, tok, classes, ["a photo of a {}."])
    with torch.no_grad():
        e = torch.nn.functional.normalize(model.encode_text(tok([f"a photo of a {c}." for c in classes])), dim=-1)
    torch.testing.assert_close(w1, e.T, atol=1e-5, rtol=1e-5)
    # a callable template works too
    w2 = build_zero_shot_classifier(model, tok, classes, [lambda c: f"a photo of a {c}."])
    torch.testing.assert_close(w1, w2)
    logits = zero_shot_predict(model, w, torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3) and logits.abs().max() <= 100.0 + 1e-3


def test_zero_shot_needs_a_text_tower(tiny_encoder):
    assert not has_text_tower(tiny_encoder.model)
    with pytest.raises(ValueError, match="no text tower"):
        build_zero_shot_classifier(tiny_encoder.model, lambda t: t, ["a"])


def test_zeroshot_cli_on_an_image_folder(tmp_path, tiny_clip):
    import json

    import numpy as np
    from PIL import Image

    from cgspn.cli import main

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        d = tmp_path / "ds" / "val" / c
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "zs"
    # a real (if small) registered open_clip model, random weights: exercises loading, prompts, scoring
    rc = main(["eval", "zeroshot", "--model", "open_clip:RN50", "--random-init", "--device", "cpu", "--dataset", str(tmp_path / "ds"),
               "--templates", "simple", "--out", str(out)])
    assert rc == 0
    row = json.loads((out / "zeroshot.json").read_text())["rows"][0]
    assert row["classes"] == 2 and 0.0 <= row["top1"] <= 1.0
    assert main(["eval", "zeroshot", "--model", "vit_small_patch14_dinov2", "--dataset", str(tmp_path / "ds")]) == 2
