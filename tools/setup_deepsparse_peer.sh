#!/usr/bin/env bash
# Creates DeepSparse 1.8's own virtualenv, the peer that benchmarks/bench_peers.py compares
# deepsparse_cy with. DeepSparse 1.8 pins numpy 1.x and onnx 1.14, so it cannot live in the
# project's environment; benchmarks/peers drives it as a subprocess.
#
#   bash tools/setup_deepsparse_peer.sh [VENV_DIR]     # default /opt/deepsparse18 (outside the repo)
#
# Then point the benchmarks at it if it is not the default:
#   export DSCY_DEEPSPARSE_VENV=VENV_DIR      (or DSCY_DEEPSPARSE_PYTHON=VENV_DIR/bin/python)
# Needs Python 3.8-3.11 (DeepSparse 1.8 has no wheels for newer): $PYTHON, else python3.11.
# Installs from PyPI only. NM_DISABLE_ANALYTICS=1 keeps DeepSparse from reporting usage.
set -euo pipefail
VENV="${1:-${DSCY_DEEPSPARSE_VENV:-/opt/deepsparse18}}"
PY="${PYTHON:-python3.11}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [[ "$(realpath -m "$VENV")/" == "$REPO/"* ]]; then
  echo "refusing to create the venv inside the repository ($VENV); pick a path outside $REPO" >&2
  exit 2
fi
export NM_DISABLE_ANALYTICS=1
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install "deepsparse==1.8.0"
"$VENV/bin/python" -c "import deepsparse, numpy, onnx; print('DeepSparse', deepsparse.__version__, 'numpy', numpy.__version__, 'onnx', onnx.__version__, 'in', '$VENV')"
