#!/bin/bash
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
t0=$(date +%s); el() { echo "$(( $(date +%s)-t0 )) s"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
timeout 200 python3 -m pytest -q -m "gpu or not gpu" tests/ops -p no:cacheprovider -x > $OUT/gpu_tests.log 2>&1; echo "tests rc=$? $(el)"; tail -4 $OUT/gpu_tests.log
timeout 150 python3 -m cgspn.cli bench op --groups C,16,1 --iters 10 --no-baseline --out $OUT/bench_op.json > $OUT/bench_op.log 2>&1; echo "op rc=$? $(el)"; grep -E "^\|" $OUT/bench_op.log
left=$(( 560 - ($(date +%s)-t0) )); echo "left $left"
timeout $left python3 -m cgspn.cli bench op --groups 16,C --dtypes bf16 --sweep --sweep-passes fwd --no-baseline --iters 5 --out $OUT/fwd_sweep.json > $OUT/fwd_sweep.log 2>&1; echo "sweep rc=$? $(el)"
grep -A30 "best launch" $OUT/fwd_sweep.log; tail -3 $OUT/fwd_sweep.log
