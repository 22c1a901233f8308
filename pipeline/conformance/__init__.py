"""The ONNX backend node tests of the vision op set as the product's conformance suite."""
