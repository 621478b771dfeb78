"""Export of trained stages and their deployment formats.

- :mod:`train.export.onnx`: PyTorch stage -> ONNX (batch norm folded, dynamic batch, checked,
  simplified) and PyTorch/ONNX Runtime parity;
- :mod:`train.export.publish`: run directory -> evaluated, calibrated model version in the store;
- :mod:`train.export.evaluate`: cascade evaluation of any stage runner (numpy only);
- :mod:`train.export.quantize`: ONNX Runtime INT8 quantisation for CPU serving (no torch);
- :mod:`train.export.cli`: ``wingmark export``, ``build-engine`` (with the runtime's TensorRT engine
  builder, :mod:`runtime.backends.tensorrt`), ``quantize``.

Nothing is imported here, so that torch-free users (the GPU service) can import the torch-free
modules alone.
"""
