#!/usr/bin/env bash
# Regenerates the documents the tool produces from the client's data (byte-exact copies in
# tests/fixtures/client/). Tests fail when the committed files differ from what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PRODUCTS_URL=tests/fixtures/client/produits.csv
export STORES_URL=tests/fixtures/client/magasins.csv
export SALES_URL=tests/fixtures/client/ventes.csv
export NO_COLOR=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
node dist/engine/cli.js schema >docs/schema.md
node dist/engine/cli.js profile --update docs/data-quality.md
REPORT_DIR=docs DB_PATH="$scratch/docs.db" node dist/engine/cli.js run >/dev/null
echo "regenerated docs/schema.md, docs/data-quality.md, docs/fiche-synthese.md, docs/fiche-synthese.html"
