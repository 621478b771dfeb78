"""wingmark's tools: the ``wingmark`` command, the HTTP client, the load generator, the benchmark and one
module per study. Built on ``model_store``, the serving code and ``train``; nothing imports ``tools``."""
