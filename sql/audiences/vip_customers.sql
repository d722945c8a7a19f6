-- VIP customers and what marketing needs to personalise for them.
-- @identifier external_id
-- @on_exit unset
-- @update_existing_only true
-- @schedule 0 * * * *
SELECT c.customer_id AS external_id,
       c.lifetime_value::numeric(12, 2) AS ltv,
       c.tier AS loyalty_tier,
       true AS in_vip_audience
FROM customers c
WHERE c.is_vip
