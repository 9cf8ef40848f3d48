-- Purpose: sales per product (brief 4.b): units, sales lines and revenue, with each product's share.
-- Reads:   products, sales_by_store_product
-- Writes:  sales_by_product (one row per product, products without sales included, replaced each run)
WITH per_product AS (
  SELECT
    p.product_id,
    p.name,
    p.price_cents,
    coalesce(sum(a.sales_lines), 0)   AS sales_lines,
    coalesce(sum(a.quantity), 0)      AS quantity,
    coalesce(sum(a.revenue_cents), 0) AS revenue_cents
  FROM products AS p
  LEFT JOIN sales_by_store_product AS a ON a.product_id = p.product_id
  GROUP BY p.product_id
)
SELECT
  product_id,
  name,
  price_cents    AS unit_price_cents,
  sales_lines,
  quantity,
  revenue_cents,
  revenue_cents / 100.0 AS revenue,
  coalesce(round(100.0 * revenue_cents / nullif(sum(revenue_cents) OVER (), 0), 2), 0) AS revenue_share_pct
FROM per_product
ORDER BY revenue_cents DESC, product_id;
