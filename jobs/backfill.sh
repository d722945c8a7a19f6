#!/usr/bin/env bash
# One-off backfill of one audience, by hand: plan, confirm, send. Usage: jobs/backfill.sh vip_customers
set -euo pipefail
audience="${1:?usage: jobs/backfill.sh <audience>}"
cd "$(dirname "$0")/.."
node bin/braze-bridge.js plan "$audience" --out "backfill-$audience.ndjson"
read -r -p "Send the full attribute set of every member of $audience to Braze? [y/N] " answer
[ "$answer" = "y" ] || { echo "nothing sent"; exit 0; }
exec node bin/braze-bridge.js backfill "$audience"
