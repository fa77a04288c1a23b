#!/usr/bin/env bash
# Creates .venv with the package, every backend and the test tools, without ever downloading a
# CUDA build of torch (constraints.txt pins torch). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip() { .venv/bin/python -m pip "$@"; }
pip install -q -c constraints.txt "$(grep -E '^torch==' constraints.txt)"
# clearvoice's metadata pins numpy<2, torchaudio and torchvision; the network class needs none of
# them (its real imports come with the [mossformer2] extra), so it is installed without them.
pip install -q --no-deps "clearvoice>=0.1.2"
pip install -q -c constraints.txt -e '.[all,test,ray]'
