-- Purpose: the figures behind the plain sentences of the summary sheet: best product by revenue and
--          by units, best and weakest cities, and whether regions hold more than one city.
-- Reads:   revenue_total, sales_by_product, sales_by_city, sales_by_region
-- Writes:  nothing (read by the report step, whose text: template turns them into sentences)
WITH
  by_revenue AS (SELECT * FROM sales_by_product ORDER BY revenue_cents DESC, product_id LIMIT 1),
  by_units   AS (SELECT * FROM sales_by_product ORDER BY quantity DESC, product_id LIMIT 1),
  cities     AS (SELECT *, row_number() OVER (ORDER BY revenue_cents DESC, city) AS rank FROM sales_by_city),
  last_city  AS (SELECT * FROM cities ORDER BY rank DESC LIMIT 1)
SELECT
  t.period_start, t.period_end, t.revenue_cents, t.quantity, t.sales_lines,
  r.name AS top_revenue_product, r.revenue_cents AS top_revenue_cents, r.revenue_share_pct AS top_revenue_share,
  r.quantity AS top_revenue_units,
  u.name AS top_units_product, u.quantity AS top_units, u.revenue_share_pct AS top_units_share,
  c1.city AS top_city, c1.region AS top_city_region, c1.revenue_cents AS top_city_cents, c1.revenue_share_pct AS top_city_share,
  c2.city AS second_city, c2.revenue_cents AS second_city_cents,
  l.city AS last_city, l.revenue_cents AS last_city_cents, l.revenue_share_pct AS last_city_share,
  CASE WHEN (SELECT max(cities) FROM sales_by_region) = 1
    THEN 'Chaque région ne compte qu''un magasin dans ces données : le classement par région reprend celui par ville.'
    ELSE 'Plusieurs villes d''une même région sont additionnées dans le classement par région.'
  END AS region_note
FROM revenue_total AS t, by_revenue AS r, by_units AS u, last_city AS l
JOIN cities AS c1 ON c1.rank = 1
LEFT JOIN cities AS c2 ON c2.rank = 2;
