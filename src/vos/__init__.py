"""Memory-based semi-supervised video object segmentation."""
