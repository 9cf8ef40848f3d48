-- Purpose: the one pass over sales that every other analysis starts from: lines, units and revenue
--          per (store, product). Summing 1 000 rows instead of every sale keeps the analyses fast
--          as sales grow (one sort of the sales table instead of a join per product or per store).
-- Reads:   sales, products
-- Writes:  sales_by_store_product (one row per store and product that sold, replaced each run)
-- Revenue is units × the product's price in cents: exact integers.
WITH per_pair AS (
  SELECT store_id, product_id, count(*) AS sales_lines, sum(quantity) AS quantity
  FROM sales
  GROUP BY store_id, product_id
)
SELECT
  a.store_id,
  a.product_id,
  a.sales_lines,
  a.quantity,
  a.quantity * p.price_cents AS revenue_cents
FROM per_pair AS a
JOIN products AS p ON p.product_id = a.product_id;
