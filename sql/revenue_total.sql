-- Purpose: total revenue of the period (brief 4.a), with units, sales lines and the dates covered.
-- Reads:   sales, products
-- Writes:  revenue_total (one row, replaced each run)
-- Money is summed as integer cents; revenue in euros is derived once, at the end.
SELECT
  min(s.date)                           AS period_start,
  max(s.date)                           AS period_end,
  count(*)                              AS sales_lines,
  coalesce(sum(s.quantity), 0)          AS quantity,
  coalesce(sum(s.quantity * p.price_cents), 0)         AS revenue_cents,
  coalesce(sum(s.quantity * p.price_cents), 0) / 100.0 AS revenue
FROM sales AS s
JOIN products AS p ON p.product_id = s.product_id;
