#!/bin/bash
# usage: time.sh label args...
label=$1; shift
rm -rf /tmp/iso/out_$label
s=$(date +%s.%N)
/work/main/.venv/bin/whisperjav-enhance enhance /tmp/iso/scenes -o /tmp/iso/out_$label --quiet --backend deepfilternet "$@" >/dev/null 2>&1
e=$(date +%s.%N)
python3 -c "print('$label', round($e-$s,2))"
