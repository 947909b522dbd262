"""The paper's New-ResNet50: `python -m tlres.experiments.improved [--preset quick] [flags]`.

ImageNet-pretrained ResNet50 with a new Dense head, flip + pad-crop
augmentation, the paper's label smoothing (eq. 11) and per-epoch cosine
annealing; CIFAR-10, batch 64, 50 epochs. See `tlres.core.config.IMPROVED`.
"""

import sys

from tlres import __main__ as command

if __name__ == "__main__":
    sys.exit(command.preset_main("improved"))
