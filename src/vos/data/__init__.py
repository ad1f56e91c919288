"""Datasets: the `VideoSource` interface, sources on disk (`sources`), the generated dataset
(`synthetic`), training clips and palette-PNG I/O."""
