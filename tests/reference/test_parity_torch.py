"""Parity of each piece of the recipe against PyTorch's own modules (issue #5).

Every expected value comes from torch / torchvision, from a float64 computation of the
definition, or from a hand computation, never from tlres itself; and every test runs tlres'
own code path (its loss, its schedule, its augmentation draws and transform, the head and
BatchNorm settings of the model `tlres.net.model.build` makes). Tolerances are float32 error
bounds against float64 references (tests/fpbounds.py).
"""


import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from fpbounds import (U32, U64, cross_entropy_error, eq11_targets, gamma,  # noqa: E402
                      keras_smoothing_targets, mean_error)
from tlres.data import augment, pipeline  # noqa: E402
from tlres.net import model as model_lib
from tlres.run import schedules
from tlres.core.config import IMPROVED, QUICK  # noqa: E402
from tlres.run.losses import SmoothedCrossEntropy  # noqa: E402

C, EPS = 10, 0.1


def _logits_labels(seed=0, n=32):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3, (n, C)).astype("float32"),
            rng.integers(0, C, n).astype("int32"))


def _loss_bound(logits, targets, u=U32):
    """(exact mean loss, error bound of a mean smoothed cross-entropy computed with unit roundoff u)."""
    per_bound, per_exact = cross_entropy_error(logits, targets, u)
    return float(per_exact.mean()), mean_error(per_bound, per_exact, u)


def test_keras_smoothing_equals_torch_cross_entropy_label_smoothing():
    logits, labels = _logits_labels()
    targets = keras_smoothing_targets(labels, C, EPS)
    exact, bound = _loss_bound(logits, targets)
    ours = float(SmoothedCrossEntropy(C, EPS, form="keras")(labels, logits))
    ref = torch.nn.CrossEntropyLoss(label_smoothing=EPS)(
        torch.from_numpy(logits), torch.from_numpy(labels).long()).item()
    ref64 = torch.nn.CrossEntropyLoss(label_smoothing=EPS)(
        torch.from_numpy(logits).double(), torch.from_numpy(labels).long()).item()
    assert abs(ref64 - exact) <= _loss_bound(logits, targets, U64)[1]  # torch in float64: the definition
    # each float32 side within the float32 bound of the definition, so within 2 bounds of each other
    assert abs(ours - exact) <= bound and abs(ref - exact) <= bound, (ours, ref, exact, bound)


def test_paper_smoothing_equals_torch_eq11():
    logits, labels = _logits_labels(1)
    t = torch.full((len(labels), C), EPS / (C - 1))
    t[torch.arange(len(labels)), torch.from_numpy(labels).long()] = 1 - EPS
    ref = -(t * torch.log_softmax(torch.from_numpy(logits), 1)).sum(1).mean().item()
    ours = float(SmoothedCrossEntropy(C, EPS, form="paper")(labels, logits))
    exact, bound = _loss_bound(logits, eq11_targets(labels, C, EPS))
    assert abs(ours - exact) <= bound and abs(ref - exact) <= bound, (ours, ref, exact, bound)
    # and torch's probability-target CrossEntropyLoss agrees with the hand-built eq. 11
    prob = torch.nn.CrossEntropyLoss()(torch.from_numpy(logits), t).item()
    assert abs(prob - exact) <= bound, (prob, exact, bound)


def test_epoch_cosine_equals_torch_cosine_annealing_lr_every_epoch():
    epochs, lr_max, lr_min = 50, 0.01, 0.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr_max, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr_min)
    for epoch in range(epochs):
        # Both in float64 Python floats. tlres: the closed form, a few ulps. torch: a recursive
        # form, each epoch's rate from the last via (1 + cos(pi t/T)) / (1 + cos(pi (t-1)/T)),
        # whose cancellation near t = T costs <= 1 / (1 + cos(pi (T-1)/T)) ~ 500 ulps a step:
        # 50 steps stay below 3e4 * 2**-53 ~ 3e-12 relative; 1e-9 is still far below any slip
        # (T - 1 for T moves the rates by > 1e-3 relative).
        assert schedules.cosine(epoch, epochs, lr_max, lr_min) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12), epoch
        opt.step()
        sched.step()


