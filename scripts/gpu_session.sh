#!/usr/bin/env bash
# Train a wider embedded GAN within one lent GPU machine's time, in calls of at most 10
# minutes each, and bring back what the package needs (MODEL_CARD.md, "Next").
#
#   bash scripts/gpu_session.sh start MINUTES   # data, then training detached for MINUTES
#   bash scripts/gpu_session.sh poll SECONDS    # progress until SECONDS pass or it stops
#   bash scripts/gpu_session.sh finish          # wait for it; export to $OUT; projection.py
#
# Run every call from the repository root, one right after the other (the machine and its
# /tmp stay while calls keep coming). The training stops itself after MINUTES with a
# checkpoint. `finish` writes g_ema.pt and d.pt (float16, under 16 MiB each) and the last
# sample grid and loss log to $OUT, then measures the information ratio of the result
# (benchmarks/projection.py, 8 test faces in parallel CPU processes). Back on the
# development machine: scripts/export_gan.py --join OUT_FOLDER runs/wide64.pt for --gan, and
# scripts/package_embedded.py OUT_FOLDER data/train64 --half to package it.
# Environment: CHANNELS (256x256x128x64x32), BATCH (32), N_IMAGES (10000), DEVICE (cuda),
# WORK (/tmp/gan2shape-gpu), FACES (8).
set -euo pipefail

CHANNELS=${CHANNELS:-256x256x128x64x32}
BATCH=${BATCH:-32}
N_IMAGES=${N_IMAGES:-10000}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/gan2shape-gpu}
FACES=${FACES:-8}
OUT=${OUT:-$WORK/out}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
RUN="$WORK/run"

running() { [ -f "$WORK/train.pid" ] && kill -0 "$(cat "$WORK/train.pid")" 2>/dev/null; }

progress() {
    tail -n 1 "$RUN/losses.jsonl" 2>/dev/null || echo "(no log line yet)"
}

poll() {  # poll SECONDS
    local end=$((SECONDS + $1))
    while running && [ "$SECONDS" -lt "$end" ]; do
        sleep 30
        progress
    done
    running && echo "training: still running" || echo "training: stopped"
    tail -n 3 "$WORK/train.log" || true
}

case "${1:-}" in
start)
    minutes=${2:?start MINUTES}
    mkdir -p "$WORK"
    nvidia-smi -L 2>/dev/null || true
    if [ ! -f "$WORK/data/view_prior.pt" ]; then
        "$PYTHON" -m gan2shape make-data --out "$WORK/data" -n "$N_IMAGES" --seed 0 \
            --batch-size 512 2>&1 | tail -n 1
    fi
    running && { echo "training already running"; exit 1; }
    setsid nohup "$PYTHON" -m gan2shape train-gan "$WORK/data" --size 64 --out "$RUN" \
        --channels "$CHANNELS" --batch "$BATCH" --r1 0.1 --r1-every 16 --mixing 0 \
        --ema-kimg 10 --kimg 100000 --quiet --no-bf16 --device "$DEVICE" --log-every 100 \
        --sample-every 2000 --ckpt-minutes 3 --minutes "$minutes" --resume \
        >"$WORK/train.log" 2>&1 </dev/null &
    echo $! >"$WORK/train.pid"
    echo "training started: $CHANNELS, batch $BATCH, $minutes minutes, on $DEVICE"
    poll "${POLL_SECONDS:-420}"
    ;;
poll)
    poll "${2:?poll SECONDS}"
    ;;
finish)
    while running; do sleep 10; done
    mkdir -p "$OUT"
    "$PYTHON" scripts/export_gan.py "$RUN/checkpoint.pt" "$OUT"
    cp "$RUN/losses.jsonl" "$OUT/losses.jsonl" 2>/dev/null || echo "no loss log yet"
    last=$(ls "$RUN/samples" | tail -n 1)
    cp "$RUN/samples/$last" "$OUT/samples.png"
    for ((i = 0; i < FACES; i++)); do
        "$PYTHON" benchmarks/projection.py --gan "$RUN/checkpoint.pt" --first "$i" \
            --images 1 --threads 2 >"$WORK/projection_$i.log" 2>&1 &
    done
    wait
    grep -aho "test[0-9]*: pseudo.*" "$WORK"/projection_*.log | tee "$OUT/projection.txt"
    # information ratios of the means (as projection.py prints them for one run)
    ratios='{p += $3; q += $5; o += $7; b += $10; n++}
        END {if (n) printf "%d faces: ratio projected %+.2f, optimised %+.2f\n", n,
             (p - q) / (p - b), (p - o) / (p - b)}'
    awk "$ratios" "$OUT/projection.txt" | tee -a "$OUT/projection.txt"
    ;;
*)
    sed -n '2,17p' "$0"
    exit 2
    ;;
esac
