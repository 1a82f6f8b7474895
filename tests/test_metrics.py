"""Confusion-matrix metrics and evaluate(), against per-class numpy loops written here."""

import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from hwd_tune.metrics import ConfusionMatrix, evaluate
from hwd_tune.outputs import SegOutput

IGNORE = -1


# -------------------------------------------------------------------------------------------
# Independent references
# -------------------------------------------------------------------------------------------
def reference_scores(pred, target, num_classes, ignore_index=IGNORE):
    """IoU per class, mIoU (present classes), mIoU (all classes) and pixel accuracy by loops."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    ious = []
    for c in range(num_classes):
        tp = int(np.sum((pred == c) & (target == c)))
        fp = int(np.sum((pred == c) & (target != c)))
        fn = int(np.sum((pred != c) & (target == c)))
        ious.append(math.nan if tp + fp + fn == 0 else tp / (tp + fp + fn))
    present = [v for v in ious if not math.isnan(v)]
    miou = sum(present) / len(present) if present else math.nan
    miou_all = sum(0.0 if math.isnan(v) else v for v in ious) / num_classes
    accuracy = float(np.mean(pred == target)) if len(target) else math.nan
    return np.array(ious), miou, miou_all, accuracy


def reference_matrix(pred, target, num_classes, ignore_index=IGNORE):
    """matrix[t, p] counted one pixel at a time."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(np.asarray(pred).ravel().tolist(), np.asarray(target).ravel().tolist()):
        if t != ignore_index:
            matrix[t, p] += 1
    return matrix


def random_labels(seed, shape, num_classes, absent, ignore_fraction=0.2):
    """(pred, target) avoiding the classes in `absent`, with ~ignore_fraction ignored targets."""
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([c for c in range(num_classes) if c not in absent])
    pred = allowed[torch.randint(len(allowed), shape, generator=generator)]
    target = allowed[torch.randint(len(allowed), shape, generator=generator)]
    # make predictions right half of the time so IoUs are far from 0
    agree = torch.rand(shape, generator=generator) < 0.5
    pred = torch.where(agree, target, pred)
    ignored = torch.rand(shape, generator=generator) < ignore_fraction
    target = torch.where(ignored, torch.full_like(target, IGNORE), target)
    return pred, target


# -------------------------------------------------------------------------------------------
# Scores against the references
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed, num_classes, absent",
    [(0, 2, ()), (1, 5, (3,)), (2, 7, (0, 6)), (3, 19, (1, 4, 5, 18)), (4, 150, ())],
)
def test_scores_match_per_class_loops(seed, num_classes, absent):
    pred, target = random_labels(seed, (2, 9, 11), num_classes, absent)
    confusion = ConfusionMatrix(num_classes)
    confusion.update(pred, target)

    ious, miou, miou_all, accuracy = reference_scores(pred, target, num_classes)
    expected_matrix = reference_matrix(pred, target, num_classes)
    np.testing.assert_array_equal(confusion.matrix.numpy(), expected_matrix)
    assert confusion.matrix.dtype == torch.int64
    assert confusion.iou().dtype == torch.float64
    np.testing.assert_allclose(confusion.iou().numpy(), ious, rtol=1e-12, equal_nan=True)
    assert math.isclose(confusion.miou(), miou, rel_tol=1e-12)
    assert math.isclose(confusion.miou_all_classes(), miou_all, rel_tol=1e-12)
    assert math.isclose(confusion.pixel_accuracy(), accuracy, rel_tol=1e-12)
    for c in absent:
        assert math.isnan(confusion.iou()[c].item())
    if absent:
        assert confusion.miou_all_classes() < confusion.miou()


