#!/usr/bin/env bash
# buf breaking: the protos must stay wire- and JSON-compatible with the
# previous commit's (the rules are in buf.yaml). Skipped only where there is
# no previous commit with protos to compare against (the very first one).
set -euo pipefail
buf="${1:-buf}"
if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then
  "$buf" breaking --against '.git#ref=HEAD~1'
  echo "buf breaking: compatible with HEAD~1"
else
  echo "buf breaking: no previous commit with protos to compare against"
fi
