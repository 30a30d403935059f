"""Data sources on real files written here, including corrupt ones; resumable streams."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cgspn.data import (
    Augment,
    AugmentConfig,
    DataStream,
    RecordDataset,
    WebDatasetSource,
    build_stream,
    default_photos,
    export_photos,
    folder_records,
    holdout_images,
    iter_tar_samples,
    read_pairs,
)


def _jpeg_bytes(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.jpg").write_bytes(_jpeg_bytes(hash((cls, i)) % 1000))
    (root / "cat" / "0.txt").write_text("a sleepy cat")
    good = _jpeg_bytes(7)
    (root / "dog" / "broken.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (root / "dog" / "notanimage.png").write_bytes(b"this is text, not a PNG")
    return root


def test_folder_records_and_corrupt_files_are_skipped_and_counted(image_folder):
    recs = folder_records(image_folder)
    assert len(recs) == 8
    texts = {r.path.split("/")[-1]: r.text for r in recs if "/cat/" in r.path}
    assert texts["0.jpg"] == "a sleepy cat" and texts["1.jpg"] == "a photo of a cat."
    stream = build_stream({"kind": "folder", "path": str(image_folder)}, 24, batch_size=4, seed=1)
    it = iter(stream)
    batches = [next(it) for _ in range(6)]  # three passes over the 8 records
    for b in batches:
        assert b["images"].shape == (4, 3, 24, 24)
        assert b["images"].min() >= 0 and b["images"].max() <= 1
    assert stream.skipped >= 2 * 2  # both bad files, at least twice each
    assert any("broken.jpg" in s for s in stream.bad) and any("notanimage.png" in s for s in stream.bad)


def test_map_stream_resumes_exactly(image_folder):
    cfg = {"kind": "folder", "path": str(image_folder)}
    a = build_stream(cfg, 16, batch_size=3, seed=5)
    it = iter(a)
    first = [next(it)["images"] for _ in range(4)]
    state = a.state_dict()
    rest = [next(it)["images"] for _ in range(3)]
    b = build_stream(cfg, 16, batch_size=3, seed=5)
    b.load_state_dict(state)
    jt = iter(b)
    for x in rest:
        assert torch.equal(x, next(jt)["images"])
    assert not torch.equal(first[0], rest[0])


def test_map_stream_ranks_are_disjoint(image_folder):
    recs = folder_records(image_folder)
    seen = []
    for rank in range(2):
        from cgspn.data import StreamSampler

        s = iter(StreamSampler(len(recs), seed=0, rank=rank, world_size=2))
        seen.append({next(s)[0] for _ in range(len(recs) // 2)})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == len(recs)


def test_pairs_csv_and_jsonl(tmp_path, image_folder):
    imgs = sorted(p for p in image_folder.rglob("*.jpg") if "broken" not in p.name)
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("filepath,caption\n" + "".join(f"{p},caption {i}\n" for i, p in enumerate(imgs)))
    recs, bad = read_pairs(csv_path)
    assert len(recs) == len(imgs) and bad == 0 and recs[2].text == "caption 2"
    jl = tmp_path / "pairs.jsonl"
    lines = [json.dumps({"image": p.name, "text": f"t{i}"}) for i, p in enumerate(imgs[:3])]
    for p in imgs[:3]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    jl.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    recs, bad = read_pairs(jl)
    assert len(recs) == 3 and bad == 1 and recs[0].path == str(tmp_path / imgs[0].name)
    stream = build_stream({"kind": "pairs", "path": str(jl)}, 16, batch_size=2)
    b = next(iter(stream))
    assert b["images"].shape == (2, 3, 16, 16) and all(t.startswith("t") for t in b["texts"])
    with pytest.raises(ValueError, match="image column"):
        read_pairs(jl, image_key="nope")


def _write_shard(path, items):
    with tarfile.open(path, "w") as tf:
        for key, files in items:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    n = 0
    for s in range(3):
        items = []
        for i in range(5):
            items.append((f"{s:03d}{i:03d}", {"jpg": _jpeg_bytes(100 * s + i), "txt": f"caption {s}-{i}".encode()}))
            n += 1
        if s == 1:
            items.append(("001999", {"jpg": b"\xff\xd8\xff garbage", "txt": b"corrupt"}))
        _write_shard(d / f"{s:06d}.tar", items)
    # a truncated shard: the tail is cut mid-member
    raw = (d / "000002.tar").read_bytes()
    (d / "000003.tar").write_bytes(raw[: len(raw) // 2])
    return d, n


def test_tar_sample_grouping(shards):
    d, _ = shards
    samples = list(iter_tar_samples(str(d / "000000.tar")))
    assert len(samples) == 5 and set(samples[0]) >= {"jpg", "txt", "__key__"}
    tail = list(iter_tar_samples(str(d / "000003.tar")))
    assert "__error__" in tail[-1]


def test_webdataset_stream_skips_corrupt_samples_and_shards(shards):
    d, n = shards
    url = str(d / "{000000..000003}.tar")
    aug = Augment(16)
    src = WebDatasetSource(url, aug, seed=0, resampled=False, shuffle_buffer=4)
    stream = DataStream(src, batch_size=4)
    it = iter(stream)
    texts = []
    for _ in range(8):
        b = next(it)
        assert b["images"].shape == (4, 3, 16, 16)
        texts += b["texts"]
    assert "corrupt" not in texts
    assert {f"caption {s}-{i}" for s in range(3) for i in range(5)} <= set(texts)
    assert stream.skipped >= 2  # the garbage jpg and the truncated shard
    assert any("001999" in b for b in stream.bad)


@pytest.mark.parametrize("workers", [0, 2])
def test_webdataset_stream_resumes_exactly(shards, workers):
    d, _ = shards
    url = str(d / "{000000..000003}.tar")
    cfg = {"kind": "wds", "path": url, "num_workers": workers, "shuffle_buffer": 3, "resampled": True}
    a = build_stream(cfg, 16, batch_size=3, seed=2)
    it = iter(a)
    for _ in range(5):
        next(it)
    state = a.state_dict()
    expected = [next(it) for _ in range(4)]
    b = build_stream(cfg, 16, batch_size=3, seed=2)
    b.load_state_dict(state)
    jt = iter(b)
    for e in expected:
        got = next(jt)
        assert got["texts"] == e["texts"]
        assert torch.equal(got["images"], e["images"])


def test_augment_is_a_function_of_the_seed():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    aug = Augment(24, AugmentConfig(grayscale=0.5))
    a = aug(img, np.random.default_rng([1, 2]))
    b = aug(img, np.random.default_rng([1, 2]))
    c = aug(img, np.random.default_rng([1, 3]))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (3, 24, 24)


def test_builtin_photos_and_holdout():
    photos = default_photos()
    assert len(photos) >= 10
    train, held = default_photos("train"), default_photos("holdout")
    assert {p.name for p in train}.isdisjoint({p.name for p in held}) and held
    x, names = holdout_images(28)
    assert x.shape == (len(names), 3, 28, 28) and len(names) == 5 * len(held)


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        folder_records(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        WebDatasetSource(str(tmp_path / "{000000..000001}.tar"), Augment(16))
    with pytest.raises(ValueError, match="unknown data kind"):
        build_stream({"kind": "lmdb"}, 16, 2)
    with pytest.raises(ValueError, match="empty dataset"):
        RecordDataset([], Augment(16))


def test_export_photos_gives_folders_for_training_and_holdout(tmp_path):
    train, held = export_photos(tmp_path / "photos")
    assert len(list(held.iterdir())) == len(default_photos("holdout"))
    assert len(list(train.iterdir())) == len(default_photos("train", backgrounds=False))
    x, names = holdout_images(28, held)
    y, _ = holdout_images(28)
    assert x.shape == y.shape and names[0].endswith("#0")
