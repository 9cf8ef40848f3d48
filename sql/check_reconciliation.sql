-- Purpose: the reconciliation the summary sheet relies on: the total equals the sum per product, per
--          city and per region, and the total recomputed from the raw sales and prices, to the cent
--          (revenue, units and sales lines). A check (tables.revenue_total.checks): each row it
--          returns is a breakdown that does not add up, with both figures.
-- Reads:   revenue_total, sales_by_product, sales_by_city, sales_by_region, sales, products
-- Writes:  nothing
WITH breakdowns AS (
  SELECT 'sales_by_product' AS breakdown, sum(revenue_cents) AS revenue_cents, sum(quantity) AS quantity, sum(sales_lines) AS sales_lines
  FROM sales_by_product
  UNION ALL
  SELECT 'sales_by_city', sum(revenue_cents), sum(quantity), sum(sales_lines) FROM sales_by_city
  UNION ALL
  SELECT 'sales_by_region', sum(revenue_cents), sum(quantity), sum(sales_lines) FROM sales_by_region
  UNION ALL
  SELECT 'sales x products.price_cents', sum(s.quantity * p.price_cents), sum(s.quantity), count(*)
  FROM sales AS s
  JOIN products AS p ON p.product_id = s.product_id
)
SELECT
  b.breakdown,
  t.revenue_cents               AS total_revenue_cents,
  coalesce(b.revenue_cents, 0)  AS breakdown_revenue_cents,
  t.quantity                    AS total_quantity,
  coalesce(b.quantity, 0)       AS breakdown_quantity,
  t.sales_lines                 AS total_sales_lines,
  coalesce(b.sales_lines, 0)    AS breakdown_sales_lines
FROM revenue_total AS t
CROSS JOIN breakdowns AS b
WHERE t.revenue_cents IS DISTINCT FROM coalesce(b.revenue_cents, 0)
   OR t.quantity IS DISTINCT FROM coalesce(b.quantity, 0)
   OR t.sales_lines IS DISTINCT FROM coalesce(b.sales_lines, 0);
