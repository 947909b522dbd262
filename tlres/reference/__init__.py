"""The PyTorch side: the reference runner, the crosscheck against it, trajectory parity, and
the speed bench beside PyTorch."""
