"""The tuning split of a sweep: trials never train on the held-out images and validate on exactly
them; the final stage trains on every image and validates on val; the parent run's listing."""

from __future__ import annotations

import torch

from hwd_tune.data import SyntheticShapes
from hwd_tune.data.from_config import training_set, validation_set
from hwd_tune.data.stream import StreamSampler, TrainingStream
from hwd_tune.sweep.config import baseline_train_config, final_train_config, trial_train_config
from hwd_tune.sweep.tuning_split import holdout_listing, tuning_samples, tuning_split_line
from tests.sweep.helpers import PAPER_POINT, tiny_sweep

TRAIN_IMAGES, VAL_IMAGES, HELD_OUT = 64, 8, 6  # tiny_config's synthetic splits; round(0.1 x 64) = 6
MEAN, STD = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def raw_split(split: str, num_samples: int) -> SyntheticShapes:
    """tiny_config's synthetic split built directly, untransformed: the reference images."""
    return SyntheticShapes(num_samples, image_size=48, num_classes=4, seed=0, split=split)


def expected_held_out(seed: int) -> list[int]:
    """The first 6 of torch's permutation of the 64 training indices under the sweep's seed."""
    return sorted(torch.randperm(TRAIN_IMAGES, generator=torch.Generator().manual_seed(seed))[:HELD_OUT].tolist())


def sample_key(sample) -> bytes:
    image, mask = sample
    return image.numpy().tobytes() + mask.numpy().tobytes()


def test_held_out_images_never_enter_a_trials_training_stream(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt", seed=4)
    trial = trial_train_config(sweep, PAPER_POINT)
    raw = raw_split("train", TRAIN_IMAGES)
    held_out = expected_held_out(4)
    held_out_keys = {sample_key(raw[index]) for index in held_out}
    kept_keys = {sample_key(raw[index]) for index in range(TRAIN_IMAGES) if index not in held_out}
    assert len(held_out_keys) == HELD_OUT and len(kept_keys) == TRAIN_IMAGES - HELD_OUT

    dataset, _ = training_set(trial.data)
    stream = TrainingStream(dataset, None, seed=trial.seed)  # the loop's stream, without augmentation
    epoch = TRAIN_IMAGES - HELD_OUT
    iterations = 4 * epoch // trial.schedule.batch_size  # four epochs of the loop's positions
    positions = list(StreamSampler(trial.schedule.batch_size, stop_iteration=iterations))
    drawn = [sample_key(stream[position]) for position in positions]
    assert len(drawn) == 4 * epoch
    assert not set(drawn) & held_out_keys
    for first in range(0, len(drawn), epoch):  # every epoch: each kept image exactly once
        assert sorted(drawn[first : first + epoch]) == sorted(kept_keys)


def test_trials_and_baselines_validate_on_exactly_the_held_out_images(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt", seed=4)
    raw = raw_split("train", TRAIN_IMAGES)
    held_out = expected_held_out(4)
    for config in (trial_train_config(sweep, PAPER_POINT), baseline_train_config(sweep, "none")):
        validation = validation_set(config.data)
        assert len(validation) == HELD_OUT
        for (image, mask), index in zip(validation, held_out):
            raw_image, raw_mask = raw[index]
            assert torch.equal(mask, raw_mask)
            torch.testing.assert_close(image, (raw_image.float() / 255 - MEAN) / STD)  # whole image, normalised


def test_the_final_stage_trains_on_every_image_and_validates_on_val(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt", seed=4, final={"top_k": 1, "max_iters": 6})
    final = final_train_config(sweep, PAPER_POINT)
    assert final.schedule.max_iters == 6
    dataset, _ = training_set(final.data)
    raw = raw_split("train", TRAIN_IMAGES)
    assert [sample_key(dataset[index]) for index in range(len(dataset))] == [sample_key(sample) for sample in raw]
    validation = validation_set(final.data)
    assert len(validation) == VAL_IMAGES
    for (_, mask), (_, raw_mask) in zip(validation, raw_split("val", VAL_IMAGES)):
        assert torch.equal(mask, raw_mask)


def test_the_listing_names_the_held_out_images_under_a_comment_line(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt", seed=4, final={"top_k": 1})
    samples = tuning_samples(sweep)
    assert samples.num_images == TRAIN_IMAGES
    assert samples.names == [f"synthetic/train/{index}" for index in expected_held_out(4)]
    lines = holdout_listing(sweep, samples).splitlines()
    assert lines[0] == "# dataset synthetic, seed 4, fraction 0.1, max_images 2000: 6 of 64 training images held out"
    assert lines[1:] == samples.names
    assert tuning_split_line(sweep, samples) == (
        "trials and baselines trained on 58 training images and were tuned on the 6 held out "
        "(sweep/holdout.txt on the parent run); the final stage trains on all 64 and reports on val"
    )


def test_without_a_final_stage_the_line_points_at_best_config_and_val_tuning_is_flagged(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt")  # final.top_k 0
    assert tuning_split_line(sweep, tuning_samples(sweep)).endswith(
        "; best_config.yaml trains on all 64 and reports on val (no final stage ran)"
    )
    on_val = tiny_sweep(tmp_path, "teacher.pt", tune_on="val")
    assert tuning_samples(on_val) is None
    assert tuning_split_line(on_val, None) == (
        "trials were tuned and scored on val (search.tune_on: val): the best score is optimistic"
    )
