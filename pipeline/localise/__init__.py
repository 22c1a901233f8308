"""Per-layer divergence localisation: which layer of the user's model an artifact first gets
wrong.

One naming through the chain: the ONNX exporter records, for every node, the torch module path
and the FX node it came from (``pkg.torch.onnx.name_scopes``); :mod:`.layer_map` turns that into
the run's layer map (ONNX output tensor -> torch module, FX node). Reference values per layer
come from the program the exporter translated (:mod:`.reference_values`), each target's
intermediate tensors from its runner (``Runner.tensors``) joined to ONNX names by its target (``Target.join_tensors``),
and :mod:`.verdict` names the first layer whose error exceeds the precision's layer tolerance
while all of its inputs are within it.
"""
