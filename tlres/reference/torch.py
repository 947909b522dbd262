"""The paper's recipe in PyTorch/torchvision, on tlres' data and metrics (issue #5, first cut).

    python -m tlres.reference.torch --data digits --epochs 1 --arch tiny --out runs/torch-digits

resnet50 (torchvision, v1.5) with `fc` replaced by Linear(2048, C); RandomHorizontalFlip,
RandomCrop(32, padding=4), Normalize(0.5, 0.5); cross-entropy on eq. 11 targets;
SGD momentum 0.9 with CosineAnnealingLR stepped per epoch; batch 64. Data come from
`tlres.data.load` and metrics from `tlres.evaluate.metrics`, so both frameworks see
the same split and are scored identically. Writes config.json, history.csv,
metrics.json and predictions.csv like `tlres.train`.
"""

import argparse
import csv
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision
from torchvision import transforms as T

from tlres import data as tdata
from tlres import evaluate


def build(arch, weights, num_classes):
    if arch == "tiny":  # mirrors tlres.model.tiny_backbone
        layers, cin = [], 3
        for w in (8, 16, 32):
            layers += [torch.nn.Conv2d(cin, w, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(w), torch.nn.ReLU()]
            cin = w
        return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(cin, num_classes))
    if weights == "imagenet":
        w = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
        try:
            model = torchvision.models.resnet50(weights=w)
        except Exception as e:  # offline: one clear line, never random weights
            cache = os.path.join(torch.hub.get_dir(), "checkpoints")
            sys.exit(f"tlres.reference.torch: ImageNet weights {os.path.basename(w.url)} are not in "
                     f"{cache} and could not be downloaded ({type(e).__name__}); put the file there "
                     f"or use --weights none")
    else:
        model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Linear(2048, num_classes)
    return model


def eq11_loss(logits, labels, num_classes, eps):
    t = torch.full_like(logits, eps / (num_classes - 1))
    t.scatter_(1, labels[:, None], 1.0 - eps)
    return -(t * torch.log_softmax(logits, 1)).sum(1).mean()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--arch", default="resnet50", choices=["resnet50", "tiny"])
    p.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--lr-min", type=float, default=0.0)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, help="use only the first N training images (tests)")
    p.add_argument("--limit-test", type=int, help="use only the first N test images (tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    ds = tdata.load(a.data, a.data_dir, 32)
    xtr, ytr = ds.x_train[:a.limit_train], ds.y_train[:a.limit_train]
    xte, yte = ds.x_test[:a.limit_test], ds.y_test[:a.limit_test]
    C = len(ds.class_names)
    dev = torch.device(a.device)
    norm = T.Normalize([0.5] * 3, [0.5] * 3)
    train_tf = T.Compose([T.ToTensor(), T.RandomHorizontalFlip(), T.RandomCrop(32, padding=4), norm])
    test_tf = T.Compose([T.ToTensor(), norm])
    model = build(a.arch, a.weights, C).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs, eta_min=a.lr_min)
    gen = torch.Generator().manual_seed(a.seed)
    x_test_t = torch.stack([test_tf(im) for im in xte])

    def logits_of(x):
        model.eval()
        with torch.no_grad():
            return torch.cat([model(x[i:i + 256].to(dev)).float().cpu() for i in range(0, len(x), 256)]).numpy()

    os.makedirs(a.out, exist_ok=True)
    loss_np = lambda y, z: np.asarray(eq11_loss(torch.from_numpy(z), torch.from_numpy(np.asarray(y)).long(),
                                                C, a.label_smoothing))
    history = []
    for epoch in range(a.epochs):
        t0, lr = time.time(), opt.param_groups[0]["lr"]
        model.train()
        order = torch.randperm(len(xtr), generator=gen).numpy()
        tot, correct, seen = 0.0, 0, 0
        for i in range(0, len(order), a.batch_size):
            idx = order[i:i + a.batch_size]
            x = torch.stack([train_tf(xtr[j]) for j in idx]).to(dev)
            y = torch.from_numpy(ytr[idx].astype(np.int64)).to(dev)
            out = model(x)
            loss = eq11_loss(out, y, C, a.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            correct += int((out.argmax(1) == y).sum())
            seen += len(idx)
        sched.step()
        m = evaluate.metrics(logits_of(x_test_t), yte, C, loss_np)
        history.append({"epoch": epoch, "loss": tot / seen, "accuracy": correct / seen,
                        "val_loss": m["loss"], "val_accuracy": m["accuracy"],
                        "val_mean_class_accuracy": m["mean_class_accuracy"], "lr": lr,
                        "seconds": time.time() - t0})
        print(json.dumps(history[-1]), flush=True)

    logits = logits_of(x_test_t)
    m = evaluate.metrics(logits, yte, C, loss_np)
    m["class_names"] = list(ds.class_names)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(m, f, indent=1)
    with open(os.path.join(a.out, "history.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]) if history else ["epoch"])
        w.writeheader()
        w.writerows(history)
    prob = torch.softmax(torch.from_numpy(logits), 1).numpy()
    with open(os.path.join(a.out, "predictions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label", "prediction", "confidence"])
        for i, (yl, pr) in enumerate(zip(yte, prob)):
            w.writerow([i, int(yl), int(pr.argmax()), f"{pr.max():.6f}"])
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump({"framework": "pytorch", "config": vars(a), "dataset": ds.name,
                   "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
                   "device": str(dev)}, f, indent=1)
    print(f"accuracy {m['accuracy']:.4f} on {m['num_test']} test images -> {a.out}")
    return a.out


if __name__ == "__main__":
    main()
