#!/usr/bin/env bash
# Creates .venv with the package (editable), every backend and the test tools, without ever
# downloading a CUDA build of torch (constraints.txt pins torch). Safe to run again: pip keeps
# what already satisfies the pins, except clearvoice, which every run takes out and puts back (see
# below). A good run prints no ERROR line; a failing step prints pip's error and stops
# the script with a non-zero exit (set -e). README's "Installing" section shows the same steps by
# hand for any venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# pip's own -q hides why a resolution failed, so a failing step says how to see it.
pip() {
    .venv/bin/python -m pip "$@" || {
        local rc=$?
        echo "scripts/install.sh: '.venv/bin/python -m pip $*' failed (exit $rc); run it again without -q to see pip's reasons" >&2
        exit "$rc"
    }
}

# clearvoice is installed last and without its dependencies: its metadata pins numpy<2,
# soundfile==0.12.1, torchaudio, torchvision, librosa and more, none of which its network class
# needs (what it does import comes with the [mossformer2] extra). pip's resolver checks every
# installed package that depends on something it installs, so an installed clearvoice would make
# the step below print a page of "ERROR: ... clearvoice 0.1.2 requires ..." lines about pins we
# never use. On a rerun it is therefore taken out first and put back at the end.
if .venv/bin/python -m pip show -q clearvoice >/dev/null 2>&1; then
    pip uninstall -q -y clearvoice
fi
pip install -q -c constraints.txt -e '.[all,test,ray]'
pip install -q --no-deps 'clearvoice>=0.1.2'
