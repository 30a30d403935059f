#!/usr/bin/env bash
# The standard GPU checks of a session, in one device call, within a time budget:
#   bash tools/device_session.sh [BUDGET_S] [STEP ...]
# Steps (default: tests op block model): tests = every op test on the GPU; gputests = the GPU-marked ones;
# splittests = the split-backward GPU variants; op = cgspn bench op;
# block = cgspn bench block (+ plot); model = cgspn bench model at B = 32 and 1 (+ plot);
# fwdsweep / bwdsweep = launch-config sweeps of the split-line (scratch) kernels against the heuristic on the
# latent shapes (SWEEP_SHAPES, G = 16, bf16; each config checked against the heuristic's outputs); bwdsweep32 = fp32 (BWD32_GROUPS, default 16,C; the scratch set adds the own-layout gate-gradient stores for groups); pipesweep = the B = 32 forward with Triton-pipelined loads (cp.async staging); widesweep = the B = 32 forward with wide channel blocks and 8-16 warps (scratch split kernels); widebwd = the same for the backward; vitbwd = the ViT-B shape.s backward with 48-channel gate groups (incl. blocks inside one group); b1sweep = the B = 1 forward's latency set (shuffle and scratch split kernels, small channel blocks); vitsplit = the ViT-B shape's backward on the one-tile split kernel (--sweep-set short; VITSPLIT_SHAPES / _GROUPS / _DTYPES); asmdz / asmdzvit = the backward with gate-group gradients stored in their reduction's layout (LaunchConfig.asm_dz), latent / ViT-B shapes; regcap = scratch kernels of 4-8 warps with capped registers, 2-4 programs per SM; fencesweep / fenceb1 = the split kernels with a barrier after each step's loads (LaunchConfig.fence) at B = 32 (forward and backward) / B = 1 (forward); profile = tools/profile_block.py;
# ncu = Nsight Compute sections of the forward and backward on three shapes (tools/ncu_probe.py);
# ncubytes = DRAM / L2 bytes and time per kernel (ncu metrics; NCU_METRICS) with and without LaunchConfig.evict (NCU_MODES, default 'plain evict'; NCU_SHAPES 'B H W C G;...', NCU_DTYPE);
# setsweep = bench op --sweep --sweep-set $SW_SET (default evict) on SW_SHAPES / SW_GROUPS / SW_DTYPES / SW_PASSES;
# overhead = tools/op_overhead.py (CPU-side cost per call of the op's paths; OVERHEAD_SHAPE B,H,W,C,G);
# pattern = tools/pattern_probe.py (the forward's access pattern without the recurrence);
# layout = tools/layout_probe.py (the forward on direction-major input planes against the interleaved layout);
# graphs = the B = 1 model benchmark under torch.compile(mode="reduce-overhead") (CUDA graphs).
# STEP:SECONDS caps a step at that many seconds. Sweeps compile their kernels first in $CW worker processes (default 12).
# Each step gets what is left of the budget (minus a reserve for the later ones), writes its log and
# JSON under $OUT (or ./out), and a step cut off by the budget still leaves its partial JSON.
# Check the device time left first (`status`): a call stops at the session's remaining time.
set -u
budget=${1:-570}
shift || true
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests op block model)
out=${OUT:-./out}
cw=${CW:-12}
latent=${SWEEP_SHAPES:-"32,74,74,64;32,147,147,64;1,147,147,64"}  # the encoders' latent scans (1036 / 2058 px)
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv 2>/dev/null
n=${#steps[@]}
i=0
for spec in "${steps[@]}"; do
  step=${spec%%:*}
  i=$((i + 1))
  rest=$(( n - i ))
  lim=$(( $(left) - 30 * rest ))
  if [ "$spec" != "$step" ] && [ "${spec#*:}" -lt "$lim" ]; then lim=${spec#*:}; fi  # STEP:SECONDS caps a step
  if [ "$lim" -lt 20 ]; then echo "skip $step: budget spent"; continue; fi
  case $step in
    tests) cmd=(python3 -m pytest -q -m "gpu or not gpu" tests/ops -p no:cacheprovider) ;;
    gputests) cmd=(python3 -m pytest -q -m gpu tests/ops -p no:cacheprovider -n ${XDIST:-8}) ;;  # pytest-xdist is on the H200 image: compiles in parallel  # GPU-marked only (the split variants compile for seconds each)
    splittests) cmd=(python3 -m pytest -q -m gpu tests/ops/test_gspn_gpu.py -k split_backward -p no:cacheprovider) ;;
    op) cmd=(python3 -m cgspn.cli bench op ${OP_SHAPES:+--shapes "$OP_SHAPES"} --groups C,16,1 --dtypes ${OP_DTYPES:-bf16,fp32} --iters 10 --no-baseline --out "$out/bench_op.json") ;;
    block) cmd=(python3 -m cgspn.cli bench block --out "$out/bench_block.json" --plot "$out/bench_block.png") ;;
    model) cmd=(python3 -m cgspn.cli bench model --batches 32 1 --no-search --out "$out/bench_model.json" --plot "$out/bench_model.png") ;;
    fwdsweep) cmd=(python3 -m cgspn.cli bench op --shapes "$latent" --groups 16 --dtypes bf16 --sweep --sweep-set scratch --sweep-passes fwd --compile-workers $cw --no-baseline --iters 5 --out "$out/fwd_sweep.json") ;;
    bwdsweep) cmd=(python3 -m cgspn.cli bench op --shapes "$latent" --groups 16 --dtypes bf16 --sweep --sweep-set scratch --sweep-passes bwd --compile-workers $cw --no-baseline --iters 5 --out "$out/bwd_sweep.json") ;;
    pipesweep) cmd=(python3 -m cgspn.cli bench op --shapes "32,147,147,64;32,74,74,64" --groups C,16,1 --dtypes ${PIPE_DTYPES:-bf16} --sweep --sweep-set pipelined --sweep-passes fwd --compile-workers $cw --no-baseline --iters 10 --out "$out/pipe_sweep.json") ;;
    widesweep) cmd=(python3 -m cgspn.cli bench op --shapes "${WIDE_SHAPES:-32,74,74,64;32,147,147,64}" --groups C,16,1 --dtypes ${WIDE_DTYPES:-bf16,fp32} --sweep --sweep-set wide --sweep-passes fwd --compile-workers $cw --no-baseline --iters 10 --out "$out/wide_sweep.json") ;;
    vitbwd) cmd=(python3 -m cgspn.cli bench op --shapes 64,14,14,768 --groups 16 --dtypes bf16,fp32 --sweep --sweep-passes bwd --compile-workers $cw --no-baseline --iters 10 --out "$out/vit_bwd_sweep.json") ;;
    fencesweep) cmd=(python3 -m cgspn.cli bench op --shapes "${FENCE_SHAPES:-32,74,74,64;32,147,147,64}" --groups ${FENCE_GROUPS:-C,16,1} --dtypes ${FENCE_DTYPES:-bf16,fp32} --sweep --sweep-set fence --sweep-passes ${FENCE_PASSES:-fwd,bwd} --compile-workers $cw --no-baseline --iters 10 --out "$out/fence_sweep.json") ;;
    regcap) cmd=(python3 -m cgspn.cli bench op --shapes "${REGCAP_SHAPES:-32,74,74,64;32,147,147,64}" --groups ${REGCAP_GROUPS:-C,16} --dtypes ${REGCAP_DTYPES:-bf16,fp32} --sweep --sweep-set regcap --sweep-passes ${REGCAP_PASSES:-fwd,bwd} --compile-workers $cw --no-baseline --iters 10 --out "$out/regcap_sweep.json") ;;
    asmdz) cmd=(python3 -m cgspn.cli bench op --shapes "${ASMDZ_SHAPES:-32,74,74,64;32,147,147,64}" --groups ${ASMDZ_GROUPS:-16,1} --dtypes ${ASMDZ_DTYPES:-bf16,fp32} --sweep --sweep-set asmdz --sweep-passes bwd --compile-workers $cw --no-baseline --iters 10 --out "$out/asmdz_sweep.json") ;;
    asmdzvit) cmd=(python3 -m cgspn.cli bench op --shapes 64,14,14,768 --groups 16,1 --dtypes bf16,fp32 --sweep --sweep-set asmdz --sweep-passes bwd --compile-workers $cw --no-baseline --iters 10 --out "$out/asmdz_vit_sweep.json") ;;
    vitsplit) cmd=(python3 -m cgspn.cli bench op --shapes "${VITSPLIT_SHAPES:-64,14,14,768}" --groups ${VITSPLIT_GROUPS:-C,16,1} --dtypes ${VITSPLIT_DTYPES:-bf16,fp32} --sweep --sweep-set short --sweep-passes bwd --compile-workers $cw --no-baseline --iters 10 --out "$out/vit_split_bwd_sweep.json") ;;
    fenceb1) cmd=(python3 -m cgspn.cli bench op --shapes "${B1_SHAPES:-1,147,147,64}" --groups C,16,1 --dtypes bf16 --sweep --sweep-set fence --sweep-passes fwd --compile-workers $cw --no-baseline --iters 10 --out "$out/fence_b1_sweep.json") ;;
    widebwd) cmd=(python3 -m cgspn.cli bench op --shapes "${WIDE_SHAPES:-32,74,74,64;32,147,147,64}" --groups C,16,1 --dtypes ${WIDEBWD_DTYPES:-bf16} --sweep --sweep-set wide --sweep-passes bwd --compile-workers $cw --no-baseline --iters 10 --out "$out/wide_bwd_sweep.json") ;;
    b1sweep) cmd=(python3 -m cgspn.cli bench op --shapes "${B1_SHAPES:-1,147,147,64}" --groups C,16,1 --dtypes bf16 --sweep --sweep-set latency --sweep-passes fwd --compile-workers $cw --no-baseline --iters 10 --out "$out/b1_sweep.json") ;;
    bwdsweep32) cmd=(python3 -m cgspn.cli bench op --shapes "$latent" --groups ${BWD32_GROUPS:-16,C} --dtypes fp32 --sweep --sweep-set scratch --sweep-passes bwd --compile-workers $cw --no-baseline --iters 5 --out "$out/bwd_sweep_fp32.json") ;;
    ncu) cmd=(bash -c "echo \"\${NCU_SHAPES:-32 147 147 64 64;32 74 74 64 16;1 147 147 64 64}\" | tr ';' '\\n' | while read -r s; do echo == \$s; ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis -k regex:\${NCU_KERNELS:-gspn} --launch-count 2 python3 tools/ncu_probe.py \$s; done") ;;
    ncubytes) cmd=(bash -c "echo \"\${NCU_SHAPES:-32 74 74 64 1;32 74 74 64 64;32 147 147 64 1}\" | tr ';' '\\n' | while read -r s; do for ev in \${NCU_MODES:-plain evict}; do echo == \$s \$ev; ncu --clock-control none --metrics \${NCU_METRICS:-dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,gpu__time_duration.sum} -k regex:gspn --launch-count 3 python3 tools/ncu_probe.py \$s \$ev \${NCU_DTYPE:-bf16}; done; done") ;;
    setsweep) cmd=(python3 -m cgspn.cli bench op --shapes "${SW_SHAPES:-32,74,74,64;32,147,147,64}" --groups ${SW_GROUPS:-C,16,1} --dtypes ${SW_DTYPES:-bf16,fp32} --sweep --sweep-set ${SW_SET:-evict} --sweep-passes ${SW_PASSES:-fwd,bwd} --compile-workers $cw --no-baseline --iters ${SW_ITERS:-10} --out "$out/${SW_SET:-evict}_sweep.json") ;;
    overhead) cmd=(python3 tools/op_overhead.py --shape "${OVERHEAD_SHAPE:-1,8,8,64,16}" --out "$out/op_overhead.json") ;;
    pattern) cmd=(python3 tools/pattern_probe.py ${PATTERN_ARGS:-} --out "$out/pattern_probe.json") ;;
    layout) cmd=(python3 tools/layout_probe.py --out "$out/layout_probe.json") ;;
    profile) cmd=(python3 tools/profile_block.py --batch 32 --px 2058 1036 --variants cgspn_mixer cgspn --out "$out/profile_block.json") ;;
    graphs) cmd=(python3 -m cgspn.cli bench model --batches 1 --resolutions 224 518 1036 --compile-mode reduce-overhead --no-search --out "$out/bench_model_graphs.json") ;;
    *) echo "unknown step $step"; continue ;;
  esac
  timeout "$lim" "${cmd[@]}" > "$out/$step.log" 2>&1
  echo "$step rc=$? after $(( $(date +%s) - t0 )) s (limit ${lim} s)"
  grep -E "^\| |passed|failed|error" "$out/$step.log" | tail -40
done
