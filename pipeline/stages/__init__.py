"""Trunk stages, one per module: load, trace, fuse, export_onnx."""
