"""CIRKD: mini-batch relation, memory queues, contrast terms, 2 real gloo workers; against loops."""

import io
import math
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from hwd_tune.losses import build_distiller, distributed
from hwd_tune.losses.cirkd import (
    CrossImageMemory,
    choose_per_group,
    class_region_means,
    contrast_distillation,
    contrast_per_class,
    minibatch_pixel_relation_loss,
    write_to_class_queues,
)
from hwd_tune.outputs import SegOutput

SMALL = dict(  # small banks so wrap-around happens within a few steps
    pixel_memory_size=7,
    region_memory_size=3,
    pixel_contrast_size=6,
    region_contrast_size=4,
    pixel_update_per_class=3,
)


# --------------------------------------------------------------------------------------------
# Slow references: explicit loops, float64
# --------------------------------------------------------------------------------------------
def unit(vector):
    """L2-normalised; a zero vector stays zero (as F.normalize, whose eps is 1e-12)."""
    return vector / vector.norm().clamp(min=1e-12)


def reference_minibatch(student, teacher, temperature):
    """Loops over pairs (i, j) and rows p: mean_{i,j} (1/P) sum_p KL(teacher row || student row)."""
    batch, _, h, w = student.shape
    pixels = h * w
    s = student.double().flatten(2)
    t = teacher.double().flatten(2)
    total = 0.0
    for i in range(batch):
        for j in range(batch):
            for p in range(pixels):
                s_row = torch.stack([unit(s[i][:, p]) @ unit(s[j][:, q]) for q in range(pixels)])
                t_row = torch.stack([unit(t[i][:, p]) @ unit(t[j][:, q]) for q in range(pixels)])
                log_ps = s_row / temperature - torch.logsumexp(s_row / temperature, 0)
                log_pt = t_row / temperature - torch.logsumexp(t_row / temperature, 0)
                total = total + (log_pt.exp() * (log_pt - log_ps)).sum() / pixels
    return total / batch**2


def reference_contrast(student_anchors, teacher_anchors, contrast, temperature, kd_temperature):
    """One anchor at a time: KL over the contrast set of softmax(a . c / t / kd_t), times kd_t^2."""
    scale = temperature * kd_temperature
    values = []
    for a in range(student_anchors.shape[0]):
        s_logits = torch.stack([student_anchors[a] @ c for c in contrast]) / scale
        t_logits = torch.stack([teacher_anchors[a] @ c for c in contrast]) / scale
        log_ps = s_logits - torch.logsumexp(s_logits, 0)
        log_pt = t_logits - torch.logsumexp(t_logits, 0)
        values.append((log_pt.exp() * (log_pt - log_ps)).sum() * kd_temperature**2)
    return torch.stack(values)


def reference_kd(student_logits, teacher_logits):
    n, _, h, w = student_logits.shape
    total = 0.0
    for b in range(n):
        for y in range(h):
            for x in range(w):
                log_ps = F.log_softmax(student_logits[b, :, y, x].double(), 0)
                log_pt = F.log_softmax(teacher_logits[b, :, y, x].double(), 0)
                total += float((log_pt.exp() * (log_pt - log_ps)).sum())
    return total / (n * h * w)


class ListQueues:
    """Per-class ring queues as Python lists: write at the pointer, advance, wrap to 0."""

    def __init__(self, initial):
        self.slots = [[row.clone() for row in initial[c]] for c in range(initial.shape[0])]
        self.pointer = [0] * initial.shape[0]

    def push(self, cls, value):
        self.slots[cls][self.pointer[cls]] = value.clone()
        self.pointer[cls] = (self.pointer[cls] + 1) % len(self.slots[cls])

    def tensor(self):
        return torch.stack([torch.stack(rows) for rows in self.slots])


def small_distiller(num_classes=3, channels=(4, 6), **params):
    return build_distiller("cirkd", num_classes=num_classes, feature_channels=channels, **{**SMALL, **params})


def random_outputs(batch, num_classes, channels, size=4, generator=None):
    def rnd(*shape):
        return torch.randn(*shape, generator=generator)

    logits = (rnd(batch, num_classes, size, size), rnd(batch, num_classes, size, size))
    features = (rnd(batch, channels[0], size, size), rnd(batch, channels[1], size, size))
    student = SegOutput(logits[0], None, features[0])
    teacher = SegOutput(logits[1], None, features[1])
    return student, teacher


