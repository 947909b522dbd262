"""Parity of each piece of the recipe against PyTorch's own modules (issue #5).

Every expected value comes from torch / torchvision or from a hand computation,
never from tlres itself.
"""


import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from tlres import augment, schedules  # noqa: E402
from tlres.compare import mcnemar_exact, paired  # noqa: E402
from tlres.losses import SmoothedCrossEntropy  # noqa: E402

C, EPS = 10, 0.1


def _logits_labels(seed=0, n=32):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3, (n, C)).astype("float32"),
            rng.integers(0, C, n).astype("int32"))


def test_keras_smoothing_equals_torch_cross_entropy_label_smoothing():
    logits, labels = _logits_labels()
    ours = float(SmoothedCrossEntropy(C, EPS, form="keras")(labels, logits))
    ref = torch.nn.CrossEntropyLoss(label_smoothing=EPS)(
        torch.from_numpy(logits), torch.from_numpy(labels).long()).item()
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_paper_smoothing_equals_torch_eq11():
    logits, labels = _logits_labels(1)
    t = torch.full((len(labels), C), EPS / (C - 1))
    t[torch.arange(len(labels)), torch.from_numpy(labels).long()] = 1 - EPS
    ref = -(t * torch.log_softmax(torch.from_numpy(logits), 1)).sum(1).mean().item()
    ours = float(SmoothedCrossEntropy(C, EPS, form="paper")(labels, logits))
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-6)
    # and torch's probability-target CrossEntropyLoss agrees with the hand-built eq. 11
    assert torch.nn.CrossEntropyLoss()(torch.from_numpy(logits), t).item() == pytest.approx(ref, rel=1e-6)


def test_epoch_cosine_equals_torch_cosine_annealing_lr_every_epoch():
    epochs, lr_max, lr_min = 50, 0.01, 0.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr_max, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr_min)
    for epoch in range(epochs):
        assert schedules.cosine(epoch, epochs, lr_max, lr_min) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12), epoch
        opt.step()
        sched.step()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("dy,dx", [(0, 0), (4, 4), (8, 1), (2, 7)])
def test_augmentation_equals_torchvision(flip, dy, dx):
    import torchvision.transforms.functional as TF

    rng = np.random.default_rng(dy * 10 + dx)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ours = augment.normalize(np, augment.flip_crop(
        np, img[None], np.array([flip]), np.array([dy]), np.array([dx]), 4), "paper")[0]

    # torchvision's pipeline: ToTensor, RandomHorizontalFlip, RandomCrop(32, padding=4),
    # Normalize(0.5, 0.5), with its random draws fixed to (flip, dy, dx).
    x = TF.to_tensor(img)  # CHW float in [0, 1]
    if flip:
        x = TF.hflip(x)
    x = TF.pad(x, [4, 4, 4, 4], fill=0)          # what RandomCrop(padding=4) does first
    x = TF.crop(x, dy, dx, 32, 32)               # RandomCrop's crop at offsets (i=dy, j=dx)
    x = TF.normalize(x, [0.5] * 3, [0.5] * 3)
    np.testing.assert_allclose(ours, x.permute(1, 2, 0).numpy(), atol=1e-6)


def test_random_crop_offsets_are_top_left_of_padded_window():
    # RandomCrop.get_params returns (i, j) = top row and left column in the padded image,
    # the same meaning as tlres' (dy, dx); check with a seeded draw.
    from torchvision import transforms as T

    torch.manual_seed(3)
    img = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 32, 32)
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    i, j, h, w = T.RandomCrop.get_params(padded, (32, 32))
    torch.manual_seed(3)
    out = T.RandomCrop(32, padding=4)(img)
    np.testing.assert_array_equal(out.numpy(), padded[:, i:i + 32, j:j + 32].numpy())


def test_dense_head_equals_torch_linear():
    import keras

    rng = np.random.default_rng(5)
    feats = rng.normal(size=(8, 2048)).astype("float32")
    lin = torch.nn.Linear(2048, C)
    dense = keras.layers.Dense(C)
    dense.build((None, 2048))
    dense.set_weights([lin.weight.detach().numpy().T, lin.bias.detach().numpy()])
    ref = lin(torch.from_numpy(feats)).detach().numpy()
    np.testing.assert_allclose(np.asarray(dense(feats)), ref, rtol=1e-5, atol=1e-5)


def test_batchnorm_moving_mean_matches_torch_and_variance_differs_by_bessel():
    import keras

    rng = np.random.default_rng(7)
    n, h, w, ch = 4, 3, 3, 5
    x = rng.normal(2.0, 3.0, (n, h, w, ch)).astype("float32")
    bn_k = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    bn_k.build(x.shape)
    bn_k(x, training=True)
    bn_t = torch.nn.BatchNorm2d(ch, momentum=0.1, eps=1e-5).train()
    bn_t(torch.from_numpy(x).permute(0, 3, 1, 2))

    np.testing.assert_allclose(np.asarray(bn_k.moving_mean), bn_t.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    m = n * h * w
    batch_var = x.reshape(-1, ch).var(0)  # biased, by hand
    # Keras: 0.9 * 1 + 0.1 * biased; torch: 0.9 * 1 + 0.1 * unbiased (Bessel, m/(m-1)).
    np.testing.assert_allclose(np.asarray(bn_k.moving_variance), 0.9 + 0.1 * batch_var, rtol=1e-5)
    np.testing.assert_allclose(bn_t.running_var.numpy(), 0.9 + 0.1 * batch_var * m / (m - 1), rtol=1e-5)
    # The difference is 0.1 * var / (m - 1): here m = 36, ~2.9% of the update; for a
    # 64-image batch of 8x8 maps (m = 4096) it is 0.02% - negligible, so tlres keeps Keras'.


def test_mcnemar_hand_computed():
    # A right / B wrong on 7, A wrong / B right on 2, both right on 11.
    a = np.array([1] * 7 + [0] * 2 + [1] * 11, bool)
    b = np.array([0] * 7 + [1] * 2 + [1] * 11, bool)
    bb, cc, p = mcnemar_exact(a, b)
    assert (bb, cc) == (7, 2)
    # 2 * (C(9,0) + C(9,1) + C(9,2)) / 2^9 = 2 * 46 / 512
    assert p == pytest.approx(92 / 512, rel=1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert p == pytest.approx(scipy_stats.binomtest(2, 9, 0.5).pvalue, rel=1e-12)


def test_mcnemar_identical_is_one_and_zero_difference():
    labels = np.array([0, 1, 2, 2, 1, 0])
    pred = np.array([0, 1, 1, 2, 0, 0])
    out = paired(labels, pred, pred, 3)
    assert out["mcnemar_p"] == 1.0 and out["accuracy_difference"] == 0.0 and out["agreement"] == 1.0
    assert not np.any(out["confusion_difference"])
