#!/usr/bin/env bash
# Train and test bogofilter (Debian package `bogofilter`) on exactly the split that
# `corpus-tools evaluate` uses, and print the same figures, for a side-by-side comparison:
#   corpus-tools/compare-bogofilter.sh [CORPUS]    (default ../shared/corpus/spamassassin)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:-../shared/corpus/spamassassin}
command -v bogofilter >/dev/null || { echo "bogofilter is not installed (apt-get install bogofilter)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet --bin corpus-tools
tools=target/release/corpus-tools
"$tools" split --out "$work/split" \
  --ham "$corpus/easy_ham" --ham "$corpus/easy_ham_2" --ham "$corpus/hard_ham" \
  --spam "$corpus/spam" --spam "$corpus/spam_2"
mkdir "$work/db"
xargs -d '\n' bogofilter -d "$work/db" -s -B < "$work/split/train-spam.txt"
xargs -d '\n' bogofilter -d "$work/db" -n -B < "$work/split/train-ham.txt"
# bogofilter's exit status says spam/ham/unsure, not success: keep going.
for label in ham spam; do
  { xargs -d '\n' bogofilter -d "$work/db" -T -B < "$work/split/test-$label.txt" || true; } \
    | awk -v l="$label" '{ print l, $NF }'
done > "$work/scores"
"$tools" metrics "$work/scores" --threshold 0.99 --name "bogofilter $(bogofilter -V 2>&1 | awk 'NR==1{print $3}')"
