-- Purpose: sales per city (brief 4.c, at the finest level the data has: one store per city today).
-- Reads:   stores, sales_by_store_product, city_regions
-- Writes:  sales_by_city (one row per city with a store, replaced each run)
-- A city missing from data/city_regions.csv is kept, under the region "(région inconnue)".
WITH per_city AS (
  SELECT
    st.city,
    count(DISTINCT st.store_id)       AS stores,
    coalesce(sum(a.sales_lines), 0)   AS sales_lines,
    coalesce(sum(a.quantity), 0)      AS quantity,
    coalesce(sum(a.revenue_cents), 0) AS revenue_cents
  FROM stores AS st
  LEFT JOIN sales_by_store_product AS a ON a.store_id = st.store_id
  GROUP BY st.city
)
SELECT
  c.city,
  coalesce(r.region, '(région inconnue)') AS region,
  c.stores,
  c.sales_lines,
  c.quantity,
  c.revenue_cents,
  c.revenue_cents / 100.0 AS revenue,
  coalesce(round(100.0 * c.revenue_cents / nullif(sum(c.revenue_cents) OVER (), 0), 2), 0) AS revenue_share_pct
FROM per_city AS c
LEFT JOIN city_regions AS r ON r.city = c.city
ORDER BY c.revenue_cents DESC, c.city;
