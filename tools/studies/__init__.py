"""One module per study: each runs an experiment on the published models or the training recipe and
writes its result as JSON (and markdown / PNG where people read it)."""
