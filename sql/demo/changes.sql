-- Between the two demo runs: a few customers change, one leaves the VIP audience, one joins.
UPDATE customers SET tier = 'platinum', lifetime_value = lifetime_value + 1000 WHERE customer_id IN (3, 6);
UPDATE customers SET is_vip = false WHERE customer_id = 9;
UPDATE customers SET is_vip = true WHERE customer_id = 10;
UPDATE customers SET last_order_at = timestamptz '2026-11-20 09:30:00+00', orders_count = orders_count + 1 WHERE customer_id = 12;
UPDATE customers SET preferences = preferences || '{"frequency": 7}' WHERE customer_id = 15;
