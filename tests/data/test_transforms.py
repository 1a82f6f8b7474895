"""Augmentation invariants of train_transforms / eval_transforms on (Image, Mask) pairs."""

import pickle

import pytest
import torch
from torchvision import tv_tensors

from hwd_tune.data import eval_transforms, normalization, train_transforms
from hwd_tune.data.transforms import AUTHORS_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "unit_range": False}  # keeps 0-255 values


def pair(image, mask):
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def block_label(height, width, block, num_classes, seed=0):
    """[H, W] int64 label of constant square blocks with random classes (some ignored, -1)."""
    generator = torch.Generator().manual_seed(seed)
    grid = ((height + block - 1) // block, (width + block - 1) // block)
    blocks = torch.randint(-1, num_classes, grid, generator=generator)
    return blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)[:height, :width].contiguous()


def encode_label(label):
    """uint8 image [3, H, W] whose red channel is 20 * (label + 1) + 10, green a column ramp."""
    red = (20 * (label + 1) + 10).to(torch.uint8)
    green = torch.arange(label.shape[1]).expand_as(label).to(torch.uint8)
    return torch.stack([red, green, torch.full_like(red, 200)])


def test_crop_size_is_exact_for_small_and_large_inputs():
    transform = train_transforms((48, 64), **RAW)
    for height, width in ((20, 30), (48, 64), (150, 210)):
        for _ in range(5):
            label = block_label(height, width, 4, 5)
            image, mask = transform(*pair(encode_label(label), label))
            assert image.shape == (3, 48, 64) and mask.shape == (48, 64)
            assert image.dtype == torch.float32 and mask.dtype == torch.int64
            assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)


def test_nearest_resize_keeps_label_values():
    label = block_label(37, 53, 1, 9)  # single-pixel blocks: every value is a boundary
    allowed = set(label.unique().tolist()) | {-1}
    transform = train_transforms(32, (0.5, 2.0), **RAW)
    for _ in range(10):
        _, mask = transform(*pair(encode_label(label), label))
        assert set(mask.unique().tolist()) <= allowed


def test_padding_is_ignore_for_labels_and_zero_for_images():
    label = torch.randint(0, 5, (20, 30))  # no ignore pixels of its own
    image = encode_label(label)  # every pixel >= 10 in red, 200 in blue
    transform = train_transforms(64, (1.0, 1.0), **RAW)
    for _ in range(5):
        out_image, out_mask = transform(*pair(image, label))
        padded = out_mask == -1
        assert int(padded.sum()) == 64 * 64 - 20 * 30
        assert torch.all(out_image[:, padded] == 0)
        assert torch.all(out_image[2, ~padded] == 200)


def test_no_padding_when_the_image_is_larger_than_the_crop():
    label = torch.randint(0, 5, (80, 90))
    for _ in range(5):
        _, mask = train_transforms(64, (1.0, 1.0), **RAW)(*pair(encode_label(label), label))
        assert not torch.any(mask == -1)


def test_image_and_label_stay_aligned_after_scale_crop_flip():
    label = block_label(96, 128, 8, 11, seed=3)
    transform = train_transforms(64, (0.5, 2.0), **RAW)
    checked = 0
    for _ in range(20):
        image, mask = transform(*pair(encode_label(label), label))
        decoded = torch.round((image[0] - 30) / 20).long()
        # compare where the label is uniform over the 3x3 neighbourhood (away from blurred edges;
        # the crop's border rows and columns are blurred by pixels outside the crop, so excluded)
        padded = torch.nn.functional.pad(mask[None, None].float(), (1, 1, 1, 1), value=-100.0)[0, 0]
        shifts = [(dy, dx) for dy in range(3) for dx in range(3)]
        neighbours = torch.stack([padded[dy : dy + 64, dx : dx + 64] for dy, dx in shifts])
        interior = (neighbours == mask.float()).all(0) & (mask != -1) & (image[2] == 200)
        assert torch.equal(decoded[interior], mask[interior])
        checked += int(interior.sum())
    assert checked > 20 * 64 * 64 // 3


def test_flip_moves_image_and_label_together():
    width = 40
    label = torch.arange(width).expand(24, width) % 7
    image = encode_label(label)
    seen = set()
    for _ in range(16):
        out_image, out_mask = train_transforms((24, width), (1.0, 1.0), **RAW)(*pair(image, label))
        flipped = bool(out_image[1, 0, 0] == width - 1)  # green ramp starts at the right edge
        seen.add(flipped)
        expected = label.flip(-1) if flipped else label
        assert torch.equal(out_mask, expected)
        ramp = torch.arange(width).expand(24, width)
        assert torch.equal(out_image[1].long(), ramp.flip(-1) if flipped else ramp)
    assert seen == {True, False}


def test_same_torch_seed_same_output():
    label = block_label(70, 90, 5, 6)
    image = encode_label(label)
    transform = train_transforms(48)
    outputs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        outputs.append(transform(*pair(image, label)))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert not torch.equal(outputs[0][0], outputs[2][0])


def test_imagenet_and_authors_normalisation_values():
    image = torch.stack([torch.full((5, 7), value, dtype=torch.uint8) for value in (10, 100, 250)])
    mask = torch.zeros(5, 7, dtype=torch.int64)
    out, out_mask = eval_transforms()(*pair(image, mask))
    for channel, value in enumerate((10, 100, 250)):
        expected = (value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(out[channel], torch.full((5, 7), expected), atol=1e-5)
    assert torch.equal(out_mask, mask)
    out, _ = eval_transforms(**normalization("authors_bgr"))(*pair(image, mask))
    for channel, value in enumerate((250, 100, 10)):  # BGR order, 0-255, mean only
        expected = torch.full((5, 7), value - AUTHORS_BGR_MEAN[channel])
        assert torch.allclose(out[channel], expected, atol=1e-4)


def test_eval_keeps_the_whole_image():
    label = block_label(37, 53, 4, 5)
    image, mask = eval_transforms()(*pair(encode_label(label), label))
    assert image.shape == (3, 37, 53) and torch.equal(mask, label)


def test_custom_ignore_index_is_used_for_padding():
    label = torch.zeros(10, 10, dtype=torch.int64)
    _, mask = train_transforms(16, (1.0, 1.0), ignore_index=255)(*pair(encode_label(label), label))
    assert set(mask.unique().tolist()) == {0, 255} and int((mask == 255).sum()) == 256 - 100


def test_transforms_pickle_for_dataloader_workers():
    transform = pickle.loads(pickle.dumps(train_transforms(16, **normalization("authors_bgr"))))
    label = block_label(20, 20, 4, 3)
    torch.manual_seed(0)
    first = transform(*pair(encode_label(label), label))
    torch.manual_seed(0)
    second = train_transforms(16, **normalization("authors_bgr"))(*pair(encode_label(label), label))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="crop_size"):
        train_transforms(0)
    with pytest.raises(ValueError, match="scale_range"):
        train_transforms(32, (0.0, 1.0))
    with pytest.raises(ValueError, match="scale_range"):
        train_transforms(32, (2.0, 1.0))
    with pytest.raises(ValueError, match="mean must have 3 values"):
        eval_transforms(mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="std must be > 0"):
        eval_transforms(std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown normalization 'caffe'.*authors_bgr"):
        normalization("caffe")
