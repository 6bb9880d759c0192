#!/bin/bash
# Trains the reference model on the GPU machine (one call of the device tool):
#   carry a folder C holding gutenberg/ (the novels of ../shared/data) and
#   tokenizer.json (make_tokenizer.py), then: bash bench/refmodel/device.sh C SECONDS
# The model, its tokenizer and train_eval.json land in $OUT/ref.
set -u
C=${1:?carry folder}
SECONDS_BUDGET=${2:-430}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 bench/refmodel/train.py --books "$C/gutenberg" --tokenizer "$C/tokenizer.json" \
  --out "$OUT/ref" --seconds "$SECONDS_BUDGET" 2>&1 | tee "$OUT/train.log" | grep -v "^step .*[1-9]00 t=" 
rm -f "$OUT/ref/generation_config.json"
ls -la "$OUT/ref"
