#!/usr/bin/env bash
# Regenerates the documents the tool produces from the client's data (byte-exact copies in
# tests/fixtures/client/) and the client's pipeline as the suite keeps it
# (tests/fixtures/client-pipeline/, a copy of the example at the root): the committed documents
# describe the example as shipped, so an edit of the root pipeline.yaml changes neither them nor the
# tests that compare them. Run in a scratch copy laid out like a test's workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -R tests/fixtures/client-pipeline/. "$scratch/"
mkdir -p "$scratch/tests/fixtures" && cp -R tests/fixtures/client "$scratch/tests/fixtures/client"
cp docs/data-quality.md "$scratch/data-quality.md"
cd "$scratch"
export PRODUCTS_URL=tests/fixtures/client/produits.csv
export STORES_URL=tests/fixtures/client/magasins.csv
export SALES_URL=tests/fixtures/client/ventes.csv
export NO_COLOR=1
cli=$repo/dist/engine/cli.js
node "$cli" schema >"$repo/docs/schema.md"
node "$cli" profile --update data-quality.md && cp data-quality.md "$repo/docs/data-quality.md"
REPORT_DIR=reports DB_PATH=docs.db node "$cli" run >/dev/null
cp reports/fiche-synthese.md reports/fiche-synthese.html "$repo/docs/"
echo "regenerated docs/schema.md, docs/data-quality.md, docs/fiche-synthese.md, docs/fiche-synthese.html"
