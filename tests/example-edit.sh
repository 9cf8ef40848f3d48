#!/usr/bin/env bash
# Proves that the root pipeline.yaml is the user's example, not the suite's fixture: in a scratch
# copy of the repository, adds a source and a query to the root pipeline.yaml (as a user would),
# checks the edited example is valid and runs, then runs the suite's client tests there, which
# must still pass (they use tests/fixtures/client-pipeline/). `npm run test:example-edit`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$copy/"
# why: untracked work in progress counts too (this script checks the tree as it is, not as committed).
git ls-files -z --others --exclude-standard | xargs -0 -r -I{} cp --parents {} "$copy/"
ln -s "$repo/node_modules" "$copy/node_modules"
cd "$copy"

printf 'ID Référence produit,Remise\r\nREF001,10\r\nREF004,5\r\n' >data/promotions.csv
printf -- '-- Discounted products and what they sold (added by a user).\nSELECT p.product_id, p.discount_pct, s.quantity FROM promotions p JOIN sales_by_product s USING (product_id)\n' >sql/promotions_sold.sql
awk '{ print } /^tables:$/ { print "  promotions:\n    columns:\n      product_id: { type: text }\n      discount_pct: { type: integer, required: true }\n    primary_key: [product_id]\n  promotions_sold:\n    columns:\n      product_id: { type: text }\n      discount_pct: { type: integer, required: true }\n      quantity: { type: integer, required: true }\n    primary_key: [product_id]\n" }' pipeline.yaml >pipeline.edited
mv pipeline.edited pipeline.yaml
printf '\n  - name: load_promotions\n    type: load\n    source: data/promotions.csv\n    table: promotions\n    mode: replace\n    columns:\n      product_id: "ID Référence produit"\n      discount_pct: Remise\n\n  - name: promotions_sold\n    type: sql\n    file: sql/promotions_sold.sql\n    into: promotions_sold\n' >>pipeline.yaml

npm run build --silent
export NO_COLOR=1 PRODUCTS_URL=tests/fixtures/client/produits.csv STORES_URL=tests/fixtures/client/magasins.csv SALES_URL=tests/fixtures/client/ventes.csv
node dist/engine/cli.js validate
DB_PATH="$copy/edited.db" REPORT_DIR="$copy/reports" node dist/engine/cli.js run >/dev/null
echo "the edited example ran: promotions_sold has $(sqlite3 "$copy/edited.db" 'SELECT count(*) FROM promotions_sold') rows"
unset PRODUCTS_URL STORES_URL SALES_URL
npx vitest run tests/client-pipeline.test.ts tests/report.test.ts tests/docs.test.ts tests/profile.test.ts tests/doctor.test.ts tests/run-failures.test.ts tests/rejections.test.ts tests/cli-smoke.test.ts