def _torchvision(img, flip, dy, dx, padding=4):
    """torchvision's pipeline: ToTensor, RandomHorizontalFlip, RandomCrop(32, padding=4),
    Normalize(0.5, 0.5), with its random draws fixed to (flip, i=dy, j=dx); NHWC float64 out."""
    import torchvision.transforms.functional as TF

    x = TF.to_tensor(img)  # CHW float in [0, 1]
    if flip:
        x = TF.hflip(x)
    x = TF.pad(x, [padding] * 4, fill=0)   # what RandomCrop(padding=4) does first
    x = TF.crop(x, int(dy), int(dx), img.shape[0], img.shape[1])  # RandomCrop's crop at (i, j)
    x = TF.normalize(x, [0.5] * 3, [0.5] * 3)
    return x.permute(1, 2, 0).numpy().astype("float64")


# A normalized pixel (x/255 - 0.5)/0.5 in float32: x/255 (or x times a rounded 1/255) and the
# subtraction round at most 3 times, each by <= u of a value <= 1, and /0.5 is exact: <= 6u
# from the float64 value. Both sides are held to that; padded pixels are exactly -1.
PIXEL_TOL = 6 * U32


def test_augmentation_of_tlres_draws_equals_torchvision():
    """tlres' device transform, with the flips and offsets it draws itself, against torchvision
    applying those same draws; and a float64 normalization of the same window."""
    import jax

    cfg = IMPROVED.replace(augment=True, flip=True, crop_padding=4)
    imgs = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    key = jax.random.PRNGKey(11)
    ours = np.asarray(pipeline.device_transform(cfg)(imgs, key), "float64")  # tlres draws inside
    flip, dy, dx = (np.asarray(a) for a in augment.draw_jax(16, 4, key))    # ...these draws
    assert flip.any() and not flip.all() and len(set(zip(dy.tolist(), dx.tolist()))) > 8
    for i in range(16):
        want = _torchvision(imgs[i], flip[i], dy[i], dx[i])
        padded = np.pad(imgs[i].astype("float64"), ((4, 4), (4, 4), (0, 0)), constant_values=0)
        window = (padded[:, ::-1] if flip[i] else padded)[dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        exact = (window / 255.0 - 0.5) / 0.5
        assert np.abs(ours[i] - exact).max() <= PIXEL_TOL
        assert np.abs(want - exact).max() <= PIXEL_TOL


def test_random_crop_offsets_mean_the_same_window_in_both_and_have_the_same_range():
    """torchvision's RandomCrop(32, padding=4) draws (i, j) = the top row and left column of its
    window in the padded image, uniformly in 0..8 each; tlres' draws (dy, dx) (tf.data and JAX)
    take the same values, and tlres' flip_crop at (dy, dx) is that very window."""
    import jax
    import tensorflow as tf
    from torchvision import transforms as T

    img = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 32, 32)
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    for seed in range(20):
        torch.manual_seed(seed)
        i, j, h, w = T.RandomCrop.get_params(padded, (32, 32))
        torch.manual_seed(seed)
        out = T.RandomCrop(32, padding=4)(img)  # the same draw, inside the transform
        np.testing.assert_array_equal(out.numpy(), padded[:, i:i + 32, j:j + 32].numpy())
        ours = augment.flip_crop(np, img.numpy().transpose(1, 2, 0)[None], np.array([False]),
                                 np.array([i]), np.array([j]), 4)[0]
        np.testing.assert_array_equal(ours[..., 0], out.numpy()[0])
    torch.manual_seed(0)
    torch_offsets = {T.RandomCrop.get_params(padded, (32, 32))[:2] for _ in range(2000)}
    every = {(a, b) for a in range(9) for b in range(9)}
    # 2000 draws of 81 equally likely cells miss one with probability < 81 (80/81)^2000 ~ 1e-9
    assert torch_offsets == every
    _, dy, dx = augment.draw_jax(4096, 4, jax.random.PRNGKey(0))
    assert set(zip(np.asarray(dy).tolist(), np.asarray(dx).tolist())) == every
    _, dy, dx = augment.draw_tf(4096, 4, tf.constant([0, 1], tf.int64))
    assert set(zip(dy.numpy().tolist(), dx.numpy().tolist())) == every


@pytest.fixture(scope="module")
def resnet():
    return model_lib.build(C, IMPROVED.replace(weights="none"))


