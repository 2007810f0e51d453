#!/usr/bin/env bash
# Which hot loops vectorise: builds the detector benchmarks (release profile, fat LTO: LLVM
# vectorises after the link, so only the final binary tells), disassembles them and counts, per
# kernel, packed double instructions on 512-bit (zmm) and 256-bit (ymm) registers beside scalar
# ones (the scalar ones are the remainder loops and the set-up).
#   scripts/check-vectorised.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p telltale-benches --bench detectors --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "detectors" in m["target"]["name"]:
        print(m["executable"])
' | tail -n 1 > target/check-vectorised.bin
BIN=$(cat target/check-vectorised.bin)
objdump -d -M intel --no-show-raw-insn -C "$BIN" | python3 -c '
import re, sys
text = sys.stdin.read()
print("%-60s %10s %10s %7s" % ("kernel", "zmm packed", "ymm packed", "scalar"))
for block in re.split(r"\n(?=[0-9a-f]{16} <)", text):
    m = re.match(r"[0-9a-f]{16} <(.*)>:", block)
    if not m or not re.search(r"(::dense::|dense_scores::|scores_from_z_in_place::|knn::distances::|knn::count_below::)(wide512|wide256)$", m.group(1)):
        continue
    z = len(re.findall(r"\sv\w+pd\s+(?:k\d,)?zmm", block))
    y = len(re.findall(r"\sv\w+pd\s+ymm", block))
    s = len(re.findall(r"\sv?\w+sd\s+xmm", block))
    print(f"{m.group(1):60} {z:>10} {y:>10} {s:>7}")
'
