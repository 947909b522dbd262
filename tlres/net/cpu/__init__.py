"""What makes the networks fast on a CPU: the convolution kernel plan, the matmul and pooling
kernels, and the allocator the command restarts with."""
