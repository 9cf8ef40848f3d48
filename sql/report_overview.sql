-- Purpose: the key figures of the summary sheet (fiche synthèse).
-- Reads:   revenue_total, stores
-- Writes:  nothing (read by the report step)
SELECT
  period_start,
  period_end,
  revenue_cents,
  quantity,
  sales_lines,
  (SELECT count(*) FROM stores) AS stores
FROM revenue_total;
