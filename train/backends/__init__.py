"""Backends that need the training stack: the PyTorch reference backend (``torch``).

Importing this package registers ``torch`` with :func:`runtime.backends.create_backend`; the runtime
itself never imports torch.
"""

from __future__ import annotations

from runtime.backends import register_backend

register_backend("torch", "train.backends.torch:TorchBackend")
