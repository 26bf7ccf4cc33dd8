"""hlvm.data: ImageFolder with MAE's transforms on real photos; bad files reported by path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from _imagetree import build_tree, imagenet_jpegs
from PIL import Image

from hlvm.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    channel_stats,
    check_images,
    denormalize,
    eval_dataset,
    load_image,
    pretrain_dataset,
)
from hlvm.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_tree(tmp_path_factory.mktemp("imgs"))


def _bounds(in_chans):
    mean, std = (np.array(v) for v in channel_stats(in_chans))
    return (0 - mean) / std, (1 - mean) / std


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("img_size", [224, 32])
def test_pretrain_pipeline_shapes_and_value_range(tree, img_size, in_chans):
    ds = pretrain_dataset(tree, img_size=img_size, in_chans=in_chans)
    assert len(ds) == 26 and ds.classes == ["even", "odd", "skimage"]
    lo, hi = _bounds(in_chans)
    torch.manual_seed(0)
    for i in (0, 13, 25):  # an ImageNet JPEG of each class, and camera.png (grayscale source)
        x, y = ds[i]
        assert x.shape == (in_chans, img_size, img_size) and x.dtype == torch.float32
        # Bicubic resampling overshoots; ToTensor clamps to [0, 1] before normalising, so the bounds are exact.
        for c in range(in_chans):
            assert x[c].min() >= lo[c] - 1e-5 and x[c].max() <= hi[c] + 1e-5
        assert y == ds.targets[i]


def test_pretrain_pipeline_is_random_and_seeded(tree):
    ds = pretrain_dataset(tree, img_size=64)
    torch.manual_seed(7)
    a = ds[3][0]
    torch.manual_seed(7)
    b = ds[3][0]
    torch.manual_seed(8)
    c = ds[3][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_eval_pipeline_is_deterministic_resize_then_centre_crop(tree):
    from torchvision.transforms import functional as F
    from torchvision.transforms import InterpolationMode

    ds = eval_dataset(tree, img_size=224)
    x, _ = ds[0]
    assert x.shape == (3, 224, 224)
    assert torch.equal(x, ds[0][0])
    # Oracle: resize the short side to 256 (bicubic), crop the central 224, normalise.
    img = Image.open(ds.samples[0][0]).convert("RGB")
    ref = F.to_tensor(F.center_crop(F.resize(img, 256, InterpolationMode.BICUBIC), 224))
    ref = F.normalize(ref, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(x, ref)
    # Scaled to other sizes: resize 256/224 * 112 = 128.
    x112 = eval_dataset(tree, img_size=112)[0][0]
    ref112 = F.to_tensor(F.center_crop(F.resize(img, 128, InterpolationMode.BICUBIC), 112))
    torch.testing.assert_close(denormalize(x112, 3), ref112, atol=1e-6, rtol=0)


def test_grayscale_is_luma_with_one_channel_stats(tree):
    ds = eval_dataset(tree, img_size=32, in_chans=1)
    x, _ = ds[0]
    img = Image.open(ds.samples[0][0]).convert("L")
    from torchvision.transforms import functional as F
    from torchvision.transforms import InterpolationMode

    ref = F.to_tensor(F.center_crop(F.resize(img, 36, InterpolationMode.BICUBIC), 32))
    torch.testing.assert_close(denormalize(x, 1), ref, atol=1e-6, rtol=0)
    mean, std = channel_stats(1)
    assert mean[0] == pytest.approx(0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406)
    assert std[0] == pytest.approx(0.299 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225)


def test_unsupported_channel_count_and_size_are_config_errors(tree):
    with pytest.raises(ConfigError, match="in_chans"):
        pretrain_dataset(tree, in_chans=2)
    with pytest.raises(ConfigError, match="img_size"):
        eval_dataset(tree, img_size=0)


def test_missing_and_empty_folders_are_one_line_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        pretrain_dataset(tmp_path / "nope")
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty image folder") as e:
        eval_dataset(tmp_path / "empty")
    assert "\n" not in str(e.value)
    (tmp_path / "noimgs" / "cls").mkdir(parents=True)
    (tmp_path / "noimgs" / "cls" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty image folder"):
        eval_dataset(tmp_path / "noimgs")


@pytest.fixture()
def corrupt_tree(tmp_path):
    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    src = imagenet_jpegs()
    shutil.copy(src[0], root / "a" / "good.jpg")
    shutil.copy(src[1], root / "b" / "good2.jpg")
    data = src[2].read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(data[: len(data) // 3])  # a JPEG cut off mid-scan
    (root / "b" / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    return root


def test_corrupt_jpeg_raises_data_error_naming_the_file(corrupt_tree):
    ds = pretrain_dataset(corrupt_tree, img_size=32)
    names = [p for p, _ in ds.samples]
    assert len(names) == 4  # nothing silently dropped
    i = names.index(str(corrupt_tree / "a" / "truncated.jpg"))
    with pytest.raises(DataError, match="truncated.jpg") as e:
        ds[i]
    assert str(corrupt_tree / "a" / "truncated.jpg") in str(e.value)
    ds[names.index(str(corrupt_tree / "a" / "good.jpg"))]  # good files still load


def test_corrupt_file_error_crosses_dataloader_workers(corrupt_tree):
    ds = eval_dataset(corrupt_tree, img_size=32)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    with pytest.raises(DataError, match="(truncated|garbage).jpg"):
        next(iter(loader))


def test_check_images_lists_every_bad_file(corrupt_tree, tree):
    bad = check_images(corrupt_tree)
    assert sorted(b.path for b in bad) == sorted(
        [str(corrupt_tree / "a" / "truncated.jpg"), str(corrupt_tree / "b" / "garbage.jpg")]
    )
    assert all(b.reason for b in bad)
    assert check_images(tree) == []
    with pytest.raises(DataError, match="2 unreadable image"):
        pretrain_dataset(corrupt_tree, check=True)


def test_load_image_on_a_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="missing.png"):
        load_image(tmp_path / "missing.png")


# --- training on the tree (hlvm.train with --data imagefolder:PATH) ----------------------


def _train_on_tree(tree, out, model, steps=2, batch_size=2):
    import json

    from hlvm.train import TrainConfig, train

    seen = []
    cfg = TrainConfig(model=model, data=f"imagefolder:{tree}", steps=steps, batch_size=batch_size, warmup=1,
                      device="cpu", out=str(out), ckpt_every=0, log_every=1)
    run = train(cfg, progress=False, on_step=lambda step, info: seen.append(info["batch"].shape))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, seen, rows


def test_two_training_steps_of_a_small_vit_at_224_on_real_photos(tree, tmp_path):
    from _tinyrun import tiny_config

    run, seen, rows = _train_on_tree(tree, tmp_path / "run", tiny_config(img_size=224, patch_size=16, mask_unit=16))
    assert seen == [(2, 3, 224, 224)] * 2
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    assert (run / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_two_training_steps_of_mae_vit_base_patch16_at_224(tree, tmp_path):
    # ~30 s on one core, most of it building ViT-B and writing its 1.3 GB checkpoint (weights + AdamW state).
    run, seen, rows = _train_on_tree(tree, tmp_path / "run", "mae_vit_base_patch16")
    assert seen == [(2, 3, 224, 224)] * 2
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    from hlvm.train import load_run

    model, cfg = load_run(run)
    assert model.cfg.embed_dim == 768 and model.cfg.depth == 12 and model.cfg.norm_pix_loss


def test_training_on_a_tree_with_a_corrupt_jpeg_names_the_file(corrupt_tree, tmp_path):
    from _tinyrun import tiny_config

    from hlvm.train import TrainConfig, train

    cfg = TrainConfig(model=tiny_config(), data=f"imagefolder:{corrupt_tree}", steps=4, batch_size=4, warmup=1,
                      device="cpu", out=str(tmp_path / "run"), ckpt_every=0)
    with pytest.raises(DataError, match=r"(truncated|garbage)\.jpg"):
        train(cfg, progress=False)


# --- recipes (hlvm.recipes): MAE's pre-training preset ------------------------------------


def test_mae_pretrain_preset_is_maes_recipe():
    from hlvm.recipes import PRESETS, get_preset

    for name in ("mae_pretrain", "mae_pretrain_1gpu"):
        r = get_preset(name)
        t = r.train
        assert r.effective_batch() == 4096 and r.model == "mae_vit_base_patch16"
        assert (t["blr"], t["epochs"], t["weight_decay"], t["mask_ratio"], t["norm_pix_loss"]) == (
            1.5e-4, 800, 0.05, 0.75, True)
        assert t["warmup"] == 40 * r.derived["steps_per_epoch"]
        cfg = r.train_config(data="imagefolder:/x", out="runs/x")
        assert cfg.lr(r.world_size) == pytest.approx(1.5e-4 * 4096 / 256)
        assert cfg.effective_batch(r.world_size) == 4096
    assert PRESETS["mae_pretrain"].train["accum"] == 8 and PRESETS["mae_pretrain_1gpu"].train["accum"] == 64
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("nope")


def test_steps_per_epoch_counts_like_the_training_loop():
    # Oracle: hlvm.train's own DataStream over an array source, per rank, then ceil(batches / accum).
    import math

    from hlvm.recipes import mae_pretrain, steps_per_epoch
    from hlvm.train import DataStream, _Source

    for n, b, accum, world in [(1000, 7, 3, 2), (64, 8, 1, 1), (1_281_167, 64, 8, 8)]:
        src = _Source("array", (1, 1, 1), images=np.zeros((n, 1, 1, 1), np.float32))
        per_rank = DataStream(src, b, rank=0, world=world, seed=0).batches_per_epoch()
        assert steps_per_epoch(n, b, accum, world) == math.ceil(per_rank / accum)
    assert steps_per_epoch(1_281_167, 64, 8, 8) == 313
    with pytest.raises(ConfigError, match="not a multiple"):
        mae_pretrain(world_size=3, batch_size=64)


# --- small images in memory: batched MAE transforms (crop_boxes, resized_crop, mae_augment, eval_resize) ---


def test_crop_boxes_follow_torchvisions_random_resized_crop_distribution():
    # Oracle: torchvision's own get_params, drawn per image; the batched boxes must have its distribution.
    from torchvision.transforms import RandomResizedCrop

    from hlvm.data import crop_boxes

    n = 4000
    ours = crop_boxes(n, 28, 28, generator=torch.Generator().manual_seed(0)).double()
    torch.manual_seed(0)
    img = torch.zeros(1, 28, 28)
    ref = torch.tensor([RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]).double()
    # Means of top, left, h, w agree within 4 standard errors; sides and positions stay inside the image.
    se = ref.std(0) / n**0.5
    assert ((ours.mean(0) - ref.mean(0)).abs() < 4 * 2**0.5 * se).all(), (ours.mean(0), ref.mean(0))
    assert ((ours[:, 0] + ours[:, 2]) <= 28).all() and ((ours[:, 1] + ours[:, 3]) <= 28).all()
    area = ours[:, 2] * ours[:, 3] / 784
    assert area.min() >= 0.18 and area.max() <= 1.0  # scale 0.2-1, up to the rounding of the sides
    aspect = ours[:, 3] / ours[:, 2]
    assert aspect.min() >= 0.68 and aspect.max() <= 1.47
    # A wide image whose every try misses (scale > 1) falls back to torchvision's centre crop within the ratio.
    fb = crop_boxes(3, 10, 40, scale=(2.0, 3.0), generator=torch.Generator().manual_seed(1))
    assert fb.tolist() == [[0, 13, 10, 13]] * 3  # w = round(10 * 4/3) = 13, centred


def test_resized_crop_of_the_whole_image_is_bicubic_interpolate_and_flip_mirrors():
    import torch.nn.functional as F

    from hlvm.data import resized_crop

    x = torch.randint(0, 256, (3, 2, 28, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = torch.tensor([[0, 0, 28, 20]] * 3)
    ref = F.interpolate(x.float() / 255, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(resized_crop(x, whole, 32), ref, atol=1e-6, rtol=0)
    flipped = resized_crop(x, whole, 32, flip=torch.tensor([True, False, True]))
    torch.testing.assert_close(flipped[0], ref[0].flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(flipped[1], ref[1], atol=1e-6, rtol=0)
    # An integer-aligned crop at scale 1 (no resize) is the crop itself.
    box = torch.tensor([[5, 3, 16, 16]] * 3)
    torch.testing.assert_close(resized_crop(x, box, 16), x[:, :, 5:21, 3:19].float() / 255, atol=1e-5, rtol=0)


def test_mae_augment_is_seeded_normalised_and_varied():
    from hlvm.data import mae_augment

    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = mae_augment(x, 32, torch.Generator().manual_seed(3))
    b = mae_augment(x, 32, torch.Generator().manual_seed(3))
    c = mae_augment(x, 32, torch.Generator().manual_seed(4))
    assert a.shape == (64, 1, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    lo, hi = _bounds(1)
    assert a.min() >= lo[0] - 1e-5 and a.max() <= hi[0] + 1e-5


def test_eval_resize_is_maes_resize_then_centre_crop_up_to_rounding(tree):
    # Oracle: eval_transform (PIL, resize 256/224 then crop) on the same 64 px image; crop_fraction 1 is a plain resize.
    from torchvision.transforms import functional as TF

    from hlvm.data import eval_resize, eval_transform

    img = Image.open(imagenet_jpegs()[0]).convert("L").resize((64, 64), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy())[None, None]  # (1, 1, 64, 64)
    ours = denormalize(eval_resize(x, 32), 1)
    ref = denormalize(eval_transform(32, 1)(img)[None], 1)
    assert (ours - ref).abs().mean() < 0.03  # PIL's a=-0.5 bicubic on uint8 vs torch's a=-0.75 on floats
    whole = denormalize(eval_resize(x, 32, crop_fraction=1.0), 1)
    ref_whole = TF.to_tensor(img.resize((32, 32), Image.BICUBIC))[None]
    assert (whole - ref_whole).abs().mean() < 0.03
    with pytest.raises(ConfigError, match="crop_fraction"):
        eval_resize(x, 32, crop_fraction=0)


def test_tensor_images_from_folder_decodes_each_file_once_in_imagefolder_order(tree, corrupt_tree):
    from hlvm.data import TensorImages

    ti = TensorImages.from_folder(tree, in_chans=1, size=28)
    ds = eval_dataset(tree, img_size=28, in_chans=1)
    assert ti.images.shape == (26, 1, 28, 28) and ti.images.dtype == torch.uint8
    assert ti.labels.tolist() == ds.targets and ti.classes == tuple(ds.classes)
    sub = ti.subset([25, 0])
    assert torch.equal(sub.images[0], ti.images[25]) and sub.labels.tolist() == [ti.labels[25], ti.labels[0]]
    with pytest.raises(DataError, match=r"(truncated|garbage)\.jpg"):
        TensorImages.from_folder(corrupt_tree, in_chans=1, size=28)
    with pytest.raises(DataError, match="uint8"):
        TensorImages(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), ("a",))
