"""onnx's own BackendTest suite over deepsparse_cy.backend.

Runs the node, simple and PyTorch-derived test models shipped inside the onnx package. The
real-model tests are left out because they download models. Cases this engine does not pass yet
are listed in tests/backend_excludes.txt, one regex per line with a comment saying why; the list
is meant to shrink. `python tools/conformance.py` counts the node cases the same way.
"""
import os
import re

import onnx.backend.test

from deepsparse_cy.backend import DeepSparseCyBackend

_HERE = os.path.dirname(__file__)


def _excludes():
    pats = []
    with open(os.path.join(_HERE, "backend_excludes.txt")) as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                pats.append(line)
    return pats


backend_test = onnx.backend.test.BackendTest(DeepSparseCyBackend, __name__)
for _pat in _excludes():
    backend_test.exclude(_pat)

globals().update({
    name: cls for name, cls in backend_test.test_cases.items()
    if name != "OnnxBackendRealModelTest"   # downloads models from the internet
})
