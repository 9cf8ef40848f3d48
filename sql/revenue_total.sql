-- Purpose: total revenue of the period (brief 4.a), with units, sales lines and the dates covered.
-- Reads:   sales (the dates, through its unique index), sales_by_store_product
-- Writes:  revenue_total (one row, replaced each run)
-- Money is summed as integer cents; revenue in euros is derived once, at the end.
SELECT
  (SELECT min(date) FROM sales)            AS period_start,
  (SELECT max(date) FROM sales)            AS period_end,
  coalesce(sum(sales_lines), 0)            AS sales_lines,
  coalesce(sum(quantity), 0)               AS quantity,
  coalesce(sum(revenue_cents), 0)          AS revenue_cents,
  coalesce(sum(revenue_cents), 0) / 100.0  AS revenue
FROM sales_by_store_product;
