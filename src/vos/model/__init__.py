"""The network: encoders, memory bank, memory readers, decoder, soft aggregation, flow networks."""