def test_class_only_predicted_or_only_in_target_scores_zero():
    # class 1 only predicted, class 2 only in the target, class 3 only at an ignored pixel
    pred = torch.tensor([[[0, 1, 0, 3]]])
    target = torch.tensor([[[0, 0, 2, IGNORE]]])
    confusion = ConfusionMatrix(4)
    confusion.update(pred, target)
    ious, miou, miou_all, accuracy = reference_scores(pred, target, 4)
    np.testing.assert_allclose(confusion.iou().numpy(), ious, equal_nan=True)
    assert confusion.iou()[1].item() == 0.0 and confusion.iou()[2].item() == 0.0
    assert math.isnan(confusion.iou()[3].item())
    assert math.isclose(confusion.miou(), miou)
    assert math.isclose(confusion.miou_all_classes(), miou_all)
    assert math.isclose(confusion.pixel_accuracy(), accuracy)


def test_golden_hand_worked_example():
    # K = 4, class 3 never occurs. Valid (target, pred) pairs, the -1 pixel dropped:
    #   (0,0) (0,1) (1,1) (1,2) (2,2)
    # so the rows (target) of the matrix are [1 1 0 0] [0 1 1 0] [0 0 1 0] [0 0 0 0].
    # class 0: TP 1, FP 0, FN 1 -> 1/2;  class 1: TP 1, FP 1, FN 1 -> 1/3
    # class 2: TP 1, FP 1, FN 0 -> 1/2;  class 3: absent -> NaN
    # mIoU (present) = (1/2 + 1/3 + 1/2) / 3 = 4/9; mIoU (all K) = (4/3) / 4 = 1/3; accuracy 3/5
    target = torch.tensor([[[0, 0, 1], [1, IGNORE, 2]]])
    pred = torch.tensor([[[0, 1, 1], [2, 0, 2]]])
    confusion = ConfusionMatrix(4, ignore_index=IGNORE)
    confusion.update(pred, target)
    expected = [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert confusion.matrix.tolist() == expected
    iou = confusion.iou().tolist()
    assert iou[:3] == [0.5, pytest.approx(1 / 3, rel=1e-15), 0.5] and math.isnan(iou[3])
    assert confusion.miou() == pytest.approx(4 / 9, rel=1e-15)
    assert confusion.miou_all_classes() == pytest.approx(1 / 3, rel=1e-15)
    assert confusion.pixel_accuracy() == pytest.approx(0.6, rel=1e-15)


def test_other_ignore_index_and_narrow_dtypes():
    target = torch.tensor([[[0, 255, 1, 2]]], dtype=torch.int32)
    pred = torch.tensor([[[0, 2, 1, 1]]], dtype=torch.uint8)
    confusion = ConfusionMatrix(3, ignore_index=255)
    confusion.update(pred, target)
    np.testing.assert_array_equal(confusion.matrix.numpy(), reference_matrix(pred, target, 3, ignore_index=255))
    negative = ConfusionMatrix(3, ignore_index=-5)
    negative.update(torch.tensor([[[1, 2]]]), torch.tensor([[[-5, 2]]]))
    assert negative.matrix.sum().item() == 1 and negative.matrix[2, 2].item() == 1
    with pytest.raises(ValueError, match=r"ignore_index=-5: \[-1\]"):
        negative.update(torch.tensor([[[1, 2]]]), torch.tensor([[[-1, 2]]]))


def test_empty_matrix_scores_are_nan_and_reset_clears():
    confusion = ConfusionMatrix(3)
    assert math.isnan(confusion.miou()) and math.isnan(confusion.pixel_accuracy())
    assert confusion.miou_all_classes() == 0.0
    confusion.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    assert confusion.miou() == 1.0
    confusion.reset()
    assert confusion.matrix.sum().item() == 0 and math.isnan(confusion.miou())


# -------------------------------------------------------------------------------------------
# Accumulation
# -------------------------------------------------------------------------------------------
def test_several_updates_equal_one_update_on_the_concatenation():
    parts = [random_labels(seed, (2, 6, 7), 6, absent=(5,)) for seed in range(4)]
    accumulated = ConfusionMatrix(6)
    for pred, target in parts:
        accumulated.update(pred, target)
    whole = ConfusionMatrix(6)
    whole.update(torch.cat([p for p, _ in parts]), torch.cat([t for _, t in parts]))
    assert torch.equal(accumulated.matrix, whole.matrix)
    assert accumulated.miou() == whole.miou()


def test_merge_and_iadd_add_counts():
    first, second = random_labels(10, (1, 5, 5), 4, ()), random_labels(11, (1, 5, 5), 4, ())
    left, right, both = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    left.update(*first)
    right.update(*second)
    both.update(*first)
    both.update(*second)
    merged = ConfusionMatrix(4)
    merged += left
    assert merged.merge(right) is merged
    assert torch.equal(merged.matrix, both.matrix)
    with pytest.raises(ValueError, match="num_classes 4 vs 5"):
        merged.merge(ConfusionMatrix(5))
    with pytest.raises(ValueError, match="ignore_index -1 vs 255"):
        merged += ConfusionMatrix(4, ignore_index=255)
    with pytest.raises(ValueError, match="ConfusionMatrix"):
        merged.merge(both.matrix)


def test_all_reduce_without_process_group_is_a_no_op():
    confusion = ConfusionMatrix(3)
    confusion.update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 2, 2]]]))
    before = confusion.matrix.clone()
    assert confusion.all_reduce() is confusion
    assert torch.equal(confusion.matrix, before)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _all_reduce_worker(rank, world_size, port, parts, result_dir):
    """One gloo worker: count its own part, all-reduce, save the summed matrix."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        confusion = ConfusionMatrix(5)
        pred, target = parts[rank]
        confusion.update(pred, target)
        confusion.all_reduce()
        torch.save(confusion.matrix, f"{result_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_across_two_gloo_processes_equals_single_process(tmp_path):
    parts = [random_labels(20, (2, 8, 8), 5, absent=(4,)), random_labels(21, (3, 8, 8), 5, ())]
    mp.spawn(
        _all_reduce_worker,
        args=(2, _free_port(), parts, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    single = ConfusionMatrix(5)
    single.update(torch.cat([p for p, _ in parts]), torch.cat([t for _, t in parts]))
    for rank in range(2):
        reduced = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(reduced, single.matrix)
    assert not dist.is_initialized()


# -------------------------------------------------------------------------------------------
# Invalid arguments
# -------------------------------------------------------------------------------------------
def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="num_classes.*2.0"):
        ConfusionMatrix(2.0)
    with pytest.raises(ValueError, match=r"ignore_index must lie outside .*\[0, 5\), got 3"):
        ConfusionMatrix(5, ignore_index=3)


def test_bad_shapes_and_dtypes_are_named():
    confusion = ConfusionMatrix(3)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"pred must be \[N, H, W\], got shape \(4, 4\)"):
        confusion.update(labels[0], labels[0])
    with pytest.raises(ValueError, match=r"target must be \[N, H, W\], got shape \(1, 1, 4, 4\)"):
        confusion.update(labels, labels[None])
    with pytest.raises(ValueError, match=r"same shape, got \(1, 4, 4\) and \(1, 4, 5\)"):
        confusion.update(labels, torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="pred must hold integer class ids.*float32"):
        confusion.update(labels.float(), labels)
    with pytest.raises(ValueError, match="target must hold integer class ids.*bool"):
        confusion.update(labels, labels.bool())
    with pytest.raises(ValueError, match="pred must be a torch.Tensor, got ndarray"):
        confusion.update(labels.numpy(), labels)
    assert confusion.matrix.sum().item() == 0


def test_out_of_range_values_are_named():
    confusion = ConfusionMatrix(3)
    target = torch.tensor([[[0, 1, IGNORE, 2]]])
    with pytest.raises(ValueError, match=r"pred holds class ids outside \[0, 3\): \[-1, 3\]"):
        confusion.update(torch.tensor([[[0, 3, 1, -1]]]), target)
    with pytest.raises(ValueError, match=r"target holds values .*ignore_index=-1: \[-2, 3, 7\]"):
        confusion.update(torch.tensor([[[0, 1, 1, 2]]]), torch.tensor([[[7, -2, IGNORE, 3]]]))
    with pytest.raises(ValueError, match=r"ignore_index=-1: \[-2\]"):
        confusion.update(torch.tensor([[[0, 1]]]), torch.tensor([[[-2, 1]]]))
    with pytest.raises(ValueError, match=r"ignore_index=-1: \[3\]"):
        confusion.update(torch.tensor([[[0, 1]]]), torch.tensor([[[IGNORE, 3]]]))
    many = torch.arange(3, 20).reshape(1, 1, 17)
    with pytest.raises(ValueError, match=r"\[3, 4, .*12\] \(and 7 more\)"):
        confusion.update(many, torch.zeros_like(many))
    assert confusion.matrix.sum().item() == 0


# -------------------------------------------------------------------------------------------
# evaluate()
# -------------------------------------------------------------------------------------------
class TinySegNet(nn.Module):
    """Logits = fixed 1x1 conv of BatchNorm(avg-pooled input) at 1/8 resolution."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.classifier = nn.Conv2d(3, num_classes, kernel_size=1)
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.randn(num_classes, 3, 1, 1, generator=generator))
            self.classifier.bias.copy_(0.1 * torch.randn(num_classes, generator=generator))
            self.norm.running_mean.copy_(torch.tensor([0.5, -0.5, 0.2]))
            self.norm.running_var.copy_(torch.tensor([0.25, 4.0, 1.0]))
        self.calls_in_inference_mode = []

    def forward(self, image):
        self.calls_in_inference_mode.append(torch.is_inference_mode_enabled())
        features = self.norm(F.avg_pool2d(image, kernel_size=8))
        return SegOutput(self.classifier(features), None, features)


