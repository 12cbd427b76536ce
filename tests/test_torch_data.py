import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from datasets.records import Record
from datasets.synthetic import load_demo
from datasets.torch_data import DetectionDataset, GroupedBatchSampler, aspect_ratio_groups, collate_fn
from datasets.transforms import build_transforms
from tests.helpers import write_image


def _two_tone_dataset(tmp_path, transforms):
    """A 100x60 grey image with one object: bright left half, dark right half; and a sliver box."""
    img = np.full((60, 100, 3), 128, np.uint8)
    img[10:30, 10:25] = 250
    img[10:30, 25:40] = 5
    path = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(img).save(path)
    poly = [[10, 10, 40, 10, 40, 30, 10, 30]]
    sliver = [[70, 40, 71.2, 40, 71.2, 50, 70, 50]]
    record = Record(
        "0",
        "img.png",
        100,
        60,
        [[10, 10, 40, 30], [70, 40, 71.2, 50]],
        [2, 3],
        difficult=[False, True],
        iscrowd=[True, False],
        masks=[poly, sliver],
    )
    return DetectionDataset([record], str(tmp_path), transforms, with_masks=True)


@pytest.mark.parametrize("train", [True, False])
def test_boxes_masks_and_pixels_stay_aligned(tmp_path, train):
    ds = _two_tone_dataset(tmp_path, build_transforms(train, min_size=30, max_size=200))
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        image, target = ds[0]
        h, w = image.shape[-2:]
        assert target["masks"].shape == (1, h, w)  # the sliver became degenerate and was dropped
        assert target["labels"].tolist() == [2] and target["iscrowd"].tolist() == [True]
        assert target["difficult"].tolist() == [False]
        x1, y1, x2, y2 = target["boxes"][0].tolist()
        ys, xs = torch.nonzero(target["masks"][0], as_tuple=True)
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1
        gray = image.mean(0)
        xm = int(round((x1 + x2) / 2))
        rows = slice(int(y1) + 1, int(y2) - 1)
        left, right = gray[rows, int(x1) + 1 : xm - 1].mean(), gray[rows, xm + 1 : int(x2) - 1].mean()
        flipped = (x1 + x2) / 2 > w / 2
        flips.add(flipped)
        assert (right > left) if flipped else (left > right), f"seed {seed}: pixels not under the box"
    assert flips == ({True, False} if train else {False})


def test_eval_resizes_shorter_side_only(tmp_path):
    ds = _two_tone_dataset(tmp_path, build_transforms(False, min_size=120))
    image, target = ds[0]
    assert tuple(image.shape[-2:]) == (120, 200) and image.dtype == torch.float32
    torch.testing.assert_close(target["boxes"][0], torch.tensor([20.0, 20.0, 80.0, 60.0]))
    assert target["orig_size"].tolist() == [60, 100]


def test_dataset_errors_name_the_file(tmp_path):
    write_image(str(tmp_path / "a.jpg"), size=(30, 20))
    ds = DetectionDataset([Record("a", "a.jpg", 64, 48), Record("b", "b.jpg", 64, 48)], str(tmp_path))
    with pytest.raises(ValueError, match="a.jpg: image is 30x20 but its record says 64x48"):
        ds[0]
    with pytest.raises(OSError, match="b.jpg: cannot read image"):
        ds[1]


def test_grouped_batches_cover_every_image_once(demo_cache):
    data = load_demo("train", num_train=120, num_val=20, cache_dir=demo_cache)
    groups = aspect_ratio_groups(data.records)
    assert len(set(groups)) > 1
    for sampler in (RandomSampler(range(len(groups))), SequentialSampler(range(len(groups)))):
        batch_sampler = GroupedBatchSampler(sampler, groups, batch_size=4)
        batches = list(batch_sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(groups)))
        assert all(len({groups[i] for i in b}) == 1 and 1 <= len(b) <= 4 for b in batches)
        assert len(batch_sampler) == len(batches)
    loader = DataLoader(
        DetectionDataset(data.records[:8], data.image_root, build_transforms(True, 64)),
        batch_size=4,
        collate_fn=collate_fn,
        num_workers=0,
    )
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 4 and all(img.shape[0] == 3 for img in images)
    with pytest.raises(ValueError, match="batch_size"):
        GroupedBatchSampler(sampler, groups, 0)


def test_even_batches_give_every_rank_the_same_count():
    from torch.utils.data import DistributedSampler

    from datasets.torch_data import GroupedBatchSampler

    groups = [0, 1, 1, 0, 1, 2, 2, 0, 1, 1, 2]  # 11 images in 3 aspect-ratio groups
    counts = []
    for rank in range(2):
        sampler = DistributedSampler(range(len(groups)), num_replicas=2, rank=rank, shuffle=True, seed=3)
        batches = list(GroupedBatchSampler(sampler, groups, 2, even=True))
        assert len(batches) == len(GroupedBatchSampler(sampler, groups, 2, even=True)) == 3  # ceil(6 / 2)
        assert sorted(i for b in batches for i in b) == sorted(sampler)
        counts.append(len(batches))
    plain = GroupedBatchSampler(
        DistributedSampler(range(11), num_replicas=2, rank=0, shuffle=True, seed=3), groups, 2
    )
    assert len(list(plain)) >= counts[0]  # per-group remainders: the count depends on the draw


def test_epoch_batches_do_not_depend_on_workers_and_change_per_epoch(demo_cache):
    """The phase loader's shuffle and augmentation depend on the seed keys and the epoch only."""

    from datasets.loaders import train_loader

    data = load_demo("train", num_train=120, num_val=20, cache_dir=demo_cache)
    records = data.records[:8]

    def epoch(workers, e):
        loader = train_loader(records, data.image_root, 4, (7, 1), workers=workers)
        assert loader.persistent_workers == (workers > 0)
        loader.batch_sampler.set_epoch(e)
        return [(t["index"], img) for images, targets in loader for img, t in zip(images, targets)]

    a, b = epoch(0, 3), epoch(2, 3)
    assert [i for i, _ in a] == [i for i, _ in b] and all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    c = epoch(0, 4)
    assert sorted(i for i, _ in c) == sorted(i for i, _ in a) == list(range(8))
    assert [i for i, _ in c] != [i for i, _ in a] or any(
        not torch.equal(x, y) for (_, x), (_, y) in zip(a, c)
    )


def test_every_image_of_a_batch_gets_its_own_augmentation_seed():
    from datasets.torch_data import EpochBatches

    sampler = EpochBatches([0] * 16, batch_size=4, seed_keys=(1, 0))
    batches = list(sampler)
    seeds = [s for batch in batches for _, s in batch]
    assert len(batches) == 4 and len(set(seeds)) == 16  # not one seed per batch: flips and scales differ
    sampler.set_epoch(1)
    assert not set(seeds) & {s for batch in sampler for _, s in batch}  # and new ones each epoch


def test_jpegs_decode_to_the_pixels_of_pil_and_torchvision_with_no_deprecation_warning():
    import glob
    import warnings

    from PIL import Image

    from datasets.torch_data import read_image

    files = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "data", "**", "*.jpg"), recursive=True))
    assert files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        reference = [decode_jpeg(read_file(f), mode=ImageReadMode.RGB) for f in files[:5]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the trainer's reader never warns
        images = [read_image(f).as_subclass(torch.Tensor) for f in files[:5]]
    for f, image, ref in zip(files, images, reference):
        with Image.open(f) as im:
            pil = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(image, pil) and torch.equal(image, ref), f
