"""Models as files and as training runs: the store, training, evaluation and its metrics."""