def fixed_batches(num_classes=4):
    generator = torch.Generator().manual_seed(3)
    batches = []
    for n in (2, 1):
        # 8x: varied logits; 44 is no multiple of 8, so the model is not flip-equivariant
        image = 8.0 * torch.randn(n, 3, 36, 44, generator=generator)
        mask = torch.randint(-1, num_classes, (n, 36, 44), generator=generator)
        batches.append((image, mask))
    return batches


def manual_logits(model, image, size):
    """Eval-mode BN written out by hand, then upsampling to `size`."""
    pooled = F.avg_pool2d(image, kernel_size=8)
    norm = model.norm
    scale = (norm.running_var + norm.eps).rsqrt() * norm.weight
    centred = pooled - norm.running_mean[:, None, None]
    features = centred * scale[:, None, None] + norm.bias[:, None, None]
    logits = F.conv2d(features, model.classifier.weight, model.classifier.bias)
    return F.interpolate(logits, size, mode="bilinear", align_corners=True)


@pytest.mark.parametrize("flip", [False, True])
def test_evaluate_matches_manual_upsample_argmax_and_confusion(flip):
    model = TinySegNet().train()
    batches = fixed_batches()
    with torch.no_grad():
        expected = np.zeros((4, 4), dtype=np.int64)
        for image, mask in batches:
            if flip:
                plain = manual_logits(model, image, mask.shape[-2:]).softmax(1)
                mirrored = manual_logits(model, image.flip(-1), mask.shape[-2:]).softmax(1).flip(-1)
                pred = (0.5 * (plain + mirrored)).argmax(1)
            else:
                pred = manual_logits(model, image, mask.shape[-2:]).argmax(1)
            expected += reference_matrix(pred, mask, 4)

    confusion = evaluate(model, batches, 4, flip=flip)

    np.testing.assert_array_equal(confusion.matrix.numpy(), expected)
    assert (confusion.matrix.sum(0) > 0).all(), "every class must be predicted somewhere"
    if flip:  # the flipped pass must change some predictions, or this test checks nothing
        assert not torch.equal(confusion.matrix, evaluate(model, batches, 4).matrix)
    assert confusion.matrix.sum().item() == sum(int((m != IGNORE).sum()) for _, m in batches)
    assert model.training, "evaluate() must restore train mode"
    assert model.calls_in_inference_mode[: 2 * len(batches)] == [True] * (2 * len(batches) if flip else len(batches))
    eval_model = TinySegNet().eval()
    evaluate(eval_model, batches, 4)
    assert not eval_model.training


