"""The network: encoders, memory readers, decoder, soft aggregation, and the training module."""
