"""The networks: the two ResNet50s (Keras' v1, torchvision's v1.5), their weights and conversion
across frameworks, model files, and the JAX backend set-up."""
