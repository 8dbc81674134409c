#!/usr/bin/env bash
# The H200 side-by-side run behind docs/benchmarks.md, in steps so that each fits one device call.
# Run from the repository root on the GPU machine, with Node from ../shared/devkit (see its README),
# the compiled dist/ and runtime/native/build/ (npm run build && npm run build:native here):
#
#   bash bench/run_h200.sh setup        # node_modules links into the device kit
#   bash bench/run_h200.sh parity OUT   # fp16 parity of both targets on the fixtures (CUDA)
#   bash bench/run_h200.sh eager OUT    # build the Jamba period (random bf16 weights), save it, time transformers eager
#   bash bench/run_h200.sh fused OUT    # convert it (--target fused --dtype fp16) and time hubmoe fused (native backend), with
#                                       # the static-cache graph and CUDA graphs (the default) and with the dynamic graph
#   bash bench/run_h200.sh portable OUT # convert it (--target portable) and time it on the CUDA EP, via onnxruntime-node and via the native backend
#   bash bench/run_h200.sh perplexity OUT       # perplexity() on the converted period (fused step first): NLL graph on the GPU vs JavaScript
#   bash bench/run_h200.sh blackmamba OUT       # BlackMamba-2.8B's configuration (random bf16 weights): Zyphra's reference code
#                                               # (eager), then hubmoe fused (CUDA graphs, dynamic graph) and portable (native backend);
#                                               # needs a work tree of Zyphra/BlackMamba at .ref/BlackMamba (or $HUBMOE_BLACKMAMBA_REPO):
#                                               #   git --git-dir=MIRROR archive 5c8cddd | tar x -C .ref/BlackMamba
#   bash bench/run_h200.sh profile OUT          # a batch-1 decode step of the 2-expert copy of the period (fused, fp16): its time
#                                               # (decode-ab), where its wall time goes (step-breakdown, one call per step and with
#                                               # the greedy steps in the addon) and each kernel's GPU time at the GPU's own
#                                               # clocks (ncu --clock-control none --cache-control none; at batch
#                                               # $HUBMOE_PROFILE_BATCH, default 1)
#   bash bench/run_h200.sh profile-period OUT   # each kernel's GPU time (ncu, as above) in one decode step of the full period's
#                                               # fused conversion (the fused step first), at batch $HUBMOE_PROFILE_BATCH, default 16
#                                               # (the 2-expert copy touches only 2 experts per MoE layer at batch 16)
#   bash bench/run_h200.sh scap-period OUT      # a 2-expert copy of the period (same weights read per token at batch 1) and SCAP thresholds for 40 / 50 %
#   bash bench/run_h200.sh scap-speed OUT S…    # fused fp16, dense (S = dense) or pruned at S (0.4, 0.5): batch-1 decode and prefill
#   bash bench/run_h200.sh scap-ab OUT S…       # dense and pruned at each S, loaded together, batch-1 decode interleaved over 5 rounds
#                                               # (default graph: static cache + CUDA graphs; and the dynamic graph)
#   bash bench/run_h200.sh scap-profile OUT S…  # GPU time of a batch-1 decode step per kernel (ncu), dense and pruned at each S
#   bash bench/run_h200.sh scap-parity OUT CALIB [HELD]  # SCAP-pruned Brown models: fused on CUDA (fp32, fp16) vs the portable graph on the CPU
set -euo pipefail
step=$1
out=${2:-/tmp/bench-out}
mkdir -p "$out"
work=${HUBMOE_BENCH_DIR:-/tmp/hubmoe-bench}
mkdir -p "$work"
# Fails early, naming what to remove, when $work has less than $1 GB free (the machine has 64 GB of disk: the full
# period's checkpoint and its fused conversion take 53 GB, each 2-expert conversion 11 GB).
need_gb() {
  local free
  free=$(df -BG --output=avail "$work" | tail -1 | tr -dc 0-9)
  if [ "${free:-0}" -lt "$1" ]; then
    echo "run_h200.sh $step: $1 GB of disk needed under $work, ${free} GB free; remove what this step does not use:" >&2
    du -sh "$work"/* 2>/dev/null >&2 || true
    exit 3
  fi
}
setup() {
  source .devkit/setup.sh >/dev/null
  mkdir -p node_modules/@huggingface
  ln -sfn "$PWD/.devkit/nm/onnxruntime-node" node_modules/onnxruntime-node
  ln -sfn "$PWD/.devkit/nm/onnxruntime-common" node_modules/onnxruntime-common
  [ -d .devkit-extra/tokenizers ] && ln -sfn "$PWD/.devkit-extra/tokenizers" node_modules/@huggingface/tokenizers
  return 0
}
# The period (2 experts) converted to fused fp16, dense or with the SCAP thresholds for sparsity $1.
scap_convert() {
  [ -f "$work/period-x2/config.json" ] || { need_gb 12; python3 bench/jamba_period.py --out "$work/period-x2" --json "$out/period-x2.json" --experts 2 --skip-bench; }
  if [ -f "$work/scap-$1/hubmoe.json" ]; then
    :  # converted by an earlier call
  elif [ "$1" = dense ]; then
    need_gb 12
    node bench/speed.mjs --convert "$work/period-x2" --out "$work/scap-$1" --target fused --dtype fp16
  else
    need_gb 12
    node bench/scap-speed.mjs --checkpoint "$work/period-x2" --scap "${HUBMOE_SCAP_THRESHOLDS:-$out/scap-thresholds}/scap-$1.json" --out "$work/scap-$1"
  fi
}
case "$step" in
  setup) setup ;;
  parity)
    setup
    node bench/cuda-parity.mjs --target portable --backend native --json "$out/parity-portable.json" | tee "$out/parity-portable.md"
    node bench/cuda-parity.mjs --target fused --backend native --json "$out/parity-fused.json" | tee "$out/parity-fused.md"
    ;;
  eager)
    need_gb 28
    python3 bench/jamba_period.py --out "$work/jamba-period" --json "$out/eager.json"
    ;;
  fused)
    setup
    [ -f "$work/fused/hubmoe.json" ] || { need_gb 28; node bench/speed.mjs --convert "$work/jamba-period" --out "$work/fused" --target fused --dtype fp16; }
    node bench/speed.mjs --model "$work/fused" --device cuda --backend native --label "hubmoe fused (native backend, static cache + CUDA graphs)" --json "$out/fused.json"
    node bench/speed.mjs --model "$work/fused" --device cuda --backend native --graph dynamic --label "hubmoe fused (native backend, dynamic graph)" --json "$out/fused-dynamic.json"
    ;;
  portable)
    setup
    need_gb 28
    node bench/speed.mjs --convert "$work/jamba-period" --out "$work/portable" --target portable --dtype fp16
    node bench/speed.mjs --model "$work/portable" --device cuda --backend native --label "hubmoe portable (native backend, CUDA EP)" --json "$out/portable-native.json"
    node bench/speed.mjs --model "$work/portable" --device cuda --backend onnxruntime-node --label "hubmoe portable (onnxruntime-node, CUDA EP)" --json "$out/portable-ort.json"
    rm -rf "$work/portable"
    ;;
  perplexity)
    setup
    node bench/perplexity.mjs --model "$work/fused" --device cuda --tokens 8193 --window 2048 --json "$out/perplexity.json" | tee "$out/perplexity.md"
    ;;
  blackmamba)
    setup
    repo=${HUBMOE_BLACKMAMBA_REPO:-.ref/BlackMamba}
    [ -f "$work/blackmamba-2.8b/config.json" ] || { need_gb 18; python3 bench/blackmamba_2p8b.py --blackmamba-repo "$repo" --out "$work/blackmamba-2.8b" --json "$out/blackmamba-reference.json"; }
    [ -f "$work/blackmamba-fused/hubmoe.json" ] || node bench/speed.mjs --convert "$work/blackmamba-2.8b" --out "$work/blackmamba-fused" --target fused --dtype fp16
    node bench/speed.mjs --model "$work/blackmamba-fused" --device cuda --backend native --label "hubmoe fused, BlackMamba-2.8B configuration (static cache + CUDA graphs)" --json "$out/blackmamba-fused.json"
    node bench/speed.mjs --model "$work/blackmamba-fused" --device cuda --backend native --graph dynamic --label "hubmoe fused, BlackMamba-2.8B configuration (dynamic graph)" --json "$out/blackmamba-fused-dynamic.json"
    [ -f "$work/blackmamba-portable/hubmoe.json" ] || node bench/speed.mjs --convert "$work/blackmamba-2.8b" --out "$work/blackmamba-portable" --target portable --dtype fp16
    node bench/speed.mjs --model "$work/blackmamba-portable" --device cuda --backend native --label "hubmoe portable, BlackMamba-2.8B configuration (native backend, CUDA EP)" --json "$out/blackmamba-portable.json"
    ;;
  profile)
    setup
    scap_convert dense
    node bench/decode-ab.mjs --rounds 5 --json "$out/decode.json" "one call per step=$work/scap-dense#steps" "greedy steps in the addon=$work/scap-dense" | tee "$out/decode.md"
    node bench/step-breakdown.mjs --model "$work/scap-dense" --json "$out/step-breakdown.json" | tee "$out/step-breakdown.md"
    node bench/step-breakdown.mjs --model "$work/scap-dense" --loop --json "$out/step-breakdown-loop.json" | tee "$out/step-breakdown-loop.md"
    /usr/local/cuda/bin/ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --print-units base \
      node bench/kernel-profile.mjs run --model "$work/scap-dense" --batch "${HUBMOE_PROFILE_BATCH:-1}" > "$out/kernels.csv" 2> "$out/ncu.log" || { tail -20 "$out/ncu.log"; exit 1; }
    node bench/kernel-profile.mjs summary "$out/kernels.csv" --json "$out/kernels.json" | tee "$out/kernels.md"
    ;;
  profile-period)
    setup
    [ -f "$work/fused/hubmoe.json" ] || { echo "run_h200.sh profile-period: run the fused step first (no $work/fused)" >&2; exit 1; }
    /usr/local/cuda/bin/ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --print-units base \
      node bench/kernel-profile.mjs run --model "$work/fused" --batch "${HUBMOE_PROFILE_BATCH:-16}" > "$out/kernels-period.csv" 2> "$out/ncu-period.log" || { tail -20 "$out/ncu-period.log"; exit 1; }
    node bench/kernel-profile.mjs summary "$out/kernels-period.csv" --json "$out/kernels-period.json" | tee "$out/kernels-period.md"
    ;;
  scap-period)
    [ -f "$work/period-x2/config.json" ] || { need_gb 12; python3 bench/jamba_period.py --out "$work/period-x2" --json "$out/period-x2.json" --experts 2 --skip-bench; }
    python3 bench/scap_period.py --checkpoint "$work/period-x2" --sparsity 0.4,0.5 --out "$out/scap-thresholds"
    ;;
  scap-speed)
    setup
    shift 2
    for s in "$@"; do
      scap_convert "$s"
      node bench/speed.mjs --model "$work/scap-$s" --device cuda --backend native --batches 1 --label "hubmoe fused fp16, SCAP $s" --json "$out/scap-speed-$s.json"
      [ -z "${HUBMOE_BENCH_THREADS:-}" ] || node bench/speed.mjs --model "$work/scap-$s" --device cuda --backend native --batches 1 --threads "$HUBMOE_BENCH_THREADS" --label "hubmoe fused fp16, SCAP $s, $HUBMOE_BENCH_THREADS CPU threads" --json "$out/scap-speed-$s-t$HUBMOE_BENCH_THREADS.json"
      rm -rf "$work/scap-$s"
    done
    ;;
  scap-ab)
    setup
    shift 2
    models=()
    for s in dense "$@"; do
      scap_convert "$s"
      models+=("SCAP $s=$work/scap-$s")
    done
    # The same dirs on the dynamic graph (no static cache, no CUDA graphs), in the same interleaved rounds.
    for s in dense "$@"; do models+=("SCAP $s, dynamic graph=$work/scap-$s#dynamic"); done
    node bench/decode-ab.mjs --rounds 5 --json "$out/decode-ab.json" "${models[@]}" | tee "$out/decode-ab.md"
    ;;
  scap-profile)
    # GPU time of a batch-1 decode step, kernel by kernel (Nsight Compute), dense and pruned at each S.
    setup
    shift 2
    for s in dense "$@"; do
      scap_convert "$s"
      /usr/local/cuda/bin/ncu --metrics gpu__time_duration.sum --csv --print-units base \
        node bench/kernel-profile.mjs run --model "$work/scap-$s" > "$out/kernels-$s.csv" 2> "$out/ncu-$s.log" || { tail -20 "$out/ncu-$s.log"; exit 1; }
      node bench/kernel-profile.mjs summary "$out/kernels-$s.csv" --json "$out/kernels-$s.json" | tee "$out/kernels-$s.md"
    done
    ;;
  scap-parity)
    setup
    node bench/scap-cuda-parity.mjs --calib "$3" ${4:+--held "$4"} --json "$out/scap-parity.json" | tee "$out/scap-parity.md"
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
