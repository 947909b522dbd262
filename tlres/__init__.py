"""tlres: the paper's transfer-learning ResNet50 recipe in Keras 3 on JAX.

Importing tlres selects the JAX backend for Keras unless the user already chose
one; `tlres.net.backend.require_jax()` turns any other choice into a clear error.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # tf.data only: keep its C++ logs quiet
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # tf.data does integer ops only: no oneDNN notices

__version__ = "0.1.0"
