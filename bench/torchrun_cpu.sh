#!/usr/bin/env bash
# DDP smoke check on CPU: `torchrun --nproc_per_node=2` (gloo) runs a few steps of the small config,
# once on online synthetic images and once on an ImageFolder of real photos (the test tree), and
# checks that both ranks trained one run: world_size 2 in config.json, every step logged once.
# Prints the wall time of each, beside the same steps in one process as the baseline.
#
#   bash bench/torchrun_cpu.sh [STEPS]        (default 4; needs `pip install --no-deps foolbox`)
#
# The multi-GPU form is the same command with CUDA visible (nccl is chosen automatically), e.g.
#   torchrun --nproc_per_node=8 "$(command -v hlvm)" train --model mae_vit_base_patch16 \
#       --data imagefolder:/data/imagenet/train --preset mae_pretrain --out runs/mae-b16
set -euo pipefail
STEPS="${1:-4}"
HLVM="$(command -v hlvm)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/hlvm-torchrun.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/.."

python - "$WORK/tree" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from _imagetree import build_tree
build_tree(Path(sys.argv[1]))
PY

check() {  # run folder, expected world size
  python - "$1" "$2" "$STEPS" <<'PY'
import json, sys
from pathlib import Path
run, world, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = json.loads((run / "config.json").read_text())
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
assert cfg["world_size"] == world, cfg["world_size"]
assert [r["step"] for r in rows] == list(range(1, steps + 1)), [r["step"] for r in rows]
assert (run / "checkpoint.pt").is_file()
print(f"  ok: world_size {world}, effective batch {cfg['effective_batch']}, lr {cfg['lr']:.2e}, "
      f"final loss {rows[-1]['loss']:.4f}")
PY
}

# The CLI on online synthetic data (the named small config fits its 16x16x6 images).
# Image folders: `hlvm train` takes image size and channels from a named config (224 x 3 for the
# mae_* ones, too slow here), so the folder run goes through hlvm.train.train with a 32-px MAEConfig.
cat > "$WORK/folder_driver.py" <<PY
import sys
from hlvm.models import get_config
from hlvm.train import TrainConfig, train
cfg = get_config("vit_small_synth", img_size=32, in_chans=3, patch_size=4, mask_unit=8)
train(TrainConfig(model=cfg, data="imagefolder:$WORK/tree", steps=$STEPS, batch_size=4, warmup=1, log_every=1,
                  device="cpu", out=sys.argv[1]), progress=False)
PY

for label in "online synthetic" "image folder"; do
  for nproc in 1 2; do
    out="$WORK/run-${nproc}-${label// /-}"
    if [[ "$label" == online* ]]; then
      cmd=("$HLVM" train --model vit_small_synth --data online --steps "$STEPS" --batch-size 4 --warmup 1
           --log-every 1 --device cpu --out "$out" -q)
    else
      cmd=("$WORK/folder_driver.py" "$out")
    fi
    start=$(date +%s.%N)
    if [[ $nproc == 1 ]]; then
      python "${cmd[@]}" > /dev/null
    else
      torchrun --standalone --nproc_per_node=2 "${cmd[@]}" > /dev/null
    fi
    end=$(date +%s.%N)
    printf '%s, %d process(es): %.1f s wall for %d steps\n' "$label" "$nproc" "$(echo "$end - $start" | bc)" "$STEPS"
    check "$out" "$nproc"
  done
done
