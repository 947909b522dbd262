"""The data layer: loaders (CIFAR-10, digits, Fashion-MNIST, idx, npz, image folders), the safe
pickle reader, the paper's augmentation, and the training and evaluation pipelines."""
