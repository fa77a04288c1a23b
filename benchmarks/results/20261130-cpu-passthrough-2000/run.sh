#!/bin/bash
# usage: run.sh new|old
which=$1
rm -rf /tmp/p2k/out_$which
if [ "$which" = old ]; then export PYTHONPATH=/tmp/old; fi
s=$(date +%s.%N)
/work/main/.venv/bin/python -m whisperjav_enhance enhance /tmp/p2k/scenes -o /tmp/p2k/out_$which --backend passthrough --device cpu --quiet > /dev/null 2>&1
rc=$?
e=$(date +%s.%N)
python3 -c "print('$which', round($e-$s,2), 'rc=$rc')"
