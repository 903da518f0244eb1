"""Exception hierarchy: every failure the engine reports derives from DeepSparseCyError."""


class DeepSparseCyError(Exception):
    """Base class of every error deepsparse_cy raises on purpose."""


class ModelLoadError(DeepSparseCyError):
    """The model cannot be read, parsed or validated."""


class UnsupportedOperatorError(DeepSparseCyError):
    """One or more operators have no implementation; all are listed at once."""

    def __init__(self, missing):
        # missing: list of (node_name, op_type, domain, opset)
        self.missing = list(missing)
        lines = [f"  node {n!r}: {d + '::' if d else ''}{t} (opset {v})" for n, t, d, v in self.missing]
        super().__init__(f"{len(self.missing)} unsupported operator(s):\n" + "\n".join(lines))


class InputError(DeepSparseCyError, ValueError):
    """Inputs given to run() do not match what the model expects."""


class ShapeError(DeepSparseCyError, ValueError):
    """A shape is impossible for a node (bad Reshape, broadcast mismatch, ...)."""


class NodeError(DeepSparseCyError):
    """A node failed while running; the message names the node."""


class ResourceError(DeepSparseCyError, MemoryError):
    """A tensor or plan would exceed the memory budget."""
