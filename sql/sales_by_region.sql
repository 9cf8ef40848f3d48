-- Purpose: sales per French administrative region (brief 4.c). The sheet has no region column:
--          each store's city is mapped to its region through data/city_regions.csv.
-- Reads:   stores, city_regions, sales_by_store_product
-- Writes:  sales_by_region (one row per region with a store, replaced each run)
WITH per_region AS (
  SELECT
    coalesce(r.region, '(région inconnue)') AS region,
    count(DISTINCT st.city)                 AS cities,
    coalesce(sum(a.sales_lines), 0)         AS sales_lines,
    coalesce(sum(a.quantity), 0)            AS quantity,
    coalesce(sum(a.revenue_cents), 0)       AS revenue_cents
  FROM stores AS st
  LEFT JOIN city_regions AS r ON r.city = st.city
  LEFT JOIN sales_by_store_product AS a ON a.store_id = st.store_id
  GROUP BY 1
)
SELECT
  region,
  cities,
  sales_lines,
  quantity,
  revenue_cents,
  revenue_cents / 100.0 AS revenue,
  coalesce(round(100.0 * revenue_cents / nullif(sum(revenue_cents) OVER (), 0), 2), 0) AS revenue_share_pct
FROM per_region
ORDER BY revenue_cents DESC, region;
