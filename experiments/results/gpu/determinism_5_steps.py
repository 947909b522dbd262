"""Where does GPU run-to-run variation come from? Prints one JSON line of hashes.

Same process: the model built twice from the same seed, trained 5 steps on the same batches.
Across processes: compare the printed hashes.
"""
import hashlib, json, os, sys
import numpy as np
import keras
from tlres.core import config
from tlres.data import pipeline
from tlres.net import model
from tlres.run import train

arch = sys.argv[1] if len(sys.argv) > 1 else "resnet50"
cfg = config.QUICK.replace(arch=arch, augment=True, flip=True, compile_cache=False)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (320, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, 320)
h = lambda *arrs: hashlib.sha256(b"".join(np.ascontiguousarray(np.asarray(a)).tobytes() for a in arrs)).hexdigest()[:12]
batches = [(np.asarray(b), np.asarray(l)) for b, l in pipeline.jax_batches(x, y, cfg)]
out = {"flags": os.environ.get("XLA_FLAGS", ""), "pipeline": h(*[b for b, _ in batches])}

def once(tag):
    keras.utils.set_random_seed(cfg.seed)
    train.setup_engine(cfg)
    net = model.build(10, cfg)
    train.compile_model(net, cfg, 10, steps_per_epoch=100)
    out[tag + "_init"] = h(*net.get_weights())
    out[tag + "_fwd"] = h(net(batches[0][0], training=True))
    losses = [float(net.train_on_batch(b, l)[0]) for b, l in batches]
    out[tag + "_train"] = h(*net.get_weights())
    out[tag + "_loss"] = losses[-1]

once("a"); once("b")
out["same_process_equal"] = out["a_train"] == out["b_train"]
print("DIAG", json.dumps(out))
