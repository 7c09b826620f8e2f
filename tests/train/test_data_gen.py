"""The seed API of ctxconv.train.data_gen, as the seed document describes it."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from ctxconv.train.data_gen import (
    DataGenConfig,
    generate_contextual_data,
    generate_data,
    generate_wrong_labels,
    one_hot_encode,
)


def test_wrong_label_never_equals_true_label():
    labels = torch.randint(0, 10, (50_000,))
    wrong = generate_wrong_labels(labels, 10)
    assert wrong.shape == labels.shape
    assert not bool((wrong == labels).any())
    assert int(wrong.min()) >= 0 and int(wrong.max()) <= 9


def test_wrong_labels_uniform_over_other_classes():
    """Chi-square test: for each true class, the K-1 wrong labels are equally likely."""
    k, n = 10, 200_000
    torch.manual_seed(0)
    labels = torch.randint(0, k, (n,))
    wrong = generate_wrong_labels(labels, k)
    counts = np.zeros((k, k))
    np.add.at(counts, (labels.numpy(), wrong.numpy()), 1)
    chi2_total, dof = 0.0, 0
    for c in range(k):
        row = np.delete(counts[c], c)
        expected = row.sum() / (k - 1)
        chi2_total += float(((row - expected) ** 2 / expected).sum())
        dof += k - 2
    # chi-square with 80 dof: mean 80, sd ~12.6; 140 is ~ p < 1e-4
    assert chi2_total < 140, chi2_total


def test_shapes_positive_first_and_duplicated_images():
    images = torch.randn(6, 3, 5, 7)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    aug_images, aug_contexts = generate_contextual_data(images, labels, 7)
    assert aug_images.shape == (12, 3, 5, 7)
    assert aug_contexts.shape == (12, 7)
    assert torch.equal(aug_images[:6], images) and torch.equal(aug_images[6:], images)
    assert torch.equal(aug_contexts[:6].argmax(1), labels)
    assert not bool((aug_contexts[6:].argmax(1) == labels).any())
    assert torch.equal(aug_contexts.sum(1), torch.ones(12))


def test_device_and_dtype_are_kept():
    images = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 0])
    aug_images, aug_contexts = generate_contextual_data(images, labels, 2)
    assert aug_images.dtype == torch.float64 and aug_contexts.dtype == torch.float64
    assert aug_images.device == images.device == aug_contexts.device
    half = generate_contextual_data(images.half(), labels, 2)[1]
    assert half.dtype == torch.float16


def test_two_classes_negative_is_the_other_class():
    labels = torch.tensor([0, 1, 1, 0, 1])
    assert torch.equal(generate_wrong_labels(labels, 2), 1 - labels)


def test_one_hot_encode():
    out = one_hot_encode(torch.tensor([2, 0]), 3)
    assert torch.equal(out, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))


@pytest.mark.parametrize(
    ("labels", "k", "message"),
    [
        (torch.tensor([0, 10]), 10, r"labels must lie in \[0, 9\]"),
        (torch.tensor([-1, 2]), 10, r"labels must lie in \[0, 9\]"),
        (torch.tensor([0, 0]), 1, "num_classes must be >= 2"),
        (torch.tensor([0.0, 1.0]), 3, "integer class indices"),
    ],
)
def test_bad_labels_raise_value_error(labels, k, message):
    with pytest.raises(ValueError, match=message):
        generate_wrong_labels(labels, k)


def test_generate_data_dispatch_and_unknown_type():
    cfg = DataGenConfig(dataset="digits", num_classes=10)
    images, labels = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3])
    aug_images, aug_contexts = generate_data((images, labels), cfg)
    assert aug_images.shape == (6, 1, 8, 8) and aug_contexts.shape == (6, 10)
    cfg.data_gen_type = "mixup"
    with pytest.raises(ValueError, match="unknown data_gen_type 'mixup'"):
        generate_data((images, labels), cfg)


def test_seed_usage_example_with_package_prefix():
    from ctxconv.train.data import load_and_split_data

    cfg = DataGenConfig(dataset="digits", num_classes=10, data_gen_type="contextual")
    train_loader, _, _ = load_and_split_data(cfg)
    images, labels = next(iter(train_loader))
    aug_images, aug_contexts = generate_data((images, labels), cfg)
    assert aug_images.shape == (2 * len(labels), 1, 8, 8)
    assert aug_contexts.shape == (2 * len(labels), 10)


def test_module_main_logs_shapes():
    out = subprocess.run([sys.executable, "-m", "ctxconv.train.data_gen"], capture_output=True,
                         text=True, timeout=120, check=True)
    text = out.stdout + out.stderr
    assert "augmented images (128, 1, 8, 8), contexts (128, 10)" in text
    assert "'data_gen_type': 'contextual'" in text
