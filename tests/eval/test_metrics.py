import math

import pytest
import torch

from cgspn.eval.metrics import accuracy, binary_iou, confusion_matrix, iou_from_confusion, miou, token_cosine


def test_miou_on_hand_made_masks():
    target = torch.tensor([[0, 0, 1, 1],
                           [0, 0, 1, 1],
                           [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 0, 1, 1],
                         [2, 0, 2, 0]])
    conf = confusion_matrix(pred, target, num_classes=3)
    # class 0: tp 3, gt 4, pred 4 (incl. one 2->0) -> 3 / 5 ; class 1: tp 4, gt 4, pred 5 -> 4/5 ; class 2: tp 1, gt 2, pred 1 -> 1/2
    iou = iou_from_confusion(conf)
    assert iou.tolist() == pytest.approx([3 / 5, 4 / 5, 1 / 2])
    assert miou(conf) == pytest.approx((3 / 5 + 4 / 5 + 1 / 2) / 3)
    assert conf.sum() == 10  # ignored pixels not counted


def test_absent_class_is_left_out_of_the_mean():
    t = torch.zeros(4, dtype=torch.long)
    conf = confusion_matrix(t, t, num_classes=5)
    assert math.isnan(iou_from_confusion(conf)[3])
    assert miou(conf) == 1.0


def test_confusion_rejects_bad_labels():
    with pytest.raises(ValueError, match="target labels"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.tensor([0, 7, 1]), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), num_classes=3)


def test_binary_iou_and_accuracy():
    a = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0], dtype=torch.bool)
    assert binary_iou(a, b) == pytest.approx(1 / 3)
    assert binary_iou(a, b, ignore=torch.tensor([0, 0, 1, 0], dtype=torch.bool)) == pytest.approx(1 / 2)
    assert binary_iou(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0
    assert accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])) == pytest.approx(2 / 3)


def test_token_cosine():
    x = torch.randn(2, 5, 8)
    assert torch.allclose(token_cosine(x, 3 * x), torch.ones(2, 5), atol=1e-6)
    assert torch.allclose(token_cosine(x, -x), -torch.ones(2, 5), atol=1e-6)
