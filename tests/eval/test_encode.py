import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from cgspn.cli import main

TINY = json.dumps({"depth": 1, "embed_dim": 32, "num_heads": 2})


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(p)
    return p


def test_encode_writes_safetensors_and_png(tmp_path, photo, capsys):
    out, png = tmp_path / "f.safetensors", tmp_path / "pca.png"
    rc = main(["encode", str(photo), "--size", "84", "--model", "vit_small_patch14_dinov2", "--model-args", TINY,
               "--random-init", "--device", "cpu", "--out", str(out), "--show", str(png), "--repeat", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "RANDOM" in text and "one pass" in text and "peak" in text
    with safe_open(str(out), framework="pt") as f:
        assert f.get_tensor("patch_features").shape == (1, 32, 4, 6)  # 56x84 px at patch 14
        assert f.get_tensor("pooled").shape == (1, 32)
        meta = f.metadata()
    assert json.loads(meta["input_hw"]) == [56, 84] and meta["model"] == "vit_small_patch14_dinov2"
    im = Image.open(png)
    assert im.width > im.height > 0


def test_encode_cgspn_model_any_size(tmp_path, photo):
    out = tmp_path / "g.safetensors"
    args = json.dumps({"depth": 1, "embed_dim": 32, "num_heads": 2})
    rc = main(["encode", str(photo), "--size", "70", "--side", "short", "--model", "cgspn_small_patch14_dinov2",
               "--model-args", args, "--random-init", "--device", "cpu", "--out", str(out), "--half"])
    assert rc == 0
    with safe_open(str(out), framework="pt") as f:
        t = f.get_tensor("patch_features")
    assert t.shape == (1, 32, 5, 8) and str(t.dtype) == "torch.float16"


def test_encode_errors_are_one_line(tmp_path, photo, capsys):
    assert main(["encode", str(tmp_path / "nope.jpg")]) == 2
    assert "image not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert main(["encode", str(bad), "--random-init"]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["encode", str(photo), "--model", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    # the default model loads its shipped weights: model args that change its shape are a clear
    # one-line error naming the mismatch, never a silent random init
    assert main(["encode", str(photo), "--model-args", TINY, "--device", "cpu"]) == 2
    assert "do not fit this model" in capsys.readouterr().err
    assert main(["encode", str(photo), "--model", "vit_small_patch14_dinov2", "--checkpoint", str(tmp_path / "w.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["encode", str(photo), "--size", "0", "--random-init", "--model", "vit_small_patch14_dinov2", "--model-args", TINY]) == 2
    assert "size must be positive" in capsys.readouterr().err


def test_checkpoint_round_trip_and_mismatch(tmp_path, photo):
    import timm
    from safetensors.torch import save_file

    from cgspn.eval.backbone import load_encoder

    m = timm.create_model("vit_small_patch14_dinov2", depth=1, embed_dim=32, num_heads=2, num_classes=0, dynamic_img_size=True)
    save_file({"module." + k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    enc = load_encoder("vit_small_patch14_dinov2", tmp_path / "w.safetensors", device="cpu",
                       model_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2})
    assert enc.model.cls_token.data_ptr() != m.cls_token.data_ptr()
    assert (enc.model.cls_token == m.cls_token).all()
    with pytest.raises(ValueError, match="does not fit"):
        load_encoder("vit_small_patch14_dinov2", tmp_path / "w.safetensors", device="cpu", model_kwargs={"depth": 1, "embed_dim": 64, "num_heads": 2})
