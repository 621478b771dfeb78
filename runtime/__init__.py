"""Landmarking in-process, torch-free: decoding, detectors, backends, the cascade and the Landmarker facade.

Layers (checked by import-linter): ``model_store`` < ``runtime`` < {``service``, ``train``, ``tools``}.
Nothing here imports torch, ``service`` or ``train``.
"""
