"""Whether a download host answers, asked before a library would retry for minutes offline.

One probe for every layer that may download: the data loaders (CIFAR-10 through
tensorflow-datasets) and the network's weight sources (Keras' and torchvision's ImageNet files).
"""

import socket


def reachable(host, port=443, timeout=3.0):
    """True when a TCP connection to `host`:`port` opens within `timeout` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False