# --------------------------------------------------------------------------------------------
# Mini-batch pixel-to-pixel relation
# --------------------------------------------------------------------------------------------
def test_minibatch_relation_matches_pair_loops_in_value_and_gradient():
    student = torch.randn(3, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 5, 2, 3, dtype=torch.float64)  # channels may differ from the student's
    loss = minibatch_pixel_relation_loss(student, teacher, temperature=0.5)
    (grad,) = torch.autograd.grad(loss, student)

    reference_student = student.detach().clone().requires_grad_(True)
    reference = reference_minibatch(reference_student, teacher, 0.5)
    (reference_grad,) = torch.autograd.grad(reference, reference_student)
    assert math.isclose(loss.item(), reference.item(), rel_tol=1e-10)
    assert torch.allclose(grad, reference_grad, rtol=1e-8, atol=1e-12)


def test_minibatch_relation_gradcheck_and_teacher_gets_no_gradient():
    student = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: minibatch_pixel_relation_loss(s, teacher, 0.1), (student,))
    minibatch_pixel_relation_loss(student, teacher, 0.1).backward()
    assert teacher.grad is None


def test_minibatch_relation_is_zero_for_equal_features_and_finite_when_large():
    features = torch.randn(2, 3, 3, 3)
    assert minibatch_pixel_relation_loss(features, features.clone(), 0.1).item() == pytest.approx(0.0, abs=1e-6)
    large = minibatch_pixel_relation_loss(1e4 * torch.randn(2, 3, 3, 3), torch.randn(2, 3, 3, 3), 1e-3)
    assert torch.isfinite(large) and large.item() > 0


def test_minibatch_relation_rejects_bad_inputs():
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        minibatch_pixel_relation_loss(torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2), 0.0)
    with pytest.raises(ValueError, match=r"student features must be \[n, C, h, w\]"):
        minibatch_pixel_relation_loss(torch.randn(3, 2, 2), torch.randn(2, 3, 2, 2), 0.1)
    with pytest.raises(ValueError, match="teacher features must match"):
        minibatch_pixel_relation_loss(torch.randn(2, 3, 2, 2), torch.randn(2, 3, 4, 4), 0.1)


# --------------------------------------------------------------------------------------------
# Memory queues
# --------------------------------------------------------------------------------------------
def test_class_queues_match_python_lists_with_wrap_around():
    num_classes, capacity, dim = 3, 4, 2
    queue = torch.randn(num_classes, capacity, dim)
    pointer = torch.zeros(num_classes, dtype=torch.long)
    reference = ListQueues(queue)
    # class 1 gets 6 > capacity entries in one write; later writes wrap again
    for classes in ([1, 0, 1, 1, 2, 1, 1, 1], [2, 2, 0], [1, 1, 1, 0, 0, 0, 0, 0]):
        classes = torch.tensor(classes)
        values = torch.randn(len(classes), dim)
        write_to_class_queues(queue, pointer, classes, values)
        for cls, value in zip(classes.tolist(), values):
            reference.push(cls, value)
        assert torch.equal(queue, reference.tensor())
        assert pointer.tolist() == reference.pointer


def test_choose_per_group_takes_min_of_size_and_limit_distinct_members():
    groups = torch.tensor([4, 0, 4, 4, 9, 0, 4, 4, 4, 9, 9, 9, 9, 9])
    chosen = choose_per_group(groups, 3, torch.Generator().manual_seed(1))
    chosen_groups = groups[chosen].tolist()
    assert chosen_groups == sorted(chosen_groups)  # ordered by group id
    assert len(set(chosen.tolist())) == len(chosen)
    for group, size in ((0, 2), (4, 6), (9, 6)):
        assert chosen_groups.count(group) == min(size, 3)
    again = choose_per_group(groups, 3, torch.Generator().manual_seed(1))
    assert torch.equal(chosen, again)  # deterministic for a seed
    draws = {tuple(choose_per_group(groups, 3, torch.Generator().manual_seed(seed)).tolist()) for seed in range(8)}
    assert len(draws) > 1  # and random across seeds


