"""Datasets (generated, DAVIS layout), clip sampling and palette-PNG I/O."""
