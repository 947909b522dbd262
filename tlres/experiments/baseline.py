"""The paper's original ResNet50: `python -m tlres.experiments.baseline [flags]`.

Defined by tlres (the paper does not say exactly) as the improved preset with
its four changes switched off: random init instead of ImageNet weights, no
flip/crop (normalization only), plain cross-entropy, constant learning rate;
everything else the same. See `tlres.core.config.BASELINE`.
"""

import sys

from tlres import __main__ as command

if __name__ == "__main__":
    sys.exit(command.preset_main("baseline"))
