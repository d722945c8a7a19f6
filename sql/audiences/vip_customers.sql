-- VIP customers and what marketing needs to personalise for them.
-- @identifier external_id
-- @on_exit unset
-- Profiles exist already (profile_basics creates them); with @update_existing_only true
-- Braze would ignore unknown ids silently, and braze-bridge would resend to every member each
-- run until it can confirm the profiles exist, so it is left at Braze's default (false).
-- @schedule 0 * * * *
SELECT c.customer_id AS external_id,
       c.lifetime_value::numeric(12, 2) AS ltv,
       c.tier AS loyalty_tier,
       true AS in_vip_audience
FROM customers c
WHERE c.is_vip
