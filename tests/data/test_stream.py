"""The training stream: resumable, split over workers, augmentation fixed by position."""

import torch
from torch.utils.data import DataLoader, Dataset

from hwd_tune.data.stream import StreamSampler, TrainingStream


class Numbers(Dataset):
    """Sample i is (i, i): lets the tests read which index a position maps to."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return torch.tensor(index), torch.tensor(index)


def add_noise(image, mask):
    return image + torch.rand(()), mask


def positions(batch, world, start, stop):
    return [
        list(StreamSampler(batch, rank=r, world_size=world, start_iteration=start, stop_iteration=stop))
        for r in range(world)
    ]


def test_each_epoch_is_a_permutation_and_epochs_differ():
    stream = TrainingStream(Numbers(10), None, seed=3)
    first = [stream.dataset_index(p) for p in range(10)]
    second = [stream.dataset_index(p) for p in range(10, 20)]
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second
    assert [TrainingStream(Numbers(10), None, seed=3).dataset_index(p) for p in range(10)] == first
    assert [TrainingStream(Numbers(10), None, seed=4).dataset_index(p) for p in range(10)] != first


def test_workers_split_the_global_batch_without_overlap():
    two = positions(batch=2, world=2, start=0, stop=3)
    one = positions(batch=4, world=1, start=0, stop=3)[0]
    assert two[0] == [0, 1, 4, 5, 8, 9] and two[1] == [2, 3, 6, 7, 10, 11]
    assert sorted(two[0] + two[1]) == one


def test_resume_continues_the_same_positions():
    whole = positions(batch=3, world=2, start=0, stop=5)
    head = positions(batch=3, world=2, start=0, stop=2)
    tail = positions(batch=3, world=2, start=2, stop=5)
    assert [h + t for h, t in zip(head, tail)] == whole
    assert len(StreamSampler(3, stop_iteration=5, start_iteration=2)) == 9


def test_augmentation_depends_on_position_only_not_on_loader_processes():
    stream = TrainingStream(Numbers(7), add_noise, seed=0)
    sampler = StreamSampler(2, stop_iteration=4)
    inline = [x for x, _ in DataLoader(stream, batch_size=2, sampler=sampler)]
    torch.manual_seed(123)  # the global RNG must not matter
    parallel = [x for x, _ in DataLoader(stream, batch_size=2, sampler=sampler, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(inline, parallel))
    resumed = [
        x for x, _ in DataLoader(stream, batch_size=2, sampler=StreamSampler(2, start_iteration=2, stop_iteration=4))
    ]
    assert all(torch.equal(a, b) for a, b in zip(inline[2:], resumed))
    noise = torch.cat(inline) - torch.cat([m for _, m in DataLoader(stream, batch_size=2, sampler=sampler)]).float()
    assert len(set(noise.tolist())) == len(noise)  # each position has its own draw


def test_bad_arguments():
    import pytest

    with pytest.raises(ValueError, match="empty"):
        TrainingStream(Numbers(0), None, seed=0)
    with pytest.raises(ValueError, match="rank"):
        StreamSampler(2, rank=2, world_size=2, stop_iteration=1)
    with pytest.raises(ValueError, match="past stop_iteration"):
        StreamSampler(2, start_iteration=3, stop_iteration=1)
