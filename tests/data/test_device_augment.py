"""DeviceAugmentStream (on the CPU device here): shapes, determinism, exact resume, disjoint ranks,
corrupt files, agreement with the PIL path, and build_stream's choice of data path."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cgspn.data import (
    Augment,
    AugmentConfig,
    DataStream,
    DeviceAugmentStream,
    Record,
    RecordDataset,
    build_stream,
    default_photos,
    eval_transform,
    open_rgb,
)
from cgspn.data.device_augment import hue_matrix

NO_AUG = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, jitter=0.0, jitter_p=0.0, hue=0.0,
                       grayscale=0.0)


@pytest.fixture(scope="module")
def photos():
    return [Record(str(p.path), p.caption) for p in default_photos("train", backgrounds=False)]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _batches(stream, k):
    it = iter(stream)
    return [next(it) for _ in range(k)]


def test_batches_have_the_stream_interface(photos):
    s = DeviceAugmentStream(photos, 32, AugmentConfig(), 6, seed=1, device="cpu")
    assert s.streaming is False and s.num_images == len(photos)
    b = next(iter(s))
    assert set(b) == {"images", "texts", "skipped", "bad"}
    x = b["images"]
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    assert len(b["texts"]) == 6 and all(isinstance(t, str) for t in b["texts"])
    assert b["skipped"] == 0 and b["bad"] == [] and s.batches == 1
    assert set(s.state_dict()) == set(DataStream(RecordDataset(photos, Augment(32)), 6).state_dict())
    assert "device augmentation on cpu" in s.describe()
    # pyramid: halvings until the longer side is at most 2 S
    for p in s.pyramids:
        assert p[0].dtype == torch.uint8 and max(p[-1].shape[1:]) <= 64
        for a, b_ in zip(p, p[1:]):
            assert b_.shape[1] == a.shape[1] // 2 and b_.shape[2] == a.shape[2] // 2


def test_same_seed_same_batches_other_seed_differs(photos):
    a = _batches(DeviceAugmentStream(photos, 24, AugmentConfig(), 5, seed=3), 3)
    b = _batches(DeviceAugmentStream(photos, 24, AugmentConfig(), 5, seed=3), 3)
    c = _batches(DeviceAugmentStream(photos, 24, AugmentConfig(), 5, seed=4), 1)
    for x, y in zip(a, b):
        assert torch.equal(x["images"], y["images"]) and x["texts"] == y["texts"]
    assert not torch.equal(a[0]["images"], c[0]["images"])


def test_resume_from_state_and_from_batches(photos):
    cfg = AugmentConfig()
    a = DeviceAugmentStream(photos, 24, cfg, 4, seed=5)
    it = iter(a)
    for _ in range(3):
        next(it)
    state = a.state_dict()
    rest = [next(it) for _ in range(2)]
    b = DeviceAugmentStream(photos, 24, cfg, 4, seed=5)
    b.load_state_dict(state)
    c = DeviceAugmentStream(photos, 24, cfg, 4, seed=5)
    c.batches = 3  # what the trainer does when the world size changed
    for s in (b, c):
        jt = iter(s)
        for x in rest:
            y = next(jt)
            assert torch.equal(x["images"], y["images"]) and x["texts"] == y["texts"]
    assert b.batches == 5


def test_ranks_take_disjoint_positions_of_one_global_order(photos, monkeypatch):
    seen = {}
    orig = DeviceAugmentStream._params

    def spy(self, index, position):
        seen.setdefault(self.rank, []).append(position)
        return orig(self, index, position)

    monkeypatch.setattr(DeviceAugmentStream, "_params", spy)
    for r in range(3):
        _batches(DeviceAugmentStream(photos, 16, AugmentConfig(), 4, seed=2, rank=r, world_size=3), 2)
    assert [seen[r] for r in range(3)] == [list(range(r, 24, 3)) for r in range(3)]
    # the same global order as the PIL stream: same texts per rank
    for r in range(2):
        dev = next(iter(DeviceAugmentStream(photos, 16, AugmentConfig(), 4, seed=2, rank=r, world_size=2)))
        pil = next(iter(DataStream(RecordDataset(photos, Augment(16), seed=2), 4, seed=2, rank=r, world_size=2)))
        assert dev["texts"] == pil["texts"]


def test_corrupt_file_is_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    recs = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        p.write_bytes(_png(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)))
        recs.append(Record(str(p), f"img {i}"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(_png(np.zeros((20, 20, 3), np.uint8))[:40])  # truncated
    recs.insert(1, Record(str(bad), "broken"))
    s = DeviceAugmentStream(recs, 16, AugmentConfig(), 4, seed=0)
    assert s.num_images == 3
    batches = _batches(s, 3)  # three passes over the 4 records: the broken one drawn 3 times
    assert sum(b["skipped"] for b in batches) == 3 == s.skipped
    assert all("broken" not in t for b in batches for t in b["texts"])
    assert len(s.bad) == 3 and all(m.startswith(str(bad) + ": ") for m in s.bad)
    # same replacement as RecordDataset: same texts and skip counts as the PIL stream
    pil = _batches(DataStream(RecordDataset(recs, Augment(16), seed=0), 4, seed=0), 3)
    assert [b["texts"] for b in batches] == [b["texts"] for b in pil]
    assert [b["skipped"] for b in batches] == [b["skipped"] for b in pil]
    with pytest.raises(ValueError, match="none of the 1 images is readable"):
        DeviceAugmentStream([Record(str(bad), None)], 16, AugmentConfig(), 2)


def test_full_crop_matches_pil_central_crop(photos):
    # scale=ratio=1 on a non-square photo takes the fallback: the central square, as eval_transform
    for rec in photos:
        img = next(iter(DeviceAugmentStream([rec], 48, NO_AUG, 1, seed=0)))["images"][0]
        ref = eval_transform(open_rgb(rec.path), 48)
        assert float((img - ref).abs().mean()) < 0.03, rec.path


def test_agrees_with_the_pil_augmentation(photos):
    # same crop boxes and flips as Augment (same seeds and draw order); only the resampling differs
    cfg = AugmentConfig(jitter=0.0, grayscale=0.0)
    dev = next(iter(DeviceAugmentStream(photos, 32, cfg, 16, seed=7)))["images"]
    pil = next(iter(DataStream(RecordDataset(photos, Augment(32, cfg), seed=7, cache=True), 16, seed=7)))["images"]
    diff = (dev - pil).abs().mean((1, 2, 3))
    assert float(diff.mean()) < 0.025 and float(diff.max()) < 0.06
    # with brightness/contrast/saturation jitter in random order (no hue: YIQ vs PIL's HSV differ)
    cfg = AugmentConfig(hue=0.0, jitter_p=1.0, grayscale=0.0)
    dev = next(iter(DeviceAugmentStream(photos, 32, cfg, 16, seed=7)))["images"]
    pil = next(iter(DataStream(RecordDataset(photos, Augment(32, cfg), seed=7, cache=True), 16, seed=7)))["images"]
    diff = (dev - pil).abs().mean((1, 2, 3))
    assert float(diff.mean()) < 0.03 and float(diff.max()) < 0.08


def test_constant_colour_and_greyscale(tmp_path):
    p = tmp_path / "c.png"
    colour = np.array([200, 40, 90], np.uint8)
    p.write_bytes(_png(np.broadcast_to(colour, (50, 70, 3)).copy()))
    cfg = AugmentConfig(jitter=0.0, grayscale=0.0)  # random crops and flips only
    x = next(iter(DeviceAugmentStream([Record(str(p), None)], 16, cfg, 4)))["images"]
    assert torch.allclose(x, torch.tensor(colour / 255.0, dtype=torch.float32).view(1, 3, 1, 1).expand_as(x),
                          atol=1e-5)
    photo = str(default_photos("train", backgrounds=False)[0].path)
    g = next(iter(DeviceAugmentStream([Record(photo, None)], 16, AugmentConfig(grayscale=1.0), 4)))["images"]
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2]) and float(g.std()) > 0.01


def test_hue_rotation_keeps_luma_and_follows_pil_direction():
    m = hue_matrix(np.array([0.0, 1 / 6, 0.5]))
    assert np.allclose(m[0], np.eye(3))
    luma = np.array([0.299, 0.587, 0.114])
    assert np.allclose(luma @ m, luma)  # luma unchanged for every shift
    red = m[1] @ np.array([1.0, 0.0, 0.0])
    assert red[1] > red[2]  # red shifted by +1/6 moves towards yellow (green up), not magenta


def test_build_stream_picks_the_data_path(tmp_path, monkeypatch):
    root = tmp_path / "imgs" / "cat"
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        (root / f"{i}.png").write_bytes(_png(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)))
    cfg = {"kind": "folder", "path": str(tmp_path / "imgs"), "cache_images": 256}
    assert isinstance(build_stream({**cfg, "device_augment": True}, 16, 2, device="cpu"), DeviceAugmentStream)
    assert isinstance(build_stream({**cfg, "device_augment": "true"}, 16, 2), DeviceAugmentStream)
    assert isinstance(build_stream({**cfg, "device_augment": False}, 16, 2, device="cpu"), DataStream)
    assert isinstance(build_stream({**cfg, "device_augment": "auto"}, 16, 2, device="cpu"), DataStream)
    assert isinstance(build_stream(cfg, 16, 2), DataStream)
    assert "loader with 0 workers" in build_stream(cfg, 16, 2).describe()
    with pytest.raises(ValueError, match="map-style"):
        build_stream({"kind": "wds", "path": "x/{0..1}.tar", "device_augment": True}, 16, 2)
    with pytest.raises(ValueError, match="auto, true or false"):
        build_stream({**cfg, "device_augment": "maybe"}, 16, 2)
    # auto on CUDA: the device stream for small map-style sets (the class is faked: no GPU needed)
    import cgspn.data as data_mod

    class Fake:
        def __init__(self, records, size, aug, batch_size, *, seed, rank, world_size, device):
            self.device = device

    monkeypatch.setattr(data_mod, "DeviceAugmentStream", Fake)
    assert isinstance(build_stream(cfg, 16, 2, device=torch.device("cuda", 1)), Fake)
    assert isinstance(build_stream({**cfg, "cache_images": 2}, 16, 2, device="cuda"), DataStream)
    assert isinstance(build_stream({**cfg, "device_augment": False}, 16, 2, device="cuda"), DataStream)
