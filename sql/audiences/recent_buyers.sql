-- Customers who ordered this year; when they stop qualifying, mark them instead of unsetting.
-- @on_exit {"recent_buyer": false}
SELECT c.customer_id AS external_id,
       true AS recent_buyer,
       c.orders_count,
       c.last_order_at,
       c.categories AS favourite_categories,
       c.preferences AS messaging_preferences
FROM customers c
WHERE c.last_order_at >= timestamptz '2026-01-01 00:00:00+00' AND c.orders_count > 0