def test_class_region_means_match_loops():
    embeddings = torch.randn(2, 3, 2, 3)
    labels = torch.tensor([[[0, 2, 2], [-1, 0, 2]], [[1, 1, -1], [1, -1, 1]]])
    means, classes = class_region_means(embeddings, labels, num_classes=3)
    expected, expected_classes = [], []
    for b in range(2):
        for c in range(3):
            members = [(y, x) for y in range(2) for x in range(3) if labels[b, y, x] == c]
            if members:
                expected.append(sum(embeddings[b, :, y, x] for y, x in members) / len(members))
                expected_classes.append(c)
    assert classes.tolist() == expected_classes
    assert torch.allclose(means, torch.stack(expected), atol=1e-6)


def test_enqueue_matches_list_reference_over_steps():
    num_classes, dim = 3, 4
    memory = CrossImageMemory(
        num_classes=num_classes,
        embedding_dim=dim,
        pixel_memory_size=5,
        region_memory_size=2,
        pixels_per_update=2,
        seed=3,
    )
    pixels, regions = ListQueues(memory.pixel_queue), ListQueues(memory.region_queue)
    for step in range(3):
        embeddings = F.normalize(torch.randn(2, dim, 3, 3), dim=1)
        labels = torch.randint(-1, num_classes, (2, 3, 3))
        memory.enqueue(embeddings, labels, torch.Generator().manual_seed(step))

        # the chosen pixels: same generator draw, then checked by loops below
        flat_labels = labels.reshape(-1)
        valid = [k for k in range(flat_labels.numel()) if flat_labels[k] != -1]
        groups = torch.tensor([(k // 9) * num_classes + int(flat_labels[k]) for k in valid])
        chosen = choose_per_group(groups, 2, torch.Generator().manual_seed(step)).tolist()
        for b in range(2):
            for c in range(num_classes):
                members = [k for k in valid if k // 9 == b and flat_labels[k] == c]
                if not members:
                    continue
                mean = sum(embeddings[b].reshape(dim, -1)[:, k % 9] for k in members) / len(members)
                regions.push(c, unit(mean))
                picked = [valid[i] for i in chosen if valid[i] in members]
                assert len(picked) == min(len(members), 2)
                for k in picked:
                    pixels.push(c, unit(embeddings[b].reshape(dim, -1)[:, k % 9]))
        assert torch.allclose(memory.region_queue, regions.tensor(), atol=1e-6)
        assert torch.allclose(memory.pixel_queue, pixels.tensor(), atol=1e-6)
        assert memory.pixel_pointer.tolist() == pixels.pointer
        assert memory.region_pointer.tolist() == regions.pointer
    assert int(memory.updates_done) == 3


def test_memory_sample_shares_slots_across_classes_and_is_seeded():
    memory = CrossImageMemory(
        num_classes=3,
        embedding_dim=2,
        pixel_memory_size=6,
        region_memory_size=3,
        pixels_per_update=1,
    )
    sample = memory.sample(4, "pixel", torch.Generator().manual_seed(0))
    slots = torch.randperm(6, generator=torch.Generator().manual_seed(0))[:4]
    expected = torch.cat([memory.pixel_queue[c, slots] for c in range(3)])
    assert torch.equal(sample, expected)
    assert memory.sample(10, "region", torch.Generator()).shape == (3 * 3, 2)  # capped at M
    with pytest.raises(ValueError, match="queue_name must be 'pixel' or 'region', got 'pixels'"):
        memory.sample(1, "pixels", torch.Generator())
    assert contrast_per_class(4096, 150) == 28 and contrast_per_class(1024, 19) == 54


# --------------------------------------------------------------------------------------------
# Memory contrast terms and the distiller
# --------------------------------------------------------------------------------------------
def test_contrast_distillation_matches_anchor_loops_and_gradcheck():
    student = F.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1).requires_grad_(True)
    teacher = F.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1)
    contrast = F.normalize(torch.randn(7, 3, dtype=torch.float64), dim=1)
    values = contrast_distillation(student, teacher, contrast, 0.1, 2.0)
    expected = reference_contrast(student, teacher, contrast, 0.1, 2.0)
    assert torch.allclose(values, expected, rtol=1e-10)
    (grad,) = torch.autograd.grad(values.sum(), student)
    (expected_grad,) = torch.autograd.grad(expected.sum(), student)
    assert torch.allclose(grad, expected_grad, rtol=1e-8)
    assert torch.autograd.gradcheck(lambda s: contrast_distillation(s, teacher, contrast, 0.5, 1.0), (student,))


def test_distiller_terms_match_references_on_a_fixed_bank():
    num_classes, channels = 3, (4, 6)
    distiller = small_distiller(num_classes, channels, kd_weight=0.5, minibatch_pixel_weight=2.0)
    distiller.eval()  # no enqueue, BN on running statistics: the bank stays fixed
    student, teacher = random_outputs(2, num_classes, channels)
    labels = torch.randint(-1, num_classes, (2, 16, 16))
    generator = distiller.memory.step_generator()
    pixel_contrast = distiller.memory.sample(6 // 3 + 1, "pixel", generator)
    region_contrast = distiller.memory.sample(4 // 3 + 1, "region", generator)
    bank_before = distiller.memory.pixel_queue.clone()

    terms = distiller(student, teacher, labels)
    assert set(terms) == {"ce", "kd", "minibatch_pixel", "memory_pixel", "memory_region"}
    assert torch.equal(distiller.memory.pixel_queue, bank_before)

    small_labels = labels[:, ::4, ::4]  # nearest 16 -> 4 picks every 4th pixel
    projected = distiller.projector(student.features).detach().double()
    anchors = [
        (unit(projected[b, :, y, x]), unit(teacher.features[b, :, y, x].double()))
        for b in range(2)
        for y in range(4)
        for x in range(4)
        if small_labels[b, y, x] != -1
    ]
    student_anchors = torch.stack([a for a, _ in anchors])
    teacher_anchors = torch.stack([t for _, t in anchors])
    for name, contrast in (("memory_pixel", pixel_contrast), ("memory_region", region_contrast)):
        expected = reference_contrast(student_anchors, teacher_anchors, contrast.double(), 0.1, 1.0).mean()
        assert math.isclose(terms[name].item(), 0.1 * expected.item(), rel_tol=1e-5), name
    expected_kd = reference_kd(student.logits, teacher.logits)
    assert math.isclose(terms["kd"].item(), 0.5 * expected_kd, rel_tol=1e-5)
    expected_minibatch = reference_minibatch(student.features, teacher.features, 0.1).item()
    assert math.isclose(terms["minibatch_pixel"].item(), 2.0 * expected_minibatch, rel_tol=1e-5)


def test_loss_is_zero_when_student_equals_teacher_with_identity_projection():
    distiller = small_distiller(3, (5, 5))
    with torch.no_grad():
        distiller.projector[0].weight.copy_(torch.eye(5)[:, :, None, None])
        distiller.projector[3].weight.copy_(torch.eye(5)[:, :, None, None])
    distiller.eval()  # BN: running mean 0, var 1, so the projector is identity up to a scale
    features = torch.relu(torch.randn(2, 5, 4, 4))  # head features are post-ReLU
    logits = torch.randn(2, 3, 4, 4)
    output = SegOutput(logits, None, features)
    terms = distiller.distill(output, SegOutput(logits.clone(), None, features.clone()), torch.randint(0, 3, (2, 8, 8)))
    for name in ("kd", "minibatch_pixel", "memory_pixel", "memory_region"):
        assert terms[name].item() == pytest.approx(0.0, abs=1e-6), name


def test_training_step_updates_bank_and_all_ignore_labels_give_zero_memory_terms():
    distiller = small_distiller()
    distiller.train()
    student, teacher = random_outputs(2, 3, (4, 6))
    features = student.features.requires_grad_(True)
    terms = distiller.distill(student, teacher, torch.full((2, 8, 8), -1))
    assert terms["memory_pixel"].item() == 0.0 and terms["memory_region"].item() == 0.0
    assert int(distiller.memory.updates_done) == 1 and distiller.memory.pixel_pointer.sum() == 0
    sum(terms.values()).backward()
    assert torch.isfinite(features.grad).all()

    labels = torch.zeros(2, 8, 8, dtype=torch.long)  # one class: 2 regions, 2 x 3 pixels queued
    terms = distiller.distill(student, teacher, labels)
    assert distiller.memory.region_pointer.tolist() == [2, 0, 0]
    assert distiller.memory.pixel_pointer.tolist() == [6 % 7, 0, 0]
    assert all(torch.isfinite(value) for value in terms.values())
    assert int(distiller.memory.updates_done) == 2


def test_state_dict_round_trip_keeps_banks_and_sampling():
    distiller = small_distiller()
    distiller.train()
    student, teacher = random_outputs(2, 3, (4, 6))
    distiller.distill(student, teacher, torch.randint(-1, 3, (2, 8, 8)))
    buffer = io.BytesIO()
    torch.save(distiller.state_dict(), buffer)
    buffer.seek(0)
    restored = small_distiller()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for name in ("pixel_queue", "pixel_pointer", "region_queue", "region_pointer", "updates_done"):
        assert torch.equal(getattr(restored.memory, name), getattr(distiller.memory, name)), name
    labels = torch.randint(-1, 3, (2, 8, 8))
    restored.train()
    assert torch.equal(
        restored.distill(student, teacher, labels)["memory_pixel"],
        distiller.distill(student, teacher, labels)["memory_pixel"],
    )


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match=r"feature_channels=\(student, teacher\).*\(0, 6\)"):
        build_distiller("cirkd", num_classes=3, feature_channels=(0, 6))
    with pytest.raises(ValueError, match="pixel_memory_size"):
        build_distiller("cirkd", num_classes=3, feature_channels=(4, 6), pixel_memory_size=0)
    with pytest.raises(ValueError, match="contrast_temperature"):
        build_distiller("cirkd", num_classes=3, feature_channels=(4, 6), contrast_temperature=-1.0)
    distiller = small_distiller()
    student, teacher = random_outputs(2, 3, (4, 6))
    with pytest.raises(ValueError, match=r"must be in \[0, 3\) or the ignore index -1, got 3"):
        distiller.distill(student, teacher, torch.full((2, 8, 8), 3))
    with pytest.raises(ValueError, match=r"labels must be \[N, H, W\]"):
        distiller.distill(student, teacher, torch.zeros(8, 8, dtype=torch.long))
    wrong_teacher = SegOutput(teacher.logits, None, torch.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match=r"teacher features must have 6 channels.*got 5"):
        distiller.distill(student, wrong_teacher, torch.zeros(2, 8, 8, dtype=torch.long))


def test_gather_helpers_are_identity_without_a_process_group():
    tensor = torch.randn(2, 3, requires_grad=True)
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.gather_with_grad(tensor) is tensor
    gathered = distributed.gather_without_grad(tensor)
    assert torch.equal(gathered, tensor) and not gathered.requires_grad
    assert torch.equal(distributed.sum_across_workers(torch.tensor(5)), torch.tensor(5))


# --------------------------------------------------------------------------------------------
# Two real gloo workers against one process on the concatenated batch
# --------------------------------------------------------------------------------------------
WORLD, LOCAL_BATCH, STEPS = 2, 2, 2


def scenario(step):
    """The global batch of `step` (4 images): outputs with grad-able student tensors, labels."""
    generator = torch.Generator().manual_seed(100 + step)
    student, teacher = random_outputs(WORLD * LOCAL_BATCH, 3, (4, 6), generator=generator)
    labels = torch.randint(-1, 3, (WORLD * LOCAL_BATCH, 8, 8), generator=generator)
    return student, teacher, labels


def run_steps(distiller, rows):
    """STEPS training steps on images `rows` of each global batch; values, gradients, banks."""
    record = {}
    for step in range(STEPS):
        student, teacher, labels = scenario(step)
        logits = student.logits[rows].clone().requires_grad_(True)
        features = student.features[rows].clone().requires_grad_(True)
        local_teacher = SegOutput(teacher.logits[rows], None, teacher.features[rows])
        distiller.zero_grad()
        terms = distiller.distill(SegOutput(logits, None, features), local_teacher, labels[rows])
        sum(terms.values()).backward()
        for name, value in terms.items():
            record[f"{step}/{name}"] = value.detach()
        record[f"{step}/grad_logits"] = logits.grad
        record[f"{step}/grad_features"] = features.grad
        for name, parameter in distiller.projector.named_parameters():
            record[f"{step}/grad_projector.{name}"] = parameter.grad.clone()
    for name, value in distiller.memory.state_dict().items():
        record[f"memory.{name}"] = value.clone()
    return record


def prepared_distiller():
    torch.manual_seed(0)  # the same projector weights in every process
    distiller = small_distiller()
    distiller.train()
    # BatchNorm would use each worker's own batch statistics (SyncBatchNorm needs CUDA), so the
    # projector's BN runs on its running statistics to make workers comparable to one process
    distiller.projector[1].eval()
    return distiller


def distributed_worker(rank, port, out_dir):
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        record = run_steps(prepared_distiller(), rows)
        # the helpers on their own: rows [rank+1, rank+1], loss weights differ per worker
        local = torch.full((1, 2), float(rank + 1), requires_grad=True)
        gathered = distributed.gather_with_grad(local)
        (gathered * torch.tensor([[1.0, 2.0], [3.0, 4.0]]) * (rank + 1)).sum().backward()
        record["helper/gathered"] = gathered.detach()
        record["helper/grad"] = local.grad
        record["helper/no_grad"] = distributed.gather_without_grad(local)
        record["helper/sum"] = distributed.sum_across_workers(torch.tensor(rank + 1))
        record["helper/world_rank"] = torch.tensor([distributed.world_size(), distributed.rank()])
        torch.save(record, f"{out_dir}/rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("cirkd_gloo")
    mp.spawn(distributed_worker, args=(free_port(), str(out_dir)), nprocs=WORLD, join=True)
    workers = [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single = run_steps(prepared_distiller(), slice(None))
    return workers, single


@pytest.mark.slow
def test_two_workers_loss_is_the_single_process_loss_on_the_global_batch(two_workers):
    workers, single = two_workers
    for step in range(STEPS):
        for name in ("kd", "minibatch_pixel", "memory_pixel", "memory_region"):
            key = f"{step}/{name}"
            mean_over_workers = sum(w[key] for w in workers) / WORLD
            assert torch.allclose(mean_over_workers, single[key], rtol=1e-5, atol=1e-7), key
        # workers differ (their own anchors) yet average to the global loss
        per_worker = [w[f"{step}/minibatch_pixel"] for w in workers]
        assert not torch.allclose(per_worker[0], per_worker[1])


@pytest.mark.slow
def test_two_workers_gradients_are_world_size_times_their_single_process_slice(two_workers):
    """Convention: worker r's gradient = WORLD * the single-process slice; DDP's mean undoes it."""
    workers, single = two_workers
    for step in range(STEPS):
        for name in ("grad_logits", "grad_features"):
            key = f"{step}/{name}"
            for rank, worker in enumerate(workers):
                rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
                expected = single[key][rows]
                assert torch.allclose(worker[key] / WORLD, expected, rtol=1e-4, atol=1e-7), key
        for key in (k for k in single if k.startswith(f"{step}/grad_projector")):
            ddp_average = sum(w[key] for w in workers) / WORLD
            assert torch.allclose(ddp_average, single[key], rtol=1e-4, atol=1e-7), key


@pytest.mark.slow
def test_two_workers_keep_the_single_process_memory_bank(two_workers):
    workers, single = two_workers
    assert int(single["memory.updates_done"]) == STEPS
    for key in (k for k in single if k.startswith("memory.")):
        for worker in workers:
            assert torch.allclose(worker[key], single[key], atol=1e-6), key
    assert single["memory.pixel_pointer"].sum() > 0


@pytest.mark.slow
def test_gather_helpers_with_two_workers(two_workers):
    workers, _ = two_workers
    weights = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    for rank, worker in enumerate(workers):
        assert worker["helper/world_rank"].tolist() == [WORLD, rank]
        assert torch.equal(worker["helper/gathered"], torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
        assert torch.equal(worker["helper/no_grad"], worker["helper/gathered"])
        assert int(worker["helper/sum"]) == 3
        # d/d(rows of rank r) of sum over workers k of (k+1) * weights . gathered
        expected = sum((k + 1) * weights[rank] for k in range(WORLD))[None]
        assert torch.equal(worker["helper/grad"], expected)
