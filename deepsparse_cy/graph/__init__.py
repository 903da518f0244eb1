"""Graph layer: IR, loading, shape facts, passes, scheduling and the memory arena."""
