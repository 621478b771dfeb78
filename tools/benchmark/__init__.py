"""``wingmark benchmark``, in four steps: measure (machine, bare models, peers), serving (the service and
its naive peer under load), summary + report (headline ratios, the markdown page) and plots.
The command itself is :mod:`tools.benchmark.cli`."""