def test_the_models_head_equals_torch_linear_2048_to_c(resnet):
    """eq. 2, model.fc = nn.Linear(2048, C): tlres' head layer holding torch's Linear weights."""
    head = resnet.get_layer("head")
    assert tuple(head.kernel.shape) == (2048, C) and head.use_bias
    assert resnet.get_layer("avg_pool").output.shape == (None, 2048)  # what feeds it
    rng = np.random.default_rng(5)
    feats = np.maximum(rng.normal(size=(8, 2048)), 0).astype("float32")  # post-ReLU features
    lin = torch.nn.Linear(2048, C)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    head.set_weights([w.T, b])
    ours = np.asarray(head(feats), "float64")
    ref = lin(torch.from_numpy(feats)).detach().numpy().astype("float64")
    exact = feats.astype("float64") @ w.T.astype("float64") + b
    # a dot of 2048 products plus the bias: gamma(2049) * sum |terms| (Higham eq. 3.5), each side
    bound = gamma(2049) * (np.abs(feats).astype("float64") @ np.abs(w.T) + np.abs(b))
    assert np.all(np.abs(ours - exact) <= bound) and np.all(np.abs(ref - exact) <= bound)


def test_batchnorm_of_the_built_model_matches_torch_mean_and_variance_differs_by_bessel():
    """One training step of a BatchNorm layer of the model tlres builds (momentum 0.9, epsilon
    1e-5 from the config) against torch.nn.BatchNorm2d(momentum=0.1, eps=1e-5) on the same input."""
    import keras

    cfg = QUICK.replace(arch="tiny", image_size=8)  # 8 px: conv0 gives 4x4 maps, m = 4*4*4 = 64
    net = model_lib.build(3, cfg)
    tiny = net.get_layer("tiny")
    bn = tiny.get_layer("bn0")
    assert (bn.momentum, bn.epsilon) == (cfg.bn_momentum, cfg.bn_epsilon) == (0.9, 1e-5)
    x = np.random.default_rng(7).normal(2.0, 3.0, (4, 8, 8, 3)).astype("float32")
    feats = np.array(keras.Model(tiny.input, tiny.get_layer("conv0").output)(x))  # bn0's input (a copy)
    net(x, training=True)
    bn_t = torch.nn.BatchNorm2d(feats.shape[-1], momentum=1 - cfg.bn_momentum, eps=cfg.bn_epsilon).train()
    bn_t(torch.from_numpy(feats).permute(0, 3, 1, 2))

    v = feats.reshape(-1, feats.shape[-1]).astype("float64")
    m = len(v)
    mean, var = v.mean(0), v.var(0)  # biased, in float64
    # Float32 batch statistics over m values (a sum, or Welford's updates): the mean within
    # gamma(m) mean|x|, the variance within gamma(2m) mean(x^2) (the one-pass form's bound, the
    # loosest of the usual algorithms); then 0.9 * old + 0.1 * new rounds twice more.
    tol_mean = 0.1 * gamma(m) * np.abs(v).mean(0) + 3 * U32 * (np.abs(mean) + 1)
    tol_var = 0.1 * gamma(2 * m) * (v ** 2).mean(0) + 3 * U32 * (var + 1)
    assert np.all(np.abs(np.asarray(bn.moving_mean) - 0.1 * mean) <= tol_mean)
    assert np.all(np.abs(bn_t.running_mean.numpy() - 0.1 * mean) <= tol_mean)
    # Keras: 0.9 * 1 + 0.1 * biased; torch: 0.9 * 1 + 0.1 * unbiased (Bessel, m/(m-1)).
    assert np.all(np.abs(np.asarray(bn.moving_variance) - (0.9 + 0.1 * var)) <= tol_var)
    assert np.all(np.abs(bn_t.running_var.numpy() - (0.9 + 0.1 * var * m / (m - 1))) <= tol_var)
    assert np.all(0.1 * var / (m - 1) > 4 * tol_var)  # the Bessel gap is far above the tolerance
    # The difference is 0.1 * var / (m - 1): here m = 64, 1.6% of the update; for a 64-image
    # batch of 8x8 maps (m = 4096) it is 0.02% - negligible, so tlres keeps Keras'.
