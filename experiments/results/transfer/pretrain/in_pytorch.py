"""The v1.5 source model in both frameworks: `python experiments/results/transfer/pretrain/in_pytorch.py RUN_DIR OUT.json`.

Converts a finished tlres `--arch resnet50_v1_5` run's whole model (backbone and head,
`tlres.net.convert.model_to_torch`) into the PyTorch reference's torchvision ResNet50, evaluates it
on the run's test split in PyTorch (eval mode, the same input normalization), and records its
accuracy and how many of its predictions equal the Keras run's own (predictions.csv): the
pretrained backbone, with its source test accuracy, in each framework.
"""
import csv
import json
import os
import sys

import torch  # before JAX runs: torch/torchvision imported after it can crash (triton)
import torchvision  # noqa: F401

import numpy as np

from tlres.core import config
from tlres.data import augment, loaders as data
from tlres.net import convert
from tlres.reference import torch as ref


def main(run_dir, out):
    import keras

    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    cfg = config.Config().replace(**{k: v for k, v in config.recorded(saved["config"]).items()})
    assert cfg.arch in ("resnet50_v1_5", "tiny"), cfg.arch  # the networks with a torch twin
    ds = data.load(cfg.data, cfg.data_dir, cfg.image_size, cfg.test_split, cfg.skip_bad_images)
    net = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    state = convert.model_to_torch(net)
    model = ref.build(cfg.replace(weights="none"), ds.num_classes)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
    model.eval()
    x = augment.normalize(np, ds.x_test, cfg.input_norm).astype(np.float32)
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 500]).permute(0, 3, 1, 2))
                            for i in range(0, len(x), 500)]).numpy()
    pred = logits.argmax(1)
    with open(os.path.join(run_dir, "predictions.csv")) as f:
        keras_pred = np.array([int(r["prediction"]) for r in csv.DictReader(f)])
    rec = {"run": os.path.basename(os.path.normpath(run_dir)), "framework": "pytorch",
           "torch": torch.__version__, "num_test": int(len(pred)),
           "correct": int((pred == ds.y_test).sum()), "accuracy": float((pred == ds.y_test).mean()),
           "same_prediction_as_keras": int((pred == keras_pred).sum())}
    with open(out, "w") as f:
        json.dump(rec, f, indent=2)
        f.write("\n")
    print(json.dumps(rec))


if __name__ == "__main__":
    main(*sys.argv[1:3])