def test_evaluate_multi_scale_sums_softmax_at_label_size():
    model = TinySegNet()
    batches = fixed_batches()
    expected = np.zeros((4, 4), dtype=np.int64)
    with torch.no_grad():
        for image, mask in batches:
            half = F.interpolate(image, (18, 22), mode="bilinear", align_corners=True)
            probs = manual_logits(model, image, mask.shape[-2:]).softmax(1)
            probs = probs + manual_logits(model, half, mask.shape[-2:]).softmax(1)
            expected += reference_matrix(probs.argmax(1), mask, 4)
    confusion = evaluate(model, batches, 4, scales=(1.0, 0.5))
    np.testing.assert_array_equal(confusion.matrix.numpy(), expected)
    assert not torch.equal(confusion.matrix, evaluate(model, batches, 4).matrix)


def test_evaluate_restores_mode_even_when_it_fails():
    model = TinySegNet().train()
    bad = [(torch.randn(1, 3, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long) + 9)]
    with pytest.raises(ValueError, match=r"target holds values .*\[9\]"):
        evaluate(model, bad, 4)
    assert model.training


def test_evaluate_bad_arguments_are_named():
    model = TinySegNet()
    image, mask = torch.randn(2, 3, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long)
    with pytest.raises(ValueError, match="model returned 4 classes, expected num_classes=5"):
        evaluate(model, [(image, mask)], 5)
    with pytest.raises(ValueError, match=r"scales must be .*positive.*\(1.0, 0.0\)"):
        evaluate(model, [(image, mask)], 4, scales=(1.0, 0.0))
    with pytest.raises(ValueError, match="scales must be a non-empty"):
        evaluate(model, [(image, mask)], 4, scales=())
    with pytest.raises(ValueError, match=r"batch 0: image must be \[N, 3, H, W\], got \(3, 16"):
        evaluate(model, [(image[0], mask)], 4)
    with pytest.raises(ValueError, match=r"batch 1: mask must be \[N=2, H, W\], got \(1, 16, 16\)"):
        evaluate(model, [(image, mask), (image, mask[:1])], 4)
    with pytest.raises(ValueError, match="batch 0 must be \\(image, mask\\), got Tensor"):
        evaluate(model, [image], 4)

    class PlainTensorNet(nn.Module):
        def forward(self, image):
            return image.mean(1, keepdim=True).repeat(1, 4, 1, 1)

    with pytest.raises(ValueError, match="must return hwd_tune.outputs.SegOutput, got Tensor"):
        evaluate(PlainTensorNet(), [(image, mask)], 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_update_on_gpu_matches_cpu():
    pred, target = random_labels(30, (2, 16, 16), 7, absent=(2,))
    on_cpu, on_gpu = ConfusionMatrix(7), ConfusionMatrix(7, device="cuda")
    on_cpu.update(pred, target)
    on_gpu.update(pred.cuda(), target.cuda())
    mixed = ConfusionMatrix(7)
    mixed.update(pred.cuda(), target.cuda())
    assert torch.equal(on_gpu.matrix.cpu(), on_cpu.matrix)
    assert torch.equal(mixed.matrix, on_cpu.matrix) and mixed.matrix.device.type == "cpu"
    model = TinySegNet().cuda()
    batches = fixed_batches()
    on_device = evaluate(model, [(i.cuda(), m.cuda()) for i, m in batches], 4, device="cuda")
    on_host = evaluate(model.cpu(), batches, 4).matrix
    # cuDNN may convolve in TF32, so a few near-tied pixels may flip class; counts must agree
    assert on_device.matrix.device.type == "cuda"
    assert on_device.matrix.sum().item() == on_host.sum().item()
    assert (on_device.matrix.cpu() - on_host).abs().sum().item() <= 0.02 * on_host.sum().item()
